//! This machine's first non-loopback IPv4 address, read from the kernel's routing tables
//! (`/proc/net/fib_trie`), never by sending traffic. Used as the default `host` of
//! `thalassa register` and of the registry's own registration when it listens on `0.0.0.0`.

use std::net::Ipv4Addr;

const FIB_TRIE: &str = "/proc/net/fib_trie";

/// The first local, non-loopback IPv4 address, or `None` when there is none (or no procfs).
pub fn first_non_loopback_ipv4() -> Option<Ipv4Addr> {
    let text = std::fs::read_to_string(FIB_TRIE).ok()?;
    local_addresses(&text)
        .into_iter()
        .find(|ip| !ip.is_loopback() && !ip.is_unspecified())
}

/// Every address that the trie marks `/32 host LOCAL` (the machine's own addresses), in the
/// kernel's order, without duplicates (they appear in both the Main and Local tables).
pub fn local_addresses(fib_trie: &str) -> Vec<Ipv4Addr> {
    let mut found = Vec::new();
    let mut last_leaf: Option<Ipv4Addr> = None;
    for line in fib_trie.lines() {
        let line = line.trim();
        if let Some(addr) = line.strip_prefix("|-- ") {
            last_leaf = addr.trim().parse().ok();
        } else if line.starts_with("/32 host LOCAL") {
            if let Some(ip) = last_leaf
                && !found.contains(&ip)
            {
                found.push(ip);
            }
        } else if line.starts_with("+-- ") {
            last_leaf = None;
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRIE: &str = "Main:
  +-- 0.0.0.0/0 3 0 5
     |-- 0.0.0.0
        /0 universe UNICAST
     +-- 127.0.0.0/8 2 0 2
        +-- 127.0.0.0/31 1 0 0
           |-- 127.0.0.0
              /8 host LOCAL
           |-- 127.0.0.1
              /32 host LOCAL
        |-- 127.255.255.255
           /32 link BROADCAST
     +-- 192.0.2.0/24 2 0 2
        +-- 192.0.2.0/30 2 0 2
           |-- 192.0.2.0
              /24 link UNICAST
           |-- 192.0.2.2
              /32 host LOCAL
        |-- 192.0.2.255
           /32 link BROADCAST
Local:
  +-- 0.0.0.0/0 3 0 5
     |-- 0.0.0.0
        /0 universe UNICAST
           |-- 127.0.0.1
              /32 host LOCAL
           |-- 192.0.2.2
              /32 host LOCAL
           |-- 198.51.100.7
              /32 host LOCAL
";

    fn check(text: &str, expected: &[&str]) {
        let expected: Vec<Ipv4Addr> = expected.iter().map(|s| s.parse().unwrap()).collect();
        assert_eq!(local_addresses(text), expected);
    }

    #[test]
    fn finds_local_host_addresses_once_each() {
        check(TRIE, &["127.0.0.1", "192.0.2.2", "198.51.100.7"]);
        check("", &[]);
        check("garbage\n|-- not-an-ip\n/32 host LOCAL\n", &[]);
        // A broadcast or unicast route is not an address of this machine.
        check("|-- 10.0.0.255\n /32 link BROADCAST\n", &[]);
    }
}
