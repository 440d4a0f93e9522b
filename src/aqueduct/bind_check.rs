//! Best-effort pre-flight of a frontend's new `bind` addresses: one another process already
//! listens on is refused up front with a clear message, instead of surfacing as an opaque
//! failed reload (HAProxy 2.6's master CLI does not say why a reload failed). Addresses the
//! running config already binds are skipped (HAProxy itself holds them), and so is anything
//! this check cannot parse; the reload's own verification still catches what slips through.

use crate::config::Config;
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
