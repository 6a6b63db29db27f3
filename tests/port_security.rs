//! Kernel tier, port security: a backend with a default container's powers (raw sockets,
//! so any frame it likes) attacks its neighbours from its own network namespace, with
//! `tests/attack.py` (scapy). Each attack runs twice: once against isolation without port
//! security (the positive control: the attack is real and works there), once with the
//! ports bound (it must fail). Honest traffic is checked beside every attack.

mod common;
#[path = "port_security/fuzz.rs"]
mod fuzz;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use common::*;
use trafficjam::firewall::Firewall;
use trafficjam::firewall::Netlink;
use trafficjam::kernel::links::bridge::BridgeNetfilter;
use trafficjam::kernel::links::ports::bridge_ports;
use trafficjam::plan::{DEFAULT_TABLE, Mac, ManagedNetwork, Port, Ruleset, mac_text, plan};
use trafficjam::policy::Mode;

const TABLE: &str = DEFAULT_TABLE;
const BRIDGE: &str = "br-ps";
const GATEWAY4: &str = "10.20.0.1";
const GATEWAY6: &str = "fd00:20::1";

/// A host with bridge `br-ps` and four containers: `proxy` (.2, whitelisted), `b1` (.3),
/// `b2` (.4) and `attacker` (.5), each running echo listeners.
struct Network {
    lab: Lab,
    listeners: BTreeMap<String, Listeners>,
}

impl Network {
    fn new(bridge_nf_call: bool) -> Network {
        let mut lab = Lab::new();
        let switch = if bridge_nf_call { "1" } else { "0" };
        lab.host
            .sysctl("net.bridge.bridge-nf-call-iptables", switch);
        lab.host
            .sysctl("net.bridge.bridge-nf-call-ip6tables", switch);
        lab.bridge(
            BRIDGE,
            &[&format!("{GATEWAY4}/24"), &format!("{GATEWAY6}/64")],
        );
        for (name, n) in [("proxy", 2), ("b1", 3), ("b2", 4), ("attacker", 5)] {
            lab.container(
                name,
                BRIDGE,
                &[&format!("10.20.0.{n}/24"), &format!("fd00:20::{n}/64")],
                &[GATEWAY4, GATEWAY6],
            );
        }
        let listeners = lab
            .containers
            .iter()
            .map(|c| (c.name.clone(), Listeners::start(&c.ns)))
            .collect();
        Network { lab, listeners }
    }

    fn ns(&self, name: &str) -> &Netns {
        &self.lab.get(name).ns
    }

    fn mac(&self, name: &str) -> Mac {
        link_mac(self.ns(name), "eth0")
    }

    fn gateway_mac(&self) -> Mac {
        link_mac(&self.lab.host, BRIDGE)
    }

    fn addr(&self, name: &str, v6: bool) -> IpAddr {
        let c = self.lab.get(name);
        if v6 { c.v6() } else { c.v4() }
    }

    /// The network as the daemon plans it: with every port bound to its container (as
    /// the daemon binds them: the kernel's ports, matched by their peer's MAC), except
    /// those named in `unbound`; or with none bound at all (isolation alone).
    fn managed(&self, port_security: bool, unbound: &[&str]) -> ManagedNetwork {
        let mut net = ManagedNetwork {
            name: "ps".into(),
            bridge: BRIDGE.into(),
            subnets: vec![
                "10.20.0.0/24".parse().unwrap(),
                "fd00:20::/64".parse().unwrap(),
            ],
            whitelist: self.lab.get("proxy").addrs.iter().copied().collect(),
            ..ManagedNetwork::default()
        };
        if !port_security {
            return net;
        }
        let found = self
            .lab
            .host
            .enter(|| bridge_ports(&[BRIDGE.to_owned()].into()).expect("bridge ports"));
        let bridge = &found[BRIDGE];
        net.gateway_mac = bridge.mac;
        net.gateways = vec![GATEWAY4.parse().unwrap(), GATEWAY6.parse().unwrap()];
        for c in &self.lab.containers {
            let mac = self.mac(&c.name);
            let link = bridge.ports.iter().find(|p| p.peer_mac == mac);
            if unbound.contains(&c.name.as_str()) {
                // (a container of the lab's other bridge has no port on this one)
                net.unbound_ports.extend(link.map(|l| l.name.clone()));
                continue;
            }
            let link = link.unwrap_or_else(|| panic!("no port with the MAC of {}", c.name));
            net.ports.push(Port {
                name: link.name.clone(),
                mac,
                addrs: c.addrs.clone(),
            });
        }
        net
    }

    fn apply(&self, net: ManagedNetwork) -> Ruleset {
        let rs = plan(TABLE, &[net]).expect("plan");
        let applied = rs.clone();
        self.lab.host.enter(move || {
            Netlink::new(BridgeNetfilter::Leave)
                .apply(None, &applied)
                .unwrap_or_else(|e| panic!("apply: {e}\n{applied}"))
        });
        rs
    }

    /// Every port bound and the bridge's forwarding database programmed, as the daemon
    /// does for an enforced network; returns the ruleset and the bound ports.
    fn apply_programmed(&self) -> (Ruleset, Vec<(String, Mac)>) {
        let net = self.managed(true, &[]);
        let ports: Vec<(String, Mac)> = net.ports.iter().map(|p| (p.name.clone(), p.mac)).collect();
        let rs = self.apply(net);
        let bound = ports.clone();
        self.lab.host.enter(move || {
            trafficjam::kernel::links::fdb::bind_ports(BRIDGE, &bound).expect("bind ports")
        });
        (rs, ports)
    }

    /// The neighbour entry of `owner` for `addr`: its MAC, if resolved.
    fn neighbour(&self, owner: &str, addr: &str) -> Option<String> {
        let out = self.ns(owner).ip(&["neigh", "show", addr, "dev", "eth0"]);
        out.split_whitespace()
            .skip_while(|w| *w != "lladdr")
            .nth(1)
            .map(str::to_owned)
    }

    /// Runs the attack tool in `from`'s namespace; returns its JSON result line.
    fn attack(&self, from: &str, args: &[&str]) -> serde_json::Value {
        let tool = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/attack.py");
        let mut full = vec![tool];
        full.extend_from_slice(args);
        // Debian's interpreter: python3-scapy is installed for it.
        let out = self.ns(from).exec("/usr/bin/python3", &full);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let last = stdout.lines().last().unwrap_or_default();
        serde_json::from_str(last).unwrap_or_else(|e| {
            panic!(
                "attack {args:?}: no JSON result ({e}): {stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
    }

    /// Datagrams from the attacker's own MAC, as `src` to `dst` (in frames to `dst_mac`),
    /// to the listeners' UDP port; `extra` adds options of attack.py's `udp` (`--vlan`).
    fn attacker_udp(
        &self,
        src: &str,
        dst: &str,
        dst_mac: &str,
        count: u32,
        extra: &[&str],
    ) -> serde_json::Value {
        let mac = mac_text(&self.mac("attacker"));
        let (port, count) = (UDP_PORT.to_string(), count.to_string());
        let args = common::udp_attack_args((&mac, src), (dst, dst_mac), &port, &count, extra);
        self.attack("attacker", &args)
    }

    /// A user-space TCP handshake from the attacker, as `claim` (MAC and address of
    /// another container), to b1's echo port: what b1 answered.
    fn impersonate(&self, claim: &str, v6: bool) -> serde_json::Value {
        let mac = mac_text(&self.mac(claim));
        let src = self.addr(claim, v6).to_string();
        let dst = self.addr("b1", v6).to_string();
        let dst_mac = mac_text(&self.mac("b1"));
        let port = TCP_PORT.to_string();
        self.attack(
            "attacker",
            &[
                "handshake",
                "--src-mac",
                &mac,
                "--src-ip",
                &src,
                "--dst-ip",
                &dst,
                "--dst-mac",
                &dst_mac,
                "--dport",
                &port,
                "--payload",
                "hello b1",
                "--timeout",
                "2",
            ],
        )
    }

    fn probe(&self, from: &str, to: &str, proto: Proto, pass: bool) -> bool {
        let timeout = if pass { PASS_TIMEOUT } else { BLOCKED_TIMEOUT };
        let mut ok = false;
        for v6 in [false, true] {
            ok |= probe(self.ns(from), self.addr(to, v6), proto, timeout);
        }
        ok
    }
}

fn link_mac(ns: &Netns, dev: &str) -> Mac {
    let out = ns.ip(&["-br", "link", "show", dev]);
    let text = out.split_whitespace().nth(2).expect("a MAC in ip -br link");
    trafficjam::docker::parse_mac(text).unwrap_or_else(|| panic!("not a MAC: {text}"))
}

/// Proxy traffic to every backend passes, backends stay apart: the honest paths.
fn assert_honest_paths(n: &Network, what: &str) {
    let mut failures = Vec::new();
    for proto in ALL_PROTOS {
        for to in ["b1", "b2", "attacker"] {
            if !n.probe("proxy", to, proto, true) {
                failures.push(format!("proxy -> {to} {proto:?} blocked"));
            }
        }
        if n.probe("b1", "b2", proto, false) {
            failures.push(format!("b1 -> b2 {proto:?} passed"));
        }
    }
    assert!(
        failures.is_empty(),
        "{what}: {failures:?}\n{}",
        n.lab.host.nft(&["list", "ruleset"])
    );
}

fn wait_until(mut done: impl FnMut() -> bool, within: Duration) -> bool {
    let start = std::time::Instant::now();
    while start.elapsed() < within {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    done()
}

#[test]
fn a_backend_cannot_impersonate_the_proxy_or_the_gateway_to_open_a_connection() {
    if !kernel_tier_available() {
        return;
    }
    for bridge_nf_call in [true, false] {
        let n = Network::new(bridge_nf_call);
        // Control: isolation alone. The forged handshake gets the echo back.
        n.apply(n.managed(false, &[]));
        for v6 in [false, true] {
            let got = n.impersonate("proxy", v6);
            assert_eq!(
                got["synack"], true,
                "control (br_netfilter {bridge_nf_call}, v6 {v6}): the attack should work \
                 without port security: {got}"
            );
            assert!(
                got["data"].as_str().unwrap_or("").contains("hello b1"),
                "control: {got}"
            );
        }
        // Port security: the same frames are dropped at the attacker's port.
        let rs = n.apply(n.managed(true, &[]));
        for v6 in [false, true] {
            let got = n.impersonate("proxy", v6);
            assert_eq!(
                got["synack"], false,
                "br_netfilter {bridge_nf_call}, v6 {v6}: b1 answered the forged proxy: {got}\n{rs}"
            );
        }
        assert_honest_paths(&n, "with port security");
        let spoofed = n
            .lab
            .host
            .enter(|| trafficjam::kernel::nftables::dump::read_counters(TABLE).expect("counters"));
        assert!(
            rs.spoofed("ps", &spoofed) > 0,
            "no forged frame counted: {spoofed:?}"
        );
    }
}

#[test]
fn an_unresolved_port_cannot_claim_a_known_identity_but_may_speak_as_itself() {
    if !kernel_tier_available() {
        return;
    }
    let n = Network::new(true);
    // The attacker's port is not bound yet (a container that just started).
    n.apply(n.managed(true, &["attacker"]));
    for v6 in [false, true] {
        let got = n.impersonate("proxy", v6);
        assert_eq!(got["synack"], false, "v6 {v6}: {got}");
    }
    // Gateway identity: a handshake as the gateway's MAC and address.
    let got = n.attack(
        "attacker",
        &[
            "handshake",
            "--src-mac",
            &mac_text(&n.gateway_mac()),
            "--src-ip",
            GATEWAY4,
            "--dst-ip",
            &n.addr("b1", false).to_string(),
            "--dst-mac",
            &mac_text(&n.mac("b1")),
            "--dport",
            &TCP_PORT.to_string(),
            "--timeout",
            "2",
        ],
    );
    assert_eq!(got["synack"], false, "as the gateway: {got}");
    // With its own MAC but the proxy's address (the claim on the address alone): no
    // datagram delivered. (`forged_source_datagrams_are_not_delivered` shows the same
    // frames delivered without port security.)
    let before: Vec<usize> = [false, true]
        .map(|v6| n.listeners["b1"].udp_count_from(n.addr("proxy", v6)))
        .to_vec();
    for v6 in [false, true] {
        n.attacker_udp(
            &n.addr("proxy", v6).to_string(),
            &n.addr("b1", v6).to_string(),
            &mac_text(&n.mac("b1")),
            5,
            &[],
        );
    }
    std::thread::sleep(Duration::from_millis(500));
    let after: Vec<usize> = [false, true]
        .map(|v6| n.listeners["b1"].udp_count_from(n.addr("proxy", v6)))
        .to_vec();
    assert_eq!(after, before, "datagrams as the proxy from an unbound port");
    // As itself, it is an ordinary backend: reachable from the proxy.
    for proto in ALL_PROTOS {
        assert!(n.probe("proxy", "attacker", proto, true), "{proto:?}");
    }
}

#[test]
fn arp_poisoning_leaves_every_neighbour_table_true() {
    if !kernel_tier_available() {
        return;
    }
    let n = Network::new(true);
    let attacker_mac = mac_text(&n.mac("attacker"));
    // (victim, the address it must keep right, whose MAC that is)
    let gateway_mac = mac_text(&n.gateway_mac());
    let proxy_mac = mac_text(&n.mac("proxy"));
    let b1_mac = mac_text(&n.mac("b1"));
    let proxy4 = n.addr("proxy", false).to_string();
    let b14 = n.addr("b1", false).to_string();
    let cases = [
        ("b1", proxy4.as_str(), proxy_mac.as_str()),
        ("proxy", b14.as_str(), b1_mac.as_str()),
        ("b2", GATEWAY4, gateway_mac.as_str()),
    ];
    let poison = |victim: &str, claim: &str| {
        let victim_ip = n.addr(victim, false).to_string();
        let victim_mac = mac_text(&n.mac(victim));
        n.attack(
            "attacker",
            &[
                "arp-reply",
                "--src-mac",
                &attacker_mac,
                "--claim-ip",
                claim,
                "--target-ip",
                &victim_ip,
                "--target-mac",
                &victim_mac,
                "--count",
                "3",
            ],
        );
    };
    let resolve = |victim: &str, addr: &str| {
        // Any packet makes the victim resolve the address (the reply is irrelevant).
        n.ns(victim)
            .exec("ping", &["-n", "-q", "-c", "1", "-W", "0.5", addr]);
    };

    // Control: without port security, every entry is poisoned.
    n.apply(n.managed(false, &[]));
    for (victim, addr, _) in cases {
        resolve(victim, addr);
        poison(victim, addr);
        assert!(
            wait_until(
                || n.neighbour(victim, addr).as_deref() == Some(attacker_mac.as_str()),
                Duration::from_secs(2)
            ),
            "control: {victim}'s entry for {addr} was not poisoned: {:?}",
            n.neighbour(victim, addr)
        );
        n.ns(victim).ip(&["neigh", "flush", "dev", "eth0"]);
    }

    n.apply(n.managed(true, &[]));
    for (victim, addr, truth) in cases {
        resolve(victim, addr);
        poison(victim, addr);
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(
            n.neighbour(victim, addr).as_deref(),
            Some(truth),
            "{victim}'s entry for {addr}"
        );
    }
    // The proxy's requests still reach the real backend.
    for proto in ALL_PROTOS {
        assert!(n.probe("proxy", "b1", proto, true), "proxy -> b1 {proto:?}");
    }
}

#[test]
fn ipv6_neighbour_advertisements_and_router_advertisements_are_not_believed() {
    if !kernel_tier_available() {
        return;
    }
    let n = Network::new(true);
    let attacker_mac = mac_text(&n.mac("attacker"));
    let proxy6 = n.addr("proxy", true).to_string();
    let b16 = n.addr("b1", true).to_string();
    let advertise = || {
        let attacker6 = n.addr("attacker", true).to_string();
        n.attack(
            "attacker",
            &[
                "na",
                "--src-mac",
                &attacker_mac,
                "--src-ip",
                &attacker6,
                "--target-ip",
                &proxy6,
                "--dst-ip",
                &b16,
                "--dst-mac",
                &mac_text(&n.mac("b1")),
                "--count",
                "3",
            ],
        );
    };
    let rogue_router = || {
        n.attack(
            "attacker",
            &[
                "ra",
                "--src-mac",
                &attacker_mac,
                "--src-ip",
                &trafficjam::plan::link_local(&n.mac("attacker")).to_string(),
                "--prefix",
                "2001:db8:bad::/64",
            ],
        );
    };
    let rogue_address = || {
        n.ns("b1")
            .ip(&["-6", "addr", "show", "dev", "eth0"])
            .contains("2001:db8:bad:")
    };
    n.ns("b1").sysctl("net.ipv6.conf.eth0.accept_ra", "2");
    let resolve = || {
        n.ns("b1")
            .exec("ping", &["-n", "-q", "-c", "1", "-W", "0.5", &proxy6]);
    };

    n.apply(n.managed(false, &[]));
    resolve();
    advertise();
    assert!(
        wait_until(
            || n.neighbour("b1", &proxy6).as_deref() == Some(attacker_mac.as_str()),
            Duration::from_secs(2)
        ),
        "control: the advertisement did not poison b1: {:?}",
        n.neighbour("b1", &proxy6)
    );
    rogue_router();
    assert!(
        wait_until(rogue_address, Duration::from_secs(3)),
        "control: the rogue router advertisement gave b1 no address"
    );
    n.ns("b1").ip(&["neigh", "flush", "dev", "eth0"]);
    n.ns("b1")
        .ip(&["-6", "addr", "flush", "dev", "eth0", "dynamic"]);

    n.apply(n.managed(true, &[]));
    resolve();
    advertise();
    rogue_router();
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        n.neighbour("b1", &proxy6),
        Some(mac_text(&n.mac("proxy"))),
        "b1's entry for the proxy"
    );
    assert!(!rogue_address(), "b1 took an address from the rogue router");
    // Honest IPv6 neighbour discovery and duplicate address detection still work.
    n.ns("b2")
        .ip(&["addr", "add", "fd00:20::44/64", "dev", "eth0"]);
    assert!(
        wait_until(
            || {
                let out = n.ns("b2").ip(&["-6", "addr", "show", "dev", "eth0"]);
                out.contains("fd00:20::44") && !out.contains("tentative")
            },
            Duration::from_secs(4)
        ),
        "duplicate address detection never finished"
    );
    assert_honest_paths(&n, "after the IPv6 attacks");
}

#[test]
fn forged_source_datagrams_are_not_delivered() {
    if !kernel_tier_available() {
        return;
    }
    let n = Network::new(true);
    let forge = |v6: bool| {
        n.attacker_udp(
            &n.addr("proxy", v6).to_string(),
            &n.addr("b1", v6).to_string(),
            &mac_text(&n.mac("b1")),
            5,
            &[],
        );
    };
    let delivered = |v6| n.listeners["b1"].udp_count_from(n.addr("proxy", v6));
    n.apply(n.managed(false, &[]));
    for v6 in [false, true] {
        forge(v6);
        assert!(
            wait_until(|| delivered(v6) > 0, Duration::from_secs(2)),
            "control: forged datagrams (v6 {v6}) never arrived"
        );
    }
    n.apply(n.managed(true, &[]));
    let before = [delivered(false), delivered(true)];
    for v6 in [false, true] {
        forge(v6);
    }
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        [delivered(false), delivered(true)],
        before,
        "forged datagrams delivered"
    );
}

/// A bound backend sends VLAN-tagged frames (802.1Q VID 0, VID 5, QinQ) from its own MAC
/// and addresses: UDP to the proxy, to the IPv4 broadcast and, from its link-local
/// address, to ff02::1. The kernel moves the tag out before the bridge, so `meta protocol`
/// reads the inner type and br_netfilter skips the frame: under isolation alone (the
/// control) they reach the proxy and b1, whatever br_netfilter says. A bound port sends
/// only untagged frames: none arrives.
#[test]
fn vlan_tagged_frames_from_a_bound_port_are_dropped_whatever_their_destination() {
    if !kernel_tier_available() {
        return;
    }
    let n = Network::new(true);
    let link_local = trafficjam::plan::link_local(&n.mac("attacker"));
    // (source, destination, destination MAC)
    let targets = [
        (
            n.addr("attacker", false),
            n.addr("proxy", false),
            mac_text(&n.mac("proxy")),
        ),
        (
            n.addr("attacker", true),
            n.addr("proxy", true),
            mac_text(&n.mac("proxy")),
        ),
        (
            n.addr("attacker", false),
            "255.255.255.255".parse().unwrap(),
            "ff:ff:ff:ff:ff:ff".into(),
        ),
        (
            link_local,
            "ff02::1".parse().unwrap(),
            "33:33:00:00:00:01".into(),
        ),
    ];
    let send = |vlan: &str| {
        for (src, dst, dst_mac) in &targets {
            let got = n.attacker_udp(
                &src.to_string(),
                &dst.to_string(),
                dst_mac,
                3,
                &["--vlan", vlan],
            );
            assert_eq!(got["sent"], 3, "{got}");
        }
    };
    // What the proxy and b1 received from the attacker's addresses.
    let received = |n: &Network| -> Vec<usize> {
        ["proxy", "b1"]
            .iter()
            .flat_map(|to| {
                [
                    n.addr("attacker", false),
                    n.addr("attacker", true),
                    link_local,
                ]
                .map(|from| n.listeners[*to].udp_count_from(from))
            })
            .collect()
    };
    let arrived = |before: &[usize], after: &[usize]| -> Vec<usize> {
        after.iter().zip(before).map(|(a, b)| a - b).collect()
    };

    // Control: isolation alone. Each kind of target is reached with a VID 0 tag.
    n.apply(n.managed(false, &[]));
    let before = received(&n);
    send("0");
    assert!(
        wait_until(
            || {
                let got = arrived(&before, &received(&n));
                // proxy: v4 unicast and broadcast, v6 unicast, ff02::1; b1: the groups.
                got[0] >= 6 && got[1] >= 3 && got[2] >= 3 && got[3] >= 3 && got[5] >= 3
            },
            Duration::from_secs(3)
        ),
        "control: tagged datagrams did not all arrive: {:?}",
        arrived(&before, &received(&n))
    );

    let rs = n.apply(n.managed(true, &[]));
    let before = received(&n);
    for vlan in ["0", "5", "0,0", "7,0"] {
        send(vlan);
    }
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        arrived(&before, &received(&n)),
        vec![0; 6],
        "tagged datagrams delivered (proxy v4, v6, link-local; b1 the same)\n{rs}"
    );
    let counters = n
        .lab
        .host
        .enter(|| trafficjam::kernel::nftables::dump::read_counters(TABLE).expect("counters"));
    assert!(
        rs.spoofed("ps", &counters) >= 16,
        "the tagged frames were not counted as spoofed: {counters:?}"
    );
    assert_honest_paths(&n, "after the tagged frames");
}

/// The bridge's forwarding database as the kernel lists it: each MAC learnt or added on a
/// port (not the bridge's own entries, nor the ports' own multicast ones), with its port
/// and whether it is static.
fn fdb(n: &Network) -> BTreeMap<String, (String, bool)> {
    let out = n.lab.host.exec_ok("bridge", &["fdb", "show", "br", BRIDGE]);
    out.lines()
        .filter(|l| l.contains(&format!("master {BRIDGE}")) && !l.contains("permanent"))
        .filter_map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            let dev = words.iter().position(|w| *w == "dev")?;
            Some((
                words[0].to_owned(),
                (words.get(dev + 1)?.to_string(), l.contains("static")),
            ))
        })
        .collect()
}

/// The host-side port of container `name`.
fn port_of(n: &Network, name: &str) -> String {
    let mac = n.mac(name);
    n.managed(true, &[])
        .ports
        .into_iter()
        .find(|p| p.mac == mac)
        .map(|p| p.name)
        .unwrap_or_else(|| panic!("no port for {name}"))
}

/// The issue's MAC hijack: a backend sends frames with b1's MAC to the IEEE link-local
/// groups (`:0e` passes no netfilter hook, the others only the bridge's input hook), and
/// the bridge, learning before port security can judge, moves b1's MAC to the backend's
/// port: it then receives what the proxy sends b1. That works with port security alone
/// (the control). With the database programmed (b1's MAC static on its port, learning
/// off on bound ports, no link-local learning), no frame moves it, and random sources
/// teach the bridge nothing: it holds one entry per bound container.
#[test]
fn no_frame_from_a_container_moves_another_containers_mac() {
    if !kernel_tier_available() {
        return;
    }
    let n = Network::new(true);
    let b1_mac = mac_text(&n.mac("b1"));
    let (b1_port, attacker_port) = (port_of(&n, "b1"), port_of(&n, "attacker"));
    // :0e last: port security's input rule stops the others before the bridge learns
    // from them, so in the control :0e (which passes no hook) has the last word.
    let groups = [
        "01:80:c2:00:00:02",
        "01:80:c2:00:00:03",
        "01:80:c2:00:00:0f",
        "01:80:c2:00:00:0e",
    ];
    let hijack = |n: &Network| {
        for group in groups {
            let got = n.attack(
                "attacker",
                &[
                    "frames",
                    "--src-mac",
                    &b1_mac,
                    "--dst-mac",
                    group,
                    "--count",
                    "3",
                ],
            );
            assert_eq!(got["sent"], 3, "{got}");
        }
    };
    let where_is_b1 = |n: &Network| fdb(n).get(&b1_mac).map(|(port, _)| port.clone());

    // Control: port security alone. b1 speaks (its MAC is learnt on its port), then the
    // frames to each group move it.
    n.apply(n.managed(true, &[]));
    assert!(n.probe("proxy", "b1", Proto::Tcp, true), "proxy -> b1");
    assert_eq!(where_is_b1(&n).as_deref(), Some(b1_port.as_str()));
    // (b1 may speak again right after, moving it back: the attacker tries a few times)
    let moved = (0..10).any(|_| {
        hijack(&n);
        where_is_b1(&n).as_deref() == Some(attacker_port.as_str())
    });
    assert!(
        moved,
        "control: the bridge did not move b1's MAC: {:?}",
        fdb(&n)
    );

    // Programmed: every port bound, as the daemon binds them.
    let (_, ports) = n.apply_programmed();
    assert_eq!(
        fdb(&n).get(&b1_mac),
        Some(&(b1_port.clone(), true)),
        "b1's MAC is static on its port"
    );
    for (port, _) in &ports {
        let details = n
            .lab
            .host
            .exec_ok("bridge", &["-d", "link", "show", "dev", port]);
        assert!(
            details.contains("learning off") && details.contains(" flood off"),
            "{port}: {details}"
        );
    }
    let bridge = n.lab.host.ip(&["-d", "link", "show", BRIDGE]);
    assert!(
        bridge.contains("no_linklocal_learn 1") && bridge.contains("group_fwd_mask 0xfff8"),
        "{bridge}"
    );
    hijack(&n);
    assert_eq!(where_is_b1(&n).as_deref(), Some(b1_port.as_str()));
    // Nor does any other frame the attacker sends: random sources to the groups, to the
    // broadcast and to another container teach the bridge nothing.
    for dst in groups
        .iter()
        .copied()
        .chain(["ff:ff:ff:ff:ff:ff", b1_mac.as_str()])
    {
        n.attack(
            "attacker",
            &["frames", "--random-src", "--dst-mac", dst, "--count", "50"],
        );
    }
    let entries = fdb(&n);
    let bound: BTreeMap<String, (String, bool)> = ports
        .iter()
        .map(|(port, mac)| (mac_text(mac), (port.clone(), true)))
        .collect();
    assert_eq!(
        entries, bound,
        "the database holds exactly the bound containers"
    );
    assert_eq!(where_is_b1(&n).as_deref(), Some(b1_port.as_str()));
    assert_honest_paths(&n, "with the database programmed");
}

/// The backstop's blind spot (br_netfilter off, where it is all there is): it judged only
/// packets between two addresses of the network. A backend opened TCP from its link-local
/// address to another's ULA, and reached every container with a broadcast or a datagram
/// to ff02::1, all from its own MAC and addresses: port security could not object, and
/// isolation alone (the control) lets them through. What a bound port sends on to other
/// ports is judged whatever its addresses: none arrives.
#[test]
fn a_bound_port_is_isolated_whatever_its_destination_address() {
    if !kernel_tier_available() {
        return;
    }
    let n = Network::new(false);
    let attacker_mac = mac_text(&n.mac("attacker"));
    let link_local = trafficjam::plan::link_local(&n.mac("attacker"));
    let handshake = |n: &Network| {
        n.attack(
            "attacker",
            &[
                "handshake",
                "--src-mac",
                &attacker_mac,
                "--src-ip",
                &link_local.to_string(),
                "--dst-ip",
                &n.addr("b1", true).to_string(),
                "--dst-mac",
                &mac_text(&n.mac("b1")),
                "--dport",
                &TCP_PORT.to_string(),
                "--payload",
                "hello b1",
                "--timeout",
                "2",
            ],
        )
    };
    let groups = |n: &Network| {
        for (src, dst, dst_mac) in [
            (
                n.addr("attacker", false).to_string(),
                "255.255.255.255",
                "ff:ff:ff:ff:ff:ff",
            ),
            (link_local.to_string(), "ff02::1", "33:33:00:00:00:01"),
        ] {
            n.attacker_udp(&src, dst, dst_mac, 3, &[]);
        }
    };
    let received = |n: &Network| -> [usize; 2] {
        [n.addr("attacker", false), link_local].map(|from| n.listeners["b1"].udp_count_from(from))
    };

    n.apply(n.managed(false, &[]));
    let got = handshake(&n);
    assert_eq!(got["synack"], true, "control: {got}");
    let before = received(&n);
    groups(&n);
    assert!(
        wait_until(
            || {
                let after = received(&n);
                after[0] >= before[0] + 3 && after[1] >= before[1] + 3
            },
            Duration::from_secs(3)
        ),
        "control: the broadcast and ff02::1 datagrams did not reach b1: {:?} -> {:?}",
        before,
        received(&n)
    );

    let rs = n.apply(n.managed(true, &[]));
    let got = handshake(&n);
    assert_eq!(
        got["synack"], false,
        "b1 answered a SYN from fe80::\n{got}\n{rs}"
    );
    let before = received(&n);
    groups(&n);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        received(&n),
        before,
        "broadcast or ff02::1 datagrams reached b1"
    );
    assert_honest_paths(&n, "a bound port judged whatever its destination");
}

/// What `nft -f` makes of our rendered text (every set kind, bound ports) is what our
/// netlink batch installs, and a read-back finds no drift.
#[test]
fn port_security_text_and_batch_install_the_same_ruleset() {
    if !kernel_tier_available() {
        return;
    }
    let n = Network::new(true);
    let rs = n.apply(n.managed(true, &["b2"]));
    assert_no_drift(&n.lab.host, &rs);
    assert_text_installs_the_same(&n.lab.host, &rs.to_string());
}

/// A container answering as a DHCP or DHCPv6 server, from the server port or any other:
/// what reaches a backend's interface, counted there. With br_netfilter on, the
/// stateful chain already drops a backend's broadcasts; without it, isolation alone (the
/// control) lets them through.
#[test]
fn dhcp_server_messages_do_not_leave_the_port() {
    if !kernel_tier_available() {
        return;
    }
    let n = Network::new(false);
    // Server messages from the server ports (67, 547) or, as a server may send them,
    // from any other: what identifies them is the client port they go to.
    let received = |n: &Network, server: &str, sport4: &str, sport6: &str| -> (u64, u64) {
        let server_mac = mac_text(&n.mac(server));
        let ready = std::env::temp_dir().join(format!("{}-sniff", n.ns("b1").name));
        std::fs::remove_file(&ready).ok();
        let ns = n.ns("b1").handle();
        let ready_path = ready.to_str().unwrap().to_owned();
        let sniffer = std::thread::spawn(move || {
            let tool = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/attack.py");
            let out = ns.exec(
                "/usr/bin/python3",
                &[
                    tool,
                    "sniff-count",
                    "--filter",
                    "udp dst port 68 or udp dst port 546",
                    "--timeout",
                    "3",
                    "--ready-file",
                    &ready_path,
                ],
            );
            let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
            let last = stdout.lines().last().unwrap_or_default().to_owned();
            serde_json::from_str::<serde_json::Value>(&last)
                .unwrap_or_else(|e| panic!("sniff-count: {e}: {stdout}"))["count"]
                .as_u64()
                .expect("a count")
        });
        assert!(
            wait_until(|| ready.exists(), Duration::from_secs(3)),
            "the sniffer did not start"
        );
        let server4 = n.addr(server, false).to_string();
        let sent4 = n.attack(
            server,
            &[
                "dhcp-offer",
                "--src-mac",
                &server_mac,
                "--src-ip",
                &server4,
                "--sport",
                sport4,
            ],
        );
        let server6 = n.addr(server, true).to_string();
        let sent6 = n.attack(
            server,
            &[
                "dhcp6-advertise",
                "--src-mac",
                &server_mac,
                "--src-ip",
                &server6,
                "--sport",
                sport6,
            ],
        );
        assert_eq!(
            (sent4["sent"].as_u64(), sent6["sent"].as_u64()),
            (Some(1), Some(1))
        );
        let total = sniffer.join().expect("sniffer");
        std::fs::remove_file(&ready).ok();
        (total, 2)
    };
    n.apply(n.managed(false, &[]));
    // The attacker, and the proxy: the isolation chains let the proxy's broadcasts
    // through, so for it only port security's own rules stop them.
    let cases = [
        ("attacker", "67", "547"),
        ("attacker", "12345", "12346"),
        ("proxy", "67", "547"),
        ("proxy", "12345", "12346"),
    ];
    for (server, sport4, sport6) in cases {
        let (got, sent) = received(&n, server, sport4, sport6);
        assert_eq!(
            got, sent,
            "control ({server}, from {sport4}, {sport6}): both server messages reach b1"
        );
    }
    n.apply(n.managed(true, &[]));
    for (server, sport4, sport6) in cases {
        let (got, _) = received(&n, server, sport4, sport6);
        assert_eq!(
            got, 0,
            "a DHCP server message ({server}, from {sport4}, {sport6}) reached b1"
        );
    }
    // From a port of no known container yet (its own identity is nobody's known one):
    // no server message either.
    n.apply(n.managed(true, &["attacker"]));
    for (server, sport4, sport6) in &cases[..2] {
        let (got, _) = received(&n, server, sport4, sport6);
        assert_eq!(
            got, 0,
            "a DHCP server message from an unbound port (from {sport4}, {sport6}) reached b1"
        );
    }
}

/// An honest DHCP client, before it has an address (from 0.0.0.0, port 68, to the
/// broadcast's port 67), still reaches a DHCP server on the host (`host_ports` open to
/// it) from a bound port;
/// 0.0.0.0 from any other port pair is still nobody's address.
#[test]
fn a_dhcp_client_still_reaches_a_server_on_the_host() {
    if !kernel_tier_available() {
        return;
    }
    let n = Network::new(true);
    // The host closed but for its DHCP server's port, as its user would open it.
    let mut net = n.managed(true, &[]);
    net.host_ports = vec![trafficjam::policy::PortRange::parse("67/udp").unwrap()];
    n.apply(net);
    let mac = mac_text(&n.mac("b1"));
    let from_port = |sport: &str| -> usize {
        let (ready_tx, ready) = std::sync::mpsc::channel();
        let sent = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let done = sent.clone();
        let server = n.lab.host.spawn(move || {
            let socket = std::net::UdpSocket::bind(("0.0.0.0", 67)).expect("bind 67");
            socket
                .set_read_timeout(Some(Duration::from_millis(300)))
                .unwrap();
            ready_tx.send(()).unwrap();
            let mut buf = [0u8; 1500];
            let mut count = 0;
            // Until the sender is done and a wait passed without a datagram.
            loop {
                match socket.recv_from(&mut buf) {
                    Ok((_, from)) => count += usize::from(from.ip().is_unspecified()),
                    Err(_) if done.load(std::sync::atomic::Ordering::Relaxed) => return count,
                    Err(_) => {}
                }
            }
        });
        ready.recv().unwrap();
        let got = n.attack(
            "b1",
            &[
                "udp",
                "--src-mac",
                &mac,
                "--src-ip",
                "0.0.0.0",
                "--dst-ip",
                "255.255.255.255",
                "--dst-mac",
                "ff:ff:ff:ff:ff:ff",
                "--sport",
                sport,
                "--dport",
                "67",
                "--count",
                "3",
            ],
        );
        assert_eq!(got["sent"], 3, "{got}");
        sent.store(true, std::sync::atomic::Ordering::Relaxed);
        server.join().expect("the server")
    };
    let got = from_port("68");
    assert_eq!(
        got,
        3,
        "the client's discovers did not reach the host\n{}",
        n.lab.host.nft(&["list", "ruleset"])
    );
    assert_eq!(
        from_port("1234"),
        0,
        "0.0.0.0 from port 1234 reached the host"
    );
    assert_honest_paths(&n, "after the DHCP client");
}

/// Audit mode on one network lets its own forged frames pass, but never past another,
/// enforced network's claims: a container of the audited network that routes a datagram
/// to the other network under one of that network's addresses is dropped, while the same
/// datagram under its own address arrives (the positive control: routing works).
#[test]
fn an_audited_network_cannot_forge_an_enforced_networks_identity() {
    if !kernel_tier_available() {
        return;
    }
    let mut n = Network::new(true);
    n.lab.bridge("br-ps2", &["10.21.0.1/24"]);
    for (name, a) in [("v1", "10.21.0.3/24"), ("v2", "10.21.0.4/24")] {
        n.lab.container(name, "br-ps2", &[a], &["10.21.0.1"]);
    }
    let v2 = Listeners::start(&n.lab.get("v2").ns);
    let found = n
        .lab
        .host
        .enter(|| bridge_ports(&["br-ps2".to_owned()].into()).expect("bridge ports"));
    let mut other = ManagedNetwork {
        name: "other".into(),
        bridge: "br-ps2".into(),
        subnets: vec!["10.21.0.0/24".parse().unwrap()],
        gateway_mac: found["br-ps2"].mac,
        gateways: vec!["10.21.0.1".parse().unwrap()],
        ..ManagedNetwork::default()
    };
    for name in ["v1", "v2"] {
        let mac = link_mac(&n.lab.get(name).ns, "eth0");
        let link = found["br-ps2"]
            .ports
            .iter()
            .find(|p| p.peer_mac == mac)
            .unwrap();
        other.ports.push(Port {
            name: link.name.clone(),
            mac,
            addrs: n.lab.get(name).addrs.clone(),
        });
    }
    let send_as = |src: &str| {
        n.attacker_udp(src, "10.21.0.4", &mac_text(&n.gateway_mac()), 5, &[]);
        std::thread::sleep(Duration::from_millis(500));
    };
    let from = |ip: &str| v2.udp_count_from(ip.parse().unwrap());
    for mode in [Mode::Enforce, Mode::Audit] {
        let mut ps = n.managed(true, &["v1", "v2"]);
        ps.mode = mode;
        let rs = plan(TABLE, &[ps, other.clone()]).expect("plan");
        let applied = rs.clone();
        n.lab.host.enter(move || {
            Netlink::new(BridgeNetfilter::Leave)
                .apply(None, &applied)
                .unwrap_or_else(|e| panic!("apply: {e}\n{applied}"))
        });
        let own = n.addr("attacker", false).to_string();
        let before = from(&own);
        send_as(&own);
        assert!(
            from(&own) > before,
            "{mode:?}: routed datagrams never arrived\n{rs}"
        );
        send_as("10.21.0.3");
        assert_eq!(
            from("10.21.0.3"),
            0,
            "{mode:?}: a datagram forged as the other network's v1 was delivered\n{rs}"
        );
    }
}

/// What the random-frame fuzzer found: an IP packet sent to an IEEE link-local group is
/// not forwarded by the bridge but handed to the port's own stack (`:0e` past every bridge
/// hook, `:02` past its input hook alone), where the host takes it as addressed to it:
/// from any source, past port security, and past host access (whose rules match the
/// bridge, not its ports). The control (isolation alone) shows it: the host receives
/// datagrams as b1 from the attacker. Bound, such frames are forwarded (and so judged) or
/// dropped at the bridge's input hook: none arrives.
#[test]
fn ip_to_a_link_local_group_does_not_reach_the_host_past_port_security() {
    if !kernel_tier_available() {
        return;
    }
    let n = Network::new(true);
    let host = Listeners::start(&n.lab.host);
    let spoofed = [
        (n.addr("b1", false), GATEWAY4.parse::<IpAddr>().unwrap()),
        (n.addr("b1", true), GATEWAY6.parse::<IpAddr>().unwrap()),
    ];
    let send = |n: &Network| {
        for group in ["01:80:c2:00:00:0e", "01:80:c2:00:00:02"] {
            for (src, dst) in &spoofed {
                let got = n.attacker_udp(&src.to_string(), &dst.to_string(), group, 3, &[]);
                assert_eq!(got["sent"], 3, "{got}");
            }
        }
    };
    let received = || -> usize {
        spoofed
            .iter()
            .map(|(src, _)| host.udp_count_from(*src))
            .sum()
    };

    n.apply(n.managed(false, &[]));
    send(&n);
    assert!(
        wait_until(|| received() > 0, Duration::from_secs(3)),
        "control: the host received nothing as b1 through a link-local group"
    );

    let (rs, _) = n.apply_programmed();
    let before = received();
    send(&n);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        received(),
        before,
        "the host received datagrams as b1 through a link-local group\n{rs}"
    );
    // The same from a port of no known container yet.
    let rs = n.apply(n.managed(true, &["attacker"]));
    send(&n);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        received(),
        before,
        "the host received datagrams as b1 through a link-local group from an unbound port\n{rs}"
    );
    assert_honest_paths(&n, "after the link-local groups");
}

/// The fuzzer's other find: a neighbour advertisement from the attacker's own MAC and
/// address, for its own address, but with b1's MAC in its link-layer option. The host
/// believes the option, not the frame: what it sends the attacker's address then goes to
/// b1 (the control, isolation alone). Bound, a port's neighbour discovery carries no
/// option or its own MAC first: the host's entry stays true.
#[test]
fn a_link_layer_option_not_its_own_is_not_believed() {
    if !kernel_tier_available() {
        return;
    }
    let n = Network::new(true);
    let own = n.addr("attacker", true).to_string();
    let (attacker_mac, b1_mac) = (mac_text(&n.mac("attacker")), mac_text(&n.mac("b1")));
    let gateway_mac = mac_text(&n.gateway_mac());
    let host_entry = |n: &Network| -> Option<String> {
        // The host resolves the attacker first: an advertisement updates an entry.
        n.lab.host.exec("ping", &["-6", "-c", "1", "-W", "1", &own]);
        let out = n.lab.host.ip(&["neigh", "show", &own, "dev", BRIDGE]);
        let mut words = out.split_whitespace().skip_while(|w| *w != "lladdr");
        words.nth(1).map(str::to_owned)
    };
    let lie = |n: &Network| {
        let got = n.attack(
            "attacker",
            &[
                "na",
                "--eth-src",
                &attacker_mac,
                "--src-mac",
                &b1_mac,
                "--src-ip",
                &own,
                "--target-ip",
                &own,
                "--dst-ip",
                GATEWAY6,
                "--dst-mac",
                &gateway_mac,
            ],
        );
        assert_eq!(got["sent"], 3, "{got}");
    };

    n.apply(n.managed(false, &[]));
    assert_eq!(host_entry(&n).as_deref(), Some(attacker_mac.as_str()));
    lie(&n);
    assert!(
        wait_until(
            || {
                let out = n.lab.host.ip(&["neigh", "show", &own, "dev", BRIDGE]);
                out.contains(&b1_mac)
            },
            Duration::from_secs(3)
        ),
        "control: the host did not believe the option"
    );

    let rs = n.apply(n.managed(true, &[]));
    n.lab.host.ip(&["neigh", "flush", "dev", BRIDGE]);
    assert_eq!(host_entry(&n).as_deref(), Some(attacker_mac.as_str()));
    lie(&n);
    std::thread::sleep(Duration::from_millis(500));
    let entry = n.lab.host.ip(&["neigh", "show", &own, "dev", BRIDGE]);
    assert!(
        entry.contains(&attacker_mac) && !entry.contains(&b1_mac),
        "the host believed another's MAC in the option: {entry}\n{rs}"
    );
    assert_honest_paths(&n, "after the lying option");
}

/// Who `name` is on the network, for the fuzzer.
fn identity(n: &Network, name: &str) -> fuzz::Identity {
    let mac = n.mac(name);
    identity_of(mac, n.addr(name, false), n.addr(name, true))
}

fn identity_of(mac: Mac, v4: IpAddr, v6: IpAddr) -> fuzz::Identity {
    let (IpAddr::V4(v4), IpAddr::V6(v6), IpAddr::V6(link_local)) =
        (v4, v6, trafficjam::plan::link_local(&mac))
    else {
        panic!("not an IPv4 and two IPv6 addresses");
    };
    fuzz::Identity {
        mac,
        v4,
        v6,
        link_local,
    }
}

/// What the fuzzer found: frames sent, marked frames seen where, and what should not
/// have been.
#[derive(Debug, Default)]
struct FuzzReport {
    sent: usize,
    seen: BTreeMap<String, usize>,
    violations: Vec<String>,
}

/// Sends `frames` random frames from the attacker (seeded), in rounds, while packet
/// sockets watch the bridge, the proxy and the two other backends; judges every frame of
/// the attacker's that arrived.
fn fuzz_frames(n: &Network, seed: u64, frames: u32) -> FuzzReport {
    use fuzz::Place;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    const ROUND: u32 = 5_000;
    let me = identity(n, "attacker");
    let gateway = identity_of(
        n.gateway_mac(),
        GATEWAY4.parse().unwrap(),
        GATEWAY6.parse().unwrap(),
    );
    let others = vec![
        identity(n, "proxy"),
        identity(n, "b1"),
        identity(n, "b2"),
        gateway,
    ];
    eprintln!(
        "fuzz cast: attacker {}, proxy b1 b2 gateway {:?}",
        mac_text(&me.mac),
        others.iter().map(|o| mac_text(&o.mac)).collect::<Vec<_>>()
    );
    let mut fuzzer = fuzz::Fuzzer::new(seed, me, others);
    let mut report = FuzzReport::default();
    for first in (0..frames).step_by(ROUND as usize) {
        let batch: Vec<Vec<u8>> = (first..frames.min(first + ROUND))
            .map(|i| fuzzer.frame(i))
            .collect();
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready) = std::sync::mpsc::channel();
        let watch = |name: &str, ns: &Netns, device: &'static str, place: Place| {
            let (stop, ready) = (stop.clone(), ready_tx.clone());
            let seen = ns.spawn(move || {
                let socket = fuzz::PacketSocket::open(device).expect("packet socket");
                ready.send(()).unwrap();
                fuzz::collect(&socket, &stop)
            });
            (name.to_owned(), place, seen)
        };
        let watchers = [
            watch("the bridge", &n.lab.host, BRIDGE, Place::Bridge),
            watch("proxy", n.ns("proxy"), "eth0", Place::Proxy),
            watch("b1", n.ns("b1"), "eth0", Place::Isolated),
            watch("b2", n.ns("b2"), "eth0", Place::Isolated),
        ];
        for _ in &watchers {
            ready.recv().expect("a watcher is ready");
        }
        let sender = n.ns("attacker").spawn(move || {
            let socket = fuzz::PacketSocket::open("eth0").expect("packet socket");
            for (i, frame) in batch.iter().enumerate() {
                socket.send(frame).expect("send a frame");
                if i % 200 == 199 {
                    std::thread::sleep(fuzz::PACE);
                }
            }
            batch
        });
        let batch = sender.join().expect("sender");
        report.sent += batch.len();
        std::thread::sleep(Duration::from_millis(300));
        stop.store(true, Ordering::Relaxed);
        for (name, place, seen) in watchers {
            for frame in seen.join().expect("watcher") {
                let (at, index) = fuzz::marker(&frame).unwrap();
                let Some(sent) = index.checked_sub(first).and_then(|i| batch.get(i as usize))
                else {
                    continue;
                };
                *report.seen.entry(name.clone()).or_default() += 1;
                let why = if fuzz::same_frame(&frame, sent, at) {
                    fuzz::judge(sent, &me, place)
                } else if frame[6..12] == me.mac {
                    // The attacker's frame as the kernel rebuilt it (br_netfilter
                    // reassembles fragments): judged as it arrived.
                    fuzz::judge(&frame, &me, place).map(|why| format!("{why}, as {}", hex(&frame)))
                } else if place == Place::Isolated {
                    // Its payload in another's frame: a packet the host routed (which
                    // isolation judges like a bridged one), or worse.
                    fuzz::judge_packet(&frame, &me, place)
                        .map(|why| format!("{why}, by another path, as {}", hex(&frame)))
                } else {
                    // An answer quoting it (an echo, an ICMP error).
                    None
                };
                if let Some(why) = why {
                    report.violations.push(format!(
                        "frame {index} reached {name}: {why}\n  {}",
                        hex(sent)
                    ));
                }
            }
        }
    }
    report
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Neighbour entries (the host's on the bridge, each container's) that map an address of
/// the network to a MAC that is not its owner's.
fn neighbour_lies(n: &Network) -> Vec<String> {
    let mut truth: BTreeMap<IpAddr, Mac> = BTreeMap::new();
    for name in ["proxy", "b1", "b2", "attacker"] {
        let mac = n.mac(name);
        truth.insert(n.addr(name, false), mac);
        truth.insert(n.addr(name, true), mac);
        truth.insert(trafficjam::plan::link_local(&mac), mac);
    }
    let gateway = n.gateway_mac();
    truth.insert(GATEWAY4.parse().unwrap(), gateway);
    truth.insert(GATEWAY6.parse().unwrap(), gateway);
    truth.insert(trafficjam::plan::link_local(&gateway), gateway);
    let mut lies = Vec::new();
    let tables = [
        ("the host", &n.lab.host, BRIDGE),
        ("proxy", n.ns("proxy"), "eth0"),
        ("b1", n.ns("b1"), "eth0"),
        ("b2", n.ns("b2"), "eth0"),
    ];
    for (name, ns, device) in tables {
        for line in ns.ip(&["neigh", "show", "dev", device]).lines() {
            let words: Vec<&str> = line.split_whitespace().collect();
            let (Some(addr), Some(mac)) = (
                words.first().and_then(|a| a.parse::<IpAddr>().ok()),
                words
                    .iter()
                    .position(|w| *w == "lladdr")
                    .and_then(|i| words.get(i + 1))
                    .and_then(|m| trafficjam::docker::parse_mac(m)),
            ) else {
                continue;
            };
            if truth.get(&addr).is_some_and(|owner| *owner != mac) {
                lies.push(format!("{name}: {line}"));
            }
        }
    }
    lies
}

/// Port security as an allowlist, proven with frames nobody chose: random frames from a
/// bound port (seeded; `TRAFFICJAM_FUZZ_SEED` replays one, `TRAFFICJAM_FUZZ_FRAMES` runs
/// longer) reach the bridge only as what the port is (its MAC, untagged, ARP or IP from
/// its addresses, no router or DHCP server messages), reach another backend only as
/// neighbour discovery, teach the bridge nothing and leave every neighbour table true.
/// The control, isolation alone with nothing bound, shows that the same frames break
/// each of those.
#[test]
fn random_frames_from_a_bound_port_pass_only_as_what_it_is() {
    if !kernel_tier_available() {
        return;
    }
    let seed = std::env::var("TRAFFICJAM_FUZZ_SEED")
        .ok()
        .map(|s| s.parse().expect("TRAFFICJAM_FUZZ_SEED: a number"))
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    let frames: u32 = std::env::var("TRAFFICJAM_FUZZ_FRAMES")
        .ok()
        .map(|s| s.parse().expect("TRAFFICJAM_FUZZ_FRAMES: a number"))
        .unwrap_or(20_000);
    eprintln!("fuzz: seed {seed}, {frames} frames (TRAFFICJAM_FUZZ_SEED={seed} replays them)");

    // Control: isolation alone, no port bound, the bridge learning.
    let control = Network::new(true);
    control.apply(control.managed(false, &[]));
    let learnt = fdb(&control);
    let report = fuzz_frames(&control, seed, frames.min(10_000));
    eprintln!(
        "fuzz control: {} sent, seen {:?}, {} violations",
        report.sent,
        report.seen,
        report.violations.len()
    );
    for place in ["the bridge", "b1", "b2"] {
        assert!(
            report
                .violations
                .iter()
                .any(|v| v.contains(&format!("reached {place}:"))),
            "control: no forbidden frame reached {place}: the fuzzer or its judge is blind"
        );
    }
    assert_ne!(fdb(&control), learnt, "control: the bridge learnt nothing");
    assert!(
        !neighbour_lies(&control).is_empty(),
        "control: every neighbour table stayed true"
    );
    drop(control);

    // Every port bound, the database programmed, as the daemon does.
    let n = Network::new(true);
    let (rs, _) = n.apply_programmed();
    let database = fdb(&n);
    let report = fuzz_frames(&n, seed, frames);
    eprintln!(
        "fuzz: {} sent, seen {:?}, {} violations",
        report.sent,
        report.seen,
        report.violations.len()
    );
    assert!(
        report.violations.is_empty(),
        "seed {seed}: {} frames passed that should not have; the first:\n{}\n{rs}",
        report.violations.len(),
        report.violations[..report.violations.len().min(10)].join("\n")
    );
    assert!(
        report.seen.get("the bridge").copied().unwrap_or(0) > 0,
        "no frame of the attacker's passed at all: {:?}",
        report.seen
    );
    assert_eq!(fdb(&n), database, "the fuzzer's frames taught the bridge");
    let lies = neighbour_lies(&n);
    assert!(
        lies.is_empty(),
        "seed {seed}: neighbour tables lie: {lies:#?}"
    );
    assert_honest_paths(&n, "after the fuzzer");
}
