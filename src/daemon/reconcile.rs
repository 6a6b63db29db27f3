//! Reconciling, as a pure function: the configuration's table, a Docker snapshot and what
//! was last committed in, what the kernel must hold and how to get it there out. Used by
//! the daemon loop and by `trafficjam check`, so both set odd networks aside alike.

use std::collections::BTreeSet;

use crate::docker::{self, Snapshot};
use crate::plan::{self, Change, ManagedNetwork, PlanError, Ruleset};

/// What one reconcile decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reconciled {
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

/// Plans the networks of `snapshot` into our table `table`, against `committed` (what the
/// kernel was last given, if it is believed to still hold it).
///
/// Fails only when the table name itself is unusable; odd networks are set aside instead.
pub fn reconcile(
    table: &str,
    snapshot: &Snapshot,
    committed: Option<&Ruleset>,
) -> Result<Reconciled, PlanError> {
    let (networks, rejected) = plan::retain_plannable(docker::managed_networks(snapshot));
    let ruleset = plan::plan(table, &networks)?;
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

/// The bridges whose br_netfilter attributes a reconcile must set: all of them on a resync
/// (a Docker restart recreates a bridge with the attribute reset), else when they changed.
pub fn bridges_to_set(reconciled: &Reconciled, resync: bool) -> Option<BTreeSet<String>> {
    (resync || reconciled.bridges_changed).then(|| reconciled.ruleset.bridges())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::config::{Filter, NetworkPolicy, PolicySource};
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
                })
                .into_iter()
                .collect(),
            policy: NetworkPolicy {
                whitelist: vec![Filter::parse("name=proxy").unwrap()],
                allow_host_traffic: false,
            },
            source: PolicySource::Labels,
        }
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
        let r = reconcile(DEFAULT_TABLE, &s, None).unwrap();
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
        let first = reconcile(DEFAULT_TABLE, &s, None).unwrap().ruleset;
        let again = reconcile(DEFAULT_TABLE, &s, Some(&first)).unwrap();
        assert_eq!(again.change, Change::None);
        assert!(!again.bridges_changed);
        assert_eq!(bridges_to_set(&again, false), None);
        // A resync sets the attributes again even so.
        assert!(bridges_to_set(&again, true).is_some());

        let moved = snapshot(vec![network("web", "br-web", Some("10.1.0.9"))]);
        let r = reconcile(DEFAULT_TABLE, &moved, Some(&first)).unwrap();
        assert_eq!(r.change, Change::Elements);
        assert!(!r.bridges_changed);
    }

    #[test]
    fn a_recreated_network_on_a_new_bridge_is_a_full_batch() {
        let s = snapshot(vec![network("web", "br-web", Some("10.1.0.2"))]);
        let first = reconcile(DEFAULT_TABLE, &s, None).unwrap().ruleset;
        let recreated = snapshot(vec![network("web", "br-new", Some("10.1.0.2"))]);
        let r = reconcile(DEFAULT_TABLE, &recreated, Some(&first)).unwrap();
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
        let r = reconcile(DEFAULT_TABLE, &s, None).unwrap();
        let names: Vec<&str> = r.ruleset.networks.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["api", "web"]);
        assert_eq!(r.rejected.len(), 1, "{:?}", r.rejected);
        assert!(matches!(r.rejected[0], PlanError::SharedBridge { .. }));
    }

    #[test]
    fn no_managed_network_means_no_table() {
        let r = reconcile(DEFAULT_TABLE, &Snapshot::default(), None).unwrap();
        assert!(r.ruleset.tables.is_empty());
        assert!(!r.bridges_changed);
        assert!(reconcile("bad name", &Snapshot::default(), None).is_err());
    }
}
