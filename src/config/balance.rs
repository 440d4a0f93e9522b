//! The `balance` directive of a backend: which algorithm tokens are accepted, and what each
//! algorithm implies for runtime membership changes (hash type, explicit server ids).

/// A validated `balance` value, kept as the client sent it (single spaces between words).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Balance {
    text: String,
    algorithm: Algorithm,
}

/// The algorithm family named by the first word of a `balance` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    RoundRobin,
    StaticRoundRobin,
    LeastConn,
    First,
    Source,
    Uri,
    UrlParam,
    Header,
    Random,
    RdpCookie,
    Hash,
}

impl Default for Balance {
    fn default() -> Self {
        Balance {
            text: "roundrobin".to_owned(),
            algorithm: Algorithm::RoundRobin,
        }
    }
}

/// Most words a balance line may have (`url_param id check_post 64` has four).
const MAX_WORDS: usize = 6;

impl Balance {
    /// Parses a balance line such as `roundrobin`, `hdr(host) use_domain_only`, `random(2)` or
    /// `hash req.hdr(host),lower`. Arguments are restricted to characters that cannot end the
    /// directive or start a comment.
    pub fn parse(text: &str) -> Result<Balance, String> {
        let words: Vec<&str> = text.split(' ').filter(|w| !w.is_empty()).collect();
        let Some((first, args)) = words.split_first() else {
            return Err("balance must not be empty".to_owned());
        };
        if words.len() > MAX_WORDS {
            return Err(format!("balance has more than {MAX_WORDS} words"));
        }
        if let Some(bad) = words.iter().find(|w| !w.chars().all(is_argument_char)) {
            return Err(format!(
                "balance word {bad:?} has characters outside [A-Za-z0-9_.:,()-]"
            ));
        }
        let algorithm = match *first {
            "roundrobin" => Algorithm::RoundRobin,
            "static-rr" => Algorithm::StaticRoundRobin,
            "leastconn" => Algorithm::LeastConn,
            "first" => Algorithm::First,
            "source" => Algorithm::Source,
            "uri" => Algorithm::Uri,
            "url_param" => Algorithm::UrlParam,
            "random" => Algorithm::Random,
            "rdp-cookie" => Algorithm::RdpCookie,
            "hash" => Algorithm::Hash,
            word if parenthesised(word, "random").is_some_and(is_positive_integer) => {
                Algorithm::Random
            }
            word if parenthesised(word, "hdr").is_some_and(is_token) => Algorithm::Header,
            word if parenthesised(word, "rdp-cookie").is_some_and(is_token) => Algorithm::RdpCookie,
            other => {
                return Err(format!(
                    "balance algorithm {other:?} is not one of roundrobin, static-rr, leastconn, \
                     first, source, uri, url_param <param>, hdr(<name>), random, random(<n>), \
                     rdp-cookie, rdp-cookie(<name>), hash <expr>"
                ));
            }
        };
        let takes_args = matches!(
            algorithm,
            Algorithm::Uri | Algorithm::UrlParam | Algorithm::Header | Algorithm::Hash
        );
        if !takes_args && !args.is_empty() {
            return Err(format!("balance {first} takes no arguments"));
        }
        if matches!(algorithm, Algorithm::UrlParam | Algorithm::Hash) && args.is_empty() {
            return Err(format!("balance {first} needs an argument"));
        }
        Ok(Balance {
            text: words.join(" "),
            algorithm,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// HAProxy refuses `add server` on map-based hashing ("Backend must use a dynamic load
    /// balancing to support dynamic servers"); consistent hashing accepts it. Measured on 2.6.
    pub fn needs_consistent_hashing(&self) -> bool {
        matches!(
            self.algorithm,
            Algorithm::Source
                | Algorithm::Uri
                | Algorithm::UrlParam
                | Algorithm::Header
                | Algorithm::RdpCookie
                | Algorithm::Hash
        )
    }

    /// Random and consistent-hash backends spread badly over servers added without an explicit
    /// `id` on 2.6 (haproxy/haproxy#3413), so their servers always carry one.
    pub fn needs_explicit_server_ids(&self) -> bool {
        self.algorithm == Algorithm::Random || self.needs_consistent_hashing()
    }

    /// Layer-7 algorithms fall back to round robin (with a warning) outside HTTP mode.
    pub fn needs_http_mode(&self) -> bool {
        matches!(
            self.algorithm,
            Algorithm::Uri | Algorithm::UrlParam | Algorithm::Header
        )
    }

    /// `static-rr` cannot take runtime servers at all, whatever the hash type.
    pub fn supports_runtime_servers(&self) -> bool {
        self.algorithm != Algorithm::StaticRoundRobin
    }
}

fn is_argument_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "_.:,()-".contains(c)
}

fn parenthesised<'a>(word: &'a str, name: &str) -> Option<&'a str> {
    word.strip_prefix(name)?
        .strip_prefix('(')?
        .strip_suffix(')')
}

fn is_positive_integer(text: &str) -> bool {
    !text.is_empty() && text.len() <= 4 && text.bytes().all(|b| b.is_ascii_digit())
}

fn is_token(text: &str) -> bool {
    !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expected: Result<(&str, bool, bool), ()>) {
        let got = Balance::parse(input);
        match (got, expected) {
            (Ok(b), Ok((text, consistent, ids))) => {
                assert_eq!(b.as_str(), text, "{input}");
                assert_eq!(b.needs_consistent_hashing(), consistent, "{input}");
                assert_eq!(b.needs_explicit_server_ids(), ids, "{input}");
            }
            (Err(_), Err(())) => {}
            (got, expected) => panic!("{input:?}: got {got:?}, expected {expected:?}"),
        }
    }

    #[test]
    fn algorithms() {
        check("roundrobin", Ok(("roundrobin", false, false)));
        check("static-rr", Ok(("static-rr", false, false)));
        check("leastconn", Ok(("leastconn", false, false)));
        check("first", Ok(("first", false, false)));
        check("source", Ok(("source", true, true)));
        check("uri", Ok(("uri", true, true)));
        check("uri  whole", Ok(("uri whole", true, true)));
        check(
            "url_param userid check_post 64",
            Ok(("url_param userid check_post 64", true, true)),
        );
        check("hdr(host)", Ok(("hdr(host)", true, true)));
        check(
            "hdr(Host) use_domain_only",
            Ok(("hdr(Host) use_domain_only", true, true)),
        );
        check("random", Ok(("random", false, true)));
        check("random(2)", Ok(("random(2)", false, true)));
        check("rdp-cookie", Ok(("rdp-cookie", true, true)));
        check(
            "rdp-cookie(mstshash)",
            Ok(("rdp-cookie(mstshash)", true, true)),
        );
        check(
            "hash req.hdr(host),lower",
            Ok(("hash req.hdr(host),lower", true, true)),
        );
    }

    #[test]
    fn refusals() {
        check("", Err(()));
        check("  ", Err(()));
        check("fastest", Err(()));
        check("roundrobin extra", Err(()));
        check("url_param", Err(()));
        check("hash", Err(()));
        check("hdr()", Err(()));
        check("random(x)", Err(()));
        check("uri #comment", Err(()));
        check("hdr(host\"x)", Err(()));
        check("roundrobin\nbackend x", Err(()));
        check("source\tx", Err(()));
        check("uri a b c d e f", Err(()));
    }
}
