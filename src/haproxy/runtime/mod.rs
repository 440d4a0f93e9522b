//! `RuntimeClient`: the only writer to HAProxy's admin stats socket. One persistent
//! prompt-mode connection behind a mutex (commands are serialised, replies never interleave),
//! reconnecting on error; typed server operations with HAProxy's reply texts mapped to
//! `RuntimeError`, and `show` reads parsed by `haproxy::stat`.
//!
//! Invariant: during a reload the supervisor holds the connection (`lock_for_reload`) and
//! drops it afterwards, so no command lands on an old worker that is about to exit.

mod command;
pub mod events;
mod session;

pub use crate::haproxy::stat::AdminState;
pub use command::{CommandFailure, ServerCommand, ServerOptions, validate_name};

use crate::haproxy::stat::{
    ParseError, ServerConnRow, ServerStateRow, ShowInfo, StatRow, parse_servers_conn,
    parse_servers_state, parse_show_info, parse_show_stat,
};
use session::Session;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::sync::{Mutex, OwnedMutexGuard, OwnedRwLockWriteGuard, RwLock};

/// Pipelined commands go one per line (since 3.2 a `;`-joined line gets a single prompt at
/// its end, not one per command), in writes of at most this many bytes whose replies are read
/// before the next write: HAProxy reads CLI input into a buffer of `tune.bufsize` (16 KiB by
/// default), and 3.2.0 freezes its CLI when pipelined input overflows it (upstream c6c2ef1f1).
const MAX_WRITE_BYTES: usize = 8 * 1024;
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("cannot connect to the haproxy admin socket {path}: {source}")]
    Connect { path: PathBuf, source: io::Error },
    /// The connection failed mid-exchange; whether the command ran is unknown.
    #[error("admin socket i/o: {0}")]
    Io(#[source] io::Error),
    #[error("admin socket did not answer within {0:?}")]
    Timeout(Duration),
    /// HAProxy answered with an error; `failure()` classifies the reply.
    #[error("haproxy refused `{command}`: {reply}")]
    Command { command: String, reply: String },
    /// Refused before reaching the socket.
    #[error("invalid {what} {value:?}: {reason}")]
    InvalidArgument {
        what: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error("unexpected reply to `{command}`: {source}")]
    Parse {
        command: String,
        #[source]
        source: ParseError,
    },
}

impl RuntimeError {
    /// For `Command` errors, what HAProxy's reply means.
    pub fn failure(&self) -> Option<CommandFailure> {
        match self {
            RuntimeError::Command { reply, .. } => Some(CommandFailure::classify(reply)),
            _ => None,
        }
    }
}

/// Cheap to clone; all clones share the one connection.
#[derive(Debug, Clone)]
pub struct RuntimeClient {
    path: Arc<PathBuf>,
    timeout: Duration,
    session: Arc<Mutex<Option<Session>>>,
    /// The worker generation this client's connection was opened for.
    connected_for: Arc<AtomicU64>,
    /// Shared with every client on the same socket (see [`RuntimeClient::separate`]).
    group: Arc<SocketGroup>,
}

/// What all clients of one admin socket share. A reload closes the gate (waiting for the
/// exchanges in flight), so no client's command reaches the old worker after its server
/// state was saved for the new one; and it bumps the generation, so every client drops its
/// connection to the old worker and reconnects to the new one.
#[derive(Debug, Default)]
struct SocketGroup {
    gate: Arc<RwLock<()>>,
    generation: AtomicU64,
    /// Every client's connection slot, to close them all at once.
    sessions: std::sync::Mutex<Vec<Weak<Mutex<Option<Session>>>>>,
}

impl SocketGroup {
    fn join(&self, session: &Arc<Mutex<Option<Session>>>) {
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        sessions.retain(|s| s.strong_count() > 0);
        sessions.push(Arc::downgrade(session));
    }
}

impl RuntimeClient {
    /// Does not connect yet: the first command does.
    pub fn new(socket_path: impl Into<PathBuf>) -> RuntimeClient {
        let client = RuntimeClient {
            path: Arc::new(socket_path.into()),
            timeout: DEFAULT_TIMEOUT,
            session: Arc::new(Mutex::new(None)),
            connected_for: Arc::default(),
            group: Arc::default(),
        };
        client.group.join(&client.session);
        client
    }

    /// Bounds every exchange (connect, write, read all replies).
    pub fn with_timeout(mut self, timeout: Duration) -> RuntimeClient {
        self.timeout = timeout;
        self
    }

    /// The same socket and timeout on a connection of its own: for a user that must not
    /// queue behind the others' exchanges, or that runs on another async runtime (a
    /// connection belongs to the runtime that opened it). Reloads hold it back and move it
    /// to the new worker like the original.
    pub fn separate(&self) -> RuntimeClient {
        let client = RuntimeClient {
            path: self.path.clone(),
            timeout: self.timeout,
            session: Arc::new(Mutex::new(None)),
            connected_for: Arc::default(),
            group: self.group.clone(),
        };
        client.group.join(&client.session);
        client
    }

    /// One exchange on this client's connection, through the reload gate, on a connection
    /// to the current worker.
    async fn exchange(&self, lines: &[String]) -> Result<Vec<String>, RuntimeError> {
        let _open = self.group.gate.read().await;
        let mut session = self.session.lock().await;
        let generation = self.group.generation.load(Ordering::Acquire);
        if self.connected_for.swap(generation, Ordering::AcqRel) != generation {
            *session = None;
        }
        exchange(&mut session, &self.path, self.timeout, lines).await
    }

    pub fn socket_path(&self) -> &Path {
        &self.path
    }

    /// Sends one raw command line and returns HAProxy's reply text, whatever it says.
    /// The line must be a single command (no `;`, no control characters).
    pub async fn command(&self, line: &str) -> Result<String, RuntimeError> {
        let line = command::validate_line(line)?;
        let mut replies = self.exchange(&[line.to_owned()]).await?;
        Ok(replies.pop().unwrap_or_default())
    }

    /// Sends several raw command lines in one round trip (pipelined, like [`Self::batch`])
    /// and returns each reply, in order, whatever it says. Each line must be a single command.
    pub async fn commands(&self, lines: &[&str]) -> Result<Vec<String>, RuntimeError> {
        let mut checked = Vec::with_capacity(lines.len());
        for line in lines {
            checked.push(command::validate_line(line)?);
        }
        if checked.is_empty() {
            return Ok(Vec::new());
        }
        let lines: Vec<String> = checked.iter().map(|line| (*line).to_owned()).collect();
        self.exchange(&lines).await
    }

    /// Runs one typed command; HAProxy's refusal becomes `RuntimeError::Command`.
    pub async fn run(&self, command: &ServerCommand) -> Result<(), RuntimeError> {
        let mut results = self.batch(std::slice::from_ref(command)).await?;
        results.pop().unwrap_or(Ok(()))
    }

    /// Runs several commands pipelined (one per line, see `MAX_WRITE_BYTES`), in order.
    /// The outer error is a transport failure (some commands may have run); the inner
    /// results say how each command fared. HAProxy keeps going after a failed command.
    pub async fn batch(
        &self,
        commands: &[ServerCommand],
    ) -> Result<Vec<Result<(), RuntimeError>>, RuntimeError> {
        let mut results: Vec<Option<Result<(), RuntimeError>>> = Vec::with_capacity(commands.len());
        let mut to_send = Vec::with_capacity(commands.len());
        for (index, command) in commands.iter().enumerate() {
            match command.render() {
                Ok(line) => {
                    results.push(None);
                    to_send.push((index, line));
                }
                Err(err) => results.push(Some(Err(err))),
            }
        }
        if !to_send.is_empty() {
            let lines: Vec<String> = to_send.iter().map(|(_, line)| line.clone()).collect();
            let replies = self.exchange(&lines).await?;
            for ((index, line), reply) in to_send.into_iter().zip(replies) {
                let outcome = match commands.get(index) {
                    Some(command) if command.accepts(&reply) => Ok(()),
                    _ => Err(RuntimeError::Command {
                        command: line,
                        reply,
                    }),
                };
                if let Some(slot) = results.get_mut(index) {
                    *slot = Some(outcome);
                }
            }
        }
        Ok(results
            .into_iter()
            .map(|result| result.unwrap_or(Ok(())))
            .collect())
    }

    pub async fn set_server_state(
        &self,
        backend: &str,
        server: &str,
        state: AdminState,
    ) -> Result<(), RuntimeError> {
        self.run(&ServerCommand::SetState {
            backend: backend.to_owned(),
            server: server.to_owned(),
            state,
        })
        .await
    }

    pub async fn enable_health(&self, backend: &str, server: &str) -> Result<(), RuntimeError> {
        self.run(&ServerCommand::EnableHealth {
            backend: backend.to_owned(),
            server: server.to_owned(),
        })
        .await
    }

    pub async fn disable_health(&self, backend: &str, server: &str) -> Result<(), RuntimeError> {
        self.run(&ServerCommand::DisableHealth {
            backend: backend.to_owned(),
            server: server.to_owned(),
        })
        .await
    }

    /// `show servers state [<backend>]`.
    pub async fn show_servers_state(
        &self,
        backend: Option<&str>,
    ) -> Result<Vec<ServerStateRow>, RuntimeError> {
        let line = match backend {
            Some(backend) => format!("show servers state {}", validate_name("backend", backend)?),
            None => "show servers state".to_owned(),
        };
        let reply = self.command(&line).await?;
        if backend.is_some() && reply.starts_with("Can't find backend") {
            return Err(RuntimeError::Command {
                command: line,
                reply,
            });
        }
        parse_servers_state(&reply).map_err(|source| RuntimeError::Parse {
            command: line,
            source,
        })
    }

    /// `show servers state <backend>` for several backends in one round trip (pipelined like
    /// [`Self::batch`]), so a reconcile of many backends costs one exchange, not one each.
    /// A backend HAProxy does not have yields no rows.
    pub async fn show_servers_state_of(
        &self,
        backends: &[&str],
    ) -> Result<Vec<ServerStateRow>, RuntimeError> {
        self.show_each("show servers state", backends, parse_servers_state)
            .await
    }

    /// `show servers conn <backend>` for several backends in one round trip.
    pub async fn show_servers_conn_of(
        &self,
        backends: &[&str],
    ) -> Result<Vec<ServerConnRow>, RuntimeError> {
        self.show_each("show servers conn", backends, parse_servers_conn)
            .await
    }

    /// `<show> <backend>` for each backend, pipelined, every reply parsed into rows; backends
    /// HAProxy does not know yield none.
    async fn show_each<T>(
        &self,
        show: &str,
        backends: &[&str],
        parse: fn(&str) -> Result<Vec<T>, ParseError>,
    ) -> Result<Vec<T>, RuntimeError> {
        let mut commands = Vec::with_capacity(backends.len());
        for backend in backends {
            commands.push(format!("{show} {}", validate_name("backend", backend)?));
        }
        if commands.is_empty() {
            return Ok(Vec::new());
        }
        let replies = self.exchange(&commands).await?;
        let mut rows = Vec::new();
        for (command, reply) in commands.into_iter().zip(replies) {
            if reply.starts_with("Can't find backend") {
                continue;
            }
            rows.extend(parse(&reply).map_err(|source| RuntimeError::Parse { command, source })?);
        }
        Ok(rows)
    }

    /// The raw `show servers state` text, newline-terminated: the server-state file format.
    pub async fn show_servers_state_text(&self) -> Result<String, RuntimeError> {
        let reply = self.command("show servers state").await?;
        // Validate before anyone writes it to the state file HAProxy will load.
        parse_servers_state(&reply).map_err(|source| RuntimeError::Parse {
            command: "show servers state".to_owned(),
            source,
        })?;
        Ok(as_state_file(reply))
    }

    /// `show stat`: every frontend, backend, server and listener.
    pub async fn show_stat(&self) -> Result<Vec<StatRow>, RuntimeError> {
        self.parsed("show stat", parse_show_stat).await
    }

    /// `show stat <backend> -1 -1`: one proxy's rows only.
    pub async fn show_stat_for(&self, proxy: &str) -> Result<Vec<StatRow>, RuntimeError> {
        let line = format!("show stat {} -1 -1", validate_name("proxy", proxy)?);
        self.parsed(&line, parse_show_stat).await
    }

    /// `show servers conn <backend>`: `used_cur` must reach 0 before a drained server goes.
    pub async fn show_servers_conn(
        &self,
        backend: &str,
    ) -> Result<Vec<ServerConnRow>, RuntimeError> {
        let line = format!("show servers conn {}", validate_name("backend", backend)?);
        let reply = self.command(&line).await?;
        if reply.starts_with("Can't find backend") {
            return Err(RuntimeError::Command {
                command: line,
                reply,
            });
        }
        parse_servers_conn(&reply).map_err(|source| RuntimeError::Parse {
            command: line,
            source,
        })
    }

    /// `show info`; its `pid()` says which worker answered.
    pub async fn show_info(&self) -> Result<ShowInfo, RuntimeError> {
        self.parsed("show info", parse_show_info).await
    }

    /// Drops the connection; the next command reconnects (to whichever worker owns the socket).
    pub async fn disconnect(&self) {
        *self.session.lock().await = None;
    }

    /// Drops the connections of this client and of every separate one (an open connection
    /// keeps a stopping worker alive; a restarted HAProxy is a new process).
    pub async fn disconnect_all(&self) {
        self.group.generation.fetch_add(1, Ordering::AcqRel);
        let sessions: Vec<Arc<Mutex<Option<Session>>>> = self
            .group
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter_map(Weak::upgrade)
            .collect();
        for session in sessions {
            *session.lock().await = None;
        }
    }

    /// Takes the connection for the duration of a reload: other callers (of this client
    /// and of its separate ones) wait, so no command reaches the old worker after its state
    /// was saved. Dropping the lock disconnects them all.
    pub(crate) async fn lock_for_reload(&self) -> ReloadLock {
        let gate = self.group.gate.clone().write_owned().await;
        ReloadLock {
            client: self.clone(),
            session: self.session.clone().lock_owned().await,
            _gate: gate,
        }
    }

    async fn parsed<T>(
        &self,
        line: &str,
        parse: fn(&str) -> Result<T, ParseError>,
    ) -> Result<T, RuntimeError> {
        let reply = self.command(line).await?;
        parse(&reply).map_err(|source| RuntimeError::Parse {
            command: line.to_owned(),
            source,
        })
    }
}

/// Exclusive use of the admin connection while HAProxy reloads.
pub(crate) struct ReloadLock {
    client: RuntimeClient,
    session: OwnedMutexGuard<Option<Session>>,
    /// Released after the generation is bumped (fields drop after `Drop::drop`).
    _gate: OwnedRwLockWriteGuard<()>,
}

impl ReloadLock {
    /// The server-state file contents (`show servers state`), validated.
    pub(crate) async fn show_servers_state_text(&mut self) -> Result<String, RuntimeError> {
        let line = "show servers state".to_owned();
        let mut replies = exchange(
            &mut self.session,
            &self.client.path,
            self.client.timeout,
            std::slice::from_ref(&line),
        )
        .await?;
        let reply = replies.pop().unwrap_or_default();
        parse_servers_state(&reply).map_err(|source| RuntimeError::Parse {
            command: line,
            source,
        })?;
        Ok(as_state_file(reply))
    }

    /// `show info` through the held connection (after `disconnect`, a fresh one).
    pub(crate) async fn show_info(&mut self) -> Result<ShowInfo, RuntimeError> {
        let line = "show info".to_owned();
        let mut replies = exchange(
            &mut self.session,
            &self.client.path,
            self.client.timeout,
            std::slice::from_ref(&line),
        )
        .await?;
        parse_show_info(&replies.pop().unwrap_or_default()).map_err(|source| RuntimeError::Parse {
            command: line,
            source,
        })
    }

    /// Forgets the connection (to the old worker); the next exchange reconnects.
    pub(crate) fn disconnect(&mut self) {
        *self.session = None;
    }
}

impl Drop for ReloadLock {
    fn drop(&mut self) {
        *self.session = None;
        // Every client reconnects (to the new worker) before its next exchange.
        self.client.group.generation.fetch_add(1, Ordering::AcqRel);
    }
}

/// Replies come without their final newline; HAProxy's state-file loader rejects a last line
/// without one ("corrupted global server state file").
fn as_state_file(mut reply: String) -> String {
    reply.push('\n');
    reply
}

/// Cuts single-command lines into writes of at most `MAX_WRITE_BYTES` (a longer line goes
/// alone), each newline-terminated, with the number of replies it asks for.
fn writes_of(lines: &[String]) -> Vec<(String, usize)> {
    let mut writes: Vec<(String, usize)> = Vec::new();
    for line in lines {
        match writes.last_mut() {
            Some((write, count)) if write.len() + line.len() < MAX_WRITE_BYTES => {
                write.push_str(line);
                write.push('\n');
                *count += 1;
            }
            _ => writes.push((format!("{line}\n"), 1)),
        }
    }
    writes
}

/// Sends `lines` (one command each) and collects one reply per line, connecting first if
/// needed. A connection that fails before any reply byte arrives is replaced and the request
/// retried once: that is a connection HAProxy closed while idle, and it ran nothing.
async fn exchange(
    slot: &mut Option<Session>,
    path: &Path,
    timeout: Duration,
    lines: &[String],
) -> Result<Vec<String>, RuntimeError> {
    let writes = writes_of(lines);
    let attempt = async {
        let mut texts = Vec::with_capacity(lines.len());
        let mut retried = false;
        for (request, replies) in &writes {
            loop {
                let fresh = slot.is_none();
                let session = match slot {
                    Some(session) => session,
                    None => slot.insert(Session::open(path).await.map_err(|source| {
                        RuntimeError::Connect {
                            path: path.to_owned(),
                            source,
                        }
                    })?),
                };
                match session.exchange(request.as_bytes(), *replies).await {
                    Ok(replies) => {
                        texts.extend(replies);
                        break;
                    }
                    Err(err) => {
                        *slot = None;
                        // Only before the first reply: later writes follow commands that ran.
                        if err.nothing_received && !fresh && !retried && texts.is_empty() {
                            tracing::debug!(error = %err.source, "admin connection went stale, reconnecting");
                            retried = true;
                            continue;
                        }
                        return Err(RuntimeError::Io(err.source));
                    }
                }
            }
        }
        Ok(texts)
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(result) => result,
        Err(_) => {
            // The reply may still be on its way: this connection is out of step for good.
            *slot = None;
            Err(RuntimeError::Timeout(timeout))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_go_one_command_per_line_in_bounded_writes() {
        let lines = vec!["x".repeat(3000); 5];
        let writes = writes_of(&lines);
        assert_eq!(writes.len(), 3);
        assert!(
            writes
                .iter()
                .all(|(write, _)| write.len() <= MAX_WRITE_BYTES)
        );
        for (write, replies) in &writes {
            assert_eq!(write.matches('\n').count(), *replies);
            assert!(!write.contains(';'));
        }
        assert_eq!(writes.iter().map(|(_, replies)| replies).sum::<usize>(), 5);
        assert!(writes_of(&[]).is_empty());
    }

    #[tokio::test]
    async fn invalid_arguments_never_reach_the_socket() {
        // No socket exists: an argument error must come before any connection attempt.
        let client = RuntimeClient::new("/nonexistent/admin.sock");
        let err = client
            .set_server_state("be", "s;del", AdminState::Ready)
            .await;
        assert!(
            matches!(err, Err(RuntimeError::InvalidArgument { .. })),
            "{err:?}"
        );
        let err = client.command("show stat;show info").await;
        assert!(
            matches!(err, Err(RuntimeError::InvalidArgument { .. })),
            "{err:?}"
        );
        let err = client.show_servers_conn("be\nshutdown").await;
        assert!(
            matches!(err, Err(RuntimeError::InvalidArgument { .. })),
            "{err:?}"
        );
        let err = client.show_info().await;
        assert!(matches!(err, Err(RuntimeError::Connect { .. })), "{err:?}");
    }
}
