//! One line of the health-check ring (`show events <ring>` with `option log-health-checks`,
//! `format raw`), e.g. `Health check for server web/web_127.0.0.1:8080 succeeded, reason:
//! Layer7 check passed, code: 200, check duration: 1ms, status: 1/2 DOWN.` Only what the
//! membership manager acts on is told apart; any other line is `Other`.

use nom::IResult;
use nom::branch::alt;
use nom::bytes::complete::{tag, take_till1};
use nom::character::complete::{char, digit1, space1};
use nom::combinator::{all_consuming, value};
use nom::sequence::{preceded, terminated};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthEvent {
    /// A check of the server passed (whatever its health counter says: the planner sets a
    /// joining server ready after its first passing check).
    CheckPassed {
        backend: String,
        server: String,
    },
    /// A check of the server failed.
    CheckFailed {
        backend: String,
        server: String,
    },
    /// The ring overwrote events a reader had not read: whatever they said is unknown.
    Dropped {
        events: u64,
    },
    Other,
}

pub fn parse_health_event(line: &str) -> HealthEvent {
    let line = line.trim_end_matches(['\r', '\n']);
    // `format iso`/`timed` put a timestamp (and `timed` a `<5>` priority) first.
    let body = line
        .find("Health check for server ")
        .map_or(line, |at| &line[at..]);
    if let Ok((_, event)) = check_result(body) {
        return event;
    }
    if let Ok((_, events)) = dropped(line.trim()) {
        return HealthEvent::Dropped { events };
    }
    HealthEvent::Other
}

fn check_result(input: &str) -> IResult<&str, HealthEvent> {
    let (input, _) = tag("Health check for server ")(input)?;
    let (input, backend) = take_till1(|c| c == '/' || c == ' ')(input)?;
    let (input, _) = char('/')(input)?;
    let (input, server) = take_till1(|c: char| c == ' ')(input)?;
    let (input, passed) = preceded(
        space1,
        alt((value(true, tag("succeeded")), value(false, tag("failed")))),
    )(input)?;
    let (backend, server) = (backend.to_owned(), server.to_owned());
    let event = if passed {
        HealthEvent::CheckPassed { backend, server }
    } else {
        HealthEvent::CheckFailed { backend, server }
    };
    Ok((input, event))
}

/// `3476 events dropped` / `1 event dropped`.
fn dropped(input: &str) -> IResult<&str, u64> {
    let (input, count) = terminated(digit1, space1)(input)?;
    let (input, _) = all_consuming(preceded(
        alt((tag("events"), tag("event"))),
        preceded(space1, tag("dropped")),
    ))(input)?;
    Ok((input, count.parse().unwrap_or(u64::MAX)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn passed(backend: &str, server: &str) -> HealthEvent {
        HealthEvent::CheckPassed {
            backend: backend.into(),
            server: server.into(),
        }
    }

    #[test]
    fn lines_haproxy_2_6_writes() {
        assert_eq!(
            parse_health_event(
                "Health check for server be/be_127.0.0.1:8080 succeeded, reason: Layer4 check passed, check duration: 0ms, status: 1/2 DOWN."
            ),
            passed("be", "be_127.0.0.1:8080")
        );
        assert_eq!(
            parse_health_event(
                "2026-12-02T13:57:34.292602+00:00 Health check for server web-app/web-app_::1:80 succeeded, reason: Layer7 check passed, code: 200, status: 3/3 UP.\n"
            ),
            passed("web-app", "web-app_::1:80")
        );
        assert_eq!(
            parse_health_event(
                "Health check for server be/s2 failed, reason: Layer4 connection problem, info: \"Connection refused\", check duration: 0ms, status: 0/2 DOWN."
            ),
            HealthEvent::CheckFailed {
                backend: "be".into(),
                server: "s2".into()
            }
        );
        assert_eq!(
            parse_health_event("3476 events dropped"),
            HealthEvent::Dropped { events: 3476 }
        );
        assert_eq!(
            parse_health_event("1 event dropped"),
            HealthEvent::Dropped { events: 1 }
        );
        for other in [
            "Server be/s1 is UP/READY (leaving forced maintenance).",
            "Proxy be stopped (cumulated conns: FE: 0, BE: 0).",
            "",
            "Health check for server ",
            "Health check for server be succeeded",
            "12 monkeys",
            "\u{1F600} 3 events dropped",
        ] {
            assert_eq!(parse_health_event(other), HealthEvent::Other, "{other:?}");
        }
    }
}
