//! The nodes of a registry cluster as a client sees them: the base URLs `--registry` lists, in
//! failover order, and a cursor on the node in use. A client stays on a node while it answers
//! and moves to the next one (round-robin) when it does not, so a dead node costs one failed
//! request, not one per heartbeat.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};

/// One or more registry base URLs (`http://10.0.0.1:9000,http://10.0.0.2:9000`): each an
/// `http` or `https` URL with a host and no query or fragment, none listed twice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryNodes(Vec<reqwest::Url>);

impl RegistryNodes {
    /// Parses a comma-separated list of base URLs (surrounding whitespace ignored).
    pub fn parse(text: &str) -> Result<RegistryNodes, String> {
        let mut urls: Vec<reqwest::Url> = Vec::new();
        for entry in text.split(',') {
            let entry = entry.trim();
            if entry.is_empty() {
                return Err(format!(
                    "empty entry in {text:?}: expected one or more base URLs separated by \
                     commas, e.g. http://10.0.0.1:9000,http://10.0.0.2:9000"
                ));
            }
            let url = parse_base_url(entry)?;
            if urls.iter().any(|known| base(known) == base(&url)) {
                return Err(format!("{entry:?} is listed twice"));
            }
            urls.push(url);
        }
        Ok(RegistryNodes(urls))
    }

    /// The one node listening on `addr` (`http://<addr>`), e.g. the registry `thalassa up`
    /// embeds.
    pub fn at(addr: std::net::SocketAddr) -> RegistryNodes {
        let url = reqwest::Url::parse(&format!("http://{addr}"))
            .expect("http:// and a socket address is a valid URL");
        RegistryNodes(vec![url])
    }

    /// How many nodes (at least one).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Never true: a list has at least one node (clippy wants `is_empty` beside `len`).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The base URL of node `index` (taken modulo the number of nodes).
    pub fn url(&self, index: usize) -> &reqwest::Url {
        &self.0[index % self.0.len()]
    }

    /// Node `index` as an operator wrote it: the base URL without a trailing slash, for logs
    /// and metrics.
    pub fn name(&self, index: usize) -> &str {
        base(self.url(index))
    }

    /// `path` (starting with `/`) on node `index`, e.g. `http://10.0.0.1:9000/events`.
    pub fn endpoint(&self, index: usize, path: &str) -> String {
        format!("{}{path}", self.name(index))
    }

    /// The node after `index`, round-robin.
    pub fn next(&self, index: usize) -> usize {
        (index + 1) % self.0.len()
    }
}

impl std::str::FromStr for RegistryNodes {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse(text)
    }
}

impl fmt::Display for RegistryNodes {
    /// The list as it parses again: names joined by commas.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, url) in self.0.iter().enumerate() {
            if index > 0 {
                f.write_str(",")?;
            }
            f.write_str(base(url))?;
        }
        Ok(())
    }
}

fn parse_base_url(entry: &str) -> Result<reqwest::Url, String> {
    let url = reqwest::Url::parse(entry).map_err(|err| format!("invalid URL {entry:?}: {err}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("{entry:?} is not an http:// or https:// URL"));
    }
    if url.host().is_none() {
        return Err(format!("{entry:?} has no host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!(
            "{entry:?} has a query or fragment: expected a base URL"
        ));
    }
    Ok(url)
}

/// The URL without its trailing slash: `http://h:9000/` and `http://h:9000` are one node.
fn base(url: &reqwest::Url) -> &str {
    url.as_str().trim_end_matches('/')
}

/// Which node a client uses now; shared by the tasks of one client so that when one finds
/// its node dead the others go straight to the next.
#[derive(Debug)]
pub struct NodeCursor {
    current: AtomicUsize,
    nodes: usize,
}

impl NodeCursor {
    /// A cursor over `nodes` nodes, on the first.
    pub fn new(nodes: usize) -> NodeCursor {
        NodeCursor {
            current: AtomicUsize::new(0),
            nodes: nodes.max(1),
        }
    }

    pub fn current(&self) -> usize {
        self.current.load(Ordering::Acquire)
    }

    /// Moves past `failed` (to the next node, round-robin) unless another task already moved
    /// on, so two tasks failing on one node together skip it once, not twice. Returns the node
    /// to use now.
    pub fn advance_from(&self, failed: usize) -> usize {
        let next = (failed + 1) % self.nodes;
        match self
            .current
            .compare_exchange(failed, next, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => next,
            Err(now) => now,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, expected: Result<&[&str], &str>) {
        let got = RegistryNodes::parse(text);
        match expected {
            Ok(names) => {
                let nodes = got.unwrap_or_else(|err| panic!("{text:?}: {err}"));
                let got: Vec<&str> = (0..nodes.len()).map(|i| nodes.name(i)).collect();
                assert_eq!(got, names, "{text:?}");
                assert_eq!(nodes.to_string(), names.join(","), "{text:?}");
            }
            Err(part) => {
                let err = got.expect_err(text);
                assert!(err.contains(part), "{text:?}: {err}");
            }
        }
    }

    #[test]
    fn lists() {
        check("http://127.0.0.1:9000", Ok(&["http://127.0.0.1:9000"]));
        check("http://127.0.0.1:9000/", Ok(&["http://127.0.0.1:9000"]));
        check(
            "http://a:9000, https://b:9000/reg/ ,http://[::1]:9000",
            Ok(&["http://a:9000", "https://b:9000/reg", "http://[::1]:9000"]),
        );
        check("", Err("empty entry"));
        check("http://a:9000,", Err("empty entry"));
        check("http://a:9000,,http://b:9000", Err("empty entry"));
        check(" , ", Err("empty entry"));
        check("a:9000", Err("not an http"));
        check("127.0.0.1:9000", Err("invalid URL"));
        check("ftp://a", Err("not an http"));
        check("http://", Err("invalid URL"));
        check("http://a:9000/?x=1", Err("query or fragment"));
        check("http://a:9000/#top", Err("query or fragment"));
        check("http://a:9000,http://a:9000/", Err("listed twice"));
        check("http://a:99999", Err("invalid URL"));
    }

    #[test]
    fn endpoints_keep_a_base_path() {
        let nodes = RegistryNodes::parse("http://a:9000/,http://b:9000/reg/").unwrap();
        assert_eq!(nodes.endpoint(0, "/events"), "http://a:9000/events");
        assert_eq!(nodes.endpoint(1, "/events"), "http://b:9000/reg/events");
        assert_eq!(nodes.endpoint(2, "/events"), "http://a:9000/events");
        assert_eq!((nodes.next(0), nodes.next(1)), (1, 0));
        let local = RegistryNodes::at("[::1]:9000".parse().unwrap());
        assert_eq!(local.endpoint(0, "/events"), "http://[::1]:9000/events");
    }

    #[test]
    fn a_cursor_skips_a_failed_node_once() {
        let cursor = NodeCursor::new(3);
        assert_eq!(cursor.current(), 0);
        assert_eq!(cursor.advance_from(0), 1);
        // A second task that also failed on node 0 finds the cursor already moved.
        assert_eq!(cursor.advance_from(0), 1);
        assert_eq!(cursor.advance_from(1), 2);
        assert_eq!(cursor.advance_from(2), 0);
        let single = NodeCursor::new(1);
        assert_eq!(single.advance_from(0), 0);
    }
}
