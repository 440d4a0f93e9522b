//! Taking over the members of an HAProxy an earlier run left serving (after a kill -9 of the
//! aqueduct): read from its `show servers state`.

use crate::config::{BackendType, Config};
use crate::haproxy::render::server_name;
use crate::haproxy::stat::{AdminState, ServerStateRow};
use crate::registry::model::{Registration, RegistrationKey};

/// The members an HAProxy left serving by an earlier run still has, as registrations per
/// dynamic backend of `config`: every server named like a member of the backend (see
/// [`crate::haproxy::render::server_name`]) that is not in maintenance (joining or leaving
/// ones are left to the registry). They keep serving, after a takeover, until the registry's
/// snapshot replaces them; ordered by their HAProxy server id, so ids are kept where possible.
pub fn inherited_from(
    config: &Config,
    rows: &[ServerStateRow],
) -> Vec<(String, Vec<Registration>)> {
    let mut inherited = Vec::new();
    for backend in config.backends.values() {
        let (BackendType::Dynamic, Some(name), Some(version)) =
            (backend.kind, &backend.name, &backend.version)
        else {
            continue;
        };
        let mut servers: Vec<&ServerStateRow> = rows
            .iter()
            .filter(|row| row.backend == backend.key && row.admin_state() != AdminState::Maint)
            .collect();
        servers.sort_by_key(|row| row.server_id);
        let registrations: Vec<Registration> = servers
            .into_iter()
            .filter_map(|row| {
                let (host, port) = (row.addr?, row.port?);
                (row.server == server_name(&backend.key, host, port)).then(|| {
                    let key = RegistrationKey {
                        name: name.clone(),
                        version: version.clone(),
                        host: host.to_string(),
                        port,
                    };
                    Registration::new(key, 0, Default::default())
                })
            })
            .collect();
        if !registrations.is_empty() {
            inherited.push((backend.key.clone(), registrations));
        }
    }
    inherited
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `(backend, hosts:ports)` inherited from a `show servers state` text.
    fn check_inherited(state: &str, expected: &[(&str, &[&str])]) {
        let mut config = Config::default();
        let fixed = [("10.0.0.9".parse().unwrap(), 80)];
        for backend in [
            crate::config::Backend::dynamic("app", "svc", "1"),
            crate::config::Backend::with_static_members("fixed", &fixed),
        ] {
            config.backends.insert(backend.key.clone(), backend);
        }
        let rows = crate::haproxy::stat::parse_servers_state(state).unwrap();
        let inherited: Vec<(String, Vec<String>)> = inherited_from(&config, &rows)
            .into_iter()
            .map(|(key, regs)| {
                let members = regs
                    .iter()
                    .map(|r| {
                        assert_eq!((r.name.as_str(), r.version.as_str()), ("svc", "1"));
                        format!("{}:{}", r.host, r.port)
                    })
                    .collect();
                (key, members)
            })
            .collect();
        let expected: Vec<(String, Vec<String>)> = expected
            .iter()
            .map(|(key, members)| {
                (
                    key.to_string(),
                    members.iter().map(|m| m.to_string()).collect(),
                )
            })
            .collect();
        assert_eq!(inherited, expected);
    }

    const STATE_HEADER: &str = "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr srv_agent_addr srv_agent_port\n";

    #[test]
    fn members_of_a_leftover_haproxy_are_inherited_unless_in_maintenance() {
        check_inherited(STATE_HEADER, &[]);
        let state = format!(
            "{STATE_HEADER}\
3 app 2 app_10.0.0.2:80 10.0.0.2 2 0 1 1 0 6 3 2 6 0 0 1 - 80 - 0 0 - - 0
3 app 1 app_10.0.0.1:80 10.0.0.1 2 8 1 1 0 6 3 2 6 0 0 1 - 80 - 0 0 - - 0
3 app 3 app_10.0.0.3:80 10.0.0.3 0 1 1 1 0 1 0 0 0 0 0 1 - 80 - 0 0 - - 0
3 app 4 other-name 10.0.0.4 2 0 1 1 0 6 3 2 6 0 0 1 - 80 - 0 0 - - 0
4 fixed 1 fixed_10.0.0.9:80 10.0.0.9 2 0 1 1 0 6 3 2 6 0 0 0 - 80 - 0 0 - - 0
5 gone 1 gone_10.0.0.5:80 10.0.0.5 2 0 1 1 0 6 3 2 6 0 0 1 - 80 - 0 0 - - 0
"
        );
        // Ready and draining members of the dynamic backend, by server id; not the one in
        // maintenance (joining or leaving), not a server with a foreign name, nothing of a
        // static backend or of a backend the config no longer has.
        check_inherited(&state, &[("app", &["10.0.0.1:80", "10.0.0.2:80"])]);
    }
}
