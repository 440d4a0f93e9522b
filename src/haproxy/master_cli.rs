//! One-shot client for the master CLI (`haproxy -S <path>`): connect, send one command,
//! half-close, read to EOF. The master only runs a non-interactive command after the client
//! half-closes (`shutdown(SHUT_WR)`); without it the exchange hangs.

use super::stat::{ParseError, ProcList, parse_show_proc};
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// Upper bound for one exchange; the master answers in microseconds when it is up.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(5);
/// `show proc` is a few lines; anything this large is not the master talking.
const MAX_REPLY_BYTES: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum MasterCliError {
    /// Nobody accepts on the socket. While the master re-executes for a reload this is
    /// expected (`ECONNREFUSED`) and callers retry.
    #[error("cannot connect to the haproxy master socket {path}: {source}")]
    Connect { path: PathBuf, source: io::Error },
    #[error("master socket i/o: {0}")]
    Io(#[from] io::Error),
    #[error("master socket did not answer within {0:?}")]
    Timeout(Duration),
    #[error("invalid master command {0:?}")]
    InvalidCommand(String),
    #[error(transparent)]
    Parse(#[from] ParseError),
}

/// Sends `command` and returns everything the master wrote before closing.
pub async fn send(socket: &Path, command: &str) -> Result<String, MasterCliError> {
    send_with_timeout(socket, command, EXCHANGE_TIMEOUT).await
}

#[allow(
    clippy::disallowed_methods,
    reason = "the supervisor's master CLI client opens the master socket"
)]
async fn send_with_timeout(
    socket: &Path,
    command: &str,
    timeout: Duration,
) -> Result<String, MasterCliError> {
    if command.is_empty() || command.chars().any(|c| c.is_control() || c == ';') {
        return Err(MasterCliError::InvalidCommand(command.to_owned()));
    }
    let exchange = async {
        let mut stream =
            UnixStream::connect(socket)
                .await
                .map_err(|source| MasterCliError::Connect {
                    path: socket.to_owned(),
                    source,
                })?;
        stream.write_all(format!("{command}\n").as_bytes()).await?;
        stream.shutdown().await?;
        let mut reply = Vec::new();
        (&mut stream)
            .take(MAX_REPLY_BYTES)
            .read_to_end(&mut reply)
            .await?;
        Ok(String::from_utf8_lossy(&reply).into_owned())
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| MasterCliError::Timeout(timeout))?
}

pub async fn show_proc(socket: &Path) -> Result<ProcList, MasterCliError> {
    let reply = send(socket, "show proc").await?;
    Ok(parse_show_proc(&reply)?)
}

/// What the master said to `reload`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadAnswer {
    /// 2.6: nothing (the master re-executes and closes); the outcome shows only in a later
    /// `show proc` and on its stderr.
    Sent,
    /// 2.7+: the reload is synchronous and answers `Success=1|0`, then `--` and the new
    /// worker's startup logs.
    Finished { success: bool, startup_logs: String },
    /// 2.7+: a new worker is still starting from an earlier reload; nothing was done.
    Busy,
}

/// Asks the master to re-execute with the config file on disk, waiting at most `timeout`
/// for its answer (from 2.7 the answer comes once the new worker has loaded, which takes
/// seconds with tens of thousands of servers).
pub async fn reload(socket: &Path, timeout: Duration) -> Result<ReloadAnswer, MasterCliError> {
    match send_with_timeout(socket, "reload", timeout).await {
        Ok(reply) => Ok(parse_reload_answer(&reply)),
        // The master may drop the connection abruptly as it re-executes: the request was
        // received, which is all 2.6 promises.
        Err(MasterCliError::Io(err))
            if matches!(
                err.kind(),
                io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
            ) =>
        {
            Ok(ReloadAnswer::Sent)
        }
        Err(err) => Err(err),
    }
}

fn parse_reload_answer(reply: &str) -> ReloadAnswer {
    let mut lines = reply.lines();
    let success = match lines.next().map(str::trim) {
        Some("Success=1") => true,
        Some("Success=0") => false,
        _ => return ReloadAnswer::Sent,
    };
    let startup_logs: String = lines
        .skip_while(|line| line.trim() == "--")
        .collect::<Vec<_>>()
        .join("\n");
    if !success && startup_logs.contains("Another reload is still in progress") {
        return ReloadAnswer::Busy;
    }
    ReloadAnswer::Finished {
        success,
        startup_logs,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::UnixListener;

    /// A fake master: records the command once the client half-closes, then answers.
    async fn fake_master(path: &Path, reply: &'static str) -> tokio::task::JoinHandle<String> {
        let listener = UnixListener::bind(path).unwrap();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut command = String::new();
            // read_to_string only returns after the client's SHUT_WR.
            stream.read_to_string(&mut command).await.unwrap();
            stream.write_all(reply.as_bytes()).await.unwrap();
            command
        })
    }

    #[tokio::test]
    async fn half_closes_then_reads_the_whole_reply() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.sock");
        let server = fake_master(
            &path,
            "#<PID> <type> <reloads> <uptime> <version>\n7 master 2 [failed: 1] 0d00h00m05s 2.6\n# workers\n8 worker 0 0d00h00m01s 2.6\n",
        )
        .await;
        let procs = show_proc(&path).await.unwrap();
        assert_eq!(server.await.unwrap(), "show proc\n");
        assert_eq!((procs.master.pid, procs.master.failed_reloads), (7, 1));
        assert_eq!(procs.all_worker_pids(), vec![8]);
    }

    #[test]
    fn reload_answers_of_every_version() {
        assert_eq!(parse_reload_answer(""), ReloadAnswer::Sent);
        assert_eq!(
            parse_reload_answer("Success=1\n--\n[NOTICE]   (7) : Loading success.\n"),
            ReloadAnswer::Finished {
                success: true,
                startup_logs: "[NOTICE]   (7) : Loading success.".to_owned()
            }
        );
        assert_eq!(
            parse_reload_answer(
                "Success=0\n--\n[ALERT]    (9) : config : Proxy 'f': unable to find required default_backend: 'nope'.\n"
            ),
            ReloadAnswer::Finished {
                success: false,
                startup_logs: "[ALERT]    (9) : config : Proxy 'f': unable to find required default_backend: 'nope'.".to_owned()
            }
        );
        assert_eq!(
            parse_reload_answer("Success=1\n"),
            ReloadAnswer::Finished {
                success: true,
                startup_logs: String::new()
            }
        );
        assert_eq!(
            parse_reload_answer("Success=0\n--\nAnother reload is still in progress.\n"),
            ReloadAnswer::Busy
        );
    }

    #[tokio::test]
    async fn refused_and_invalid() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("absent.sock");
        assert!(matches!(
            send(&path, "show proc").await,
            Err(MasterCliError::Connect { .. })
        ));
        assert!(matches!(
            send(&path, "show proc\nreload").await,
            Err(MasterCliError::InvalidCommand(_))
        ));
        assert!(matches!(
            send(&path, "show proc; reload").await,
            Err(MasterCliError::InvalidCommand(_))
        ));
    }
}
