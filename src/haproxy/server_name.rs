//! The one spelling of a runtime server's name: `<backend key>_<address>:<port>`, the name the
//! original used and the UI matches on. Backend keys may contain `_`, an address never does, so
//! a name splits at its last `_`; the address splits from the port at its last `:` (IPv6).

use std::fmt;
use std::net::IpAddr;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServerName {
    pub backend: String,
    /// The address in its canonical text (or a member's host text that is not an address).
    pub host: String,
    pub port: u16,
}

impl ServerName {
    pub fn new(backend: &str, host: IpAddr, port: u16) -> ServerName {
        ServerName {
            backend: backend.to_owned(),
            host: host.to_string(),
            port,
        }
    }

    /// From a host as text (a member object's): canonicalised when it is an address, so
    /// `::0001` names the same server as `::1`.
    pub fn for_host(backend: &str, host: &str, port: u16) -> ServerName {
        match host.parse::<IpAddr>() {
            Ok(address) => ServerName::new(backend, address, port),
            Err(_) => ServerName {
                backend: backend.to_owned(),
                host: host.to_owned(),
                port,
            },
        }
    }

    /// A server name as HAProxy reports it; `None` when it is not `<backend>_<host>:<port>`.
    pub fn parse(name: &str) -> Option<ServerName> {
        let (backend, address) = name.rsplit_once('_')?;
        let (host, port) = address.rsplit_once(':')?;
        Some(ServerName {
            backend: backend.to_owned(),
            host: host.to_owned(),
            port: port.parse().ok()?,
        })
    }
}

impl fmt::Display for ServerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}_{}:{}", self.backend, self.host, self.port)
    }
}

/// `ServerName::new(..).to_string()`, for the many places that need only the text.
pub fn server_name(backend: &str, host: IpAddr, port: u16) -> String {
    ServerName::new(backend, host, port).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_format_and_parse_back() {
        let v4: IpAddr = "10.0.0.1".parse().unwrap();
        let v6: IpAddr = "::1".parse().unwrap();
        assert_eq!(server_name("be", v4, 3306), "be_10.0.0.1:3306");
        assert_eq!(server_name("be", v6, 80), "be_::1:80");
        for name in ["my_backend_10.0.0.1:3306", "be_::1:80"] {
            assert_eq!(ServerName::parse(name).unwrap().to_string(), name);
        }
        let parsed = ServerName::parse("my_backend_10.0.0.1:3306").unwrap();
        assert_eq!(
            (parsed.backend.as_str(), parsed.host.as_str(), parsed.port),
            ("my_backend", "10.0.0.1", 3306)
        );
        assert_eq!(
            ServerName::for_host("be", "::0001", 80).to_string(),
            "be_::1:80"
        );
        assert_eq!(
            ServerName::for_host("be", "db.example", 5432).host,
            "db.example"
        );
        assert_eq!(ServerName::parse("stats"), None);
        assert_eq!(ServerName::parse("be_10.0.0.1"), None);
        assert_eq!(ServerName::parse("be_10.0.0.1:x"), None);
    }
}
