//! Kernel tier: the real ruleset in private network namespaces, judged by real packets.
//!
//! Each test builds its own "host" namespace (bridges, our tables) and veth "containers",
//! and deletes them all when it ends, pass or fail. Run as root (see README).

mod common;

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::mpsc::Receiver;
use std::time::Duration;

use common::*;
use trafficjam::firewall::Netlink;
use trafficjam::firewall::{BatchKind, BridgeFiltering, DropReport, Firewall};
use trafficjam::kernel::KernelError;
use trafficjam::kernel::links::bridge::BridgeNetfilter;
use trafficjam::kernel::nflog::{LogEvent, LoggedPacket};
use trafficjam::kernel::nftables::drift;
use trafficjam::kernel::nftables::dump::{read_counters, read_installed};
use trafficjam::plan::names::{LOG_BURST, LOG_RATE};
use trafficjam::plan::{Change, DEFAULT_TABLE, Family, ManagedNetwork, Reason, Ruleset, plan};
use trafficjam::policy::{Grant, HostAccess, Mode, PortRange};

const TABLE: &str = DEFAULT_TABLE;

/// A host with bridge `br-pub` (10.10.0.0/24, fd00:10::/64) and three containers: `proxy`
/// (.2, whitelisted), `b1` (.3) and `b2` (.4), each running echo listeners, as does the
/// host. br_netfilter's global switch is set as asked.
struct PublicLab {
    lab: Lab,
    listeners: Vec<Listeners>,
}

impl PublicLab {
    fn new(bridge_nf_call: bool) -> PublicLab {
        let mut lab = Lab::new();
        let switch = if bridge_nf_call { "1" } else { "0" };
        lab.host
            .sysctl("net.bridge.bridge-nf-call-iptables", switch);
        lab.host
            .sysctl("net.bridge.bridge-nf-call-ip6tables", switch);
        lab.bridge("br-pub", &["10.10.0.1/24", "fd00:10::1/64"]);
        for (name, n) in [("proxy", 2), ("b1", 3), ("b2", 4)] {
            lab.container(
                name,
                "br-pub",
                &[&format!("10.10.0.{n}/24"), &format!("fd00:10::{n}/64")],
                &["10.10.0.1", "fd00:10::1"],
            );
        }
        let mut listeners: Vec<Listeners> = lab
            .containers
            .iter()
            .map(|c| Listeners::start(&c.ns))
            .collect();
        listeners.push(Listeners::start(&lab.host));
        PublicLab { lab, listeners }
    }

    fn listeners(&self, name: &str) -> &Listeners {
        let i = self
            .lab
            .containers
            .iter()
            .position(|c| c.name == name)
            .unwrap();
        &self.listeners[i]
    }

    fn addrs(&self, name: &str) -> Vec<IpAddr> {
        self.lab.get(name).addrs.clone()
    }

    fn network(&self, allow_host_traffic: bool) -> ManagedNetwork {
        ManagedNetwork {
            name: "public".into(),
            bridge: "br-pub".into(),
            subnets: vec![
                "10.10.0.0/24".parse().unwrap(),
                "fd00:10::/64".parse().unwrap(),
            ],
            whitelist: self.addrs("proxy").into_iter().collect(),
            host_access: if allow_host_traffic {
                HostAccess::Open
            } else {
                HostAccess::Closed
            },
            ..ManagedNetwork::default()
        }
    }

    fn gateways(&self) -> Vec<IpAddr> {
        vec!["10.10.0.1".parse().unwrap(), "fd00:10::1".parse().unwrap()]
    }
}

/// The netlink firewall as the daemon drives it: with what was last committed (the base
/// of element batches), and the bridges' br_netfilter attributes set after every apply.
#[derive(Debug)]
struct Kernel {
    firewall: Netlink,
    committed: Option<Ruleset>,
}

impl Kernel {
    fn new(bridge_netfilter: BridgeNetfilter) -> Kernel {
        Kernel {
            firewall: Netlink::new(bridge_netfilter),
            committed: None,
        }
    }

    /// Forgets what was committed: the next apply is a full one.
    fn forget(&mut self) {
        self.committed = None;
    }

    /// Applies `ruleset` in the calling thread's namespace.
    fn apply(&mut self, ruleset: Ruleset) -> Result<Applied, KernelError> {
        let report = self.firewall.apply(self.committed.as_ref(), &ruleset)?;
        let bridges = self.firewall.bridge_filtering(&ruleset.bridges());
        self.committed = Some(ruleset);
        Ok(Applied {
            kind: report.kind,
            messages: report.messages,
            added: report.added,
            removed: report.removed,
            bridges,
        })
    }
}

/// What one apply sent, and the bridges' filtering after it.
#[derive(Debug)]
struct Applied {
    kind: BatchKind,
    messages: usize,
    added: usize,
    removed: usize,
    bridges: Vec<BridgeFiltering>,
}

impl Applied {
    /// Every managed bridge is filtered statefully (connection tracking applies).
    fn stateful(&self) -> bool {
        self.bridges.iter().all(|b| b.stateful)
    }
}

/// Applies `ruleset` with `kernel` from inside the lab's host namespace.
fn apply(lab: &Lab, kernel: Kernel, ruleset: &Ruleset) -> (Kernel, Applied) {
    let ruleset = ruleset.clone();
    lab.host.enter(move || {
        let mut kernel = kernel;
        let applied = kernel
            .apply(ruleset.clone())
            .unwrap_or_else(|e| panic!("apply failed: {e}\n{ruleset}"));
        (kernel, applied)
    })
}

fn assert_probes(lab: &Lab, expectations: &[Expect], ruleset: &Ruleset) {
    let failures = check_all(lab, expectations);
    assert!(
        failures.is_empty(),
        "{} of {} probes failed:\n{}\nruleset:\n{ruleset}\nkernel:\n{}",
        failures.len(),
        expectations.len(),
        failures.join("\n"),
        lab.host.nft(&["list", "ruleset"])
    );
}

/// b1's neighbour entries for b2 (IPv4 and IPv6) have a link-layer address: ARP and
/// neighbour discovery worked even though the traffic itself was blocked.
fn assert_neighbours_resolved(p: &PublicLab) {
    for to in p.addrs("b2") {
        let out = p.lab.get("b1").ns.ip(&["neigh", "show", &to.to_string()]);
        assert!(out.contains("lladdr"), "b1 could not resolve {to}: {out:?}");
    }
}

/// Packets counted by the drop rules of one of our chains, read from the kernel.
fn dropped(lab: &Lab, family: Family, chain: &'static str) -> u64 {
    let installed = lab.host.enter(|| read_installed(TABLE).unwrap());
    installed.tables[&family].dropped_per_chain[chain]
}

/// Every path the isolation promises, on the public lab.
fn isolation_matrix(p: &PublicLab, stateful: bool) -> Vec<Expect> {
    let mut e = Vec::new();
    e.extend(expect(
        "proxy reaches backends",
        "proxy",
        &p.addrs("b1"),
        true,
    ));
    e.extend(expect(
        "proxy reaches backends",
        "proxy",
        &p.addrs("b2"),
        true,
    ));
    e.extend(expect("backends are apart", "b1", &p.addrs("b2"), false));
    e.extend(expect("backends are apart", "b2", &p.addrs("b1"), false));
    for backend in ["b1", "b2"] {
        if stateful {
            e.extend(expect(
                "backend cannot open to proxy",
                backend,
                &p.addrs("proxy"),
                false,
            ));
        } else {
            // Without conntrack only TCP and ping can be told apart from replies.
            for to in p.addrs("proxy") {
                for proto in [Proto::Tcp, Proto::Icmp] {
                    e.push(Expect {
                        what: "backend cannot open to proxy (stateless)".into(),
                        from: backend.into(),
                        to,
                        proto,
                        pass: false,
                    });
                }
            }
        }
        e.extend(expect(
            "containers cannot open to the host",
            backend,
            &p.gateways(),
            false,
        ));
    }
    e.extend(expect(
        "even the proxy cannot open to the host",
        "proxy",
        &p.gateways(),
        false,
    ));
    e.extend(expect(
        "host reaches containers",
        "host",
        &p.addrs("b1"),
        true,
    ));
    e.extend(expect(
        "host reaches containers",
        "host",
        &p.addrs("proxy"),
        true,
    ));
    e
}

#[test]
fn stateful_isolation_with_br_netfilter_on() {
    if !kernel_tier_available() {
        return;
    }
    let p = PublicLab::new(true);
    let rs = plan(TABLE, &[p.network(false)]).unwrap();
    let (_nft, report) = apply(&p.lab, Kernel::new(BridgeNetfilter::Leave), &rs);
    assert_eq!(report.kind, BatchKind::Full);
    assert!(report.stateful(), "{report:?}");
    assert_no_drift(&p.lab.host, &rs);
    assert_probes(&p.lab, &isolation_matrix(&p, true), &rs);
    assert_neighbours_resolved(&p);
    // The drops were counted where they happened.
    assert!(dropped(&p.lab, Family::Inet, "deny_isolation_public") > 0);
    assert!(dropped(&p.lab, Family::Inet, "deny_host_public") > 0);
}

#[test]
fn stateless_backstop_with_br_netfilter_off() {
    if !kernel_tier_available() {
        return;
    }
    let p = PublicLab::new(false);
    let rs = plan(TABLE, &[p.network(false)]).unwrap();
    let (_nft, report) = apply(&p.lab, Kernel::new(BridgeNetfilter::Leave), &rs);
    assert!(!report.stateful(), "br_netfilter is off, yet {report:?}");
    assert_probes(&p.lab, &isolation_matrix(&p, false), &rs);
    assert_neighbours_resolved(&p);
    assert!(dropped(&p.lab, Family::Bridge, "deny_isolation_public") > 0);
}

#[test]
fn per_bridge_nf_call_attribute_turns_stateful_filtering_on() {
    if !kernel_tier_available() {
        return;
    }
    let p = PublicLab::new(false);
    let rs = plan(TABLE, &[p.network(false)]).unwrap();
    let (_nft, report) = apply(&p.lab, Kernel::new(BridgeNetfilter::Enable), &rs);
    assert!(report.stateful(), "{report:?}");
    let details = p.lab.host.ip(&["-d", "link", "show", "br-pub"]);
    assert!(details.contains("nf_call_iptables 1"), "{details}");
    assert!(details.contains("nf_call_ip6tables 1"), "{details}");
    // UDP from a backend to the proxy is only stopped by the stateful chain.
    assert_probes(&p.lab, &isolation_matrix(&p, true), &rs);
}

#[test]
fn allow_host_traffic_opens_the_host_only() {
    if !kernel_tier_available() {
        return;
    }
    let p = PublicLab::new(true);
    let rs = plan(TABLE, &[p.network(true)]).unwrap();
    apply(&p.lab, Kernel::new(BridgeNetfilter::Enable), &rs);
    let mut e = Vec::new();
    e.extend(expect("host allowed", "b1", &p.gateways(), true));
    e.extend(expect("host allowed", "proxy", &p.gateways(), true));
    e.extend(expect("backends still apart", "b1", &p.addrs("b2"), false));
    e.extend(expect("proxy still reaches", "proxy", &p.addrs("b2"), true));
    assert_probes(&p.lab, &e, &rs);
}

#[test]
fn unmanaged_bridge_beside_a_managed_one_is_untouched() {
    if !kernel_tier_available() {
        return;
    }
    let mut p = PublicLab::new(true);
    p.lab.bridge("br-priv", &["10.20.0.1/24", "fd00:20::1/64"]);
    for (name, n) in [("p1", 2), ("p2", 3)] {
        p.lab.container(
            name,
            "br-priv",
            &[&format!("10.20.0.{n}/24"), &format!("fd00:20::{n}/64")],
            &["10.20.0.1", "fd00:20::1"],
        );
    }
    let _l1 = Listeners::start(&p.lab.get("p1").ns);
    let _l2 = Listeners::start(&p.lab.get("p2").ns);
    let rs = plan(TABLE, &[p.network(false)]).unwrap();
    apply(&p.lab, Kernel::new(BridgeNetfilter::Enable), &rs);
    let gw: Vec<IpAddr> = vec!["10.20.0.1".parse().unwrap(), "fd00:20::1".parse().unwrap()];
    let mut e = Vec::new();
    e.extend(expect("unmanaged: open", "p1", &p.addrs("p2"), true));
    e.extend(expect("unmanaged: open", "p2", &p.addrs("p1"), true));
    e.extend(expect("unmanaged: host open", "p1", &gw, true));
    e.extend(expect("managed: apart", "b1", &p.addrs("b2"), false));
    assert_probes(&p.lab, &e, &rs);
}

/// Two IPv4 subnets and one IPv6 subnet on one bridge: containers in different subnets
/// talk through the host (routed, not bridged), and are isolated all the same.
#[test]
fn several_subnets_on_one_bridge() {
    if !kernel_tier_available() {
        return;
    }
    for bridge_nf_call in [true, false] {
        let mut lab = Lab::new();
        let switch = if bridge_nf_call { "1" } else { "0" };
        lab.host
            .sysctl("net.bridge.bridge-nf-call-iptables", switch);
        lab.host
            .sysctl("net.bridge.bridge-nf-call-ip6tables", switch);
        lab.bridge(
            "br-multi",
            &["10.31.0.1/24", "10.32.0.1/24", "fd00:31::1/64"],
        );
        lab.container(
            "proxy",
            "br-multi",
            &["10.31.0.2/24", "fd00:31::2/64"],
            &["10.31.0.1", "fd00:31::1"],
        );
        lab.container(
            "a",
            "br-multi",
            &["10.31.0.3/24", "fd00:31::3/64"],
            &["10.31.0.1", "fd00:31::1"],
        );
        lab.container(
            "d",
            "br-multi",
            &["10.31.0.4/24", "fd00:31::4/64"],
            &["10.31.0.1", "fd00:31::1"],
        );
        lab.container("b", "br-multi", &["10.32.0.3/24"], &["10.32.0.1"]);
        lab.container("c", "br-multi", &["10.32.0.4/24"], &["10.32.0.1"]);
        let _l: Vec<Listeners> = lab
            .containers
            .iter()
            .map(|c| Listeners::start(&c.ns))
            .collect();
        let net = ManagedNetwork {
            name: "multi".into(),
            bridge: "br-multi".into(),
            subnets: ["10.31.0.0/24", "10.32.0.0/24", "fd00:31::/64"]
                .iter()
                .map(|s| s.parse().unwrap())
                .collect(),
            whitelist: lab.get("proxy").addrs.iter().copied().collect(),
            ..ManagedNetwork::default()
        };
        let rs = plan(TABLE, &[net]).unwrap();
        apply(&lab, Kernel::new(BridgeNetfilter::Leave), &rs);
        let a = lab.get("a").addrs.clone();
        let b = lab.get("b").addrs.clone();
        let c = lab.get("c").addrs.clone();
        let mut e = Vec::new();
        e.extend(expect("proxy reaches its subnet", "proxy", &a, true));
        e.extend(expect("proxy reaches the other subnet", "proxy", &b, true));
        e.extend(expect(
            "apart within a subnet (v4+v6)",
            "a",
            &lab.get("d").addrs,
            false,
        ));
        e.extend(expect("apart within the second subnet", "b", &c, false));
        e.extend(expect("apart across subnets", "a", &b, false));
        e.extend(expect("apart across subnets", "b", &a[..1], false));
        assert_probes(&lab, &e, &rs);
    }
}

#[test]
fn whitelist_changes_are_element_updates() {
    if !kernel_tier_available() {
        return;
    }
    let p = PublicLab::new(true);
    let mut net = p.network(false);
    let rs = plan(TABLE, &[net.clone()]).unwrap();
    let (nft, _) = apply(&p.lab, Kernel::new(BridgeNetfilter::Enable), &rs);

    // b1 joins the whitelist: it now reaches b2; b2 still cannot reach b1.
    net.whitelist.extend(p.addrs("b1"));
    let rs = plan(TABLE, &[net.clone()]).unwrap();
    let (nft, report) = apply(&p.lab, nft, &rs);
    assert_eq!(
        (report.kind, report.added, report.removed),
        (BatchKind::Elements, 4, 0)
    );
    assert_no_drift(&p.lab.host, &rs);
    let mut e = expect("b1 whitelisted", "b1", &p.addrs("b2"), true);
    e.extend(expect("b2 not", "b2", &p.addrs("b1"), false));
    assert_probes(&p.lab, &e, &rs);

    // The same ruleset again: the daemon sends nothing, and an apply would be empty.
    assert_eq!(rs.change_from(nft.committed.as_ref()), Change::None);
    let (nft, report) = apply(&p.lab, nft, &rs);
    assert_eq!((report.kind, report.messages), (BatchKind::Elements, 0));

    // And leaves it again.
    for a in p.addrs("b1") {
        net.whitelist.remove(&a);
    }
    let rs = plan(TABLE, &[net]).unwrap();
    let (_, report) = apply(&p.lab, nft, &rs);
    assert_eq!(
        (report.kind, report.added, report.removed),
        (BatchKind::Elements, 0, 4)
    );
    assert_no_drift(&p.lab.host, &rs);
    assert_probes(
        &p.lab,
        &expect("b1 no longer", "b1", &p.addrs("b2"), false),
        &rs,
    );
}

#[test]
fn clear_removes_every_table_of_ours_and_opens_everything() {
    if !kernel_tier_available() {
        return;
    }
    let p = PublicLab::new(true);
    let rs = plan(TABLE, &[p.network(false)]).unwrap();
    let (nft, _) = apply(&p.lab, Kernel::new(BridgeNetfilter::Enable), &rs);
    assert_probes(
        &p.lab,
        &expect("isolated", "b1", &p.addrs("b2"), false),
        &rs,
    );
    p.lab.host.enter(move || {
        let mut nft = nft;
        nft.firewall.clear(TABLE).expect("clear");
    });
    let installed = p.lab.host.enter(|| read_installed(TABLE).unwrap());
    assert!(installed.tables.is_empty(), "{installed:?}");
    let listing = p.lab.host.nft(&["list", "tables"]);
    assert!(!listing.contains(TABLE), "{listing}");
    let mut e = expect("open again", "b1", &p.addrs("b2"), true);
    e.extend(expect("host open again", "b1", &p.gateways(), true));
    assert_probes(&p.lab, &e, &rs);
    // Clearing what is not there is fine.
    p.lab
        .host
        .enter(|| Netlink::default().clear(TABLE).expect("second clear"));
}

#[test]
fn tables_of_others_are_never_touched() {
    if !kernel_tier_available() {
        return;
    }
    let p = PublicLab::new(true);
    let foreign = "table inet other {\n\tchain input {\n\t\ttype filter hook input priority 0; policy accept;\n\t\tiifname \"lo\" counter accept\n\t}\n}\ntable bridge filter {\n\tchain forward {\n\t\ttype filter hook forward priority 0; policy accept;\n\t}\n}\ntable ip trafficjam {\n\tchain x {\n\t}\n}\n";
    p.lab.host.exec_ok(
        "sh",
        &["-c", &format!("printf '%s' '{foreign}' | nft -f -")],
    );
    let before = p.lab.host.nft(&["-s", "list", "ruleset"]);
    let rs = plan(TABLE, &[p.network(false)]).unwrap();
    let (nft, _) = apply(&p.lab, Kernel::new(BridgeNetfilter::Enable), &rs);
    let mut net = p.network(false);
    net.whitelist.extend(p.addrs("b1"));
    let (nft, _) = apply(&p.lab, nft, &plan(TABLE, &[net]).unwrap());
    p.lab.host.enter(move || {
        let mut nft = nft;
        nft.firewall.clear(TABLE).expect("clear");
    });
    let after = p.lab.host.nft(&["-s", "list", "ruleset"]);
    assert_eq!(before, after, "foreign tables changed");
}

#[test]
fn drift_is_detected_and_a_full_apply_repairs_it() {
    if !kernel_tier_available() {
        return;
    }
    let p = PublicLab::new(true);
    let rs = plan(TABLE, &[p.network(false)]).unwrap();
    let (mut nft, _) = apply(&p.lab, Kernel::new(BridgeNetfilter::Enable), &rs);
    assert_no_drift(&p.lab.host, &rs);

    p.lab.host.nft(&["delete", "table", "inet", TABLE]);
    let rs2 = rs.clone();
    let problems = p.lab.host.enter(move || drift(&rs2).unwrap());
    assert!(
        problems
            .iter()
            .any(|p| p.contains("inet") && p.contains("missing")),
        "{problems:?}"
    );
    nft.forget();
    let (mut nft, report) = apply(&p.lab, nft, &rs);
    assert_eq!(report.kind, BatchKind::Full);
    assert_no_drift(&p.lab.host, &rs);

    p.lab
        .host
        .nft(&["flush", "set", "bridge", TABLE, "wl4_public"]);
    let rs2 = rs.clone();
    let problems = p.lab.host.enter(move || drift(&rs2).unwrap());
    assert!(
        problems.iter().any(|p| p.contains("wl4_public")),
        "{problems:?}"
    );
    nft.forget();
    apply(&p.lab, nft, &rs);
    assert_no_drift(&p.lab.host, &rs);
}

/// What `nft -f` makes of our rendered text is what our netlink batch installs: the text
/// that `trafficjam check` prints is the truth.
#[test]
fn rendered_text_and_netlink_batch_install_the_same_ruleset() {
    if !kernel_tier_available() {
        return;
    }
    let p = PublicLab::new(true);
    let mut second = p.network(true);
    second.name = "second.net-2".into();
    second.bridge = "br-two".into();
    second.subnets = vec![
        "10.99.0.0/16".parse().unwrap(),
        "10.98.0.0/16".parse().unwrap(),
    ];
    second.whitelist = BTreeSet::from(["10.99.0.9".parse().unwrap()]);
    let rs = plan(TABLE, &[p.network(false), second]).unwrap();
    apply(&p.lab, Kernel::new(BridgeNetfilter::Leave), &rs);
    assert_text_installs_the_same(&p.lab.host, &rs.to_string());
}

/// 200 alternating updates (whitelist element changes, a second network added and
/// removed: both kinds of batch) while probers run: backend-to-backend traffic must never
/// get through, proxy traffic must never be dropped.
#[test]
fn updates_are_atomic_under_traffic() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::time::Duration;

    if !kernel_tier_available() {
        return;
    }
    let p = PublicLab::new(true);
    p.lab.bridge("br-other", &["10.50.0.1/24"]);
    let base = p.network(false);
    let mut extra_whitelist = base.clone();
    extra_whitelist
        .whitelist
        .extend((10..60).map(|i| format!("10.10.0.{i}").parse::<IpAddr>().unwrap()));
    extra_whitelist
        .whitelist
        .insert("fd00:10::99".parse().unwrap());
    let other = ManagedNetwork {
        name: "other".into(),
        bridge: "br-other".into(),
        subnets: vec!["10.50.0.0/24".parse().unwrap()],
        whitelist: BTreeSet::from(["10.50.0.2".parse().unwrap()]),
        ..ManagedNetwork::default()
    };
    let mut other_changed = other.clone();
    other_changed.whitelist.insert("10.50.0.3".parse().unwrap());
    let states = [
        plan(TABLE, std::slice::from_ref(&base)).unwrap(),
        plan(TABLE, &[extra_whitelist]).unwrap(),
        plan(TABLE, &[base.clone(), other]).unwrap(),
        plan(TABLE, &[base, other_changed]).unwrap(),
    ];
    let (nft, _) = apply(&p.lab, Kernel::new(BridgeNetfilter::Enable), &states[0]);

    let stop = Arc::new(AtomicBool::new(false));
    let tcp_leaks = Arc::new(AtomicUsize::new(0));
    let tcp_leak_tries = Arc::new(AtomicUsize::new(0));
    let udp_sent = Arc::new(AtomicUsize::new(0));
    let must_pass = Arc::new(AtomicUsize::new(0));
    let wrongly_dropped = Arc::new(AtomicUsize::new(0));
    let b2 = p.addrs("b2");
    let b1 = p.addrs("b1");
    let mut probers = Vec::new();

    // Backend to backend, UDP: every datagram that arrives at b2 from b1 is a leak.
    for to in b2.clone() {
        let (stop, sent) = (stop.clone(), udp_sent.clone());
        probers.push(p.lab.get("b1").ns.spawn(move || {
            let bind = if to.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
            let sock = std::net::UdpSocket::bind(bind).unwrap();
            while !stop.load(Ordering::Relaxed) {
                if sock.send_to(b"leak", (to, UDP_PORT)).is_ok() {
                    sent.fetch_add(1, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_micros(200));
            }
        }));
    }
    // Backend to backend, and backend to proxy: new TCP connections must never open.
    for (from, targets) in [("b1", b2.clone()), ("b2", p.addrs("proxy"))] {
        for to in targets {
            let (stop, leaks, tries) = (stop.clone(), tcp_leaks.clone(), tcp_leak_tries.clone());
            probers.push(p.lab.get(from).ns.spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let addr = std::net::SocketAddr::new(to, TCP_PORT);
                    tries.fetch_add(1, Ordering::Relaxed);
                    if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(20))
                        .is_ok()
                    {
                        leaks.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
        }
    }
    // Proxy to backends: one long-lived connection, new connections, and UDP round trips,
    // each must always get its answer.
    {
        let to = b1[0];
        let (stop, total, dropped) = (stop.clone(), must_pass.clone(), wrongly_dropped.clone());
        probers.push(p.lab.get("proxy").ns.spawn(move || {
            use std::io::{Read, Write};
            let mut conn = std::net::TcpStream::connect((to, TCP_PORT)).unwrap();
            conn.set_read_timeout(Some(PASS_TIMEOUT)).unwrap();
            let mut buf = [0u8; 3];
            while !stop.load(Ordering::Relaxed) {
                total.fetch_add(1, Ordering::Relaxed);
                if conn.write_all(b"est").is_err() || conn.read_exact(&mut buf).is_err() {
                    dropped.fetch_add(1, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        }));
    }
    for to in [b2[0], b2[1], b1[1]] {
        let (stop, total, dropped) = (stop.clone(), must_pass.clone(), wrongly_dropped.clone());
        probers.push(p.lab.get("proxy").ns.spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                total.fetch_add(2, Ordering::Relaxed);
                if !tcp_echo(to, PASS_TIMEOUT) {
                    dropped.fetch_add(1, Ordering::Relaxed);
                }
                if !udp_echo(to, PASS_TIMEOUT) {
                    dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }

    // 200 updates, cycling through element and full batches.
    let (full, elements) = p.lab.host.enter(move || {
        let mut nft = nft;
        let (mut full, mut elements) = (0, 0);
        for i in 1..=200 {
            let report = nft.apply(states[i % states.len()].clone()).expect("apply");
            assert!(report.messages > 0, "every step changes something");
            match report.kind {
                BatchKind::Full => full += 1,
                BatchKind::Elements => elements += 1,
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        (full, elements)
    });
    std::thread::sleep(Duration::from_millis(100));
    stop.store(true, Ordering::Relaxed);
    for t in probers {
        t.join().unwrap();
    }

    let udp_leaks: usize = b1
        .iter()
        .map(|a| p.listeners("b2").udp_count_from(*a))
        .sum();
    // With generous timeouts, TCP would hide a dropped segment behind a retransmission:
    // the kernel's own count of retransmitted segments tells.
    let retrans: usize = p
        .lab
        .get("proxy")
        .ns
        .exec_ok("nstat", &["-az", "TcpRetransSegs"])
        .lines()
        .find_map(|l| l.strip_prefix("TcpRetransSegs"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("nstat TcpRetransSegs");
    eprintln!(
        "atomicity: {full} full + {elements} element batches; leaked {} of {} UDP datagrams and {} of {} TCP connects; wrongly dropped {} of {} proxy round trips, {retrans} proxy TCP segments retransmitted",
        udp_leaks,
        udp_sent.load(Ordering::Relaxed),
        tcp_leaks.load(Ordering::Relaxed),
        tcp_leak_tries.load(Ordering::Relaxed),
        wrongly_dropped.load(Ordering::Relaxed),
        must_pass.load(Ordering::Relaxed),
    );
    assert_eq!((full, elements), (100, 100));
    assert!(
        udp_sent.load(Ordering::Relaxed) > 1000,
        "the UDP prober hardly ran"
    );
    assert!(
        tcp_leak_tries.load(Ordering::Relaxed) > 100,
        "the TCP prober hardly ran"
    );
    assert!(
        must_pass.load(Ordering::Relaxed) > 200,
        "the proxy prober hardly ran"
    );
    assert_eq!(udp_leaks, 0, "UDP leaked between backends");
    assert_eq!(tcp_leaks.load(Ordering::Relaxed), 0, "TCP leaked");
    assert_eq!(
        wrongly_dropped.load(Ordering::Relaxed),
        0,
        "proxy traffic dropped"
    );
    assert_eq!(
        retrans, 0,
        "proxy TCP segments were retransmitted: some were dropped"
    );
}

/// A table of our configured name that trafficjam did not create (`table = "filter"` by
/// mistake, say) is never replaced nor deleted.
#[test]
fn a_foreign_table_with_our_name_is_refused() {
    if !kernel_tier_available() {
        return;
    }
    let p = PublicLab::new(true);
    let foreign = "table inet tjforeign {\n\tchain input {\n\t\ttype filter hook input priority 0; policy accept;\n\t\tcounter accept\n\t}\n}\n";
    p.lab.host.exec_ok(
        "sh",
        &["-c", &format!("printf '%s' '{foreign}' | nft -f -")],
    );
    let before = p.lab.host.nft(&["-s", "list", "ruleset"]);
    let rs = plan("tjforeign", &[p.network(false)]).unwrap();
    let err = p.lab.host.enter(move || {
        Kernel::new(BridgeNetfilter::Enable)
            .apply(rs)
            .expect_err("applying over a foreign table must fail")
    });
    assert!(matches!(err, KernelError::NotOurs { .. }), "{err}");
    let err = p.lab.host.enter(|| {
        Netlink::default()
            .clear("tjforeign")
            .expect_err("clearing it must fail")
    });
    assert!(
        err.to_string().contains("not created by trafficjam"),
        "{err}"
    );
    assert_eq!(p.lab.host.nft(&["-s", "list", "ruleset"]), before);
}

/// `bridge_ports` maps each veth port of a bridge to its peer's address, read from the
/// kernel with the peers in the containers' namespaces (IFLA_TARGET_NETNSID) or in the
/// host's own, as `ip` shows them from inside; a port that is not a veth, a link that is
/// no port, a link that is no bridge and a missing bridge are not listed.
#[test]
fn bridge_ports_map_host_ports_to_their_peers_macs() {
    use trafficjam::kernel::links::ports::{BridgePorts, PortLink, bridge_ports};

    if !kernel_tier_available() {
        return;
    }
    fn json(out: &str) -> Vec<serde_json::Value> {
        serde_json::from_str(out).unwrap_or_else(|e| panic!("ip -j: {e}: {out}"))
    }
    fn mac(link: &serde_json::Value) -> [u8; 6] {
        let text = link["address"].as_str().expect("an address");
        let bytes: Vec<u8> = text
            .split(':')
            .map(|b| u8::from_str_radix(b, 16).expect("hex"))
            .collect();
        bytes
            .try_into()
            .unwrap_or_else(|_| panic!("not a MAC: {text}"))
    }
    let mut lab = Lab::new();
    lab.bridge("br-ports", &["10.20.0.1/24"]);
    lab.bridge("br-other", &[]);
    for (name, bridge) in [("c1", "br-ports"), ("c2", "br-ports"), ("c3", "br-other")] {
        lab.container(name, bridge, &[], &[]);
    }
    // A veth whose peer stays in the host's namespace.
    lab.host.ip(&[
        "link",
        "add",
        "vlocal",
        "type",
        "veth",
        "peer",
        "name",
        "vlocal-peer",
    ]);
    lab.host
        .ip(&["link", "set", "vlocal", "master", "br-ports", "up"]);
    // A port that is not a veth (a tap, as a virtual machine's).
    lab.host.ip(&["tuntap", "add", "tap-port", "mode", "tap"]);
    lab.host
        .ip(&["link", "set", "tap-port", "master", "br-ports", "up"]);

    // What `ip` shows: each container's eth0 (its address, and its peer's index in the
    // host), the bridges' ports in the host.
    let host_link = |name: &str| json(&lab.host.ip(&["-j", "link", "show", name])).remove(0);
    let expected = |bridge: &str| {
        let ports = json(&lab.host.ip(&["-j", "link", "show", "master", bridge]));
        let mut expected: Vec<PortLink> = lab
            .containers
            .iter()
            .filter_map(|c| {
                let eth0 = json(&c.ns.ip(&["-j", "link", "show", "eth0"])).remove(0);
                let port = ports.iter().find(|p| p["ifindex"] == eth0["link_index"])?;
                Some(PortLink {
                    name: port["ifname"].as_str().expect("a name").to_owned(),
                    peer_mac: mac(&eth0),
                })
            })
            .collect();
        if bridge == "br-ports" {
            expected.push(PortLink {
                name: "vlocal".into(),
                peer_mac: mac(&host_link("vlocal-peer")),
            });
        }
        expected.sort();
        BridgePorts {
            mac: Some(mac(&host_link(bridge))),
            ports: expected,
        }
    };
    let listed = lab.host.ip(&["-br", "link", "show", "master", "br-ports"]);
    assert!(listed.contains("tap-port"), "{listed}");
    let want_ports = expected("br-ports");
    let want_other = expected("br-other");
    assert_eq!(want_ports.ports.len(), 3, "{want_ports:?}");
    assert_eq!(want_other.ports.len(), 1, "{want_other:?}");

    let asked: BTreeSet<String> = ["br-ports", "br-other", "br-missing", "vlocal-peer"]
        .map(String::from)
        .into();
    let (got, took) = lab.host.enter(move || {
        let start = std::time::Instant::now();
        let got = bridge_ports(&asked).expect("bridge_ports");
        (got, start.elapsed())
    });
    eprintln!("bridge_ports: {got:?} in {took:?}");
    assert_eq!(
        got.keys().map(String::as_str).collect::<Vec<_>>(),
        ["br-other", "br-ports"]
    );
    assert_eq!(got["br-ports"], want_ports);
    assert_eq!(got["br-other"], want_other);
}

/// A port joining or leaving a bridge is announced at once (the daemon binds it without
/// waiting for Docker); a link that joins no bridge is not.
#[test]
fn port_changes_are_announced() {
    use std::sync::mpsc;
    use std::time::Duration;
    use trafficjam::kernel::links::ports::{subscribe_links, watch_links};

    if !kernel_tier_available() {
        return;
    }
    let mut lab = Lab::new();
    lab.bridge("br-watch", &[]);
    let (tx, rx) = mpsc::channel();
    let sock = lab.host.enter(|| subscribe_links().expect("subscribe"));
    std::thread::spawn(move || watch_links(&sock, || tx.send(()).is_ok()));
    let drain =
        |rx: &mpsc::Receiver<()>| while rx.recv_timeout(Duration::from_millis(200)).is_ok() {};
    drain(&rx);

    lab.host.ip(&[
        "link",
        "add",
        "vlone",
        "type",
        "veth",
        "peer",
        "name",
        "vlone-peer",
    ]);
    assert!(
        rx.recv_timeout(Duration::from_millis(300)).is_err(),
        "a link outside any bridge was announced"
    );
    lab.container("c1", "br-watch", &["10.30.0.2/24"], &[]);
    rx.recv_timeout(Duration::from_secs(1))
        .expect("a new port was not announced");
    drain(&rx);
    let port = lab.host.ip(&["-br", "link", "show", "master", "br-watch"]);
    let port = port.split(['@', ' ']).next().expect("a port").to_owned();
    lab.host.ip(&["link", "del", &port]);
    rx.recv_timeout(Duration::from_secs(1))
        .expect("a removed port was not announced");
}

// ---- policy: allow rules, host ports, outbound denials ---------------------------------

/// The public lab with a fourth container, `b3` (.5), listening too.
fn policy_lab(bridge_nf_call: bool) -> PublicLab {
    let mut p = PublicLab::new(bridge_nf_call);
    p.lab.container(
        "b3",
        "br-pub",
        &["10.10.0.5/24", "fd00:10::5/64"],
        &["10.10.0.1", "fd00:10::1"],
    );
    p.listeners.insert(3, Listeners::start(&p.lab.get("b3").ns));
    p
}

/// Every grant between the addresses of `from` and `to` of one family, on `ports`.
fn grants(p: &PublicLab, from: &str, to: &str, ports: Option<&str>) -> Vec<Grant> {
    let ports = ports.map(|t| PortRange::parse(t).unwrap());
    p.addrs(from)
        .into_iter()
        .zip(p.addrs(to))
        .map(|(from, to)| Grant { from, to, ports })
        .collect()
}

fn probes(what: &str, from: &str, to: &[IpAddr], protos: &[(Proto, bool)]) -> Vec<Expect> {
    to.iter()
        .flat_map(|addr| {
            protos.iter().map(move |(proto, pass)| Expect {
                what: what.into(),
                from: from.into(),
                to: *addr,
                proto: *proto,
                pass: *pass,
            })
        })
        .collect()
}

/// Issue 11's stories on real packets: an allowed pair and port, the same pair on another
/// port, the other direction, another source and destination, a backend calling the proxy,
/// an open pair, and the proxy still reaching everyone. `stateful`: br_netfilter on.
fn allow_rules_hold(stateful: bool) {
    let p = policy_lab(stateful);
    let mut net = p.network(false);
    net.allow_rules = true;
    let tcp = format!("{TCP_PORT}/tcp");
    let udp = format!("{UDP_PORT}/udp");
    let other_tcp = format!("{}-{}/tcp", TCP_PORT + 1, TCP_PORT + 9);
    net.grants.extend(grants(&p, "b1", "b2", Some(&tcp)));
    net.grants.extend(grants(&p, "b1", "proxy", Some(&udp)));
    net.grants.extend(grants(&p, "b2", "b3", None));
    net.grants.extend(grants(&p, "b3", "b1", Some(&other_tcp)));
    let rs = plan(TABLE, &[net]).unwrap();
    let (_k, report) = apply(&p.lab, Kernel::new(BridgeNetfilter::Leave), &rs);
    assert_eq!(report.stateful(), stateful, "{report:?}");
    assert_no_drift(&p.lab.host, &rs);
    use Proto::*;
    let mut e = Vec::new();
    e.extend(probes(
        "allowed pair and port",
        "b1",
        &p.addrs("b2"),
        &[(Tcp, true), (Udp, false), (Icmp, false)],
    ));
    // The other direction: nothing opens (without conntrack, UDP answers to the opener's
    // port cannot be told from an opening; TCP and ping still can).
    let reverse: &[(Proto, bool)] = if stateful {
        &[(Tcp, false), (Udp, false), (Icmp, false)]
    } else {
        &[(Tcp, false), (Icmp, false)]
    };
    e.extend(probes("other direction", "b2", &p.addrs("b1"), reverse));
    e.extend(probes(
        "backend calls the proxy on its port",
        "b1",
        &p.addrs("proxy"),
        &[(Udp, true), (Tcp, false), (Icmp, false)],
    ));
    e.extend(probes(
        "another source",
        "b3",
        &p.addrs("b2"),
        &[(Tcp, false), (Icmp, false)],
    ));
    e.extend(probes(
        "another port range",
        "b3",
        &p.addrs("b1"),
        &[(Tcp, false), (Icmp, false)],
    ));
    e.extend(probes(
        "open pair: every protocol",
        "b2",
        &p.addrs("b3"),
        &[(Tcp, true), (Udp, true), (Icmp, true)],
    ));
    e.extend(probes(
        "open pair, other direction",
        "b3",
        &p.addrs("b2"),
        &[(Tcp, false), (Icmp, false)],
    ));
    e.extend(probes(
        "another destination",
        "b1",
        &p.addrs("b3"),
        &[(Tcp, false), (Icmp, false)],
    ));
    for to in ["b1", "b2", "b3"] {
        e.extend(expect(
            "proxy reaches everyone",
            "proxy",
            &p.addrs(to),
            true,
        ));
    }
    assert_probes(&p.lab, &e, &rs);
    // The blocked probes were counted (by the backstop, which comes first, or by the
    // stateful chain; both when br_netfilter is on).
    let counted = dropped(&p.lab, Family::Bridge, "deny_isolation_public")
        + if stateful {
            dropped(&p.lab, Family::Inet, "deny_isolation_public")
        } else {
            0
        };
    assert!(counted > 0);
}

#[test]
fn allow_rules_with_br_netfilter_on() {
    if !kernel_tier_available() {
        return;
    }
    allow_rules_hold(true);
}

#[test]
fn allow_rules_in_the_stateless_backstop() {
    if !kernel_tier_available() {
        return;
    }
    allow_rules_hold(false);
}

/// A grant is an element: a container coming, going or moving changes set elements only,
/// and the traffic follows at once.
#[test]
fn grants_follow_containers_as_element_updates() {
    if !kernel_tier_available() {
        return;
    }
    let p = policy_lab(true);
    let mut net = p.network(false);
    net.allow_rules = true;
    let rs = plan(TABLE, &[net.clone()]).unwrap();
    let (kernel, _) = apply(&p.lab, Kernel::new(BridgeNetfilter::Enable), &rs);
    let tcp = format!("{TCP_PORT}/tcp");
    let closed = probes(
        "not yet allowed",
        "b1",
        &p.addrs("b2"),
        &[(Proto::Tcp, false)],
    );
    assert_probes(&p.lab, &closed, &rs);

    net.grants.extend(grants(&p, "b1", "b2", Some(&tcp)));
    let rs = plan(TABLE, &[net.clone()]).unwrap();
    let (kernel, report) = apply(&p.lab, kernel, &rs);
    assert_eq!(report.kind, BatchKind::Elements);
    assert_eq!((report.added, report.removed), (4, 0), "{report:?}");
    assert_no_drift(&p.lab.host, &rs);
    let open = probes("allowed", "b1", &p.addrs("b2"), &[(Proto::Tcp, true)]);
    assert_probes(&p.lab, &open, &rs);

    // b2 "restarts" with a new address: the old elements go, the new ones come.
    net.grants.clear();
    net.grants.insert(Grant {
        from: p.addrs("b1")[0],
        to: "10.10.0.99".parse().unwrap(),
        ports: Some(PortRange::parse(&tcp).unwrap()),
    });
    let rs = plan(TABLE, &[net]).unwrap();
    let (_kernel, report) = apply(&p.lab, kernel, &rs);
    assert_eq!(report.kind, BatchKind::Elements);
    assert_eq!((report.added, report.removed), (2, 4), "{report:?}");
    assert_no_drift(&p.lab.host, &rs);
    assert_probes(&p.lab, &closed, &rs);
}

/// The rendered text of a ruleset with allow rules, host ports and outbound denials loads
/// in nft and lists exactly as what the netlink batch installed.
#[test]
fn policy_text_and_netlink_batch_install_the_same_ruleset() {
    if !kernel_tier_available() {
        return;
    }
    let p = policy_lab(true);
    let mut net = p.network(false);
    net.allow_rules = true;
    net.host_access = HostAccess::Whitelisted;
    net.host_ports = vec![
        PortRange::parse("53/udp").unwrap(),
        PortRange::parse("8000-8100/tcp").unwrap(),
    ];
    net.deny_outbound = vec![
        "192.168.0.0/16".parse().unwrap(),
        "fc00::/7".parse().unwrap(),
    ];
    net.grants.extend(grants(&p, "b1", "b2", Some("5432/tcp")));
    net.grants
        .extend(grants(&p, "b1", "b2", Some("6000-6100/tcp")));
    net.grants.extend(grants(&p, "b2", "b3", None));
    let rs = plan(TABLE, &[net]).unwrap();
    apply(&p.lab, Kernel::new(BridgeNetfilter::Leave), &rs);
    assert_no_drift(&p.lab.host, &rs);
    assert_text_installs_the_same(&p.lab.host, &rs.to_string());
}

/// A namespace routed behind the host (no NAT), as a LAN or the internet is: a veth from
/// the host (`host_addrs`) to `eth0` there (`addrs`), default routes back through the
/// host, and echo listeners.
struct Behind {
    ns: Netns,
    addrs: Vec<IpAddr>,
    _listeners: Listeners,
}

impl Behind {
    fn new(lab: &Lab, role: &str, host_addrs: &[&str], addrs: &[&str]) -> Behind {
        let ns = Netns::new(role);
        let link = format!("{role}0");
        lab.host.ip(&[
            "link", "add", &link, "type", "veth", "peer", "name", "eth0", "netns", &ns.name,
        ]);
        for a in host_addrs {
            lab.host.ip(&["addr", "add", a, "dev", &link, "nodad"]);
        }
        lab.host.ip(&["link", "set", &link, "up"]);
        for a in addrs {
            ns.ip(&["addr", "add", a, "dev", "eth0", "nodad"]);
        }
        ns.ip(&["link", "set", "eth0", "up"]);
        for gw in host_addrs {
            let gw = gw.split('/').next().unwrap();
            let family = if gw.contains(':') { "-6" } else { "-4" };
            ns.ip(&[family, "route", "add", "default", "via", gw]);
        }
        let _listeners = Listeners::start(&ns);
        let addrs = addrs
            .iter()
            .map(|a| a.split('/').next().unwrap().parse().unwrap())
            .collect();
        Behind {
            ns,
            addrs,
            _listeners,
        }
    }
}

/// Probes from a namespace behind the host to containers (a LAN client connecting in).
fn probes_from_behind(from: &Behind, to: &[IpAddr]) -> Vec<String> {
    let mut failures = Vec::new();
    for addr in to {
        for proto in ALL_PROTOS {
            if !probe(&from.ns, *addr, proto, PASS_TIMEOUT) {
                failures.push(format!("{} -> {addr} {proto:?} was blocked", from.ns.name));
            }
        }
    }
    failures
}

/// `deny_outbound`: no container (the proxy neither) opens a connection to a LAN address
/// behind the host, while a public destination stays reachable and LAN clients still
/// connect in (their answers flow). Routed traffic never needs br_netfilter.
#[test]
fn deny_outbound_closes_the_lan_and_nothing_else() {
    if !kernel_tier_available() {
        return;
    }
    let p = policy_lab(false);
    let lan = Behind::new(
        &p.lab,
        "lan",
        &["192.168.77.1/24", "fd00:77::1/64"],
        &["192.168.77.2/24", "fd00:77::2/64"],
    );
    let wan = Behind::new(
        &p.lab,
        "wan",
        &["198.51.100.1/24", "2001:db8:1::1/64"],
        &["198.51.100.2/24", "2001:db8:1::2/64"],
    );
    let mut net = p.network(true);
    net.deny_outbound = ["192.168.0.0/16", "fc00::/7"]
        .iter()
        .map(|d| d.parse().unwrap())
        .collect();
    let rs = plan(TABLE, &[net]).unwrap();
    apply(&p.lab, Kernel::new(BridgeNetfilter::Leave), &rs);
    let mut e = Vec::new();
    e.extend(expect("LAN denied", "b1", &lan.addrs, false));
    e.extend(expect(
        "LAN denied to the proxy too",
        "proxy",
        &lan.addrs,
        false,
    ));
    e.extend(expect("public destination open", "b1", &wan.addrs, true));
    e.extend(expect("host untouched (open)", "b1", &p.gateways(), true));
    assert_probes(&p.lab, &e, &rs);
    let inbound = probes_from_behind(&lan, &[p.addrs("b1"), p.addrs("proxy")].concat());
    assert!(
        inbound.is_empty(),
        "LAN clients must still connect in: {inbound:?}"
    );
    assert!(dropped(&p.lab, Family::Inet, "deny_outbound_public") > 0);
}

/// The host closed but for chosen ports for everyone, and open to the whitelisted proxy.
#[test]
fn host_ports_and_a_host_open_to_the_whitelisted_only() {
    if !kernel_tier_available() {
        return;
    }
    let p = policy_lab(true);
    let mut net = p.network(false);
    net.host_ports = vec![PortRange::parse(&format!("{TCP_PORT}/tcp")).unwrap()];
    let rs = plan(TABLE, &[net.clone()]).unwrap();
    let (kernel, _) = apply(&p.lab, Kernel::new(BridgeNetfilter::Enable), &rs);
    use Proto::*;
    let on_port = [(Tcp, true), (Udp, false), (Icmp, false)];
    let mut e = probes("host port open to all", "b1", &p.gateways(), &on_port);
    e.extend(probes(
        "host port open to all",
        "proxy",
        &p.gateways(),
        &on_port,
    ));
    assert_probes(&p.lab, &e, &rs);

    net.host_access = HostAccess::Whitelisted;
    let rs = plan(TABLE, &[net]).unwrap();
    apply(&p.lab, kernel, &rs);
    let mut e = probes("host port open to all", "b1", &p.gateways(), &on_port);
    e.extend(expect(
        "host open to the proxy",
        "proxy",
        &p.gateways(),
        true,
    ));
    e.extend(expect("backends still apart", "b1", &p.addrs("b2"), false));
    assert_probes(&p.lab, &e, &rs);
}

/// Without br_netfilter, fragments from a non-whitelisted container are dropped by the
/// backstop, IPv6 as IPv4: on the answer path of an open pair a small datagram passes
/// (only conntrack could tell it from a new flow) while one too large for a frame does
/// not, so a fragment can smuggle no SYN either.
#[test]
fn fragments_from_a_backend_are_dropped_by_the_backstop() {
    if !kernel_tier_available() {
        return;
    }
    let p = policy_lab(false);
    let mut net = p.network(false);
    net.allow_rules = true;
    net.grants.extend(grants(&p, "b1", "b2", None));
    let rs = plan(TABLE, &[net]).unwrap();
    apply(&p.lab, Kernel::new(BridgeNetfilter::Leave), &rs);
    let b1 = p.listeners("b1");
    for (from, to) in p.addrs("b2").into_iter().zip(p.addrs("b1")) {
        let send = |size: usize| {
            p.lab.get("b2").ns.enter(move || {
                let bind = if to.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
                let sock = std::net::UdpSocket::bind(bind).unwrap();
                sock.send_to(&vec![b'x'; size], (to, UDP_PORT)).unwrap();
            });
            std::thread::sleep(std::time::Duration::from_millis(300));
        };
        send(100);
        assert_eq!(b1.udp_count_from(from), 1, "the small datagram from {from}");
        send(3000);
        assert_eq!(
            b1.udp_count_from(from),
            1,
            "a fragmented datagram from {from} passed the backstop:\n{}",
            p.lab.host.nft(&["list", "ruleset"])
        );
    }
    assert_text_installs_the_same(&p.lab.host, &rs.to_string());
}

// ---- the drop log ---------------------------------------------------------------------

/// NFLOG groups of the kernel tier's tests (each lab has its own namespace, so the same
/// group could serve every test; distinct ones keep a failure's reports apart).
const LOG_GROUP: u16 = 4301;

/// Reads NFLOG `group` in the lab's host namespace, as the daemon does: every packet the
/// kernel reports lands in the channel (`None`: a second without any, which is when the
/// reader ends once the receiver is gone).
fn read_drop_log(lab: &Lab, group: u16) -> Receiver<Option<LoggedPacket>> {
    let (tx, rx) = std::sync::mpsc::channel();
    lab.host.enter(move || {
        let report: DropReport = Box::new(move |event| match event {
            LogEvent::Packet(p) => tx.send(Some(p)).is_ok(),
            LogEvent::Lost => panic!("reports lost"),
            LogEvent::Idle => tx.send(None).is_ok(),
        });
        Netlink::default()
            .watch_drops(group, report)
            .expect("bind the NFLOG group");
    });
    rx
}

/// The reports received within `wait`.
fn reports(rx: &Receiver<Option<LoggedPacket>>, wait: Duration) -> Vec<LoggedPacket> {
    let deadline = std::time::Instant::now() + wait;
    let mut got = Vec::new();
    while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(Some(p)) => got.push(p),
            Ok(None) => {}
            Err(_) => break,
        }
    }
    got
}

/// The public lab isolated in `mode` with its drops reported to [`LOG_GROUP`], and a
/// reader of the group.
fn logged_lab(stateful: bool, mode: Mode) -> (PublicLab, Ruleset, Receiver<Option<LoggedPacket>>) {
    let p = PublicLab::new(stateful);
    let net = ManagedNetwork {
        mode,
        log_group: Some(LOG_GROUP),
        ..p.network(false)
    };
    let rs = plan(TABLE, &[net]).unwrap();
    apply(&p.lab, Kernel::new(BridgeNetfilter::Leave), &rs);
    let rx = read_drop_log(&p.lab, LOG_GROUP);
    (p, rs, rx)
}

/// A blocked connection between two backends, and one to the host, are reported with
/// their reason, network, addresses and port, by the kernel's NFLOG, read as the daemon
/// reads it; in both br_netfilter modes (the `inet` chains or the bridge backstop drop).
#[test]
fn blocked_attempts_are_reported_with_reason_addresses_and_port() {
    if !kernel_tier_available() {
        return;
    }
    for stateful in [true, false] {
        let (p, rs, rx) = logged_lab(stateful, Mode::Enforce);
        let b1 = p.lab.get("b1");
        for to in p.addrs("b2") {
            assert!(!probe(&b1.ns, to, Proto::Tcp, Duration::from_millis(300)));
            let got = reports(&rx, Duration::from_secs(1));
            let syn = got
                .iter()
                .find(|r| r.packet.destination == Some(to))
                .unwrap_or_else(|| panic!("stateful {stateful}: no report of b1 -> {to}: {got:?}"));
            assert_eq!(syn.reason, Some(Reason::Isolation), "{syn:?}");
            assert_eq!(syn.network, "public");
            assert_eq!(syn.packet.protocol, Some(6));
            assert_eq!(syn.packet.destination_port, Some(TCP_PORT));
            assert!(
                p.addrs("b1").contains(&syn.packet.source.unwrap()),
                "{syn:?}"
            );
            assert!(
                syn.bridge_index.is_some() && syn.port_index.is_some(),
                "{syn:?}"
            );
        }
        // To the host: reason host.
        let gateway: IpAddr = "10.10.0.1".parse().unwrap();
        assert!(!probe(
            &b1.ns,
            gateway,
            Proto::Tcp,
            Duration::from_millis(300)
        ));
        let got = reports(&rx, Duration::from_secs(1));
        assert!(
            got.iter()
                .any(|r| r.reason == Some(Reason::Host) && r.packet.destination == Some(gateway)),
            "stateful {stateful}: {got:?}"
        );
        // What is allowed is never reported.
        assert!(probe(
            &p.lab.get("proxy").ns,
            p.addrs("b1")[0],
            Proto::Tcp,
            Duration::from_secs(2)
        ));
        assert_eq!(reports(&rx, Duration::from_millis(500)), []);
        assert_text_installs_the_same(&p.lab.host, &rs.to_string());
    }
}

/// Audit mode: what enforcement would drop passes, and is reported and counted as such.
#[test]
fn audit_mode_lets_traffic_through_and_reports_it() {
    if !kernel_tier_available() {
        return;
    }
    for stateful in [true, false] {
        let (p, rs, rx) = logged_lab(stateful, Mode::Audit);
        let b1 = p.lab.get("b1");
        for to in p.addrs("b2") {
            for proto in ALL_PROTOS {
                assert!(
                    probe(&b1.ns, to, proto, Duration::from_secs(2)),
                    "stateful {stateful}: audit blocked {proto:?} b1 -> {to}\n{rs}"
                );
            }
        }
        let gateway: IpAddr = "10.10.0.1".parse().unwrap();
        assert!(probe(&b1.ns, gateway, Proto::Tcp, Duration::from_secs(2)));
        let got = reports(&rx, Duration::from_secs(1));
        for to in p.addrs("b2") {
            assert!(
                got.iter().any(|r| r.reason == Some(Reason::Isolation)
                    && r.packet.destination == Some(to)
                    && r.packet.destination_port == Some(TCP_PORT)),
                "stateful {stateful}: no report of b1 -> {to}: {got:?}"
            );
        }
        assert!(
            got.iter().any(|r| r.reason == Some(Reason::Host)),
            "{got:?}"
        );
        let counters = p.lab.host.enter(|| read_counters(TABLE).unwrap());
        assert!(rs.dropped_for("public", Reason::Isolation, &counters) > 0);
    }
}

/// A flood from a backend: every packet is dropped (the log's rate limit never lets one
/// through), and the kernel reports a bounded number of them.
#[test]
fn a_flood_is_dropped_whole_and_reported_at_a_bounded_rate() {
    if !kernel_tier_available() {
        return;
    }
    for stateful in [true, false] {
        let (p, rs, rx) = logged_lab(stateful, Mode::Enforce);
        let to = p.addrs("b2")[0];
        let from = p.addrs("b1")[0];
        const FLOOD: usize = 20_000;
        let started = std::time::Instant::now();
        p.lab.get("b1").ns.enter(move || {
            let sock = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
            for _ in 0..FLOOD {
                let _ = sock.send_to(b"flood", (to, UDP_PORT));
            }
        });
        let seconds = started.elapsed().as_secs_f64();
        let got = reports(&rx, Duration::from_secs(2));
        let bound = LOG_BURST as f64 + LOG_RATE as f64 * (seconds + 2.5);
        assert_eq!(
            p.listeners("b2").udp_count_from(from),
            0,
            "stateful {stateful}: flood packets were delivered"
        );
        let counters = p.lab.host.enter(|| read_counters(TABLE).unwrap());
        let dropped = rs.dropped("public", &counters);
        assert!(
            dropped >= FLOOD as u64,
            "stateful {stateful}: only {dropped} of {FLOOD} dropped"
        );
        assert!(
            !got.is_empty() && (got.len() as f64) <= bound,
            "stateful {stateful}: {} reports for {FLOOD} packets in {seconds:.2} s (bound {bound})",
            got.len()
        );
        eprintln!(
            "stateful {stateful}: {FLOOD} packets in {seconds:.2} s, {} reported",
            got.len()
        );
    }
}

/// Only one socket may read an NFLOG group: a second reader is refused, and the error
/// tells the operator what to do.
#[test]
fn a_log_group_another_program_reads_is_refused_with_a_hint() {
    if !kernel_tier_available() {
        return;
    }
    let p = PublicLab::new(true);
    let _first = read_drop_log(&p.lab, LOG_GROUP);
    let err = p.lab.host.enter(|| {
        Netlink::default()
            .watch_drops(LOG_GROUP, Box::new(|_| true))
            .expect_err("a second reader of the group")
    });
    assert!(
        err.to_string()
            .contains("choose another [daemon] log_group"),
        "{err}"
    );
}

/// Without a log group (`log_drops = false`) nothing is reported, and drops are counted.
#[test]
fn without_a_log_group_nothing_is_reported() {
    if !kernel_tier_available() {
        return;
    }
    let p = PublicLab::new(true);
    let rs = plan(TABLE, &[p.network(false)]).unwrap();
    assert!(!rs.to_string().contains(" log "), "{rs}");
    apply(&p.lab, Kernel::new(BridgeNetfilter::Leave), &rs);
    let rx = read_drop_log(&p.lab, LOG_GROUP);
    assert!(!probe(
        &p.lab.get("b1").ns,
        p.addrs("b2")[0],
        Proto::Tcp,
        Duration::from_millis(300)
    ));
    assert_eq!(reports(&rx, Duration::from_secs(1)), []);
    let counters = p.lab.host.enter(|| read_counters(TABLE).unwrap());
    assert!(rs.dropped("public", &counters) > 0);
}
