//! Member health as the API and UI show it: HAProxy's `show stat` rows combined with the
//! planner's phases (a joining member is `DOWN` until its first passing check, whatever HAProxy
//! says; a leaving one is `DRAIN`).

use super::plan::Phase;
use crate::haproxy::stat::{ProxyKind, StatRow, StatStatus};
use crate::status::split_server_name;
use crate::status::{MemberSample, ProxySample, StatsSample};
use std::collections::BTreeMap;

/// Builds one sample from `show stat` rows. `phases` says which servers are joining or
/// leaving, `versions` which version each member of a backend in a rollout is;
/// `frontends`/`backends` are the configured keys (other proxies, like `stats` or a
/// placeholder, are left out).
pub fn sample_from_rows(
    rows: &[StatRow],
    phases: &BTreeMap<(String, String), Phase>,
    versions: &BTreeMap<(String, String), String>,
    frontends: &[String],
    backends: &[String],
    time_ms: u64,
) -> StatsSample {
    let mut sample = StatsSample {
        time_ms,
        ..StatsSample::default()
    };
    for row in rows {
        match row.kind {
            ProxyKind::Frontend if frontends.contains(&row.pxname) => {
                sample
                    .frontends
                    .insert(row.pxname.clone(), proxy_sample(row));
            }
            ProxyKind::Backend if backends.contains(&row.pxname) => {
                sample
                    .backends
                    .insert(row.pxname.clone(), proxy_sample(row));
            }
            ProxyKind::Server if backends.contains(&row.pxname) => {
                let server = (row.pxname.clone(), row.svname.clone());
                let mut member = member_sample(row, phases.get(&server));
                member.version = versions.get(&server).cloned();
                sample
                    .members
                    .entry(row.pxname.clone())
                    .or_default()
                    .push(member);
            }
            _ => {}
        }
    }
    sample
}

fn proxy_sample(row: &StatRow) -> ProxySample {
    ProxySample {
        status: row.status.clone().unwrap_or_default(),
        scur: row.scur.unwrap_or(0),
        smax: row.smax.unwrap_or(0),
        req_rate: row.req_rate.unwrap_or(0),
        rate: row.rate.unwrap_or(0),
    }
}

fn member_sample(row: &StatRow, phase: Option<&Phase>) -> MemberSample {
    let (host, port) = split_server_name(&row.svname);
    MemberSample {
        server: row.svname.clone(),
        host,
        port,
        status: member_status(row, phase).to_owned(),
        check_status: row.check_status.clone(),
        check_duration_ms: row.check_duration_ms,
        last_change_s: row.lastchg_secs,
        scur: row.scur.unwrap_or(0),
        rate: row.rate.unwrap_or(0),
        version: None,
        // HAProxy counts its own 503s (no server answered) on the backend only; a connection
        // that failed is charged to the server and never became a request there.
        requests: row.req_tot.or(row.stot).unwrap_or(0) + row.econ.unwrap_or(0),
        errors: row.hrsp_5xx.unwrap_or(0) + row.econ.unwrap_or(0) + row.eresp.unwrap_or(0),
        rtime_ms: row.rtime_ms,
        weight: row.weight,
    }
}

/// UP, DOWN, DRAIN or MAINT.
pub fn member_status(row: &StatRow, phase: Option<&Phase>) -> &'static str {
    match phase {
        Some(Phase::Joining) => return "DOWN",
        Some(Phase::Leaving { .. }) => return "DRAIN",
        _ => {}
    }
    match row.status_kind() {
        Some(StatStatus::Up | StatStatus::NoCheck) => "UP",
        Some(StatStatus::Drain | StatStatus::NoLb) => "DRAIN",
        Some(StatStatus::Maint) => "MAINT",
        _ => "DOWN",
    }
}
