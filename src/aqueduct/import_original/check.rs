//! `haproxy -c` on the imported items. The whole config is checked first; when HAProxy refuses
//! it, items are added one at a time (backends, then frontends, in file order), each checked
//! with those accepted before it, so a refusal is the item's own and the rest are imported. A
//! refusal on a line of one of the item's natives names that native.

use super::{Item, ItemKind, ItemState};
use crate::aqueduct::bind_check;
use crate::config::{Config, Mode};
use crate::haproxy::ConfigRejected;
use crate::haproxy::render::{RenderMembers, RenderSettings, render};
use std::collections::BTreeSet;
use std::future::Future;

/// HAProxy's closing lines, which say nothing about the item.
const GENERIC_ALERTS: &[&str] = &["Error(s) found in configuration file", "Fatal errors found"];

/// Checks every valid item with `check` (`haproxy -c` on a rendered config), refuses those
/// HAProxy refuses, notes the frontends left waiting for a backend, and returns the config of
/// the items imported.
pub async fn check_items<F, Fut>(
    items: &mut [Item],
    settings: &RenderSettings,
    mut check: F,
) -> Config
where
    F: FnMut(String) -> Fut,
    Fut: Future<Output = Result<(), ConfigRejected>>,
{
    refuse_shared_binds(items, settings);
    let whole = config_of(items);
    let config = if check(render(&whole, &RenderMembers::new(), settings))
        .await
        .is_ok()
    {
        whole
    } else {
        one_by_one(items, settings, &mut check).await
    };
    note_waiting_frontends(items, &config);
    config
}

async fn one_by_one<F, Fut>(items: &mut [Item], settings: &RenderSettings, check: &mut F) -> Config
where
    F: FnMut(String) -> Fut,
    Fut: Future<Output = Result<(), ConfigRejected>>,
{
    let mut accepted = Config::default();
    let mut order: Vec<usize> = (0..items.len()).collect();
    // Backends first: a frontend is checked against the backends it will really have.
    order.sort_by_key(|&i| std::cmp::Reverse(items[i].kind));
    for index in order {
        let item = &mut items[index];
        let mut candidate = accepted.clone();
        let natives = match &item.state {
            ItemState::Frontend(frontend) => {
                candidate
                    .frontends
                    .insert(frontend.key.clone(), frontend.clone());
                frontend.natives.clone()
            }
            ItemState::Backend(backend) => {
                candidate
                    .backends
                    .insert(backend.key.clone(), backend.clone());
                backend.natives.clone()
            }
            ItemState::Refused(_) => continue,
        };
        let text = render(&candidate, &RenderMembers::new(), settings);
        match check(text.clone()).await {
            Ok(()) => accepted = candidate,
            Err(rejected) => {
                item.conversions.clear();
                item.state = ItemState::Refused(describe(&rejected, &text, &natives));
            }
        }
    }
    accepted
}

/// HAProxy's alert lines, prefixed with `natives[i] "<line>"` where an alert names the line of
/// one of the item's natives.
fn describe(rejected: &ConfigRejected, text: &str, natives: &[String]) -> String {
    let lines: Vec<&String> = rejected
        .lines
        .iter()
        .filter(|line| !GENERIC_ALERTS.iter().any(|g| line.contains(g)))
        .collect();
    let lines = if lines.is_empty() {
        rejected.lines.iter().collect()
    } else {
        lines
    };
    let described: Vec<String> = lines
        .into_iter()
        .map(|line| {
            let native = config_line_number(line)
                .and_then(|(number, rest)| Some((text.lines().nth(number.checked_sub(1)?)?, rest)))
                .and_then(|(config_line, rest)| {
                    let i = natives
                        .iter()
                        .position(|n| n.trim() == config_line.trim())?;
                    Some((i, rest))
                });
            // The line number is the candidate config's, which the operator never sees: the
            // native names the place instead.
            match native {
                Some((i, rest)) => format!("natives[{i}] \"{}\": haproxy -c: {rest}", natives[i]),
                None => format!("haproxy -c: {line}"),
            }
        })
        .collect();
    described.join("; ")
}

/// The line number in `config : parsing [haproxy.cfg:57] : <message>`, and the message.
fn config_line_number(alert: &str) -> Option<(usize, &str)> {
    let start = alert.find(".cfg:")? + ".cfg:".len();
    let digits = alert[start..]
        .bytes()
        .take_while(u8::is_ascii_digit)
        .count();
    let number = alert[start..start + digits].parse().ok()?;
    let rest = alert[start + digits..].strip_prefix(']')?;
    Some((number, rest.trim_start_matches([' ', ':'])))
}

/// Refuses a frontend binding exactly an address an earlier frontend of the file binds: HAProxy
/// accepts both and the kernel would split connections between them at random (the API refuses
/// it the same way).
fn refuse_shared_binds(items: &mut [Item], settings: &RenderSettings) {
    let mut earlier = Config::default();
    for item in items.iter_mut() {
        let ItemState::Frontend(frontend) = &item.state else {
            continue;
        };
        match bind_check::shared_with(frontend, &earlier, settings.wildcard_bind_host) {
            Some(shared) => {
                item.state = ItemState::Refused(format!(
                    "bind: {} is already bound by frontend {} (HAProxy would split its \
                     connections between the two at random)",
                    shared.address, shared.other
                ));
                item.conversions.clear();
            }
            None => {
                earlier
                    .frontends
                    .insert(frontend.key.clone(), frontend.clone());
            }
        }
    }
}

fn config_of(items: &[Item]) -> Config {
    let mut config = Config::default();
    for item in items {
        match &item.state {
            ItemState::Frontend(frontend) => {
                config
                    .frontends
                    .insert(frontend.key.clone(), frontend.clone());
            }
            ItemState::Backend(backend) => {
                config.backends.insert(backend.key.clone(), backend.clone());
            }
            ItemState::Refused(_) => {}
        }
    }
    config
}

/// A frontend whose backend is not imported still binds (see `haproxy::render`): say so.
fn note_waiting_frontends(items: &mut [Item], config: &Config) {
    let refused: BTreeSet<String> = items
        .iter()
        .filter(|item| item.kind == ItemKind::Backend && item.is_refused())
        .map(|item| item.key.clone())
        .collect();
    for item in items.iter_mut() {
        let ItemState::Frontend(frontend) = &item.state else {
            continue;
        };
        let answer = match frontend.mode {
            Mode::Http => "answers 503",
            Mode::Tcp => "closes connections",
        };
        for missing in config.missing_backends_of(frontend) {
            let why = if refused.contains(&missing) {
                "was refused"
            } else {
                "is not in the file"
            };
            item.remarks.push(format!(
                "backend {missing} {why}: the frontend is imported, binds and {answer} for \
                 its requests (waitingForBackend) until a backend {missing} is created"
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stand-in for `haproxy -c` that refuses every `reqadd` line, naming its line.
    async fn refuse_reqadd(text: String) -> Result<(), ConfigRejected> {
        match text
            .lines()
            .position(|line| line.trim().starts_with("reqadd"))
        {
            None => Ok(()),
            Some(index) => Err(ConfigRejected {
                lines: vec![
                    format!("config : parsing [haproxy.cfg:{}] : no reqadd", index + 1),
                    "config : Fatal errors found in configuration.".to_owned(),
                ],
            }),
        }
    }

    #[tokio::test]
    async fn a_refused_item_leaves_the_others_and_its_frontends_wait() {
        let mut items = super::super::parse(
            br#"{"version":1,
            "frontends":[{"key":"f","bind":":80","backend":"b","natives":["reqadd X:\\ y"]},
                         {"key":"g","bind":":81","backend":"b"},
                         {"key":"h","bind":":82","backend":"c","mode":"tcp"}],
            "backends":[{"key":"b","type":"static","natives":["option forwardfor","reqadd Z:\\ z"]}]}"#,
        )
        .unwrap();
        let settings = RenderSettings::new("/run/a.sock".into(), "/run/state".into());
        let mut checks = 0;
        let config = check_items(&mut items, &settings, |text| {
            checks += 1;
            refuse_reqadd(text)
        })
        .await;
        // The whole config, then each of the four items.
        assert_eq!(checks, 5);
        assert_eq!(config.frontends.keys().collect::<Vec<_>>(), ["g", "h"]);
        assert!(config.backends.is_empty());
        let refusal = |i: usize| match &items[i].state {
            ItemState::Refused(error) => error.clone(),
            other => panic!("{other:?}"),
        };
        assert!(refusal(0) == "natives[0] \"reqadd X:\\ y\": haproxy -c: no reqadd");
        assert!(refusal(3).starts_with("natives[1] \"reqadd Z:\\ z\": haproxy -c:"));
        assert!(!refusal(3).contains("Fatal errors"));
        assert_eq!(items[1].remarks.len(), 1);
        assert!(
            items[1].remarks[0].starts_with(
                "backend b was refused: the frontend is imported, binds and answers 503"
            )
        );
        assert!(items[2].remarks[0].starts_with(
            "backend c is not in the file: the frontend is imported, binds and closes connections"
        ));
    }

    #[tokio::test]
    async fn a_frontend_on_an_address_an_earlier_one_binds_is_refused() {
        let mut items = super::super::parse(
            br#"{"version":1,
            "frontends":[{"key":"a","bind":"127.0.0.1:80,127.0.0.1:81","backend":"b"},
                         {"key":"b","bind":"127.0.0.2:80","backend":"b"},
                         {"key":"c","bind":"127.0.0.3:82,127.0.0.1:81","backend":"b"}],
            "backends":[{"key":"b","type":"static"}]}"#,
        )
        .unwrap();
        let settings = RenderSettings::new("/run/a.sock".into(), "/run/state".into());
        let config = check_items(&mut items, &settings, refuse_reqadd).await;
        assert_eq!(config.frontends.keys().collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(
            items[2].state,
            ItemState::Refused(
                "bind: 127.0.0.1:81 is already bound by frontend a (HAProxy would split its \
                 connections between the two at random)"
                    .to_owned()
            )
        );
    }

    #[tokio::test]
    async fn a_config_haproxy_accepts_is_checked_once() {
        let mut items = super::super::parse(
            br#"{"version":1,"frontends":[{"key":"f","bind":":80","backend":"b"}],
                 "backends":[{"key":"b","type":"static"}]}"#,
        )
        .unwrap();
        let settings = RenderSettings::new("/run/a.sock".into(), "/run/state".into());
        let mut checks = 0;
        let config = check_items(&mut items, &settings, |text| {
            checks += 1;
            refuse_reqadd(text)
        })
        .await;
        assert_eq!(checks, 1);
        assert_eq!((config.frontends.len(), config.backends.len()), (1, 1));
        assert!(items.iter().all(|item| item.remarks.is_empty()));
    }

    #[test]
    fn line_numbers_of_alerts() {
        for (alert, expected) in [
            (
                "config : parsing [haproxy.cfg:57] : The 'reqirep' directive is not supported",
                Some((57, "The 'reqirep' directive is not supported")),
            ),
            (
                "config : parsing [haproxy.cfg:11]: option 'forceclose' is not supported",
                Some((11, "option 'forceclose' is not supported")),
            ),
            ("config : Fatal errors found in configuration.", None),
            ("parsing [haproxy.cfg:x]", None),
            ("parsing [haproxy.cfg:", None),
        ] {
            assert_eq!(config_line_number(alert), expected, "{alert}");
        }
    }

    #[test]
    fn an_alert_on_a_native_names_it() {
        let text = "frontend f\n    bind :80\n    reqadd X-A:\\ b\n";
        let rejected = ConfigRejected {
            lines: vec![
                "config : parsing [haproxy.cfg:3] : The 'reqadd' directive is not supported anymore since HAProxy 2.1.".to_owned(),
                "config : Fatal errors found in configuration.".to_owned(),
            ],
        };
        let natives = vec!["option forwardfor".to_owned(), "reqadd X-A:\\ b".to_owned()];
        assert_eq!(
            describe(&rejected, text, &natives),
            "natives[1] \"reqadd X-A:\\ b\": haproxy -c: The 'reqadd' directive is not \
             supported anymore since HAProxy 2.1."
        );
    }
}
