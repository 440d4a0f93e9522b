//! How long a registration lives: reads `secondsToExpire` from a POST body the way the original
//! coerced it (a number or a numeric string; absent, `0`, `null` or `""` mean the default), but
//! refuses what the original silently turned into immortal keys.

use crate::api_error::ApiError;
use serde_json::{Map, Value};
use std::time::Duration;

/// The meta key that carries the expiry, in seconds.
pub const SECONDS_TO_EXPIRE: &str = "secondsToExpire";

/// Longest accepted expiry: ten years, in seconds. Anything longer is a mistake, not a lease.
pub const MAX_SECONDS_TO_EXPIRE: f64 = 10.0 * 365.0 * 24.0 * 3600.0;

/// The lease length asked for by `meta`, or `default` when it asks for none.
pub fn lease_duration(meta: &Map<String, Value>, default: Duration) -> Result<Duration, ApiError> {
    let seconds = match meta.get(SECONDS_TO_EXPIRE) {
        None | Some(Value::Null) => return Ok(default),
        Some(Value::Number(n)) => n.as_f64(),
        Some(Value::String(s)) if s.trim().is_empty() => return Ok(default),
        // Rust also parses "inf" and "NaN"; the finiteness check below refuses them.
        Some(Value::String(s)) => s.trim().parse::<f64>().ok(),
        Some(Value::Bool(_) | Value::Array(_) | Value::Object(_)) => None,
    };
    let Some(seconds) = seconds.filter(|s| s.is_finite()) else {
        return Err(invalid(
            "must be a number of seconds (a JSON number or numeric string)",
        ));
    };
    if seconds < 0.0 {
        return Err(invalid("must not be negative"));
    }
    if seconds > MAX_SECONDS_TO_EXPIRE {
        return Err(invalid("must be at most 315360000 (ten years)"));
    }
    if seconds == 0.0 {
        return Ok(default);
    }
    Ok(Duration::from_secs_f64(seconds))
}

fn invalid(message: &str) -> ApiError {
    ApiError::bad_field(SECONDS_TO_EXPIRE, format!("secondsToExpire {message}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const DEFAULT: Duration = Duration::from_secs(10);

    fn check(body: Value, expected: Option<u64>) {
        let meta = body.as_object().cloned().unwrap();
        let got = lease_duration(&meta, DEFAULT);
        match (got, expected) {
            (Ok(d), Some(ms)) => assert_eq!(d.as_millis() as u64, ms, "{body}"),
            (Err(err), None) => assert_eq!(err.field.as_deref(), Some(SECONDS_TO_EXPIRE)),
            (got, expected) => panic!("{body}: got {got:?}, expected {expected:?}"),
        }
    }

    #[test]
    fn accepted_values() {
        check(json!({}), Some(10_000));
        check(json!({"secondsToExpire": null}), Some(10_000));
        check(json!({"secondsToExpire": 0}), Some(10_000));
        check(json!({"secondsToExpire": ""}), Some(10_000));
        check(json!({"secondsToExpire": "0"}), Some(10_000));
        check(json!({"secondsToExpire": 60}), Some(60_000));
        check(json!({"secondsToExpire": "10000"}), Some(10_000_000));
        check(json!({"secondsToExpire": "1.5"}), Some(1_500));
        check(json!({"secondsToExpire": 0.25}), Some(250));
        check(json!({"secondsToExpire": " 7 "}), Some(7_000));
        check(json!({"secondsToExpire": "1e2"}), Some(100_000));
    }

    #[test]
    fn refused_values() {
        check(json!({"secondsToExpire": "abc"}), None);
        check(json!({"secondsToExpire": "NaN"}), None);
        check(json!({"secondsToExpire": "inf"}), None);
        check(json!({"secondsToExpire": "10s"}), None);
        check(json!({"secondsToExpire": -1}), None);
        check(json!({"secondsToExpire": "-5"}), None);
        check(json!({"secondsToExpire": true}), None);
        check(json!({"secondsToExpire": false}), None);
        check(json!({"secondsToExpire": [1]}), None);
        check(json!({"secondsToExpire": {"s": 1}}), None);
        check(json!({"secondsToExpire": 1e12}), None);
    }
}
