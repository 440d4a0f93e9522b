//! `--store` URLs: `redis://HOST:PORT[/DB]` for one Redis (or Valkey) primary, and
//! `redis+sentinel://H1:P1,H2:P2/MASTER[/DB]` to find the primary through Sentinel.
//! No password or TLS yet: the store is expected on a private network.

use std::fmt;

/// Where the shared store is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUrl {
    Direct {
        host: String,
        port: u16,
        db: u32,
    },
    Sentinel {
        sentinels: Vec<(String, u16)>,
        master: String,
        db: u32,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--store {url:?}: {reason}")]
pub struct BadStoreUrl {
    pub url: String,
    pub reason: String,
}

impl StoreUrl {
    pub fn parse(url: &str) -> Result<StoreUrl, BadStoreUrl> {
        let fail = |reason: &str| BadStoreUrl {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        if url.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(fail("whitespace or control characters"));
        }
        if let Some(rest) = url.strip_prefix("redis+sentinel://") {
            let (hosts, path) = rest
                .split_once('/')
                .ok_or_else(|| fail("expected redis+sentinel://H1:P1,H2:P2/MASTER[/DB]"))?;
            let sentinels = hosts
                .split(',')
                .map(|host| host_port(host, 26379).map_err(|reason| fail(&reason)))
                .collect::<Result<Vec<_>, _>>()?;
            let (master, db) = match path.split_once('/') {
                Some((master, db)) => (master, parse_db(db).map_err(|r| fail(&r))?),
                None => (path, 0),
            };
            if master.is_empty()
                || !master
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                return Err(fail(
                    "the master name must be letters, digits, '-', '_' or '.'",
                ));
            }
            return Ok(StoreUrl::Sentinel {
                sentinels,
                master: master.to_owned(),
                db,
            });
        }
        let rest = url
            .strip_prefix("redis://")
            .ok_or_else(|| fail("expected redis://HOST:PORT[/DB] or redis+sentinel://..."))?;
        let (host, db) = match rest.split_once('/') {
            Some((host, "")) => (host, 0),
            Some((host, db)) => (host, parse_db(db).map_err(|r| fail(&r))?),
            None => (rest, 0),
        };
        if host.contains('@') {
            return Err(fail("credentials in the URL are not supported"));
        }
        let (host, port) = host_port(host, 6379).map_err(|r| fail(&r))?;
        Ok(StoreUrl::Direct { host, port, db })
    }

    pub fn db(&self) -> u32 {
        match self {
            StoreUrl::Direct { db, .. } | StoreUrl::Sentinel { db, .. } => *db,
        }
    }

    /// `redis` or `redis+sentinel` (for `/status` and logs).
    pub fn kind(&self) -> &'static str {
        match self {
            StoreUrl::Direct { .. } => "redis",
            StoreUrl::Sentinel { .. } => "redis+sentinel",
        }
    }
}

impl fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreUrl::Direct { host, port, db } => write!(f, "redis://{host}:{port}/{db}"),
            StoreUrl::Sentinel {
                sentinels,
                master,
                db,
            } => {
                let hosts: Vec<String> =
                    sentinels.iter().map(|(h, p)| format!("{h}:{p}")).collect();
                write!(f, "redis+sentinel://{}/{master}/{db}", hosts.join(","))
            }
        }
    }
}

fn parse_db(text: &str) -> Result<u32, String> {
    text.parse::<u32>()
        .ok()
        .filter(|db| *db < 16_384)
        .ok_or_else(|| format!("database {text:?} is not a number below 16384"))
}

/// `host:port`, `host` (default port) or `[v6]:port`.
fn host_port(text: &str, default_port: u16) -> Result<(String, u16), String> {
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("unclosed '[' in {text:?}"))?;
        match after.strip_prefix(':') {
            Some(port) => (host, Some(port)),
            None if after.is_empty() => (host, None),
            None => return Err(format!("unexpected {after:?} after the address")),
        }
    } else {
        match text.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (text, None),
        }
    };
    if host.is_empty()
        || !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c))
    {
        return Err(format!("{host:?} is not a host name or address"));
    }
    let port = match port {
        Some(port) => port
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("port {port:?} is not a number from 1 to 65535"))?,
        None => default_port,
    };
    Ok((host.to_owned(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn direct_urls() {
        assert_eq!(
            StoreUrl::parse("redis://127.0.0.1:6380/2").unwrap(),
            StoreUrl::Direct {
                host: "127.0.0.1".into(),
                port: 6380,
                db: 2
            }
        );
        assert_eq!(
            StoreUrl::parse("redis://redis").unwrap().to_string(),
            "redis://redis:6379/0"
        );
        assert_eq!(StoreUrl::parse("redis://[::1]:7000/").unwrap().db(), 0);
    }

    #[test]
    fn sentinel_urls() {
        let url = StoreUrl::parse("redis+sentinel://a:26379,b:26380,c/mymaster/1").unwrap();
        assert_eq!(
            url,
            StoreUrl::Sentinel {
                sentinels: vec![
                    ("a".into(), 26379),
                    ("b".into(), 26380),
                    ("c".into(), 26379)
                ],
                master: "mymaster".into(),
                db: 1
            }
        );
        assert_eq!(url.kind(), "redis+sentinel");
    }

    #[test]
    fn bad_urls_say_why() {
        for bad in [
            "http://x",
            "redis://",
            "redis://h:0",
            "redis://h:99999",
            "redis://h:1/x",
            "redis://u:p@h:1",
            "redis://h\n:1",
            "redis+sentinel://h:1",
            "redis+sentinel://h:1/",
            "redis+sentinel://h:1/m m",
            "redis+sentinel://,h:1/m",
        ] {
            let err = StoreUrl::parse(bad).expect_err(bad);
            assert!(err.to_string().starts_with("--store"), "{err}");
        }
    }
}
