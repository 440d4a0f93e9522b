//! Command-line interface: argument definitions only. Every flag has a `THALASSA_*`
//! environment equivalent so containers can be configured without a shell.

use crate::auth::AuthPolicy;
use crate::http_server::ServeLimits;
use crate::registry::handle::RegistryConfig;
use crate::registry::nodes::RegistryNodes;
use crate::registry::redis_store::StoreUrl;
use crate::registry::register::RegisterOptions;
use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(
    name = "thalassa",
    version,
    about = "Service registry and HAProxy control plane"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the service registry (HTTP API on port 9000 by default).
    Registry(RegistryArgs),
    /// Keep registrations alive in a registry until stopped (then delete them).
    Register(RegisterArgs),
    /// Run the aqueduct: the REST API and UI that drive a local HAProxy.
    Aqueduct(AqueductArgs),
    /// Run registry, aqueduct and HAProxy together in one process.
    Up(UpArgs),
    /// Import the original Thalassa Aqueduct's `--persistence` file into
    /// `<data-dir>/aqueduct.json`, checking every item with `haproxy -c` and reporting what
    /// was imported, converted or refused. Exits 3 when some items were refused.
    ImportOriginal(ImportOriginalArgs),
}

#[derive(Debug, Clone, Args)]
pub struct ImportOriginalArgs {
    /// The original aqueduct's persistence file (what its `--persistence` named).
    pub file: PathBuf,
    /// The data dir of the aqueduct that will run the imported config.
    #[arg(long, env = "THALASSA_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// The HAProxy binary that checks each item (`haproxy -c`).
    #[arg(long, env = "THALASSA_HAPROXY_BIN", default_value = "haproxy")]
    pub haproxy_bin: PathBuf,
    /// Report only: write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Replace an `aqueduct.json` that already holds frontends or backends.
    #[arg(long)]
    pub force: bool,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Args)]
pub struct RegistryArgs {
    /// Address of the registry HTTP API.
    #[arg(long, env = "THALASSA_LISTEN", default_value = "127.0.0.1:9000")]
    pub listen: SocketAddr,
    /// Directory for the registrations snapshot.
    #[arg(long, env = "THALASSA_DATA_DIR", default_value = "./data/registry")]
    pub data_dir: PathBuf,
    /// Expiry used when a POST gives no (or a zero) `secondsToExpire`.
    #[arg(long, env = "THALASSA_DEFAULT_SECS_TO_EXPIRE", default_value_t = 10)]
    pub default_secs_to_expire: u64,
    /// Most registrations held at once; a new one beyond it is refused (429), refreshes of
    /// existing ones still work.
    #[arg(long, env = "THALASSA_MAX_REGISTRATIONS", default_value_t = DEFAULT_MAX_REGISTRATIONS)]
    pub max_registrations: usize,
    /// A shared store for a cluster of registry nodes: `redis://HOST:PORT[/DB]` or
    /// `redis+sentinel://H1:P1,H2:P2/MASTER[/DB]` (Redis 7 or Valkey). Without it the
    /// registry keeps its registrations itself (snapshot file in --data-dir).
    #[arg(long, env = "THALASSA_STORE", value_parser = parse_store_url)]
    pub store: Option<StoreUrl>,
    /// Also publish changes on an axon 1.0 PUB socket at this address, as the original
    /// registry did on port 5001, for subscribers of the original stack (its Node client's
    /// `subscribe()`, an original aqueduct). Off by default; it has no authentication.
    #[arg(long, env = "THALASSA_AXON_LISTEN")]
    pub axon_listen: Option<SocketAddr>,
    #[command(flatten)]
    pub auth: AuthArgs,
    #[command(flatten)]
    pub http: HttpLimitsArgs,
}

fn parse_store_url(text: &str) -> Result<StoreUrl, String> {
    StoreUrl::parse(text).map_err(|err| err.reason)
}

/// Timeouts of an HTTP listener (see `http_server`).
#[derive(Debug, Clone, Args)]
pub struct HttpLimitsArgs {
    /// Longest a request may take, body upload included (503 after it); never applies to
    /// the `/events` streams.
    #[arg(long, env = "THALASSA_REQUEST_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub request_timeout: Duration,
    /// Longest a client may take to send a request's headers before the connection closes.
    #[arg(long, env = "THALASSA_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub header_read_timeout: Duration,
}

impl Default for HttpLimitsArgs {
    fn default() -> Self {
        HttpLimitsArgs {
            request_timeout: Duration::from_secs(30),
            header_read_timeout: Duration::from_secs(10),
        }
    }
}

pub use crate::aqueduct::routes::DEFAULT_MAX_MEMBERS;
pub use crate::registry::handle::DEFAULT_MAX_REGISTRATIONS;

impl RegistryArgs {
    /// The registry's options from its flags.
    pub fn registry_config(&self) -> RegistryConfig {
        RegistryConfig {
            default_ttl: Duration::from_secs(self.default_secs_to_expire.max(1)),
            data_dir: Some(self.data_dir.clone()),
            max_registrations: self.max_registrations,
            ..RegistryConfig::default()
        }
    }
}

impl HttpLimitsArgs {
    pub fn serve_limits(&self) -> ServeLimits {
        ServeLimits {
            header_read_timeout: self.header_read_timeout,
            request_timeout: self.request_timeout,
            ..ServeLimits::default()
        }
    }
}

impl AuthArgs {
    /// Reads the tokens from the flags, or from the files they name.
    pub fn policy(&self) -> Result<AuthPolicy, String> {
        AuthPolicy::from_sources(
            (&self.admin_token, &self.admin_token_file),
            (&self.read_token, &self.read_token_file),
        )
    }
}

impl From<RegisterArgs> for RegisterOptions {
    fn from(args: RegisterArgs) -> Self {
        RegisterOptions {
            services: args.services,
            registry: args.registry,
            host: args.host,
            secs_to_expire: args.secs_to_expire,
            every: args.every,
            token: args.token,
        }
    }
}

/// Bearer tokens guarding an HTTP API (see `auth`). Without `--admin-token` the API is open,
/// as the original was.
#[derive(Debug, Clone, Default, Args)]
pub struct AuthArgs {
    /// Token required (as `Authorization: Bearer ...`) for writes: PUT, POST, DELETE.
    #[arg(long, env = "THALASSA_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// File holding the admin token (a container secret); its surrounding whitespace is ignored.
    #[arg(
        long,
        env = "THALASSA_ADMIN_TOKEN_FILE",
        conflicts_with = "admin_token"
    )]
    pub admin_token_file: Option<PathBuf>,
    /// Token required for reads (GET): the read or the admin token is accepted. Without it
    /// reads stay open.
    #[arg(long, env = "THALASSA_READ_TOKEN", hide_env_values = true)]
    pub read_token: Option<String>,
    /// File holding the read token.
    #[arg(long, env = "THALASSA_READ_TOKEN_FILE", conflicts_with = "read_token")]
    pub read_token_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct RegisterArgs {
    /// Registrations as `NAME@VERSION:PORT`, comma separated.
    #[arg(env = "THALASSA_REGISTER", value_delimiter = ',', required = true)]
    pub services: Vec<String>,
    /// Base URL of the registry, or of several nodes of one registry cluster separated by
    /// commas: each heartbeat goes to the node in use, and at once to the next one when it
    /// fails (no answer, a timeout, a 5xx).
    #[arg(
        long,
        env = "THALASSA_REGISTRY",
        default_value = "http://127.0.0.1:9000",
        value_parser = RegistryNodes::parse
    )]
    pub registry: RegistryNodes,
    /// Address to register (default: this machine's first non-loopback IPv4).
    #[arg(long, env = "THALASSA_HOST")]
    pub host: Option<String>,
    /// Expiry sent with every heartbeat, in seconds.
    #[arg(long, env = "THALASSA_SECS_TO_EXPIRE", default_value_t = 60)]
    pub secs_to_expire: u64,
    /// Heartbeat period, e.g. `20s`, `500ms`, `1m`.
    #[arg(long, env = "THALASSA_EVERY", default_value = "20s", value_parser = parse_duration)]
    pub every: Duration,
    /// Bearer token sent to the registry (its admin token); falls back to
    /// `THALASSA_ADMIN_TOKEN`.
    #[arg(long, env = "THALASSA_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct AqueductArgs {
    /// Address of the aqueduct API and UI.
    #[arg(long, env = "THALASSA_LISTEN", default_value = "127.0.0.1:10000")]
    pub listen: SocketAddr,
    /// Base URL of the registry to follow, or of several nodes of one registry cluster
    /// separated by commas: the aqueduct follows one node and, when its feed ends, fails or
    /// stays silent, resumes on the next.
    #[arg(
        long,
        env = "THALASSA_REGISTRY",
        default_value = "http://127.0.0.1:9000",
        value_parser = RegistryNodes::parse
    )]
    pub registry: RegistryNodes,
    /// Bearer token sent to the registry: its read token is enough to follow it, its admin
    /// token also lets this aqueduct announce itself there.
    #[arg(long, env = "THALASSA_REGISTRY_TOKEN", hide_env_values = true)]
    pub registry_token: Option<String>,
    /// The fleet's shared store, `redis://HOST:PORT[/DB]` or
    /// `redis+sentinel://H1:P1,H2:P2/MASTER[/DB]` (the registry cluster's store will do):
    /// frontends and backends live there, every aqueduct on it applies them to its own
    /// HAProxy, and `GET /fleet` shows what each node runs. Without it this aqueduct works
    /// alone on `<data-dir>/aqueduct.json`.
    #[arg(long, env = "THALASSA_AQUEDUCT_STORE", value_parser = parse_store_url)]
    pub store: Option<StoreUrl>,
    /// This node's name in the fleet (default: the host name). Letters, digits, `.`, `_`,
    /// `:` and `-`, at most 64.
    #[arg(long, env = "THALASSA_NODE_ID", value_parser = parse_node_id)]
    pub node_id: Option<String>,
    /// The original aqueduct's persistence file, imported (as `thalassa import-original`
    /// does) when the data dir has no `aqueduct.json` yet; ignored, with a warning, when it
    /// has one. Refused items are logged and left out.
    #[arg(long, env = "THALASSA_IMPORT_ORIGINAL", conflicts_with = "store")]
    pub import_original: Option<PathBuf>,
    #[command(flatten)]
    pub common: AqueductCommon,
}

/// Parses a fleet node id.
pub fn parse_node_id(text: &str) -> Result<String, String> {
    let fits = !text.is_empty()
        && text.len() <= 64
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-'));
    if fits {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "{text:?}: a node id is 1 to 64 letters, digits, '.', '_', ':' or '-'"
        ))
    }
}

#[derive(Debug, Clone, Args)]
pub struct UpArgs {
    /// Address of the registry HTTP API.
    #[arg(
        long,
        env = "THALASSA_REGISTRY_LISTEN",
        default_value = "127.0.0.1:9000"
    )]
    pub registry_listen: SocketAddr,
    /// Address of the aqueduct API and UI.
    #[arg(long, env = "THALASSA_LISTEN", default_value = "127.0.0.1:10000")]
    pub listen: SocketAddr,
    /// Expiry used when a POST gives no (or a zero) `secondsToExpire`.
    #[arg(long, env = "THALASSA_DEFAULT_SECS_TO_EXPIRE", default_value_t = 10)]
    pub default_secs_to_expire: u64,
    /// Most registrations held at once (see `thalassa registry --help`).
    #[arg(long, env = "THALASSA_MAX_REGISTRATIONS", default_value_t = DEFAULT_MAX_REGISTRATIONS)]
    pub max_registrations: usize,
    /// Publish the registry's changes on an axon PUB socket too (see `thalassa registry
    /// --help`); off by default.
    #[arg(long, env = "THALASSA_AXON_LISTEN")]
    pub axon_listen: Option<SocketAddr>,
    /// The same tokens guard the registry and the aqueduct.
    #[command(flatten)]
    pub common: AqueductCommon,
}

/// Settings shared by `aqueduct` and `up`.
#[derive(Debug, Clone, Args)]
pub struct AqueductCommon {
    /// A free-form label added to this aqueduct's own registration meta (`meta.label`), as
    /// the original's `--label` did.
    #[arg(long, env = "THALASSA_LABEL")]
    pub label: Option<String>,
    /// Directory for state, the rendered haproxy.cfg and HAProxy's sockets.
    #[arg(long, env = "THALASSA_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// The HAProxy binary to run.
    #[arg(long, env = "THALASSA_HAPROXY_BIN", default_value = "haproxy")]
    pub haproxy_bin: PathBuf,
    /// Stop HAProxy when this process stops. Without it a stop (SIGTERM, SIGINT) leaves
    /// HAProxy serving, and the next start on the same data directory takes it over without
    /// dropping a connection: a restart or an upgrade of the control plane drops nothing.
    #[arg(long, env = "THALASSA_STOP_HAPROXY")]
    pub stop_haproxy: bool,
    /// HAProxy is run by something else on `<data-dir>/haproxy` (in compose: its own
    /// container, started as `haproxy -W -S <data-dir>/haproxy/master.sock -f
    /// <data-dir>/haproxy/haproxy.cfg` once the config exists): attach to its master and admin
    /// sockets, never start or stop it. Recreating the aqueduct leaves it serving.
    #[arg(long, env = "THALASSA_HAPROXY_EXTERNAL")]
    pub haproxy_external: bool,
    /// How long a leaving member may keep its connections before it is removed anyway.
    #[arg(long, env = "THALASSA_DRAIN_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub drain_timeout: Duration,
    /// How membership changes reach HAProxy: `runtime` (live, never reloads) or `reload`
    /// (re-render and reload on every change, as the original did; a benchmark baseline).
    #[arg(long, env = "THALASSA_MEMBERSHIP", default_value = "runtime", value_parser = ["runtime", "reload"])]
    pub membership: String,
    /// With `--membership reload`: wait this long after a change for more (0 = reload at once).
    #[arg(long, env = "THALASSA_RELOAD_DEBOUNCE", default_value = "2s", value_parser = parse_duration)]
    pub reload_debounce: Duration,
    /// Address of HAProxy's own stats page (`listen stats`), e.g. `*:1988`; off when empty.
    #[arg(long, env = "THALASSA_HAPROXY_STATS_BIND", default_value = "")]
    pub haproxy_stats_bind: String,
    /// Where HAProxy listens for frontends that bind a wildcard (`*:80`, `:80`,
    /// `0.0.0.0:80`), e.g. several aqueducts of a fleet on one host, each on its own
    /// address. Explicit bind addresses are kept. Unset: every bind as written.
    #[arg(long, env = "THALASSA_BIND_ADDRESS")]
    pub bind_address: Option<std::net::IpAddr>,
    /// Mass-expiry brake: when more than this share (0-1) of a dynamic backend's members
    /// expire within `--expiry-brake-window`, the expired ones stay in service and the backend
    /// is marked degraded until they return or an operator confirms. 1 disables the brake.
    #[arg(long, env = "THALASSA_EXPIRY_BRAKE_THRESHOLD", default_value_t = 0.5, value_parser = parse_share)]
    pub expiry_brake_threshold: f64,
    /// How far back the mass-expiry brake counts expiries and members.
    #[arg(long, env = "THALASSA_EXPIRY_BRAKE_WINDOW", default_value = "10s", value_parser = parse_duration)]
    pub expiry_brake_window: Duration,
    /// Fewest members a backend needs for the mass-expiry brake to apply.
    #[arg(long, env = "THALASSA_EXPIRY_BRAKE_MIN_MEMBERS", default_value_t = 3)]
    pub expiry_brake_min_members: usize,
    /// Most members one backend may have: static `members` beyond it are refused (400),
    /// registrations beyond it are not added (a warning and a metric).
    #[arg(long, env = "THALASSA_MAX_MEMBERS", default_value_t = DEFAULT_MAX_MEMBERS)]
    pub max_members: usize,
    #[command(flatten)]
    pub auth: AuthArgs,
    #[command(flatten)]
    pub http: HttpLimitsArgs,
}

/// Parses a share between 0 and 1, e.g. `0.5`.
pub fn parse_share(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(share) if (0.0..=1.0).contains(&share) => Ok(share),
        _ => Err(format!(
            "invalid share {text:?}: expected a number from 0 to 1"
        )),
    }
}

/// Parses `250ms`, `20s`, `2m`, `1h`, or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("invalid duration {text:?}: expected e.g. 20s, 500ms, 1m"))?;
    let seconds = match unit {
        "" | "s" => value,
        "ms" => value / 1000.0,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(format!("invalid duration unit {unit:?} in {text:?}")),
    };
    if !seconds.is_finite() || seconds < 0.0 {
        return Err(format!("invalid duration {text:?}"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expected: Option<u64>) {
        assert_eq!(
            parse_duration(input).ok().map(|d| d.as_millis() as u64),
            expected,
            "{input}"
        );
    }

    #[test]
    fn durations() {
        check("20s", Some(20_000));
        check("500ms", Some(500));
        check("1m", Some(60_000));
        check("3", Some(3_000));
        check("1.5s", Some(1_500));
        check("x", None);
        check("5d", None);
    }

    #[test]
    fn shares() {
        assert_eq!(parse_share("0.5"), Ok(0.5));
        assert_eq!(parse_share("1"), Ok(1.0));
        assert!(parse_share("1.5").is_err());
        assert!(parse_share("-0.1").is_err());
        assert!(parse_share("NaN").is_err());
    }

    #[test]
    fn cli_parses() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    /// The `--registry` of `thalassa aqueduct` and `thalassa register` as parsed, or the error.
    fn registry_flag(args: &[&str]) -> Vec<Result<String, String>> {
        ["aqueduct", "register"]
            .iter()
            .map(|command| {
                let mut argv = vec!["thalassa", command];
                if *command == "register" {
                    argv.push("web@1:80");
                }
                argv.extend_from_slice(args);
                match Cli::try_parse_from(argv) {
                    Ok(Cli {
                        command: Command::Aqueduct(args),
                    }) => Ok(args.registry.to_string()),
                    Ok(Cli {
                        command: Command::Register(args),
                    }) => Ok(args.registry.to_string()),
                    Ok(other) => panic!("{other:?}"),
                    Err(err) => Err(err.to_string()),
                }
            })
            .collect()
    }

    #[test]
    fn registry_takes_one_url_or_a_list() {
        let same = |expected: &str| vec![Ok(expected.to_owned()), Ok(expected.to_owned())];
        assert_eq!(registry_flag(&[]), same("http://127.0.0.1:9000"));
        assert_eq!(
            registry_flag(&["--registry", "http://10.0.0.1:9000/"]),
            same("http://10.0.0.1:9000")
        );
        assert_eq!(
            registry_flag(&["--registry", "http://a:9000, http://b:9000"]),
            same("http://a:9000,http://b:9000")
        );
        for bad in [
            "http://a:9000,",
            "http://a:9000,,http://b:9000",
            "a:9000",
            "ftp://a",
        ] {
            for result in registry_flag(&["--registry", bad]) {
                let err = result.expect_err(bad);
                assert!(err.contains("--registry"), "{bad}: {err}");
            }
        }
    }
}
