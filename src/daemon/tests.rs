//! The loop's decisions, against a fake firewall: no root, no Docker.

use super::reconcile::tests::network;
use super::*;
use crate::firewall::{BatchKind, Fake};
use crate::plan::Family;

fn daemon(fake: &Fake) -> Daemon {
    Daemon::new(
        PathBuf::from("/nonexistent"),
        Config::default(),
        Worker::spawn(fake.clone()),
    )
}

fn snapshot(proxy: Option<&str>) -> Snapshot {
    Snapshot {
        networks: vec![network("web", "br-web", proxy)],
        ..Snapshot::default()
    }
}

async fn pass(d: &mut Daemon, snapshot: Snapshot, resync: bool) {
    d.apply_snapshot(snapshot, resync, Instant::now(), None)
        .await;
}

#[tokio::test]
async fn first_pass_applies_whole_and_sets_the_bridges() {
    let fake = Fake::new();
    let mut d = daemon(&fake);
    pass(&mut d, snapshot(Some("10.1.0.2")), true).await;
    let k = fake.kernel();
    assert_eq!(k.applies, [BatchKind::Full]);
    assert_eq!(k.bridge_calls, [BTreeSet::from(["br-web".to_owned()])]);
    assert!(k.installed.is_some());
    assert_eq!(d.condition, Condition::Active);
    assert_eq!(d.report.last_apply.as_ref().unwrap().kind, BatchKind::Full);
}

#[tokio::test]
async fn an_unchanged_snapshot_touches_nothing_and_a_whitelist_change_is_elements_only() {
    let fake = Fake::new();
    let mut d = daemon(&fake);
    pass(&mut d, snapshot(Some("10.1.0.2")), true).await;
    pass(&mut d, snapshot(Some("10.1.0.2")), false).await;
    pass(&mut d, snapshot(Some("10.1.0.3")), false).await;
    let k = fake.kernel();
    assert_eq!(k.applies, [BatchKind::Full, BatchKind::Elements]);
    // The bridges did not change: their attributes were set once.
    assert_eq!(k.bridge_calls.len(), 1);
}

/// Docker lists networks in no fixed order: the same networks listed otherwise are not
/// recreated ones, whose bridges would be set again (and their ports programmed again,
/// which the link watch announces, which starts another pass) at every pass.
#[tokio::test]
async fn networks_listed_in_another_order_are_not_recreated_ones() {
    let fake = Fake::new();
    let mut d = daemon(&fake);
    let listed = |order: [(&str, &str); 2]| Snapshot {
        networks: order.iter().map(|(n, b)| network(n, b, None)).collect(),
        ..Snapshot::default()
    };
    pass(&mut d, listed([("web", "br-web"), ("db", "br-db")]), true).await;
    pass(&mut d, listed([("db", "br-db"), ("web", "br-web")]), false).await;
    assert_eq!(fake.kernel().bridge_calls.len(), 1);
}

#[tokio::test]
async fn bound_ports_are_programmed_once_new_ones_as_they_come_and_all_on_a_resync() {
    use crate::firewall::PortLink;
    let fake = Fake::new();
    let mut d = daemon(&fake);
    let mut s = snapshot(Some("10.1.0.2"));
    s.networks[0].endpoints = s.networks[0].whitelisted.clone();
    let link = |name: &str, last| PortLink {
        name: name.into(),
        peer_mac: [2, 0, 0, 0, 0, last],
    };
    fake.kernel().ports = BTreeMap::from([(
        "br-web".to_owned(),
        BridgePorts {
            mac: Some([2, 0, 0, 0, 0, 1]),
            // A port of no known endpoint is not bound (nor programmed).
            ports: vec![link("veth-proxy", 2), link("veth-stray", 9)],
        },
    )]);
    pass(&mut d, s.clone(), true).await;
    pass(&mut d, s.clone(), false).await;
    assert_eq!(fake.kernel().bind_calls, [("br-web".to_owned(), 1)]);
    // A backend's port appears: only it is programmed.
    s.networks[0].endpoints.push(crate::docker::Endpoint {
        container_id: "b1".into(),
        container_name: "backend".into(),
        addrs: vec!["10.1.0.3".parse().unwrap()],
        mac: Some([2, 0, 0, 0, 0, 3]),
    });
    fake.kernel()
        .ports
        .get_mut("br-web")
        .unwrap()
        .ports
        .push(link("veth-b1", 3));
    pass(&mut d, s.clone(), false).await;
    // A resync programs everything again (another program may have undone it).
    pass(&mut d, s.clone(), true).await;
    let k = fake.kernel();
    assert_eq!(
        k.bind_calls,
        [
            ("br-web".to_owned(), 1),
            ("br-web".to_owned(), 1),
            ("br-web".to_owned(), 2)
        ]
    );
    assert_eq!(
        k.bound["br-web"],
        BTreeMap::from([
            ("veth-b1".to_owned(), [2, 0, 0, 0, 0, 3]),
            ("veth-proxy".to_owned(), [2, 0, 0, 0, 0, 2]),
        ])
    );
}

#[tokio::test]
async fn a_resync_repairs_drift_with_a_full_batch_and_sets_the_bridges_again() {
    let fake = Fake::new();
    let mut d = daemon(&fake);
    pass(&mut d, snapshot(Some("10.1.0.2")), true).await;
    // Someone runs `nft flush ruleset`.
    fake.kernel().installed = None;
    // An event-driven pass does not read the kernel back: nothing to do.
    pass(&mut d, snapshot(Some("10.1.0.2")), false).await;
    assert_eq!(fake.kernel().applies.len(), 1);
    pass(&mut d, snapshot(Some("10.1.0.2")), true).await;
    let k = fake.kernel();
    assert_eq!(k.applies, [BatchKind::Full, BatchKind::Full]);
    assert!(k.installed.is_some());
    assert_eq!(k.bridge_calls.len(), 2);
}

#[tokio::test]
async fn a_refused_batch_keeps_the_previous_rules_and_degrades() {
    let fake = Fake::new();
    let mut d = daemon(&fake);
    pass(&mut d, snapshot(Some("10.1.0.2")), true).await;
    let before = fake.kernel().installed.clone();
    fake.kernel().refuse_next_apply = Some("ENOMEM".into());
    pass(&mut d, snapshot(Some("10.1.0.3")), false).await;
    assert_eq!(fake.kernel().installed, before);
    assert!(matches!(d.condition, Condition::Degraded(ref why) if why.contains("ENOMEM")));
    assert_eq!(d.build_status().state, State::Degraded);
    // The next pass tries again, against what is still committed: elements only.
    pass(&mut d, snapshot(Some("10.1.0.3")), false).await;
    assert_eq!(d.condition, Condition::Active);
    assert_eq!(fake.kernel().applies.last(), Some(&BatchKind::Elements));
}

#[tokio::test]
async fn a_kernel_that_cannot_log_still_gets_the_isolation_without_log_rules() {
    let fake = Fake::new();
    fake.kernel().refuse_log_rules = true;
    let mut d = daemon(&fake);
    pass(&mut d, snapshot(Some("10.1.0.2")), true).await;
    assert_eq!(d.condition, Condition::Active);
    let installed = fake.kernel().installed.clone().expect("isolated");
    assert!(!installed.to_string().contains("log prefix"), "{installed}");
    assert!(
        installed.to_string().contains("counter drop"),
        "{installed}"
    );
    let status = d.build_status();
    assert!(
        status
            .drop_log
            .error
            .as_deref()
            .is_some_and(|e| e.contains("refused rules that log")),
        "{:?}",
        status.drop_log
    );
    // Later passes do not try the log rules again (until a reload).
    let applies = fake.kernel().applies.len();
    pass(&mut d, snapshot(Some("10.1.0.3")), false).await;
    assert_eq!(fake.kernel().applies.len(), applies + 1);
    assert_eq!(fake.kernel().applies.last(), Some(&BatchKind::Elements));
}

#[tokio::test]
async fn clear_removes_the_rules_and_passes_wait_for_a_reload() {
    let fake = Fake::new();
    let mut d = daemon(&fake);
    pass(&mut d, snapshot(Some("10.1.0.2")), true).await;
    let (reply, answer) = oneshot::channel();
    assert!(d.handle(Msg::Clear(Some(reply))).await.is_continue());
    assert!(answer.await.unwrap().is_ok());
    assert!(fake.kernel().installed.is_none());
    assert_eq!(d.build_status().state, State::Cleared);
    // Docker events while cleared change nothing.
    d.docker = None;
    d.pass(true, None).await;
    assert_eq!(fake.kernel().applies.len(), 1);
    // A reload of a missing configuration directory is refused, with the reason.
    let (reply, answer) = oneshot::channel();
    assert!(d.handle(Msg::Reload(Some(reply))).await.is_continue());
    assert!(matches!(
        answer.await.unwrap(),
        Err(ControlError::ConfigRejected(_))
    ));
    assert_eq!(d.build_status().state, State::Cleared);
}

#[tokio::test]
async fn an_overlay_network_is_isolated_in_its_namespace_again_at_once_and_cleared() {
    use crate::docker::{NetworkSnapshot, Overlay};
    use crate::firewall::FakeNamespace;
    let fake = Fake::new();
    let ns = PathBuf::from("/run/docker/netns/1-ovl0000000");
    fake.kernel().stateful = true;
    fake.kernel().namespaces.insert(
        ns.clone(),
        FakeNamespace {
            bridge: ("br0".into(), "vxlan0".into()),
            ..FakeNamespace::default()
        },
    );
    let mut d = daemon(&fake);
    // The bridge network web, and the overlay network ovl in the namespace at `netns`.
    let with_overlay = |netns: &PathBuf| {
        let mut snap = snapshot(Some("10.1.0.2"));
        snap.networks.push(NetworkSnapshot {
            overlay: Some(Overlay {
                netns: Some(netns.clone()),
                problem: None,
            }),
            ..network("ovl", "", Some("10.1.0.9"))
        });
        snap
    };
    pass(&mut d, with_overlay(&ns), true).await;
    let in_ns = |fake: &Fake| fake.kernel().namespaces[&ns].installed.clone();
    let planned = in_ns(&fake).expect("our table in the overlay's namespace");
    let text = planned.to_string();
    assert!(text.contains("loc4_ovl") && text.contains(r#"iifname "vxlan0" return"#));
    assert!(!text.contains("fwd_web"), "{text}");
    // The host's tables: the bridge network, and the VXLAN port closed to containers.
    let host = fake.kernel().installed.clone().unwrap().to_string();
    assert!(
        host.contains("fwd_web") && !host.contains("fwd_ovl"),
        "{host}"
    );
    assert!(
        host.contains(r#"iifname "docker_gwbridge" udp dport 4789 counter drop"#),
        "{host}"
    );
    let status = d.build_status();
    let ovl = status.networks.iter().find(|n| n.name == "ovl").unwrap();
    assert_eq!(
        ovl.namespace.as_deref(),
        Some("/run/docker/netns/1-ovl0000000")
    );
    assert_eq!(
        (ovl.bridge.as_str(), ovl.not_isolated.as_ref()),
        ("br0", None)
    );

    // Docker builds the namespace again (its restart): the rules are back the moment it
    // is mounted, Docker out of reach.
    fake.kernel().namespaces.get_mut(&ns).unwrap().installed = None;
    d.docker = None;
    assert!(
        d.handle(Msg::NamespacesMounted(vec![ns.clone()]))
            .await
            .is_continue()
    );
    assert_eq!(in_ns(&fake), Some(planned));

    // A namespace that is not there: said in the status, nothing else touched.
    let gone = PathBuf::from("/run/docker/netns/2-ovl0000000");
    pass(&mut d, with_overlay(&gone), false).await;
    let status = d.build_status();
    let ovl = status.networks.iter().find(|n| n.name == "ovl").unwrap();
    assert!(
        ovl.not_isolated
            .as_deref()
            .is_some_and(|w| w.contains("2-ovl0000000")),
        "{ovl:?}"
    );

    // Clear takes our tables out of every namespace, and the host's.
    let (reply, answer) = oneshot::channel();
    assert!(d.handle(Msg::Clear(Some(reply))).await.is_continue());
    assert!(answer.await.unwrap().is_ok());
    assert!(fake.kernel().installed.is_none());
    assert!(in_ns(&fake).is_none());
}

#[tokio::test]
async fn status_reads_the_drop_counters_of_each_network() {
    let fake = Fake::new();
    let mut d = daemon(&fake);
    pass(&mut d, snapshot(Some("10.1.0.2")), true).await;
    fake.kernel().counters = [
        ((Family::Inet, "deny_isolation_web".to_owned()), 5),
        ((Family::Inet, "deny_host_web".to_owned()), 2),
        ((Family::Bridge, "deny_isolation_web".to_owned()), 1),
        ((Family::Inet, "forward".to_owned()), 100),
    ]
    .into();
    fake.kernel().stateful = true;
    let (reply, answer) = oneshot::channel();
    assert!(d.handle(Msg::Status(reply)).await.is_continue());
    let status = answer.await.unwrap();
    assert_eq!(status.state, State::Active);
    assert_eq!(status.networks[0].name, "web");
    assert_eq!(status.networks[0].dropped_packets, 8);
    assert_eq!(status.networks[0].whitelisted[0].addresses, ["10.1.0.2"]);
}

/// Reports a change through the watch the daemon started, as the kernel would.
fn report(fake: &Fake, change: TableChange) {
    let mut kernel = fake.kernel();
    let watch = kernel
        .watch
        .as_mut()
        .expect("the daemon watches the ruleset");
    assert!(watch(change));
}

/// Serves the messages the watch sent, as the loop would.
async fn serve_queued(d: &mut Daemon) {
    while let Ok(msg) = d.inbox.events.try_recv() {
        assert!(d.handle(msg).await.is_continue());
    }
}

#[tokio::test]
async fn tampering_by_another_process_is_repaired_from_the_record_without_docker() {
    let fake = Fake::new();
    let mut d = daemon(&fake);
    d.watch_ruleset().await;
    pass(&mut d, snapshot(Some("10.1.0.2")), true).await;
    let committed = fake.kernel().installed.clone();
    // `nft flush ruleset` by someone else; Docker is not even connected.
    assert!(d.docker.is_none());
    fake.kernel().installed = None;
    report(
        &fake,
        TableChange::Foreign(BTreeSet::from(["trafficjam".into()])),
    );
    serve_queued(&mut d).await;
    let k = fake.kernel();
    assert_eq!(k.installed, committed);
    assert_eq!(k.applies, [BatchKind::Full, BatchKind::Full]);
}

#[tokio::test]
async fn a_process_that_keeps_rewriting_our_tables_is_fought_at_a_bounded_rate() {
    let fake = Fake::new();
    let mut d = daemon(&fake);
    d.watch_ruleset().await;
    pass(&mut d, snapshot(Some("10.1.0.2")), true).await;
    for _ in 0..3 * REPAIR_BURST {
        fake.kernel().installed = None;
        report(
            &fake,
            TableChange::Foreign(BTreeSet::from(["trafficjam".into()])),
        );
        serve_queued(&mut d).await;
    }
    // The first pass, then REPAIR_BURST repairs: the rest waits for the window's end.
    assert_eq!(fake.kernel().applies.len(), 1 + REPAIR_BURST);
    assert!(
        matches!(d.condition, Condition::Degraded(ref why) if why.contains("keeps changing")),
        "{:?}",
        d.condition
    );
    assert!(d.kernel.repair_retry.is_some(), "no retry scheduled");
}

#[tokio::test]
async fn changes_to_other_tables_or_to_nothing_of_ours_cause_no_apply() {
    let fake = Fake::new();
    let mut d = daemon(&fake);
    d.watch_ruleset().await;
    pass(&mut d, snapshot(Some("10.1.0.2")), true).await;
    // Someone else's table changed.
    fake.kernel().installed = None;
    report(
        &fake,
        TableChange::Foreign(BTreeSet::from(["filter".into()])),
    );
    serve_queued(&mut d).await;
    assert_eq!(fake.kernel().applies.len(), 1);
    // Our table named, but it holds what we committed (a no-op change): nothing to do.
    pass(&mut d, snapshot(Some("10.1.0.2")), true).await;
    let applies = fake.kernel().applies.len();
    report(&fake, TableChange::Overrun);
    serve_queued(&mut d).await;
    assert_eq!(fake.kernel().applies.len(), applies);
    // While cleared on request, tampering is not "repaired".
    assert!(d.handle(Msg::Clear(None)).await.is_continue());
    report(&fake, TableChange::Overrun);
    serve_queued(&mut d).await;
    assert!(fake.kernel().installed.is_none());
}

fn state_dir(name: &str) -> StateDir {
    let dir = std::env::temp_dir().join(format!("tj-daemon-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    StateDir::new(dir)
}

#[tokio::test]
async fn after_a_reboot_the_saved_networks_are_isolated_with_nobody_whitelisted() {
    let state = state_dir("reboot");
    // A first run isolates web, with the proxy whitelisted, and saves it.
    let fake = Fake::new();
    let mut d = daemon(&fake).with_state(state.clone(), None);
    d.restore().await;
    pass(&mut d, snapshot(Some("10.1.0.2")), true).await;
    assert_eq!(state.load().unwrap().unwrap().networks.len(), 1);

    // Reboot: the kernel holds nothing; Docker does not answer yet.
    let fake = Fake::new();
    let mut d = daemon(&fake).with_state(state.clone(), None);
    d.restore().await;
    {
        let k = fake.kernel();
        let installed = k
            .installed
            .as_ref()
            .expect("isolated before Docker answers");
        assert_eq!(installed.networks[0].name, "web");
        let whitelisted: usize = installed
            .tables
            .iter()
            .flat_map(|t| &t.sets)
            .map(|s| s.elements.len())
            .sum();
        assert_eq!(whitelisted, 0, "fail closed: nobody whitelisted");
    }
    // Docker answers: the proxy is whitelisted with an element update.
    pass(&mut d, snapshot(Some("10.1.0.2")), true).await;
    assert_eq!(
        fake.kernel().applies,
        [BatchKind::Full, BatchKind::Elements]
    );

    // A restart (our tables still in the kernel) leaves them as they are.
    let mut d = daemon(&fake).with_state(state.clone(), None);
    d.restore().await;
    assert_eq!(fake.kernel().applies.len(), 2);
    let _ = std::fs::remove_dir_all(state.path());
}

#[tokio::test]
async fn a_configuration_broken_at_start_keeps_the_service_degraded_until_a_reload() {
    let fake = Fake::new();
    let error =
        Config::from_sources(&[("/etc/trafficjam/x.toml".into(), "[bad".into())]).unwrap_err();
    let mut d = daemon(&fake).with_state(state_dir("broken"), Some(error));
    pass(&mut d, snapshot(Some("10.1.0.2")), true).await;
    let status = d.build_status();
    assert_eq!(status.state, State::Degraded);
    let reason = status.reason.unwrap();
    assert!(reason.contains("/etc/trafficjam/x.toml:1:"), "{reason}");
    assert!(reason.contains("last good"), "{reason}");
    assert!(
        fake.kernel().installed.is_some(),
        "the last good one is enforced"
    );
}

#[tokio::test]
async fn a_renamed_table_is_removed_only_after_the_new_one_is_in_force() {
    let fake = Fake::new();
    let mut d = daemon(&fake);
    pass(&mut d, snapshot(Some("10.1.0.2")), true).await;
    d.kernel.retired_table = Some("old_table".into());
    fake.kernel().refuse_next_apply = Some("no".into());
    d.kernel.committed = None;
    pass(&mut d, snapshot(Some("10.1.0.2")), false).await;
    assert!(
        fake.kernel().cleared.is_empty(),
        "removed before the new table"
    );
    pass(&mut d, snapshot(Some("10.1.0.2")), false).await;
    assert_eq!(fake.kernel().cleared, ["old_table"]);
}
