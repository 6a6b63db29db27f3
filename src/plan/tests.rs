use super::names::{LOG_PREFIX_MAX, log_prefix};
use super::*;
use crate::policy::{Grant, HostAccess, Mode, PortRange};

fn net(name: &str, bridge: &str, subnets: &[&str], whitelist: &[&str]) -> ManagedNetwork {
    ManagedNetwork {
        name: name.into(),
        bridge: bridge.into(),
        subnets: subnets.iter().map(|s| s.parse().unwrap()).collect(),
        whitelist: whitelist.iter().map(|s| s.parse().unwrap()).collect(),
        ..ManagedNetwork::default()
    }
}

fn public() -> ManagedNetwork {
    net(
        "public",
        "br-public",
        &["172.20.0.0/16", "fd00:20::/64"],
        &["172.20.0.2", "fd00:20::2"],
    )
}

fn chain<'a>(rs: &'a Ruleset, family: Family, name: &str) -> &'a Chain {
    rs.table(family)
        .unwrap()
        .chains
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no chain {name} in\n{rs}"))
}

/// An overlay network alone in its namespace: the proxy and a backend on this node.
fn overlay(stateful: bool) -> ManagedNetwork {
    let port = |name: &str, last: u8| Port {
        name: name.into(),
        mac: [2, 0x42, 10, 0, 1, last],
        addrs: vec![format!("10.0.1.{last}").parse().unwrap()],
    };
    ManagedNetwork {
        ports: vec![port("veth-proxy", 2), port("veth-b1", 3)],
        remote_port: Some("vxlan0".into()),
        remote_stateful: stateful,
        ..net("ovl", "br0", &["10.0.1.0/24"], &["10.0.1.2"])
    }
}

#[test]
fn an_overlay_judges_what_its_own_containers_send_and_leaves_the_rest_to_their_nodes() {
    let rs = plan(DEFAULT_TABLE, &[overlay(true)]).unwrap();
    let text = rs.to_string();
    // Only this node's containers (by address: the inet hook cannot see the port)
    // enter the isolation chain.
    let fwd = chain(&rs, Family::Inet, "forward");
    assert_eq!(
        fwd.rules[0].to_string(),
        r#"iifname "br0" oifname "br0" ip saddr @loc4_ovl jump fwd_ovl"#
    );
    assert_eq!(
        fwd.rules[1].to_string(),
        r#"iifname "br0" oifname "br0" ip6 saddr @loc6_ovl jump fwd_ovl"#
    );
    assert!(text.contains("10.0.1.2, 10.0.1.3"), "{text}");
    // The backstop: what another node sent was judged there; what goes out to
    // another node passes the SYN and ping drops first.
    let iso = chain(&rs, Family::Bridge, "iso_ovl");
    let rules: Vec<String> = iso.rules.iter().map(|r| r.to_string()).collect();
    assert_eq!(rules[0], r#"iifname "vxlan0" return"#);
    let syn = rules.iter().position(|r| r.contains("tcp flags")).unwrap();
    let out = rules
        .iter()
        .position(|r| r == r#"oifname "vxlan0" return"#)
        .unwrap();
    assert!(syn < out, "{rules:#?}");
    assert_eq!(rules.last().unwrap(), "goto deny_isolation_ovl");
    // A port of no known container may not speak at all (it could pass for another
    // node's container); the VXLAN port may.
    let claims = chain(&rs, Family::Bridge, "claims_ovl");
    assert_eq!(
        claims.rules.last().unwrap().to_string(),
        r#"iifname != "vxlan0" goto deny_spoofed_ovl"#
    );
}

#[test]
fn without_conntrack_an_overlay_sends_nothing_unjudged_to_other_nodes() {
    let rs = plan(DEFAULT_TABLE, &[overlay(false)]).unwrap();
    let iso = chain(&rs, Family::Bridge, "iso_ovl");
    assert!(
        !iso.rules
            .iter()
            .any(|r| r.to_string().starts_with("oifname")),
        "{rs}"
    );
}

#[test]
fn the_vxlan_port_is_closed_to_the_guarded_bridges_even_with_no_network_here() {
    let rs = plan_guarded(DEFAULT_TABLE, &[], &["docker_gwbridge".into()]).unwrap();
    for base in ["forward", "input"] {
        let c = chain(&rs, Family::Inet, base);
        assert_eq!(
            c.rules[0].to_string(),
            r#"iifname "docker_gwbridge" udp dport 4789 counter drop"#
        );
    }
    let rs = plan_guarded(DEFAULT_TABLE, &[public()], &["br-public".into()]).unwrap();
    let fwd = chain(&rs, Family::Inet, "forward");
    assert!(fwd.rules[0].to_string().contains("udp dport 4789"), "{rs}");
}

#[test]
fn nothing_managed_means_no_tables() {
    let rs = plan(DEFAULT_TABLE, &[]).unwrap();
    assert!(rs.tables.is_empty());
    assert_eq!(rs.to_string(), "");
}

#[test]
fn one_network_gives_both_tables_with_base_chains() {
    let rs = plan(DEFAULT_TABLE, &[public()]).unwrap();
    let families: Vec<Family> = rs.tables.iter().map(|t| t.family).collect();
    assert_eq!(families, [Family::Inet, Family::Bridge]);
    let fwd = chain(&rs, Family::Inet, "forward");
    assert_eq!(
        fwd.base,
        Some(BaseChain {
            hook: Hook::Forward,
            priority: -10
        })
    );
    assert_eq!(
        fwd.rules[0].to_string(),
        r#"iifname "br-public" oifname "br-public" jump fwd_public"#
    );
    let input = chain(&rs, Family::Inet, "input");
    assert_eq!(input.base.unwrap().hook, Hook::Input);
    assert_eq!(
        input.rules[0].to_string(),
        r#"iifname "br-public" jump host_public"#
    );
    assert_eq!(
        chain(&rs, Family::Bridge, "forward").base.unwrap().priority,
        BRIDGE_PRIORITY
    );
}

#[test]
fn per_network_forward_chain_is_stateful_and_ends_in_a_counted_drop() {
    let rs = plan(DEFAULT_TABLE, &[public()]).unwrap();
    let rules = rule_texts(chain(&rs, Family::Inet, "fwd_public"));
    assert_eq!(
        rules,
        [
            "ct state established,related return",
            "ip saddr @wl4_public return",
            "ip6 saddr @wl6_public return",
            "icmpv6 type 133-136 return",
            "icmpv6 type 131-132 return",
            "icmpv6 type 143 return",
            "goto deny_isolation_public",
        ]
    );
}

#[test]
fn whitelist_is_split_by_family_into_sets_in_both_tables() {
    let rs = plan(DEFAULT_TABLE, &[public()]).unwrap();
    for family in Family::ALL {
        let sets = &rs.table(family).unwrap().sets;
        let wl4 = sets.iter().find(|s| s.name == "wl4_public").unwrap();
        let wl6 = sets.iter().find(|s| s.name == "wl6_public").unwrap();
        assert_eq!(wl4.key, SetKey::Ipv4);
        assert_eq!(
            wl4.elements,
            BTreeSet::from([Element::Ip("172.20.0.2".parse().unwrap())])
        );
        assert_eq!(
            wl6.elements,
            BTreeSet::from([Element::Ip("fd00:20::2".parse().unwrap())])
        );
    }
}

#[test]
fn allow_host_traffic_removes_the_input_path_only() {
    let mut n = public();
    n.host_access = HostAccess::Open;
    let rs = plan(DEFAULT_TABLE, &[n]).unwrap();
    assert!(chain(&rs, Family::Inet, "input").rules.is_empty());
    let inet = rs.table(Family::Inet).unwrap();
    assert!(!inet.chains.iter().any(|c| c.name == "host_public"));
    assert_eq!(chain(&rs, Family::Inet, "forward").rules.len(), 1);
}

#[test]
fn backstop_pairs_every_subnet_of_the_same_family() {
    let n = net(
        "multi",
        "br-multi",
        &["10.1.0.0/24", "10.2.0.0/24", "fd00:1::/64"],
        &[],
    );
    let rs = plan(DEFAULT_TABLE, &[n]).unwrap();
    let rules = rule_texts(chain(&rs, Family::Bridge, "forward"));
    assert_eq!(
        rules,
        [
            // A bound port's frames, whatever their addresses; then the subnets'.
            "iifname @ports_multi goto port_fwd_multi",
            "ip saddr 10.1.0.0/24 ip daddr 10.1.0.0/24 jump iso_multi",
            "ip saddr 10.1.0.0/24 ip daddr 10.2.0.0/24 jump iso_multi",
            "ip saddr 10.2.0.0/24 ip daddr 10.1.0.0/24 jump iso_multi",
            "ip saddr 10.2.0.0/24 ip daddr 10.2.0.0/24 jump iso_multi",
            "ip6 saddr fd00:1::/64 ip6 daddr fd00:1::/64 jump iso_multi",
        ]
    );
}

#[test]
fn a_bound_ports_ip_frames_are_judged_whatever_their_addresses() {
    let rs = plan(DEFAULT_TABLE, &[public()]).unwrap();
    let rules = rule_texts(chain(&rs, Family::Bridge, "port_fwd_public"));
    assert_eq!(
        rules,
        [
            "ether type ip jump iso_public",
            "ether type ip6 jump iso_public"
        ]
    );
}

#[test]
fn backstop_lets_whitelisted_sources_and_replies_to_them_through() {
    let rs = plan(DEFAULT_TABLE, &[public()]).unwrap();
    let rules = rule_texts(chain(&rs, Family::Bridge, "iso_public"));
    assert_eq!(
        rules,
        [
            "ip saddr @wl4_public return",
            "ip6 saddr @wl6_public return",
            "icmpv6 type 131-132 return",
            "icmpv6 type 143 return",
            "icmpv6 type 133-136 return",
            "ip frag-off & 0x3fff != 0 goto deny_isolation_public",
            "exthdr frag exists goto deny_isolation_public",
            "tcp flags & (fin | syn | rst | ack) == syn goto deny_isolation_public",
            "icmp type echo-request goto deny_isolation_public",
            "icmpv6 type echo-request goto deny_isolation_public",
            "ip daddr @wl4_public return",
            "ip6 daddr @wl6_public return",
            "goto deny_isolation_public",
        ]
    );
}

#[test]
fn subnets_with_host_bits_are_normalised() {
    let n = net("x", "br-x", &["10.9.0.7/24"], &[]);
    let rs = plan(DEFAULT_TABLE, &[n]).unwrap();
    assert_eq!(
        chain(&rs, Family::Bridge, "forward").rules[1].to_string(),
        "ip saddr 10.9.0.0/24 ip daddr 10.9.0.0/24 jump iso_x"
    );
}

#[test]
fn input_order_does_not_change_the_plan() {
    let a = net("a", "br-a", &["10.1.0.0/24"], &["10.1.0.2"]);
    let b = net("b", "br-b", &["10.2.0.0/24"], &["10.2.0.2"]);
    let one = plan(DEFAULT_TABLE, &[a.clone(), b.clone()]).unwrap();
    let two = plan(DEFAULT_TABLE, &[b, a]).unwrap();
    assert_eq!(one, two);
    assert_eq!(one.fingerprint(), two.fingerprint());
}

#[test]
fn fingerprint_ignores_set_elements_but_not_structure() {
    let base = plan(DEFAULT_TABLE, &[public()]).unwrap();
    let mut more = public();
    more.whitelist.insert("172.20.0.99".parse().unwrap());
    let wl_changed = plan(DEFAULT_TABLE, &[more]).unwrap();
    assert_ne!(base, wl_changed);
    assert_eq!(base.skeleton(), wl_changed.skeleton());
    assert!(base.same_skeleton(&wl_changed));
    assert_eq!(base.fingerprint(), wl_changed.fingerprint());

    let mut host = public();
    host.host_access = HostAccess::Open;
    let structure_changed = plan(DEFAULT_TABLE, &[host]).unwrap();
    assert_ne!(base.fingerprint(), structure_changed.fingerprint());
    assert!(!base.same_skeleton(&structure_changed));
}

#[test]
fn rejects_bad_names_duplicates_and_shared_bridges() {
    assert!(matches!(
        plan(DEFAULT_TABLE, &[net("-bad", "br0", &[], &[])]),
        Err(PlanError::BadNetworkName(_))
    ));
    assert!(matches!(
        plan(DEFAULT_TABLE, &[net("ok", "br\"0", &[], &[])]),
        Err(PlanError::BadBridgeName { .. })
    ));
    assert!(matches!(
        plan(DEFAULT_TABLE, &[net("ok", "a-very-long-bridge", &[], &[])]),
        Err(PlanError::BadBridgeName { .. })
    ));
    assert!(matches!(
        plan(
            DEFAULT_TABLE,
            &[net("a", "br0", &[], &[]), net("a", "br1", &[], &[])]
        ),
        Err(PlanError::DuplicateNetwork(_))
    ));
    assert!(matches!(
        plan(
            DEFAULT_TABLE,
            &[net("a", "br0", &[], &[]), net("b", "br0", &[], &[])]
        ),
        Err(PlanError::SharedBridge { .. })
    ));
    assert!(matches!(
        plan("bad name", &[]),
        Err(PlanError::BadTableName(_))
    ));
}

#[test]
fn odd_networks_are_set_aside_not_fatal() {
    let (kept, rejected) = retain_plannable(vec![
        net("a", "br0", &[], &[]),
        net("-bad", "br1", &[], &[]),
        net("a", "br2", &[], &[]),
        net("b", "br0", &[], &[]),
        net("c", "br3", &[], &[]),
    ]);
    let names: Vec<&str> = kept.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["a", "c"]);
    assert_eq!(rejected.len(), 3, "{rejected:?}");
    assert!(plan(DEFAULT_TABLE, &kept).is_ok());
}

#[test]
fn the_ruleset_answers_its_bridges_and_the_drops_of_each_network() {
    let mut open = net("open", "br-open", &["10.2.0.0/24"], &[]);
    open.host_access = HostAccess::Open;
    let rs = plan(DEFAULT_TABLE, &[public(), open]).unwrap();
    assert_eq!(
        rs.bridges(),
        BTreeSet::from(["br-open".to_owned(), "br-public".to_owned()])
    );
    // Every deny chain the plan named exists, in its family.
    for n in &rs.networks {
        for (_, (family, name)) in &n.deny_chains {
            chain(&rs, *family, name);
        }
    }
    let deny = |r| names::deny_chain(r, "public");
    let counters: Counters = [
        ((Family::Inet, deny(Reason::Isolation)), 3),
        ((Family::Inet, deny(Reason::Host)), 4),
        ((Family::Bridge, deny(Reason::Isolation)), 5),
        ((Family::Bridge, deny(Reason::Spoofed)), 6),
        (
            (Family::Inet, names::deny_chain(Reason::Isolation, "open")),
            7,
        ),
        ((Family::Inet, names::FORWARD.to_owned()), 1000),
    ]
    .into();
    assert_eq!(rs.dropped("public", &counters), 12);
    assert_eq!(rs.dropped_for("public", Reason::Isolation, &counters), 8);
    assert_eq!(rs.spoofed("public", &counters), 6);
    assert_eq!(rs.dropped("open", &counters), 7);
    // The open host has no host deny chain.
    assert!(
        !rs.networks[0]
            .deny_chains
            .iter()
            .any(|(r, _)| *r == Reason::Host)
    );
    assert_eq!(rs.dropped("absent", &counters), 0);
    assert!(Ruleset::empty(DEFAULT_TABLE).bridges().is_empty());
}

#[test]
fn change_from_what_was_committed() {
    let base = plan(DEFAULT_TABLE, &[public()]).unwrap();
    assert_eq!(base.change_from(None), Change::Full);
    assert_eq!(base.change_from(Some(&base)), Change::None);
    let mut more = public();
    more.whitelist.insert("172.20.0.99".parse().unwrap());
    let more = plan(DEFAULT_TABLE, &[more]).unwrap();
    assert_eq!(more.change_from(Some(&base)), Change::Elements);
    let mut host = public();
    host.host_access = HostAccess::Open;
    let host = plan(DEFAULT_TABLE, &[host]).unwrap();
    assert_eq!(host.change_from(Some(&base)), Change::Full);
    let empty = Ruleset::empty(DEFAULT_TABLE);
    assert_eq!(empty.change_from(Some(&base)), Change::Full);
}

fn set<'a>(rs: &'a Ruleset, name: &str) -> &'a Set {
    rs.table(Family::Bridge)
        .unwrap()
        .sets
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no set {name}"))
}

#[test]
fn a_bound_port_may_speak_only_as_its_container_and_nobody_else_may() {
    let mut n = public();
    let mac = [0x02, 0x42, 0xac, 0x14, 0x00, 0x02];
    n.ports = vec![
        Port {
            name: "veth1".into(),
            mac,
            addrs: vec!["172.20.0.2".parse().unwrap(), "fd00:20::2".parse().unwrap()],
        },
        // Not an interface name: never bound (it stays a port of unknown identity).
        Port {
            name: "bad/name".into(),
            mac: [2, 0, 0, 0, 0, 9],
            addrs: vec!["172.20.0.9".parse().unwrap()],
        },
    ];
    n.gateway_mac = Some([0x02, 0x42, 0, 0, 0, 1]);
    n.gateways = vec!["172.20.0.1".parse().unwrap()];
    let rs = plan(DEFAULT_TABLE, &[n]).unwrap();
    let link_local: IpAddr = "fe80::42:acff:fe14:2".parse().unwrap();
    assert_eq!(link_local, super::link_local(&mac));
    let port = |a: &str| Element::PortIp("veth1".into(), a.parse().unwrap());
    assert_eq!(
        set(&rs, "ports_public").elements,
        BTreeSet::from([Element::Port("veth1".into())])
    );
    assert_eq!(
        set(&rs, "pmac_public").elements,
        BTreeSet::from([Element::PortMac("veth1".into(), mac)])
    );
    assert_eq!(
        set(&rs, "pip4_public").elements,
        BTreeSet::from([port("172.20.0.2")])
    );
    let own6 = BTreeSet::from([port("fd00:20::2"), port("fe80::42:acff:fe14:2")]);
    assert_eq!(set(&rs, "pip6_public").elements, own6);
    assert_eq!(set(&rs, "pna_public").elements, own6);
    // Known identities: the bound container's and the gateway's.
    assert_eq!(
        set(&rs, "idmac_public").elements,
        BTreeSet::from([Element::Mac(mac), Element::Mac([0x02, 0x42, 0, 0, 0, 1])])
    );
    assert_eq!(
        set(&rs, "idip4_public").elements,
        BTreeSet::from([
            Element::Ip("172.20.0.1".parse().unwrap()),
            Element::Ip("172.20.0.2".parse().unwrap())
        ])
    );
    assert_eq!(set(&rs, "idip6_public").elements.len(), 3);
    assert_eq!(rs.bound_ports("public"), 1);
    let prerouting: Vec<String> = rule_texts(chain(&rs, Family::Bridge, "prerouting"));
    assert_eq!(
        prerouting,
        [
            "iifname . ether saddr @pmac_public goto port_src_public",
            "iifname @ports_public goto port_public",
            "iifname @unbound_public jump unbound_public",
            "jump claims_public"
        ]
    );
    assert_eq!(
        chain(&rs, Family::Bridge, "prerouting").base,
        Some(BaseChain {
            hook: Hook::Prerouting,
            priority: PORT_PRIORITY
        })
    );
    // Every drop of port security goes to the network's spoofed deny chain.
    for role in every_port_check() {
        if role == names::PortCheck::Dispatch {
            continue;
        }
        for rule in &chain(&rs, Family::Bridge, &names::port_chain(role, "public")).rules {
            assert!(!rule.counter && rule.verdict != Verdict::Drop, "{rule}");
        }
    }
    let spoofed = names::deny_chain(Reason::Spoofed, "public");
    assert_eq!(
        rule_texts(chain(&rs, Family::Bridge, &spoofed)),
        ["counter drop"]
    );
}

/// Every port-security chain role: the match makes a new one a compile error here.
fn every_port_check() -> [names::PortCheck; 12] {
    use names::PortCheck as C;
    let all = [
        C::Mac,
        C::Source,
        C::Ipv4,
        C::Ipv6,
        C::Advert,
        C::Solicit,
        C::RouterSolicit,
        C::Arp,
        C::Claims,
        C::Dispatch,
        C::Forward,
        C::Unbound,
    ];
    for role in all {
        match role {
            C::Mac
            | C::Source
            | C::Ipv4
            | C::Ipv6
            | C::Advert
            | C::Solicit
            | C::RouterSolicit
            | C::Arp
            | C::Claims
            | C::Dispatch
            | C::Forward
            | C::Unbound => {}
        }
    }
    all
}

/// Audited, a network's deny chains `return`: each must be reached under a `jump`, or
/// the `return` would take the base chain's policy (accept) and skip the claims of
/// every other network. Enforced, the dispatch stays `goto`s in `prerouting`.
#[test]
fn an_audited_networks_port_checks_sit_behind_a_jump() {
    let mut audited = public();
    audited.mode = Mode::Audit;
    audited.ports = vec![Port {
        name: "veth-a".into(),
        mac: [2, 0, 0, 0, 0, 3],
        addrs: vec!["172.20.0.3".parse().unwrap()],
    }];
    let mut enforced = net("zeta", "br-zeta", &["10.9.0.0/24"], &[]);
    enforced.ports = vec![Port {
        name: "veth-z".into(),
        mac: [2, 0, 0, 0, 0, 9],
        addrs: vec!["10.9.0.3".parse().unwrap()],
    }];
    let rs = plan(DEFAULT_TABLE, &[audited, enforced]).unwrap();
    let pre = rule_texts(chain(&rs, Family::Bridge, "prerouting"));
    assert_eq!(pre[0], "jump portsec_public", "{pre:?}");
    assert!(pre[1].ends_with("goto port_src_zeta"), "{pre:?}");
    assert!(pre.iter().any(|r| r == "jump claims_zeta"), "{pre:?}");
    let dispatch = rule_texts(chain(&rs, Family::Bridge, "portsec_public"));
    assert!(
        dispatch[0].ends_with("goto port_src_public"),
        "{dispatch:?}"
    );
    assert_eq!(
        rule_texts(chain(&rs, Family::Bridge, "deny_spoofed_public")),
        ["counter return"]
    );
    // Every other audited path into a deny chain is a jump from a base chain.
    for (family, base, to) in [
        (Family::Inet, "forward", "jump fwd_public"),
        (Family::Inet, "input", "jump host_public"),
        (Family::Bridge, "forward", "jump iso_public"),
    ] {
        assert!(
            rule_texts(chain(&rs, family, base))
                .iter()
                .any(|r| r.ends_with(to)),
            "{base}"
        );
    }
}

#[test]
fn set_keys_are_laid_out_as_the_kernel_concatenates_them() {
    let mac = [1, 2, 3, 4, 5, 6];
    let port = Element::PortMac("v1".into(), mac).key_bytes();
    assert_eq!(port.len() as u32, SetKey::IfnameEther.key_len());
    assert_eq!(&port[..3], b"v1\0");
    assert_eq!(&port[16..], &[1, 2, 3, 4, 5, 6, 0, 0]);
    let v4 = Element::PortIp("v1".into(), "10.0.0.1".parse().unwrap()).key_bytes();
    assert_eq!(v4.len() as u32, SetKey::IfnameIpv4.key_len());
    let v6 = Element::PortIp("v1".into(), "fd00::1".parse().unwrap()).key_bytes();
    assert_eq!(v6.len() as u32, SetKey::IfnameRaw128.key_len());
    assert_eq!(
        Element::Mac(mac).key_bytes().len() as u32,
        SetKey::Ether.key_len()
    );
    assert_eq!(SetKey::IfnameEther.type_id(), (41 << 6) | 9);
    // The raw 128-bit target reads as nft prints it.
    assert_eq!(
        Element::Ip("fd00::1".parse().unwrap()).text(SetKey::Raw128),
        "0xfd000000000000000000000000000001"
    );
}

#[test]
fn network_names_follow_docker_within_what_nftables_carries() {
    assert!(valid_network_name("traefik_public"));
    assert!(valid_network_name("a.b-c_1"));
    assert!(!valid_network_name("-x"));
    assert!(!valid_network_name(""));
    assert!(!valid_network_name("with space"));
    assert!(!valid_network_name(&"n".repeat(201)));
}

fn grant(from: &str, to: &str, ports: Option<&str>) -> Grant {
    Grant {
        from: from.parse().unwrap(),
        to: to.parse().unwrap(),
        ports: ports.map(|p| PortRange::parse(p).unwrap()),
    }
}

fn rule_texts(chain: &Chain) -> Vec<String> {
    chain.rules.iter().map(|r| r.to_string()).collect()
}

#[test]
fn allow_rules_are_lookups_before_the_drop_and_only_when_the_policy_has_some() {
    let rs = plan(DEFAULT_TABLE, &[public()]).unwrap();
    assert!(!rs.to_string().contains("allow4_public"));
    let mut n = public();
    n.allow_rules = true;
    let rs = plan(DEFAULT_TABLE, &[n]).unwrap();
    let fwd = rule_texts(chain(&rs, Family::Inet, "fwd_public"));
    assert_eq!(
        fwd[6..],
        [
            "ip saddr . ip daddr @allow4_public return",
            "ip saddr . ip daddr . meta l4proto . th dport @svc4_public return",
            "ip6 saddr . ip6 daddr @allow6_public return",
            "ip6 saddr . ip6 daddr . meta l4proto . th dport @svc6_public return",
            "goto deny_isolation_public",
        ]
    );
    // The backstop: openers after the fragment check and before the SYN drop; answers
    // (addresses and ports swapped) after the whitelisted destinations.
    let iso = rule_texts(chain(&rs, Family::Bridge, "iso_public"));
    let at = |text: &str| iso.iter().position(|r| r == text).unwrap();
    let frag = at("ip frag-off & 0x3fff != 0 goto deny_isolation_public");
    let syn = at("tcp flags & (fin | syn | rst | ack) == syn goto deny_isolation_public");
    let opener = at("ip saddr . ip daddr . meta l4proto . th dport @svc4_public return");
    let answer = at("ip daddr . ip saddr . meta l4proto . th sport @svc4_public return");
    let wl_dst = at("ip daddr @wl4_public return");
    assert!(frag < opener && opener < syn && wl_dst < answer, "{iso:#?}");
    assert_eq!(iso.last().unwrap(), "goto deny_isolation_public");
    for family in Family::ALL {
        let t = rs.table(family).unwrap();
        for name in [
            "allow4_public",
            "allow6_public",
            "svc4_public",
            "svc6_public",
        ] {
            assert!(
                t.sets.iter().any(|s| s.name == name),
                "{name} in {family:?}"
            );
        }
    }
}

#[test]
fn grants_become_merged_elements_per_pair_and_protocol() {
    let mut n = public();
    n.allow_rules = true;
    n.grants = BTreeSet::from([
        grant("172.20.0.3", "172.20.0.4", Some("5432/tcp")),
        grant("172.20.0.3", "172.20.0.4", Some("5433-5440/tcp")),
        grant("172.20.0.3", "172.20.0.4", Some("5435/tcp")),
        grant("172.20.0.3", "172.20.0.4", Some("53/udp")),
        grant("172.20.0.3", "172.20.0.4", Some("8000/tcp")),
        // An open pair needs no port element.
        grant("172.20.0.5", "172.20.0.6", None),
        grant("172.20.0.5", "172.20.0.6", Some("80/tcp")),
        // Never with itself, never across families.
        grant("172.20.0.7", "172.20.0.7", None),
        grant("172.20.0.7", "fd00:20::8", None),
        grant("fd00:20::3", "fd00:20::4", Some("tcp")),
    ]);
    let rs = plan(DEFAULT_TABLE, &[n]).unwrap();
    let text = |name: &str| -> Vec<String> {
        set(&rs, name)
            .elements
            .iter()
            .map(|e| e.text(set(&rs, name).key))
            .collect()
    };
    assert_eq!(
        text("svc4_public"),
        [
            "172.20.0.3 . 172.20.0.4 . tcp . 5432-5440",
            "172.20.0.3 . 172.20.0.4 . tcp . 8000",
            "172.20.0.3 . 172.20.0.4 . udp . 53",
        ]
    );
    assert_eq!(text("allow4_public"), ["172.20.0.5 . 172.20.0.6"]);
    assert!(text("allow6_public").is_empty());
    assert_eq!(
        text("svc6_public"),
        ["fd00:20::3 . fd00:20::4 . tcp . 1-65535"]
    );
    // A range element is stored with both ends.
    let e = set(&rs, "svc4_public").elements.first().unwrap().clone();
    assert_eq!(
        e.stored_bytes().len(),
        2 * SetKey::Service(IpVersion::V4).key_len() as usize
    );
}

#[test]
fn a_new_grant_is_an_element_update() {
    let mut n = public();
    n.allow_rules = true;
    let before = plan(DEFAULT_TABLE, &[n.clone()]).unwrap();
    n.grants
        .insert(grant("172.20.0.3", "172.20.0.4", Some("5432/tcp")));
    let after = plan(DEFAULT_TABLE, &[n]).unwrap();
    assert_eq!(after.change_from(Some(&before)), Change::Elements);
}

#[test]
fn host_access_and_host_ports() {
    let mut n = public();
    n.host_access = HostAccess::Whitelisted;
    n.host_ports = vec![
        PortRange::parse("53/udp").unwrap(),
        PortRange::parse("8000-8100/tcp").unwrap(),
        PortRange::parse("53/udp").unwrap(),
    ];
    let rs = plan(DEFAULT_TABLE, &[n]).unwrap();
    assert_eq!(
        rule_texts(chain(&rs, Family::Inet, "host_public")),
        [
            "ct state established,related return",
            "icmpv6 type 133-136 return",
            "icmpv6 type 131-132 return",
            "icmpv6 type 143 return",
            "ip saddr @wl4_public return",
            "ip6 saddr @wl6_public return",
            "tcp dport 8000-8100 return",
            "udp dport 53 return",
            "goto deny_host_public",
        ]
    );
    let mut open = public();
    open.host_access = HostAccess::Open;
    let rs = plan(DEFAULT_TABLE, &[open]).unwrap();
    assert!(!rs.to_string().contains("host_public"));
}

#[test]
fn deny_chains_log_at_a_bounded_rate_then_drop_or_in_audit_mode_return() {
    let mut net = public();
    net.log_group = Some(4200);
    let rs = plan(DEFAULT_TABLE, &[net.clone()]).unwrap();
    let log =
        "limit rate 100/second burst 200 packets log prefix \"tj isolation public\" group 4200";
    for family in Family::ALL {
        assert_eq!(
            rule_texts(chain(&rs, family, "deny_isolation_public")),
            [log, "counter drop"]
        );
    }
    assert_eq!(
        rule_texts(chain(&rs, Family::Bridge, "deny_spoofed_public"))[0],
        log.replace("isolation", "spoofed")
    );
    net.mode = Mode::Audit;
    let rs = plan(DEFAULT_TABLE, &[net]).unwrap();
    assert_eq!(
        rule_texts(chain(&rs, Family::Inet, "deny_host_public")),
        [log.replace("isolation", "host").as_str(), "counter return"]
    );
    assert_eq!(rs.networks[0].mode, Mode::Audit);
    // Without a group: no log rule.
    let rs = plan(DEFAULT_TABLE, &[public()]).unwrap();
    assert!(!rs.to_string().contains("log prefix"));
    // A long network name is cut to what the kernel carries, on a character boundary.
    let long = "é".repeat(100);
    let prefix = log_prefix(Reason::Isolation, &long);
    assert!(prefix.len() <= LOG_PREFIX_MAX && prefix.starts_with("tj isolation é"));
}

#[test]
fn deny_outbound_judges_new_connections_routed_out_of_the_bridge() {
    let mut n = public();
    n.deny_outbound = vec![
        "10.1.2.3/8".parse().unwrap(),
        "fc00::/7".parse().unwrap(),
        "10.0.0.0/8".parse().unwrap(),
    ];
    let rs = plan(DEFAULT_TABLE, &[n]).unwrap();
    assert_eq!(
        rule_texts(chain(&rs, Family::Inet, "forward")),
        [
            "iifname \"br-public\" oifname \"br-public\" jump fwd_public",
            "iifname \"br-public\" oifname != \"br-public\" jump out_public",
        ]
    );
    assert_eq!(
        rule_texts(chain(&rs, Family::Inet, "out_public")),
        [
            "ct state established,related return",
            "ip daddr 10.0.0.0/8 goto deny_outbound_public",
            "ip6 daddr fc00::/7 goto deny_outbound_public",
        ]
    );
    assert!(rs.networks[0].deny_chains.contains(&(
        Reason::Outbound,
        (Family::Inet, "deny_outbound_public".into())
    )));
    let rs = plan(DEFAULT_TABLE, &[public()]).unwrap();
    assert!(!rs.to_string().contains("out_public"));
}

#[test]
fn port_ranges_parse_and_print_as_written() {
    for text in ["53/udp", "8000-8100/tcp", "tcp", "udp", "65535/tcp"] {
        assert_eq!(PortRange::parse(text).unwrap().to_string(), text);
    }
    assert_eq!(PortRange::parse("1-65535/tcp").unwrap().to_string(), "tcp");
    for bad in [
        "",
        "53",
        "53/icmp",
        "0/tcp",
        "65536/tcp",
        "9-8/tcp",
        "a-b/tcp",
        "-5/udp",
    ] {
        assert!(PortRange::parse(bad).is_err(), "{bad}");
    }
}

/// Every planner feature at once, in a few rulesets: what the kernel is given (the nft
/// text, each set's key and its elements' bytes, the fingerprint stored with the
/// tables) must not change when the code around it moves. `TRAFFICJAM_BLESS=1` writes
/// the expected file anew after a change that means to change it.
fn golden_fixtures() -> Vec<(&'static str, Ruleset)> {
    let port = |name: &str, last: u8, addrs: &[&str]| Port {
        name: name.into(),
        mac: [2, 0x42, 172, 21, 0, last],
        addrs: addrs.iter().map(|a| a.parse().unwrap()).collect(),
    };
    let mut busy = net(
        "busy",
        "br-busy",
        &["172.21.0.0/16", "fd00:21::/64"],
        &["172.21.0.2", "fd00:21::2"],
    );
    busy.ports = vec![
        port("veth-proxy", 2, &["172.21.0.2", "fd00:21::2"]),
        port("veth-app", 3, &["172.21.0.3"]),
        port("veth-db", 4, &["172.21.0.4", "fd00:21::4"]),
    ];
    busy.unbound_ports = vec!["veth-new".into()];
    busy.gateway_mac = Some([2, 0x43, 172, 21, 0, 1]);
    busy.gateways = vec!["172.21.0.1".parse().unwrap(), "fd00:21::1".parse().unwrap()];
    busy.host_access = HostAccess::Whitelisted;
    busy.host_ports = vec![
        PortRange::parse("53/udp").unwrap(),
        PortRange::parse("8000-8100/tcp").unwrap(),
    ];
    busy.deny_outbound = vec![
        "10.0.0.0/8".parse().unwrap(),
        "fd00:99::/48".parse().unwrap(),
    ];
    busy.allow_rules = true;
    busy.grants = [
        grant("172.21.0.3", "172.21.0.4", Some("5432/tcp")),
        grant("172.21.0.3", "172.21.0.4", Some("53/udp")),
        grant("fd00:21::2", "fd00:21::4", None),
    ]
    .into();
    busy.log_group = Some(7);
    let mut audited = net("audited", "br-audited", &["172.22.0.0/16"], &[]);
    audited.mode = Mode::Audit;
    audited.host_access = HostAccess::Open;
    audited.allow_rules = true;
    audited.ports = vec![port("veth-a1", 9, &["172.22.0.9"])];
    audited.log_group = Some(7);
    vec![
        ("empty", plan(DEFAULT_TABLE, &[]).unwrap()),
        ("public", plan(DEFAULT_TABLE, &[public()]).unwrap()),
        (
            "three-networks",
            plan("tj_custom", &[busy, audited, public()]).unwrap(),
        ),
        (
            "overlay-stateful",
            plan(DEFAULT_TABLE, &[overlay(true)]).unwrap(),
        ),
        (
            "overlay-stateless-guarded",
            plan_guarded(
                DEFAULT_TABLE,
                &[overlay(false)],
                &["docker_gwbridge".into()],
            )
            .unwrap(),
        ),
        (
            "guard-only",
            plan_guarded(DEFAULT_TABLE, &[], &["docker_gwbridge".into()]).unwrap(),
        ),
    ]
}

fn golden_text(rs: &Ruleset) -> String {
    let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
    let mut out = format!("# fingerprint {:016x}\n{rs}", rs.fingerprint());
    for table in &rs.tables {
        for set in &table.sets {
            let key = set.key;
            out += &format!(
                "# {} {}: type {} len {} ranges {:?} userdata {}\n",
                table.family.keyword(),
                set.name,
                key.type_id(),
                key.key_len(),
                key.range_fields(),
                hex(key.userdata().unwrap_or_default()),
            );
            for element in &set.elements {
                out += &format!("#   {}\n", hex(&element.stored_bytes()));
            }
        }
    }
    out
}

#[test]
fn the_kernel_is_given_what_it_was_given_before() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/plan");
    let bless = std::env::var_os("TRAFFICJAM_BLESS").is_some();
    // Blessing writes what it compares with: never where the comparison is the check.
    assert!(
        !(bless && std::env::var("CI").is_ok_and(|v| v == "true")),
        "TRAFFICJAM_BLESS under CI=true would pass whatever the planner gives"
    );
    for (name, rs) in golden_fixtures() {
        let path = dir.join(format!("{name}.nft"));
        let text = golden_text(&rs);
        if bless {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&path, &text).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (TRAFFICJAM_BLESS=1 writes it)", path.display()));
        if text != expected {
            let line = text
                .lines()
                .zip(expected.lines())
                .position(|(a, b)| a != b)
                .unwrap_or(text.lines().count().min(expected.lines().count()));
            panic!(
                "{name}: the planned ruleset differs from {} from line {}:\n  now:    {:?}\n  before: {:?}",
                path.display(),
                line + 1,
                text.lines().nth(line),
                expected.lines().nth(line)
            );
        }
    }
}

#[test]
fn renders_loadable_nft_text() {
    let rs = plan(DEFAULT_TABLE, &[public()]).unwrap();
    let text = rs.to_string();
    assert!(text.starts_with("table inet trafficjam {\n"), "{text}");
    assert!(
        text.contains(
            "\tset wl4_public {\n\t\ttype ipv4_addr\n\t\telements = { 172.20.0.2 }\n\t}\n"
        )
    );
    assert!(text.contains("\n\ntable bridge trafficjam {\n"));
    assert!(text.contains("type filter hook forward priority -200; policy accept;"));
}
