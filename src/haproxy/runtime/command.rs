//! Typed stats-socket commands for one server: how each renders to a CLI line (after checking
//! every argument, so nothing can smuggle a second command in), and which reply means success.

use super::RuntimeError;
use crate::haproxy::stat::AdminState;
use std::fmt::Write as _;
use std::net::IpAddr;

/// Settings spelled out on every `add server`: dynamic servers do NOT inherit
/// `default-server`, so whatever the backend's defaults say must be repeated here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerOptions {
    /// Configure a health check (it only runs after `enable health`).
    pub check: bool,
    /// Milliseconds between checks.
    pub inter_ms: u32,
    /// Consecutive successful checks to go UP.
    pub rise: u32,
    /// Consecutive failed checks to go DOWN.
    pub fall: u32,
    /// Explicit server id. Needed in `random` and `hash-type consistent` backends, where
    /// servers added without one can get no traffic (HAProxy #3413, unfixed in 2.6).
    pub id: Option<u32>,
    /// 0..=256.
    pub weight: u16,
    /// Per-server connection limit; `None` for unlimited.
    pub maxconn: Option<u32>,
}

impl Default for ServerOptions {
    /// HAProxy's compiled-in server defaults.
    fn default() -> Self {
        ServerOptions {
            check: true,
            inter_ms: 2000,
            rise: 2,
            fall: 3,
            id: None,
            weight: 1,
            maxconn: None,
        }
    }
}

/// One runtime operation on one server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerCommand {
    /// `add server`. The server starts in maintenance with checks off. Never uses the
    /// `enabled` keyword: in 2.6.12 it leaves the backend's active-server count wrong
    /// (HAProxy #2497); follow with `SetState(Ready)` instead.
    Add {
        backend: String,
        server: String,
        addr: IpAddr,
        port: u16,
        options: ServerOptions,
    },
    SetState {
        backend: String,
        server: String,
        state: AdminState,
    },
    /// Starts the health check (`add server ... check` alone does not run it).
    EnableHealth {
        backend: String,
        server: String,
    },
    DisableHealth {
        backend: String,
        server: String,
    },
    /// `set server <be>/<srv> weight <n>` (absolute; `%` would be relative to the initial weight).
    SetWeight {
        backend: String,
        server: String,
        weight: u16,
    },
    /// `del server`: only succeeds in maintenance and with no connection attached.
    Delete {
        backend: String,
        server: String,
    },
    /// `shutdown sessions server`: closes every connection of the server (a leaver past its
    /// drain timeout), so that its `del server` can go through.
    ShutdownSessions {
        backend: String,
        server: String,
    },
    /// `enable dynamic-cookie backend`, sent right after `server` was added to a backend with
    /// a sticky cookie: HAProxy 2.6 gives a server added at runtime no cookie value until this
    /// is sent again (3.x does it by itself; the command is harmless there).
    EnableDynamicCookie {
        backend: String,
        server: String,
    },
}

/// Why HAProxy refused a command, recognised from its reply text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CommandFailure {
    NoSuchBackend,
    NoSuchServer,
    /// `add server` with a name the backend already has.
    AlreadyExists,
    /// `del server` on a server not in maintenance.
    NotInMaintenance,
    /// `del server` with requests (or idle connections) still attached.
    StillHasConnections,
    /// `add server` on a backend with a static balance algorithm.
    BackendNotDynamic,
    UnknownCommand,
    PermissionDenied,
    Other,
}

impl CommandFailure {
    pub fn classify(reply: &str) -> CommandFailure {
        const PATTERNS: &[(&str, CommandFailure)] = &[
            ("No such backend", CommandFailure::NoSuchBackend),
            ("Can't find backend", CommandFailure::NoSuchBackend),
            ("No such server", CommandFailure::NoSuchServer),
            ("Already exists a server", CommandFailure::AlreadyExists),
            (
                "Only servers in maintenance mode",
                CommandFailure::NotInMaintenance,
            ),
            (
                "still has connections attached",
                CommandFailure::StillHasConnections,
            ),
            // 2.6-3.2: "Backend must use a dynamic load balancing to support dynamic servers."
            (
                "must use a dynamic load balancing",
                CommandFailure::BackendNotDynamic,
            ),
            // 3.4: "Backend does not support dynamic servers : backend '<name>' uses a non
            // dynamic load balancing method."
            (
                "Backend does not support dynamic servers",
                CommandFailure::BackendNotDynamic,
            ),
            ("Unknown command", CommandFailure::UnknownCommand),
            ("Permission denied", CommandFailure::PermissionDenied),
        ];
        PATTERNS
            .iter()
            .find(|(pattern, _)| reply.contains(pattern))
            .map(|(_, failure)| *failure)
            .unwrap_or(CommandFailure::Other)
    }
}

impl ServerCommand {
    pub fn backend(&self) -> &str {
        match self {
            ServerCommand::Add { backend, .. }
            | ServerCommand::SetState { backend, .. }
            | ServerCommand::EnableHealth { backend, .. }
            | ServerCommand::DisableHealth { backend, .. }
            | ServerCommand::SetWeight { backend, .. }
            | ServerCommand::Delete { backend, .. }
            | ServerCommand::ShutdownSessions { backend, .. }
            | ServerCommand::EnableDynamicCookie { backend, .. } => backend,
        }
    }

    pub fn server(&self) -> &str {
        match self {
            ServerCommand::Add { server, .. }
            | ServerCommand::SetState { server, .. }
            | ServerCommand::EnableHealth { server, .. }
            | ServerCommand::DisableHealth { server, .. }
            | ServerCommand::SetWeight { server, .. }
            | ServerCommand::Delete { server, .. }
            | ServerCommand::ShutdownSessions { server, .. }
            | ServerCommand::EnableDynamicCookie { server, .. } => server,
        }
    }

    /// The CLI line, after validating every argument.
    pub fn render(&self) -> Result<String, RuntimeError> {
        let target = format!(
            "{}/{}",
            validate_name("backend", self.backend())?,
            validate_name("server", self.server())?
        );
        Ok(match self {
            ServerCommand::Add {
                addr,
                port,
                options,
                ..
            } => render_add(&target, *addr, *port, options)?,
            ServerCommand::SetState { state, .. } => {
                format!("set server {target} state {}", state.keyword())
            }
            ServerCommand::EnableHealth { .. } => format!("enable health {target}"),
            ServerCommand::DisableHealth { .. } => format!("disable health {target}"),
            ServerCommand::SetWeight { weight, .. } => {
                validate_weight(*weight)?;
                format!("set server {target} weight {weight}")
            }
            ServerCommand::Delete { .. } => format!("del server {target}"),
            ServerCommand::ShutdownSessions { .. } => format!("shutdown sessions server {target}"),
            ServerCommand::EnableDynamicCookie { backend, .. } => {
                format!("enable dynamic-cookie backend {backend}")
            }
        })
    }

    /// Whether `reply` is this command's success answer. HAProxy prints nothing for most
    /// successful commands and a sentence for failures.
    pub fn accepts(&self, reply: &str) -> bool {
        let reply = reply.trim();
        match self {
            ServerCommand::Add { .. } => reply == "New server registered.",
            ServerCommand::Delete { .. } => reply == "Server deleted.",
            _ => reply.is_empty(),
        }
    }
}

fn render_add(
    target: &str,
    addr: IpAddr,
    port: u16,
    options: &ServerOptions,
) -> Result<String, RuntimeError> {
    let address = match addr {
        IpAddr::V4(v4) => format!("{v4}:{port}"),
        IpAddr::V6(v6) => format!("[{v6}]:{port}"),
    };
    if port == 0 {
        return Err(invalid("port", "0", "must be 1..=65535"));
    }
    validate_weight(options.weight)?;
    let mut line = format!("add server {target} {address} weight {}", options.weight);
    if options.check {
        if options.inter_ms == 0 || options.rise == 0 || options.fall == 0 {
            return Err(invalid(
                "check timing",
                &format!(
                    "inter {} rise {} fall {}",
                    options.inter_ms, options.rise, options.fall
                ),
                "inter, rise and fall must be at least 1",
            ));
        }
        let _ = write!(
            line,
            " check inter {} rise {} fall {}",
            options.inter_ms, options.rise, options.fall
        );
    }
    if let Some(id) = options.id {
        if id == 0 {
            return Err(invalid("server id", "0", "must be at least 1"));
        }
        let _ = write!(line, " id {id}");
    }
    if let Some(maxconn) = options.maxconn {
        let _ = write!(line, " maxconn {maxconn}");
    }
    Ok(line)
}

fn validate_weight(weight: u16) -> Result<(), RuntimeError> {
    if weight > 256 {
        return Err(invalid("weight", &weight.to_string(), "must be 0..=256"));
    }
    Ok(())
}

/// HAProxy's own rule for proxy and server names: letters, digits, `.`, `-`, `_`, `:`.
/// Anything else (whitespace, `;`, `/`, control characters) could split or redirect a
/// command, so it is refused before it reaches the socket.
pub fn validate_name<'a>(what: &'static str, name: &'a str) -> Result<&'a str, RuntimeError> {
    if name.is_empty() {
        return Err(invalid(what, name, "must not be empty"));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'))
    {
        return Err(invalid(
            what,
            name,
            "may only contain letters, digits, '.', '-', '_' and ':'",
        ));
    }
    Ok(name)
}

/// A raw command line must be exactly one command.
pub fn validate_line(line: &str) -> Result<&str, RuntimeError> {
    if line.trim().is_empty() {
        return Err(invalid("command", line, "must not be empty"));
    }
    if line.chars().any(|c| c.is_control() || c == ';') {
        return Err(invalid(
            "command",
            line,
            "must be one command: no ';' and no control characters",
        ));
    }
    Ok(line)
}

fn invalid(what: &'static str, value: &str, reason: &'static str) -> RuntimeError {
    RuntimeError::InvalidArgument {
        what,
        value: value.to_owned(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(backend: &str, server: &str) -> (String, String) {
        (backend.to_owned(), server.to_owned())
    }

    fn check(command: ServerCommand, expected: Option<&str>) {
        assert_eq!(command.render().ok().as_deref(), expected, "{command:?}");
    }

    fn add(
        backend: &str,
        server: &str,
        addr: &str,
        port: u16,
        options: ServerOptions,
    ) -> ServerCommand {
        let (backend, server) = target(backend, server);
        ServerCommand::Add {
            backend,
            server,
            addr: addr.parse().unwrap(),
            port,
            options,
        }
    }

    #[test]
    fn renders_add_with_every_setting_spelled_out() {
        check(
            add("be", "web-1", "127.0.0.2", 8080, ServerOptions::default()),
            Some("add server be/web-1 127.0.0.2:8080 weight 1 check inter 2000 rise 2 fall 3"),
        );
        check(
            add(
                "be_app:v1",
                "10.0.0.1_8080",
                "::1",
                80,
                ServerOptions {
                    check: false,
                    id: Some(101),
                    weight: 50,
                    maxconn: Some(100),
                    ..ServerOptions::default()
                },
            ),
            Some("add server be_app:v1/10.0.0.1_8080 [::1]:80 weight 50 id 101 maxconn 100"),
        );
        let options = |f: fn(&mut ServerOptions)| {
            let mut options = ServerOptions::default();
            f(&mut options);
            options
        };
        check(
            add("be", "s", "127.0.0.1", 0, ServerOptions::default()),
            None,
        );
        check(
            add("be", "s", "127.0.0.1", 1, options(|o| o.weight = 257)),
            None,
        );
        check(
            add("be", "s", "127.0.0.1", 1, options(|o| o.inter_ms = 0)),
            None,
        );
        check(
            add("be", "s", "127.0.0.1", 1, options(|o| o.id = Some(0))),
            None,
        );
        // Zero rise is fine when no check is configured.
        check(
            add(
                "be",
                "s",
                "127.0.0.1",
                1,
                options(|o| {
                    o.check = false;
                    o.rise = 0;
                }),
            ),
            Some("add server be/s 127.0.0.1:1 weight 1"),
        );
    }

    #[test]
    fn renders_state_health_weight_and_delete() {
        let (backend, server) = target("be", "s1");
        check(
            ServerCommand::SetState {
                backend: backend.clone(),
                server: server.clone(),
                state: AdminState::Drain,
            },
            Some("set server be/s1 state drain"),
        );
        check(
            ServerCommand::EnableHealth {
                backend: backend.clone(),
                server: server.clone(),
            },
            Some("enable health be/s1"),
        );
        check(
            ServerCommand::DisableHealth {
                backend: backend.clone(),
                server: server.clone(),
            },
            Some("disable health be/s1"),
        );
        check(
            ServerCommand::SetWeight {
                backend: backend.clone(),
                server: server.clone(),
                weight: 256,
            },
            Some("set server be/s1 weight 256"),
        );
        check(
            ServerCommand::SetWeight {
                backend: backend.clone(),
                server: server.clone(),
                weight: 300,
            },
            None,
        );
        check(
            ServerCommand::ShutdownSessions {
                backend: backend.clone(),
                server: server.clone(),
            },
            Some("shutdown sessions server be/s1"),
        );
        check(
            ServerCommand::Delete { backend, server },
            Some("del server be/s1"),
        );
    }

    #[test]
    fn refuses_names_that_could_inject() {
        for bad in [
            "", "a b", "a;b", "a\nb", "a\rb", "a/b", "a\tb", "a\0b", "é", "a#b", "a\"b",
        ] {
            check(
                ServerCommand::Delete {
                    backend: bad.to_owned(),
                    server: "s".to_owned(),
                },
                None,
            );
            check(
                ServerCommand::Delete {
                    backend: "be".to_owned(),
                    server: bad.to_owned(),
                },
                None,
            );
        }
        assert!(validate_line("show stat").is_ok());
        for bad in [
            "",
            "  ",
            "show stat; show info",
            "show stat\nshow info",
            "a\u{7f}",
        ] {
            assert!(validate_line(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn success_replies_and_failure_kinds() {
        let add = add("be", "s", "127.0.0.1", 1, ServerOptions::default());
        assert!(add.accepts("New server registered.\n"));
        assert!(!add.accepts("Already exists a server with the same name in backend."));
        let delete = ServerCommand::Delete {
            backend: "be".to_owned(),
            server: "s".to_owned(),
        };
        assert!(delete.accepts("Server deleted."));
        assert!(!delete.accepts(""));
        let ready = ServerCommand::SetState {
            backend: "be".to_owned(),
            server: "s".to_owned(),
            state: AdminState::Ready,
        };
        assert!(ready.accepts(""));
        assert!(!ready.accepts("No such server."));

        let cases = [
            ("No such backend.", CommandFailure::NoSuchBackend),
            ("Can't find backend.", CommandFailure::NoSuchBackend),
            ("No such server.", CommandFailure::NoSuchServer),
            (
                "Already exists a server with the same name in backend.",
                CommandFailure::AlreadyExists,
            ),
            (
                "Only servers in maintenance mode can be deleted.",
                CommandFailure::NotInMaintenance,
            ),
            (
                "Server still has connections attached to it, cannot remove it.",
                CommandFailure::StillHasConnections,
            ),
            (
                "Backend must use a dynamic load balancing to support dynamic servers.",
                CommandFailure::BackendNotDynamic,
            ),
            (
                "Backend does not support dynamic servers : backend 'web' uses a non dynamic load balancing method.",
                CommandFailure::BackendNotDynamic,
            ),
            (
                "Unknown command, but maybe ...",
                CommandFailure::UnknownCommand,
            ),
            (
                "invalid value 0 for argument 'inter'",
                CommandFailure::Other,
            ),
        ];
        for (reply, expected) in cases {
            assert_eq!(CommandFailure::classify(reply), expected, "{reply}");
        }
    }
}
