//! Best-effort pre-flight of a frontend's new `bind` addresses: one another process already
//! listens on is refused up front with a clear message, instead of surfacing as an opaque
//! failed reload (HAProxy 2.6's master CLI does not say why a reload failed). Addresses the
//! running config already binds are skipped (HAProxy itself holds them), and so is anything
//! this check cannot parse; the reload's own verification still catches what slips through.

use crate::config::{Config, Frontend};
use crate::haproxy::render::effective_bind;
use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// The plain TCP addresses of a `bind` value: `*:80`, `:80`, `10.0.0.1:80`, `[::1]:80`,
/// `ipv4@...`/`ipv6@...`, comma separated, options after the first space ignored. Port ranges,
/// host names and other address families are left to HAProxy.
pub fn tcp_addresses(bind: &str) -> Vec<SocketAddr> {
    let Some(addresses) = bind.split_whitespace().next() else {
        return Vec::new();
    };
    addresses.split(',').filter_map(parse_address).collect()
}

fn parse_address(text: &str) -> Option<SocketAddr> {
    let text = match text.split_once('@') {
        Some(("ipv4" | "ipv6" | "tcp" | "tcp4" | "tcp6", rest)) => rest,
        Some(_) => return None,
        None => text,
    };
    let (host, port) = text.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    let ip = match host {
        "" | "*" => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        bracketed if bracketed.starts_with('[') => bracketed
            .strip_prefix('[')?
            .strip_suffix(']')?
            .parse()
            .ok()?,
        plain => plain.parse().ok()?,
    };
    Some(SocketAddr::new(ip, port))
}

/// Every address the config binds on this node (`wildcard_host`: see
/// [`effective_bind`]).
pub fn bound_addresses(config: &Config, wildcard_host: Option<IpAddr>) -> BTreeSet<SocketAddr> {
    config
        .frontends
        .values()
        .flat_map(|f| tcp_addresses(&effective_bind(&f.bind, wildcard_host)))
        .collect()
}

/// The first new address of `bind` (as this node renders it) that something else already
/// listens on.
pub fn first_in_use(
    bind: &str,
    wildcard_host: Option<IpAddr>,
    already_bound: &BTreeSet<SocketAddr>,
) -> Option<SocketAddr> {
    tcp_addresses(&effective_bind(bind, wildcard_host))
        .into_iter()
        .filter(|addr| !already_bound.contains(addr))
        .find(|addr| {
            matches!(std::net::TcpListener::bind(addr),
                Err(err) if err.kind() == std::io::ErrorKind::AddrInUse)
        })
}

/// An address of a frontend that another frontend of the config already binds.
#[derive(Debug, PartialEq, Eq)]
pub struct SharedBind {
    pub address: SocketAddr,
    /// The frontend that binds it.
    pub other: String,
}

/// The first address of `frontend` that exactly another frontend of `config` binds. HAProxy
/// accepts both (its listeners use SO_REUSEPORT) and the kernel would split connections between
/// them at random. A wildcard and a specific address on one port do not count: the kernel
/// prefers the specific one.
pub fn shared_with(
    frontend: &Frontend,
    config: &Config,
    wildcard_host: Option<IpAddr>,
) -> Option<SharedBind> {
    let mine = tcp_addresses(&effective_bind(&frontend.bind, wildcard_host));
    config
        .frontends
        .values()
        .filter(|other| other.key != frontend.key)
        .find_map(|other| {
            let theirs = tcp_addresses(&effective_bind(&other.bind, wildcard_host));
            mine.iter()
                .find(|a| theirs.contains(a))
                .map(|address| SharedBind {
                    address: *address,
                    other: other.key.clone(),
                })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(bind: &str, expected: &[&str]) {
        let expected: Vec<SocketAddr> = expected.iter().map(|a| a.parse().unwrap()).collect();
        assert_eq!(tcp_addresses(bind), expected, "{bind}");
    }

    #[test]
    fn addresses() {
        check("*:3306", &["0.0.0.0:3306"]);
        check(":80", &["0.0.0.0:80"]);
        check(
            "127.0.0.1:80,127.0.0.2:81",
            &["127.0.0.1:80", "127.0.0.2:81"],
        );
        check("[::1]:8080", &["[::1]:8080"]);
        check("ipv6@[::1]:8080", &["[::1]:8080"]);
        check("127.0.0.1:443 ssl crt /x.pem", &["127.0.0.1:443"]);
        check("127.0.0.1:80-90", &[]);
        check("unix@/tmp/x.sock", &[]);
        check("example.com:80", &[]);
        check("", &[]);
    }

    #[test]
    fn only_an_address_another_frontend_binds_exactly_is_shared() {
        let frontend = |key: &str, bind: &str| Frontend {
            key: key.into(),
            bind: bind.into(),
            backend: "b".into(),
            mode: Default::default(),
            keepalive: Default::default(),
            rules: Vec::new(),
            natives: Vec::new(),
        };
        let mut config = Config::default();
        for f in [
            frontend("a", "127.0.0.1:80,127.0.0.1:81"),
            frontend("w", "*:90"),
        ] {
            config.frontends.insert(f.key.clone(), f);
        }
        let shared = |f: &Frontend, host| shared_with(f, &config, host);
        assert_eq!(
            shared(&frontend("c", "127.0.0.2:82,127.0.0.1:81"), None),
            Some(SharedBind {
                address: "127.0.0.1:81".parse().unwrap(),
                other: "a".into()
            })
        );
        // Itself (a re-PUT), a specific address beside a wildcard, another port: not shared.
        assert_eq!(shared(&frontend("a", "127.0.0.1:80"), None), None);
        assert_eq!(shared(&frontend("c", "127.0.0.1:90"), None), None);
        assert_eq!(shared(&frontend("c", "127.0.0.1:82"), None), None);
        // With --bind-address, wildcards are compared on that address.
        let host = Some("127.0.0.3".parse().unwrap());
        assert!(shared(&frontend("c", "127.0.0.3:90"), host).is_some());
    }

    #[test]
    fn finds_a_port_in_use_but_not_one_we_hold() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let bind = addr.to_string();
        assert_eq!(first_in_use(&bind, None, &BTreeSet::new()), Some(addr));
        assert_eq!(first_in_use(&bind, None, &BTreeSet::from([addr])), None);
        // A wildcard bind on a node with `--bind-address` is checked on that address.
        let wildcard = format!("*:{}", addr.port());
        assert_eq!(
            first_in_use(&wildcard, Some(addr.ip()), &BTreeSet::new()),
            Some(addr)
        );
        drop(taken);
        assert_eq!(first_in_use(&bind, None, &BTreeSet::new()), None);
    }
}
