//! Reconciling, as a pure function: the configuration's table, a Docker snapshot and what
//! was last committed in, what the kernel must hold and how to get it there out. Used by
//! the daemon loop and by `trafficjam check`, so both set odd networks aside alike.

use std::collections::{BTreeMap, BTreeSet};

use crate::docker::swarm::GWBRIDGE;
use crate::docker::{self, Snapshot};
use crate::firewall::BridgePorts;
use crate::plan::{self, Change, ManagedNetwork, PlanError, Port, Ruleset};

/// What one reconcile decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reconciled {
    /// The ruleset the kernel must hold.
    pub ruleset: Ruleset,
    /// The networks it isolates.
    pub networks: Vec<ManagedNetwork>,
    /// Networks set aside (not isolated), with why: one odd network never stops the others.
    pub rejected: Vec<PlanError>,
    /// How to get the kernel from what was committed to `ruleset`.
    pub change: Change,
    /// Whether the set of managed bridges differs from the committed one (their
    /// br_netfilter attributes are then set).
    pub bridges_changed: bool,
}

/// Binds each network's containers to their bridge ports: a port whose peer carries the
/// MAC of one of the network's endpoints is that container's. A port with no such
/// endpoint (not Docker's, or a container that changed its MAC) stays unresolved, and port
/// security lets it claim no known identity.
fn attach_ports(
    networks: &mut [ManagedNetwork],
    snapshot: &Snapshot,
    ports: &BTreeMap<String, BridgePorts>,
) {
    for net in networks {
        let (Some(found), Some(docker)) = (
            ports.get(&net.bridge),
            snapshot.networks.iter().find(|n| n.name == net.name),
        ) else {
            continue;
        };
        net.gateway_mac = found.mac;
        net.unbound_ports = found
            .ports
            .iter()
            .filter(|link| {
                Some(&link.name) != net.remote_port.as_ref()
                    && !docker
                        .endpoints
                        .iter()
                        .any(|e| e.mac == Some(link.peer_mac))
            })
            .map(|link| link.name.clone())
            .collect();
        net.ports = found
            .ports
            .iter()
            .filter_map(|link| {
                let endpoint = docker
                    .endpoints
                    .iter()
                    .find(|e| e.mac == Some(link.peer_mac))?;
                Some(Port {
                    name: link.name.clone(),
                    mac: link.peer_mac,
                    addrs: endpoint.addrs.clone(),
                })
            })
            .collect();
    }
}

/// Plans the networks of `snapshot` into our table `table`, with the bridges' `ports` as
/// the kernel showed them, against `committed` (what the kernel was last given, if it is
/// believed to still hold it). Drops report to NFLOG group `log_group`, if any.
///
/// Fails only when the table name itself is unusable; odd networks are set aside instead.
pub(crate) fn reconcile(
    table: &str,
    log_group: Option<u16>,
    snapshot: &Snapshot,
    ports: &BTreeMap<String, BridgePorts>,
    committed: Option<&Ruleset>,
) -> Result<Reconciled, PlanError> {
    let mut managed = docker::managed_networks(snapshot);
    // Overlay networks have tables of their own, in their namespaces.
    managed.retain(|m| {
        snapshot
            .networks
            .iter()
            .any(|n| n.name == m.name && n.overlay.is_none())
    });
    for net in &mut managed {
        net.log_group = log_group;
    }
    attach_ports(&mut managed, snapshot, ports);
    let (networks, rejected) = plan::retain_plannable(managed);
    // With an overlay network isolated here, its containers (on docker_gwbridge) and those
    // of the host's isolated networks may not send to the VXLAN port (plan_guarded).
    let vxlan_guard: Vec<String> = if snapshot.networks.iter().any(|n| n.overlay.is_some()) {
        std::iter::once(GWBRIDGE.to_owned())
            .chain(networks.iter().map(|n| n.bridge.clone()))
            .collect()
    } else {
        Vec::new()
    };
    planned(table, (networks, rejected), &vxlan_guard, committed)
}

/// The plan of the networks kept, and how the kernel must change from `committed`.
fn planned(
    table: &str,
    (networks, rejected): (Vec<ManagedNetwork>, Vec<PlanError>),
    vxlan_guard: &[String],
    committed: Option<&Ruleset>,
) -> Result<Reconciled, PlanError> {
    let ruleset = plan::plan_guarded(table, &networks, vxlan_guard)?;
    let change = ruleset.change_from(committed);
    let committed_bridges = committed.map(Ruleset::bridges).unwrap_or_default();
    let bridges_changed = ruleset.bridges() != committed_bridges;
    Ok(Reconciled {
        ruleset,
        networks,
        rejected,
        change,
        bridges_changed,
    })
}

/// Plans the overlay network `network` alone, for our table `table` in its namespace on
/// this node, whose bridge `bridge` has the VXLAN port `remote_port` and the ports
/// `ports` (as the kernel showed them there), `stateful` when br_netfilter hands its
/// traffic to conntrack, against `committed` there.
pub(crate) fn reconcile_overlay(
    table: &str,
    network: &docker::NetworkSnapshot,
    (bridge, remote_port): (&str, &str),
    (ports, stateful): (&BridgePorts, bool),
    committed: Option<&Ruleset>,
) -> Result<Reconciled, PlanError> {
    let alone = Snapshot {
        networks: vec![docker::NetworkSnapshot {
            bridge: bridge.to_owned(),
            ..network.clone()
        }],
        ..Snapshot::default()
    };
    let mut managed = docker::managed_networks(&alone);
    for net in &mut managed {
        net.remote_port = Some(remote_port.to_owned());
        net.remote_stateful = stateful;
    }
    attach_ports(
        &mut managed,
        &alone,
        &BTreeMap::from([(bridge.to_owned(), ports.clone())]),
    );
    planned(table, plan::retain_plannable(managed), &[], committed)
}

/// The bridges whose br_netfilter attributes a reconcile must set: all of them on a resync
/// (a Docker restart recreates a bridge with the attribute reset), else when they changed.
pub(crate) fn bridges_to_set(reconciled: &Reconciled, resync: bool) -> Option<BTreeSet<String>> {
    (resync || reconciled.bridges_changed).then(|| reconciled.ruleset.bridges())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::config::{Filter, NetworkPolicy, PolicySource, Selector};
    use crate::docker::{Endpoint, NetworkSnapshot};
    use crate::plan::DEFAULT_TABLE;

    pub(crate) fn network(name: &str, bridge: &str, proxy: Option<&str>) -> NetworkSnapshot {
        NetworkSnapshot {
            name: name.into(),
            id: format!("{name}-id"),
            bridge: bridge.into(),
            subnets: vec!["10.1.0.0/24".parse().unwrap()],
            whitelisted: proxy
                .map(|addr| Endpoint {
                    container_id: "c0ffee".into(),
                    container_name: "proxy".into(),
                    addrs: vec![addr.parse().unwrap()],
                    mac: Some([2, 0, 0, 0, 0, 2]),
                })
                .into_iter()
                .collect(),
            allowed: Vec::new(),
            endpoints: Vec::new(),
            gateways: vec!["10.1.0.1".parse().unwrap()],
            policy: NetworkPolicy::whitelisting(Selector::query(vec![
                Filter::parse("name=proxy").unwrap(),
            ])),
            source: PolicySource::Labels,
            overlay: None,
        }
    }

    fn no_ports() -> BTreeMap<String, BridgePorts> {
        BTreeMap::new()
    }

    fn snapshot(networks: Vec<NetworkSnapshot>) -> Snapshot {
        Snapshot {
            networks,
            ..Snapshot::default()
        }
    }

    #[test]
    fn nothing_committed_means_a_full_batch_and_new_bridges() {
        let s = snapshot(vec![network("web", "br-web", Some("10.1.0.2"))]);
        let r = reconcile(DEFAULT_TABLE, None, &s, &no_ports(), None).unwrap();
        assert_eq!(r.change, Change::Full);
        assert!(r.bridges_changed);
        assert_eq!(
            bridges_to_set(&r, false),
            Some(BTreeSet::from(["br-web".into()]))
        );
    }

    #[test]
    fn the_same_snapshot_changes_nothing_and_a_new_proxy_address_is_an_element_update() {
        let s = snapshot(vec![network("web", "br-web", Some("10.1.0.2"))]);
        let first = reconcile(DEFAULT_TABLE, None, &s, &no_ports(), None)
            .unwrap()
            .ruleset;
        let again = reconcile(DEFAULT_TABLE, None, &s, &no_ports(), Some(&first)).unwrap();
        assert_eq!(again.change, Change::None);
        assert!(!again.bridges_changed);
        assert_eq!(bridges_to_set(&again, false), None);
        // A resync sets the attributes again even so.
        assert!(bridges_to_set(&again, true).is_some());

        let moved = snapshot(vec![network("web", "br-web", Some("10.1.0.9"))]);
        let r = reconcile(DEFAULT_TABLE, None, &moved, &no_ports(), Some(&first)).unwrap();
        assert_eq!(r.change, Change::Elements);
        assert!(!r.bridges_changed);
    }

    #[test]
    fn a_recreated_network_on_a_new_bridge_is_a_full_batch() {
        let s = snapshot(vec![network("web", "br-web", Some("10.1.0.2"))]);
        let first = reconcile(DEFAULT_TABLE, None, &s, &no_ports(), None)
            .unwrap()
            .ruleset;
        let recreated = snapshot(vec![network("web", "br-new", Some("10.1.0.2"))]);
        let r = reconcile(DEFAULT_TABLE, None, &recreated, &no_ports(), Some(&first)).unwrap();
        assert_eq!(r.change, Change::Full);
        assert!(r.bridges_changed);
    }

    #[test]
    fn odd_networks_are_set_aside_and_the_rest_isolated() {
        let s = snapshot(vec![
            network("web", "br-web", None),
            network("twin", "br-web", None),
            network("api", "br-api", None),
        ]);
        let r = reconcile(DEFAULT_TABLE, None, &s, &no_ports(), None).unwrap();
        let names: Vec<&str> = r.ruleset.networks.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["api", "web"]);
        assert_eq!(r.rejected.len(), 1, "{:?}", r.rejected);
        assert!(matches!(r.rejected[0], PlanError::SharedBridge { .. }));
    }

    #[test]
    fn ports_are_bound_to_the_endpoints_with_their_peers_mac_and_new_ones_are_elements() {
        use crate::firewall::PortLink;
        let mut web = network("web", "br-web", Some("10.1.0.2"));
        web.endpoints = web.whitelisted.clone();
        web.endpoints.push(Endpoint {
            container_id: "b1".into(),
            container_name: "backend".into(),
            addrs: vec!["10.1.0.3".parse().unwrap()],
            mac: Some([2, 0, 0, 0, 0, 3]),
        });
        let s = snapshot(vec![web]);
        let link = |name: &str, last| PortLink {
            name: name.into(),
            peer_mac: [2, 0, 0, 0, 0, last],
        };
        let mut ports = BTreeMap::from([(
            "br-web".to_owned(),
            BridgePorts {
                mac: Some([2, 0, 0, 0, 0, 1]),
                // A port whose peer has no endpoint's MAC (a changed MAC, a foreign
                // veth) is left unresolved.
                ports: vec![link("veth-proxy", 2), link("veth-stray", 9)],
            },
        )]);
        let first = reconcile(DEFAULT_TABLE, None, &s, &ports, None).unwrap();
        let net = &first.networks[0];
        assert_eq!(net.gateway_mac, Some([2, 0, 0, 0, 0, 1]));
        assert_eq!(
            net.ports,
            [Port {
                name: "veth-proxy".into(),
                mac: [2, 0, 0, 0, 0, 2],
                addrs: vec!["10.1.0.2".parse().unwrap()],
            }]
        );
        // The backend's port appears: its binding is an element update.
        ports
            .get_mut("br-web")
            .unwrap()
            .ports
            .push(link("veth-b1", 3));
        let second = reconcile(DEFAULT_TABLE, None, &s, &ports, Some(&first.ruleset)).unwrap();
        assert_eq!(second.networks[0].ports.len(), 2);
        assert_eq!(second.change, Change::Elements);
    }

    #[test]
    fn no_managed_network_means_no_table() {
        let r = reconcile(DEFAULT_TABLE, None, &Snapshot::default(), &no_ports(), None).unwrap();
        assert!(r.ruleset.tables.is_empty());
        assert!(!r.bridges_changed);
        assert!(reconcile("bad name", None, &Snapshot::default(), &no_ports(), None).is_err());
    }
}
