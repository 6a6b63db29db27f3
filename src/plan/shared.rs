//! The pieces both tables build a network from: its address sets, the whitelist and grant
//! lookups, the neighbour discovery both families must let through, and the deny chains
//! that count, log and drop (or, in audit mode, return).

use std::collections::BTreeSet;
use std::net::IpAddr;

use super::names::log_prefix;
use super::*;
use crate::policy::Mode;

/// An IPv4 and an IPv6 set of addresses, named by `name` per family.
pub(super) fn address_sets(
    name: impl Fn(IpVersion) -> String,
    addrs: &BTreeSet<IpAddr>,
) -> Vec<Set> {
    [IpVersion::V4, IpVersion::V6]
        .into_iter()
        .map(|version| Set {
            name: name(version),
            key: match version {
                IpVersion::V4 => SetKey::Ipv4,
                IpVersion::V6 => SetKey::Ipv6,
            },
            elements: addrs
                .iter()
                .filter(|a| IpVersion::of(a) == version)
                .map(|a| Element::Ip(*a))
                .collect(),
        })
        .collect()
}

/// An overlay network's containers on this node, by address (their ports' identities).
pub(super) fn local_sets(net: &ManagedNetwork) -> Vec<Set> {
    let local = net
        .ports
        .iter()
        .flat_map(|p| p.addrs.iter().copied().chain([link_local(&p.mac)]))
        .collect();
    address_sets(|v| names::local_set(&net.name, v), &local)
}

pub(super) fn whitelist_sets(net: &ManagedNetwork) -> Vec<Set> {
    address_sets(|v| names::whitelist_set(&net.name, v), &net.whitelist)
}

/// The allow rules' sets of one network: pairs allowed everything, and pairs allowed a
/// protocol and port ranges (ranges of one pair and protocol merged, as the kernel refuses
/// overlapping ranges). A pair allowed everything needs no port element; a container is
/// never paired with itself (its own traffic does not cross the bridge).
pub(super) fn grant_sets(net: &ManagedNetwork) -> Vec<Set> {
    use std::collections::BTreeMap;
    let open: BTreeSet<(IpAddr, IpAddr)> = net
        .grants
        .iter()
        .filter(|g| g.ports.is_none() && g.from != g.to)
        .filter(|g| IpVersion::of(&g.from) == IpVersion::of(&g.to))
        .map(|g| (g.from, g.to))
        .collect();
    let mut ranges: BTreeMap<(IpAddr, IpAddr, u8), Vec<(u16, u16)>> = BTreeMap::new();
    for g in &net.grants {
        let Some(ports) = g.ports else { continue };
        if g.from == g.to
            || IpVersion::of(&g.from) != IpVersion::of(&g.to)
            || open.contains(&(g.from, g.to))
        {
            continue;
        }
        ranges
            .entry((g.from, g.to, ports.protocol.number()))
            .or_default()
            .push((ports.first, ports.last));
    }
    let mut services = BTreeSet::new();
    for ((from, to, protocol), mut list) in ranges {
        list.sort();
        let mut merged: Vec<(u16, u16)> = Vec::new();
        for (first, last) in list {
            match merged.last_mut() {
                Some(prev) if u32::from(first) <= u32::from(prev.1) + 1 => {
                    prev.1 = prev.1.max(last)
                }
                _ => merged.push((first, last)),
            }
        }
        for (first, last) in merged {
            services.insert(Element::Service {
                from,
                to,
                protocol,
                first,
                last,
            });
        }
    }
    let of = |e: &Element, version| match e {
        Element::Pair(a, _) | Element::Service { from: a, .. } => IpVersion::of(a) == version,
        _ => false,
    };
    let mut sets = Vec::new();
    for version in [IpVersion::V4, IpVersion::V6] {
        sets.push(Set {
            name: names::pair_set(&net.name, version),
            key: SetKey::Pair(version),
            elements: open
                .iter()
                .map(|(a, b)| Element::Pair(*a, *b))
                .filter(|e| of(e, version))
                .collect(),
        });
        sets.push(Set {
            name: names::service_set(&net.name, version),
            key: SetKey::Service(version),
            elements: services
                .iter()
                .filter(|e| of(e, version))
                .cloned()
                .collect(),
        });
    }
    sets
}

/// The allow rules' lookups, for a packet from the opening side (`Dir::Src` is the
/// opener) or for an answer (`Dir::Dst` is the opener: addresses and ports swapped).
pub(super) fn grant_rules(net: &ManagedNetwork, opener: Dir) -> Vec<Rule> {
    let mut rules = Vec::new();
    for version in [IpVersion::V4, IpVersion::V6] {
        let (first, second, port) = match opener {
            Dir::Src => (
                Field::IpSource(version),
                Field::IpDest(version),
                Field::DestPort,
            ),
            Dir::Dst => (
                Field::IpDest(version),
                Field::IpSource(version),
                Field::SourcePort,
            ),
        };
        rules.push(Rule::new(
            vec![Match::Lookup(
                vec![first, second],
                names::pair_set(&net.name, version),
            )],
            Verdict::Return,
        ));
        rules.push(Rule::new(
            vec![Match::Lookup(
                vec![first, second, Field::L4Proto, port],
                names::service_set(&net.name, version),
            )],
            Verdict::Return,
        ));
    }
    rules
}

/// `ip saddr @wl4_N return; ip6 saddr @wl6_N return` (or the destinations): the
/// whitelisted end of a packet lets it through this chain.
pub(super) fn whitelisted(net: &ManagedNetwork, dir: Dir) -> Vec<Rule> {
    [IpVersion::V4, IpVersion::V6]
        .into_iter()
        .map(|version| {
            Rule::new(
                vec![Match::InSet(
                    dir,
                    version,
                    names::whitelist_set(&net.name, version),
                )],
                Verdict::Return,
            )
        })
        .collect()
}

/// Rules shared by every per-network chain: let IPv6 neighbour discovery through.
pub(super) fn neighbour_discovery() -> Rule {
    Rule::new(
        vec![Match::Icmpv6Types(ND_TYPES.0, ND_TYPES.1)],
        Verdict::Return,
    )
}

/// Multicast listener reports and dones (MLD, ICMPv6 131, 132, 143): every IPv6 interface
/// sends them to `ff02::16`/`ff02::2` when it comes up. They open nothing in any container;
/// dropped, they would fill the drop log with a line per container start.
pub(super) fn listener_reports() -> [Rule; 2] {
    [
        Rule::new(vec![Match::Icmpv6Types(131, 132)], Verdict::Return),
        Rule::new(vec![Match::Icmpv6Types(143, 143)], Verdict::Return),
    ]
}

/// Sends a forbidden packet to the network's deny chain for `reason`.
pub(super) fn deny(net: &ManagedNetwork, reason: Reason) -> Verdict {
    Verdict::Goto(names::deny_chain(reason, &net.name))
}

/// Whether the network has a deny chain for `reason` in `family`.
pub(super) fn denies(net: &ManagedNetwork, family: Family, reason: Reason) -> bool {
    match (family, reason) {
        (Family::Inet, Reason::Isolation) => true,
        (Family::Inet, Reason::Host) => net.host_access != HostAccess::Open,
        (Family::Inet, Reason::Outbound) => !net.deny_outbound.is_empty(),
        (Family::Bridge, Reason::Isolation | Reason::Spoofed) => true,
        _ => false,
    }
}

/// The chain every drop of `reason` goes to (by `goto`, so that in audit mode its
/// `return` resumes after the `jump` into the network's chains, i.e. lets the packet be;
/// every path here has such a jump, port security's in audit mode included):
/// reports the packet to NFLOG (rate-limited, in a rule of its own: a packet over the
/// limit is still dropped), then counts it and drops it.
pub(super) fn deny_chain(net: &ManagedNetwork, reason: Reason) -> Chain {
    let mut rules = Vec::new();
    if let Some(group) = net.log_group {
        rules.push(Rule::logged(LogAction {
            group,
            prefix: log_prefix(reason, &net.name),
        }));
    }
    rules.push(Rule::counted(
        vec![],
        match net.mode {
            Mode::Enforce => Verdict::Drop,
            Mode::Audit => Verdict::Return,
        },
    ));
    Chain {
        name: names::deny_chain(reason, &net.name),
        base: None,
        rules,
    }
}
