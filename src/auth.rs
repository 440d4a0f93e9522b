//! Bearer-token access control for both HTTP APIs: which token a request needs (writes: the
//! admin token; reads: the read token when one is set), a constant-time comparison, and the
//! axum middleware that answers 401/403 with the usual JSON error before any handler runs.
//!
//! Without an admin token an API is open, as the original was: the walkthrough's curls work
//! unchanged. The UI's page and assets, and the registry's `/status` health answer, stay open
//! even with a read token, so the page can load and ask for a token and healthchecks keep
//! working; `/metrics` and `/events` follow the read token.

use crate::api_error::ApiError;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::net::SocketAddr;
use std::sync::Arc;

/// A secret token. Its `Debug` never shows it, so it cannot leak into logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(Vec<u8>);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl Token {
    /// A token must be a non-empty header-safe string (visible ASCII, no spaces), so it can
    /// travel in an `Authorization` header unchanged.
    pub fn new(text: &str) -> Result<Token, String> {
        let text = text.trim();
        if text.is_empty() {
            return Err("a token cannot be empty".into());
        }
        if !text.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("a token may only contain visible ASCII characters (no spaces)".into());
        }
        Ok(Token(text.as_bytes().to_vec()))
    }

    /// Whether `presented` is this token, in time that depends only on the token's length.
    pub fn matches(&self, presented: &[u8]) -> bool {
        constant_time_eq(&self.0, presented)
    }

    pub fn as_str(&self) -> &str {
        // Built from a `&str` in `new`: always valid UTF-8.
        std::str::from_utf8(&self.0).unwrap_or("")
    }
}

/// Compares `expected` with `presented` touching every byte of `expected` whatever the input,
/// so the time taken tells an attacker nothing about how much of a guess was right (only the
/// token's length could leak, which is acceptable for random tokens).
pub fn constant_time_eq(expected: &[u8], presented: &[u8]) -> bool {
    let mut difference = u8::from(expected.len() != presented.len());
    for (index, byte) in expected.iter().enumerate() {
        let other = presented.get(index).copied().unwrap_or(!byte);
        difference |= byte ^ other;
    }
    std::hint::black_box(difference) == 0
}

/// Which tokens an API requires.
#[derive(Debug, Clone, Default)]
pub struct AuthPolicy {
    pub admin: Option<Token>,
    pub read: Option<Token>,
}

/// What a request is allowed to be refused for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No token needed (open API, or an always-open path).
    Open,
    /// The read or the admin token.
    Read,
    /// The admin token.
    Write,
}

impl AuthPolicy {
    /// No tokens: everything open.
    pub fn open() -> AuthPolicy {
        AuthPolicy::default()
    }

    /// Reads the tokens from their values, or from the files that hold them (`--admin-token`,
    /// `--admin-token-file`, `--read-token`, `--read-token-file`).
    pub fn from_sources(
        admin: (&Option<String>, &Option<std::path::PathBuf>),
        read: (&Option<String>, &Option<std::path::PathBuf>),
    ) -> Result<AuthPolicy, String> {
        let load = |value: &Option<String>,
                    file: &Option<std::path::PathBuf>,
                    flag: &str|
         -> Result<Option<Token>, String> {
            let text = match (value, file) {
                (Some(value), _) => value.clone(),
                (None, Some(path)) => std::fs::read_to_string(path).map_err(|err| {
                    format!("cannot read --{flag}-file {}: {err}", path.display())
                })?,
                (None, None) => return Ok(None),
            };
            Token::new(&text)
                .map(Some)
                .map_err(|err| format!("invalid --{flag}: {err}"))
        };
        Ok(AuthPolicy {
            admin: load(admin.0, admin.1, "admin-token")?,
            read: load(read.0, read.1, "read-token")?,
        })
    }

    /// The access a request needs. Writes fall back to the read token when no admin token is
    /// set, so a read token never leaves writes more open than reads.
    pub fn access_for(&self, method: &Method, path: &str) -> Access {
        let reading = matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
        if reading {
            if self.read.is_none() || always_open(path) {
                Access::Open
            } else {
                Access::Read
            }
        } else if self.admin.is_some() {
            Access::Write
        } else if self.read.is_some() {
            Access::Read
        } else {
            Access::Open
        }
    }

    /// Checks a request's `Authorization` header.
    pub fn check(&self, method: &Method, path: &str, headers: &HeaderMap) -> Result<(), Refusal> {
        let access = self.access_for(method, path);
        if access == Access::Open {
            return Ok(());
        }
        let Some(presented) = bearer(headers) else {
            return Err(Refusal::Missing);
        };
        let is_admin = self.admin.as_ref().is_some_and(|t| t.matches(presented));
        let is_read = self.read.as_ref().is_some_and(|t| t.matches(presented));
        match access {
            Access::Open => Ok(()),
            Access::Read if is_admin || is_read => Ok(()),
            Access::Write if is_admin => Ok(()),
            Access::Write if is_read => Err(Refusal::ReadOnly),
            Access::Read | Access::Write => Err(Refusal::Invalid),
        }
    }

    /// Whether anyone may write.
    pub fn writes_open(&self) -> bool {
        self.admin.is_none() && self.read.is_none()
    }
}

/// Paths readable without a token: the UI shell (so the page can ask for one), the API
/// descriptions, and the registry's `/status` health answer. The UI's data (`/events`, `/ui/api/*`) is not open.
fn always_open(path: &str) -> bool {
    matches!(
        path,
        "/" | "/overview" | "/activity" | "/registry" | "/nodes" | "/status" | "/openapi.json"
    ) || (path.starts_with("/ui/") && !path.starts_with("/ui/api/"))
}

/// The token of an `Authorization: Bearer <token>` header (scheme case-insensitive).
fn bearer(headers: &HeaderMap) -> Option<&[u8]> {
    let value = headers.get(header::AUTHORIZATION)?.as_bytes();
    let scheme = value.get(..7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let token = value.get(7..)?;
    let start = token.iter().position(|b| *b != b' ')?;
    Some(&token[start..])
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("this API requires a bearer token (Authorization: Bearer <token>)")]
    Missing,
    #[error("the bearer token is not valid")]
    Invalid,
    #[error("the read token cannot change anything: use the admin token")]
    ReadOnly,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let status = match self {
            Refusal::Missing | Refusal::Invalid => StatusCode::UNAUTHORIZED,
            Refusal::ReadOnly => StatusCode::FORBIDDEN,
        };
        let mut response = ApiError {
            status,
            message: self.to_string(),
            field: Some("authorization".into()),
        }
        .into_response();
        let challenge = match self {
            Refusal::Missing => r#"Bearer realm="thalassa""#,
            Refusal::Invalid => r#"Bearer realm="thalassa", error="invalid_token""#,
            Refusal::ReadOnly => r#"Bearer realm="thalassa", error="insufficient_scope""#,
        };
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(challenge),
        );
        response
    }
}

/// Wraps `router` so every request passes `policy` first.
pub fn guard(router: axum::Router, policy: AuthPolicy) -> axum::Router {
    if policy.admin.is_none() && policy.read.is_none() {
        return router;
    }
    router.layer(axum::middleware::from_fn_with_state(
        Arc::new(policy),
        require_token,
    ))
}

async fn require_token(
    State(policy): State<Arc<AuthPolicy>>,
    request: Request,
    next: Next,
) -> Response {
    match policy.check(request.method(), request.uri().path(), request.headers()) {
        Ok(()) => next.run(request).await,
        Err(refusal) => {
            tracing::debug!(method = %request.method(), path = %request.uri().path(), %refusal, "request refused");
            refusal.into_response()
        }
    }
}

/// Default headers for an HTTP client that talks to a guarded API: `Authorization: Bearer
/// <token>`, marked sensitive so it is never logged. Empty without a token.
pub fn client_headers(token: Option<&str>) -> Result<HeaderMap, String> {
    let mut headers = HeaderMap::new();
    if let Some(token) = token {
        let token = Token::new(token)?;
        let mut value = HeaderValue::from_str(&format!("Bearer {}", token.as_str()))
            .map_err(|err| format!("invalid token: {err}"))?;
        value.set_sensitive(true);
        headers.insert(header::AUTHORIZATION, value);
    }
    Ok(headers)
}

/// Whether anyone beyond this machine could change an API listening on `listen`.
pub fn exposed(listen: SocketAddr, policy: &AuthPolicy) -> bool {
    policy.writes_open() && !listen.ip().is_loopback()
}

/// Warns when `what` listens beyond loopback with nothing guarding writes.
pub fn warn_if_exposed(what: &str, listen: SocketAddr, policy: &AuthPolicy) {
    if exposed(listen, policy) {
        tracing::warn!(
            %listen,
            api = what,
            "listening on a non-loopback address without --admin-token: anyone who can reach it can change it"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(admin: Option<&str>, read: Option<&str>) -> AuthPolicy {
        AuthPolicy {
            admin: admin.map(|t| Token::new(t).unwrap()),
            read: read.map(|t| Token::new(t).unwrap()),
        }
    }

    fn check(
        policy: &AuthPolicy,
        method: Method,
        path: &str,
        authorization: Option<&str>,
        expected: Result<(), Refusal>,
    ) {
        let mut headers = HeaderMap::new();
        if let Some(value) = authorization {
            headers.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        }
        assert_eq!(
            policy.check(&method, path, &headers),
            expected,
            "{method} {path} {authorization:?}"
        );
    }

    #[test]
    fn constant_time_eq_is_equality() {
        let cases: &[(&[u8], &[u8], bool)] = &[
            (b"secret", b"secret", true),
            (b"secret", b"secreT", false),
            (b"secret", b"secre", false),
            (b"secret", b"secrets", false),
            (b"secret", b"", false),
            (b"a", b"\xfe", false),
            (b"\x01", b"\xfe", false),
        ];
        for (a, b, expected) in cases {
            assert_eq!(constant_time_eq(a, b), *expected, "{a:?} {b:?}");
        }
    }

    #[test]
    fn open_policy_lets_everything_through() {
        let open = AuthPolicy::open();
        check(&open, Method::PUT, "/frontends/x", None, Ok(()));
        check(&open, Method::GET, "/events", None, Ok(()));
        assert!(open.writes_open());
    }

    #[test]
    fn admin_token_guards_writes_only() {
        let p = policy(Some("adm"), None);
        check(&p, Method::GET, "/frontends", None, Ok(()));
        check(&p, Method::PUT, "/frontends/x", None, Err(Refusal::Missing));
        check(
            &p,
            Method::POST,
            "/registrations/a/1/h/80",
            Some("Bearer no"),
            Err(Refusal::Invalid),
        );
        check(
            &p,
            Method::DELETE,
            "/backends/x",
            Some("Bearer adm"),
            Ok(()),
        );
        check(
            &p,
            Method::DELETE,
            "/backends/x",
            Some("bearer   adm"),
            Ok(()),
        );
        check(
            &p,
            Method::DELETE,
            "/backends/x",
            Some("Basic adm"),
            Err(Refusal::Missing),
        );
        check(
            &p,
            Method::DELETE,
            "/backends/x",
            Some("Bearer"),
            Err(Refusal::Missing),
        );
        check(
            &p,
            Method::DELETE,
            "/backends/x",
            Some("Bearer adm2"),
            Err(Refusal::Invalid),
        );
    }

    #[test]
    fn read_token_guards_reads_but_not_the_ui_shell_or_health() {
        let p = policy(Some("adm"), Some("rd"));
        check(&p, Method::GET, "/frontends", None, Err(Refusal::Missing));
        check(&p, Method::GET, "/frontends", Some("Bearer rd"), Ok(()));
        check(&p, Method::GET, "/frontends", Some("Bearer adm"), Ok(()));
        check(&p, Method::GET, "/events", None, Err(Refusal::Missing));
        check(&p, Method::GET, "/metrics", None, Err(Refusal::Missing));
        check(
            &p,
            Method::GET,
            "/ui/api/registry",
            None,
            Err(Refusal::Missing),
        );
        check(&p, Method::GET, "/ui/app.js", None, Ok(()));
        check(&p, Method::GET, "/overview", None, Ok(()));
        check(&p, Method::GET, "/nodes", None, Ok(()));
        check(&p, Method::GET, "/fleet", None, Err(Refusal::Missing));
        check(&p, Method::GET, "/ui/api/node", None, Err(Refusal::Missing));
        check(&p, Method::GET, "/status", None, Ok(()));
        check(&p, Method::GET, "/openapi.json", None, Ok(()));
        check(
            &p,
            Method::PUT,
            "/frontends/x",
            Some("Bearer rd"),
            Err(Refusal::ReadOnly),
        );
        check(&p, Method::PUT, "/frontends/x", Some("Bearer adm"), Ok(()));
    }

    #[test]
    fn a_read_token_alone_also_guards_writes() {
        let p = policy(None, Some("rd"));
        check(&p, Method::PUT, "/frontends/x", None, Err(Refusal::Missing));
        check(&p, Method::PUT, "/frontends/x", Some("Bearer rd"), Ok(()));
        assert!(!p.writes_open());
    }

    #[test]
    fn listening_beyond_loopback_without_a_token_is_exposed() {
        let open = AuthPolicy::open();
        let guarded = policy(Some("adm"), None);
        let cases = [
            ("127.0.0.1:9000", &open, false),
            ("127.0.0.5:9000", &open, false),
            ("[::1]:9000", &open, false),
            ("0.0.0.0:9000", &open, true),
            ("[::]:9000", &open, true),
            ("10.1.2.3:9000", &open, true),
            ("0.0.0.0:9000", &guarded, false),
        ];
        for (listen, policy, expected) in cases {
            assert_eq!(
                exposed(listen.parse().unwrap(), policy),
                expected,
                "{listen}"
            );
        }
    }

    #[test]
    fn tokens_must_be_header_safe() {
        assert!(Token::new("  abc\n").is_ok());
        assert!(Token::new("").is_err());
        assert!(Token::new("a b").is_err());
        assert!(Token::new("é").is_err());
        assert_eq!(
            format!("{:?}", Token::new("abc").unwrap()),
            "Token(<redacted>)"
        );
    }
}
