//! The pure half of the Docker module: turning a [`Snapshot`] into the plan's input
//! ([`ManagedNetwork`]s), and reading Docker's spellings (MACs, endpoint addresses,
//! container and bridge names) into the snapshot's terms. No I/O.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;

use super::{AllowedEndpoints, Endpoint, Snapshot};
use crate::config::NetworkPolicy;
use crate::plan::{IpVersion, Mac, ManagedNetwork};
use crate::policy::Grant;

/// The network option that names a bridge network's Linux bridge.
const BRIDGE_NAME_OPTION: &str = "com.docker.network.bridge.name";

/// The plan's input: each managed network with the addresses of its whitelisted
/// containers on that network, and its allow rules resolved to pairs of addresses.
pub fn managed_networks(snapshot: &Snapshot) -> Vec<ManagedNetwork> {
    snapshot
        .networks
        .iter()
        .map(|n| ManagedNetwork {
            name: n.name.clone(),
            bridge: n.bridge.clone(),
            subnets: n.subnets.clone(),
            whitelist: n
                .whitelisted
                .iter()
                .flat_map(|e| e.addrs.iter().copied())
                .collect(),
            host_access: n.policy.host_access,
            host_ports: n.policy.host_ports.clone(),
            deny_outbound: n.policy.deny_outbound.clone(),
            allow_rules: !n.policy.allow.is_empty(),
            grants: grants(&n.policy, &n.allowed),
            gateways: n.gateways.clone(),
            mode: n.policy.mode,
            ..ManagedNetwork::default()
        })
        .collect()
}

/// Every (from, to, ports) the allow rules give, address by address, within a family.
fn grants(policy: &NetworkPolicy, allowed: &[AllowedEndpoints]) -> BTreeSet<Grant> {
    let mut grants = BTreeSet::new();
    for (rule, sides) in policy.allow.iter().zip(allowed) {
        let ports: Vec<Option<_>> = match &rule.ports {
            None => vec![None],
            Some(list) => list.iter().copied().map(Some).collect(),
        };
        for from in sides.from.iter().flat_map(|e| &e.addrs) {
            for to in sides.to.iter().flat_map(|e| &e.addrs) {
                if IpVersion::of(from) != IpVersion::of(to) || from == to {
                    continue;
                }
                for p in &ports {
                    grants.insert(Grant {
                        from: *from,
                        to: *to,
                        ports: *p,
                    });
                }
            }
        }
    }
    grants
}

/// The endpoints of the containers in `matching` (id -> name, as `docker ps` listed them).
/// While a container starts, Docker 28 may list its endpoint under `ep-<endpoint id>`
/// instead of the container's id: the endpoint's name (the container's, unique among
/// containers) still tells whose it is.
pub(super) fn chosen_of(
    endpoints: &[Endpoint],
    matching: &HashMap<String, String>,
) -> Vec<Endpoint> {
    endpoints
        .iter()
        .filter_map(|e| {
            let (id, name) = matching.get_key_value(&e.container_id).or_else(|| {
                matching
                    .iter()
                    .find(|(_, name)| !name.is_empty() && **name == e.container_name)
            })?;
            Some(Endpoint {
                container_id: id.clone(),
                container_name: name.clone(),
                ..e.clone()
            })
        })
        .collect()
}

/// A container's name as `docker ps` shows it (the list gives `/name`).
pub(super) fn container_name(names: Option<Vec<String>>) -> String {
    names
        .and_then(|n| n.into_iter().next())
        .map(|n| n.trim_start_matches('/').to_owned())
        .unwrap_or_default()
}

/// Parses Docker's `02:42:ac:11:00:02`.
pub fn parse_mac(text: &str) -> Option<Mac> {
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for byte in &mut mac {
        *byte = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// An address as Docker writes it: an endpoint's with its prefix (`172.20.0.2/16`; empty
/// when none), a gateway's without (`172.20.0.1`).
pub(super) fn endpoint_address(text: &str) -> Option<IpAddr> {
    text.split('/').next()?.parse().ok()
}

/// The Linux bridge behind a Docker bridge network.
pub(super) fn bridge_name(id: &str, options: &HashMap<String, String>) -> String {
    match options.get(BRIDGE_NAME_OPTION) {
        Some(name) if !name.is_empty() => name.clone(),
        _ => format!("br-{}", short_id(id)),
    }
}

/// An id as Docker shortens it (`docker ps`, the default bridge names): its first 12
/// characters.
pub(super) fn short_id(id: &str) -> &str {
    &id[..id.len().min(12)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Filter, PolicySource, Selector};
    use crate::docker::NetworkSnapshot;
    use crate::policy::HostAccess;

    fn endpoint(id: &str, addrs: &[&str]) -> Endpoint {
        Endpoint {
            container_id: id.into(),
            container_name: format!("name-{id}"),
            addrs: addrs.iter().map(|a| a.parse().unwrap()).collect(),
            mac: None,
        }
    }

    #[test]
    fn a_starting_container_is_known_by_its_endpoint_name() {
        let mut starting = endpoint("ep-0a1b2c", &["172.20.0.9"]);
        starting.container_name = "proxy".into();
        let mut other = endpoint("ep-ffff", &["172.20.0.8"]);
        other.container_name = "backend".into();
        let running = endpoint("c2", &["172.20.0.3"]);
        let matching = HashMap::from([
            ("c1".to_owned(), "proxy".to_owned()),
            ("c2".to_owned(), "name-c2".to_owned()),
        ]);
        let got = chosen_of(&[starting, other, running], &matching);
        let ids: Vec<(&str, &str)> = got
            .iter()
            .map(|e| (e.container_id.as_str(), e.container_name.as_str()))
            .collect();
        assert_eq!(ids, [("c1", "proxy"), ("c2", "name-c2")]);
    }

    #[test]
    fn macs_parse_as_docker_writes_them() {
        assert_eq!(
            parse_mac("02:42:ac:11:00:0f"),
            Some([2, 0x42, 0xac, 0x11, 0, 0x0f])
        );
        assert_eq!(parse_mac("02:42:ac:11:00"), None);
        assert_eq!(parse_mac("02:42:ac:11:00:0f:01"), None);
        assert_eq!(parse_mac(""), None);
    }

    #[test]
    fn endpoint_addresses_lose_their_prefix() {
        assert_eq!(
            endpoint_address("172.20.0.2/16"),
            Some("172.20.0.2".parse().unwrap())
        );
        assert_eq!(
            endpoint_address("fd00::2/64"),
            Some("fd00::2".parse().unwrap())
        );
        assert_eq!(endpoint_address(""), None);
    }

    #[test]
    fn bridge_names_follow_docker() {
        let id = "0123456789abcdef0123";
        assert_eq!(bridge_name(id, &HashMap::new()), "br-0123456789ab");
        let opts = HashMap::from([(BRIDGE_NAME_OPTION.to_owned(), "docker0".to_owned())]);
        assert_eq!(bridge_name(id, &opts), "docker0");
    }

    #[test]
    fn allow_rules_become_grants_between_the_chosen_containers_addresses() {
        use crate::config::AllowRule;
        use crate::policy::PortRange;
        let rule = |ports: Option<Vec<PortRange>>| AllowRule {
            from: Selector::query(vec![Filter::parse("name=^app$").unwrap()]),
            to: Selector::query(vec![Filter::parse("name=^db$").unwrap()]),
            ports,
            origin: "test".into(),
        };
        let policy = NetworkPolicy {
            allow: vec![
                rule(Some(vec![PortRange::parse("5432/tcp").unwrap()])),
                rule(None),
            ],
            ..NetworkPolicy::whitelisting(Selector::default())
        };
        let app = endpoint("app", &["172.20.0.5", "fd00::5"]);
        let db = endpoint("db", &["172.20.0.6", "fd00::6"]);
        let sides = AllowedEndpoints {
            from: vec![app.clone()],
            to: vec![db, app],
        };
        let g = grants(&policy, &[sides.clone(), sides]);
        // Per family, never a container with itself, once with the port and once open.
        let text: Vec<String> = g
            .iter()
            .map(|g| format!("{} > {} {:?}", g.from, g.to, g.ports.map(|p| p.to_string())))
            .collect();
        assert_eq!(
            text,
            [
                "172.20.0.5 > 172.20.0.6 None",
                "172.20.0.5 > 172.20.0.6 Some(\"5432/tcp\")",
                "fd00::5 > fd00::6 None",
                "fd00::5 > fd00::6 Some(\"5432/tcp\")",
            ]
        );
    }

    #[test]
    fn whitelisted_endpoints_give_the_network_whitelist() {
        let snapshot = Snapshot {
            networks: vec![NetworkSnapshot {
                name: "public".into(),
                id: "abc".into(),
                bridge: "br-abc".into(),
                subnets: vec!["172.20.0.0/16".parse().unwrap()],
                whitelisted: vec![
                    endpoint("proxy", &["172.20.0.2", "fd00::2"]),
                    endpoint("proxy2", &["172.20.0.3"]),
                ],
                allowed: Vec::new(),
                endpoints: Vec::new(),
                gateways: vec!["172.20.0.1".parse().unwrap()],
                policy: NetworkPolicy {
                    host_access: HostAccess::Open,
                    ..NetworkPolicy::whitelisting(Selector::query(vec![
                        Filter::parse("name=proxy").unwrap(),
                    ]))
                },
                source: PolicySource::Labels,
                overlay: None,
            }],
            ..Snapshot::default()
        };
        let nets = managed_networks(&snapshot);
        assert_eq!(nets.len(), 1);
        assert_eq!(nets[0].bridge, "br-abc");
        assert_eq!(nets[0].host_access, HostAccess::Open);
        assert!(!nets[0].allow_rules);
        assert_eq!(
            nets[0].whitelist,
            BTreeSet::from([
                "172.20.0.2".parse().unwrap(),
                "172.20.0.3".parse().unwrap(),
                "fd00::2".parse().unwrap(),
            ])
        );
    }
}
