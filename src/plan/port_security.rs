//! Port security: what a container's port may send, as an allowlist (its own MAC and
//! addresses, untagged IPv4, IPv6 and ARP, no router's or DHCP server's message), and what
//! no other port may claim. Every check is a set lookup keyed by the port.

use std::collections::BTreeSet;
use std::net::IpAddr;

use super::shared::deny;
use super::*;
use crate::policy::PortRange;

/// Port security for one network: its sets, its chains, and the two rules it adds to
/// `prerouting` (send a resolved port's frames to its checks; check every other port's
/// frames for claims on the network's identities).
pub(super) struct PortSecurity {
    pub(super) sets: Vec<Set>,
    pub(super) chains: Vec<Chain>,
    pub(super) dispatch: Vec<Rule>,
    pub(super) claims: Rule,
}

pub(super) fn port_security(net: &ManagedNetwork) -> PortSecurity {
    use names::{PortCheck as C, PortSet as S};
    let set = |content| names::port_set(content, &net.name);
    let chain = |role| names::port_chain(role, &net.name);
    let ports: Vec<&Port> = net
        .ports
        .iter()
        .filter(|p| valid_interface_name(&p.name))
        .collect();

    // Each port's own addresses: Docker's, and the link-local one its MAC gives.
    let own = |p: &Port| -> Vec<IpAddr> {
        let mut addrs = p.addrs.clone();
        addrs.push(link_local(&p.mac));
        addrs
    };
    let port_ips = |version| -> BTreeSet<Element> {
        ports
            .iter()
            .flat_map(|p| {
                own(p)
                    .into_iter()
                    .filter(move |a| IpVersion::of(a) == version)
                    .map(|a| Element::PortIp(p.name.clone(), a))
            })
            .collect()
    };
    let mut known_ips: BTreeSet<IpAddr> = ports.iter().flat_map(|p| own(p)).collect();
    known_ips.extend(net.gateways.iter().copied());
    let mut known_macs: BTreeSet<Element> = ports.iter().map(|p| Element::Mac(p.mac)).collect();
    if let Some(mac) = net.gateway_mac {
        known_macs.insert(Element::Mac(mac));
        known_ips.insert(link_local(&mac));
    }
    let known = |version| -> BTreeSet<Element> {
        known_ips
            .iter()
            .filter(|a| IpVersion::of(a) == version)
            .map(|a| Element::Ip(*a))
            .collect()
    };
    let sets = vec![
        Set {
            name: set(S::Ports),
            key: SetKey::Ifname,
            elements: ports
                .iter()
                .map(|p| Element::Port(p.name.clone()))
                .collect(),
        },
        Set {
            name: set(S::Unbound),
            key: SetKey::Ifname,
            elements: net
                .unbound_ports
                .iter()
                .filter(|p| valid_interface_name(p))
                .map(|p| Element::Port(p.clone()))
                .collect(),
        },
        Set {
            name: set(S::PortMac),
            key: SetKey::IfnameEther,
            elements: ports
                .iter()
                .map(|p| Element::PortMac(p.name.clone(), p.mac))
                .collect(),
        },
        Set {
            name: set(S::PortNdMac),
            key: SetKey::IfnameNdMac(24),
            elements: ports
                .iter()
                .map(|p| Element::PortMac(p.name.clone(), p.mac))
                .collect(),
        },
        Set {
            name: set(S::PortRsMac),
            key: SetKey::IfnameNdMac(8),
            elements: ports
                .iter()
                .map(|p| Element::PortMac(p.name.clone(), p.mac))
                .collect(),
        },
        Set {
            name: set(S::PortIpv4),
            key: SetKey::IfnameIpv4,
            elements: port_ips(IpVersion::V4),
        },
        Set {
            name: set(S::PortIpv6),
            key: SetKey::IfnameIpv6,
            elements: port_ips(IpVersion::V6),
        },
        Set {
            name: set(S::PortAdvert),
            key: SetKey::IfnameRaw128,
            elements: port_ips(IpVersion::V6),
        },
        Set {
            name: set(S::Mac),
            key: SetKey::Ether,
            elements: known_macs,
        },
        Set {
            name: set(S::Ipv4),
            key: SetKey::Ipv4,
            elements: known(IpVersion::V4),
        },
        Set {
            name: set(S::Ipv6),
            key: SetKey::Ipv6,
            elements: known(IpVersion::V6),
        },
        Set {
            name: set(S::Advert),
            key: SetKey::Raw128,
            elements: known(IpVersion::V6),
        },
    ];

    let lookup = |fields: &[Field], content| Match::Lookup(fields.to_vec(), set(content));
    let drop = || Rule::new(vec![], deny(net, Reason::Spoofed));
    let drop_if = |matches| Rule::new(matches, deny(net, Reason::Spoofed));
    let port_and = |field| lookup(&[Field::IifName, field], S::PortMac);
    let own_ipv6 = || {
        lookup(
            &[Field::IifName, Field::IpSource(IpVersion::V6)],
            S::PortIpv6,
        )
    };
    // A neighbour discovery message from the port's own address (and for its own target,
    // `also`) with no option, or whose options begin with a link-layer address option
    // (of `kind`, at `offset`) holding the port's own MAC: its receivers believe the first
    // such option they find, and would send what is for this port's address to any MAC
    // written there.
    let neighbour_discovery_checks = |offset: u8, kind: u8, macs: S, also: Option<Match>| {
        let with = |mut matches: Vec<Match>| {
            matches.push(own_ipv6());
            matches.extend(also.clone());
            Rule::new(matches, Verdict::Accept)
        };
        vec![
            with(vec![
                Match::Ipv6Length(u16::from(offset)),
                Match::Ipv6NextHeader(58),
            ]),
            with(vec![
                Match::NdLinkLayerOption { offset, kind },
                lookup(&[Field::IifName, Field::NdOptionMac(offset)], macs),
            ]),
            drop(),
        ]
    };
    let mut chains = vec![
        Chain {
            // A bound port's frame with a MAC not its own.
            name: chain(C::Mac),
            base: None,
            rules: vec![drop()],
        },
        Chain {
            name: chain(C::Source),
            base: None,
            rules: vec![
                // The IEEE link-local groups (bridge protocols, LLDP, 802.1X): no
                // container needs them, and the bridge treats them apart.
                drop_if(vec![Match::LinkLocalGroup]),
                Rule::new(
                    vec![Match::EtherType(EtherType::Ipv4)],
                    Verdict::Goto(chain(C::Ipv4)),
                ),
                Rule::new(
                    vec![Match::EtherType(EtherType::Ipv6)],
                    Verdict::Goto(chain(C::Ipv6)),
                ),
                Rule::new(
                    vec![Match::EtherType(EtherType::Arp)],
                    Verdict::Goto(chain(C::Arp)),
                ),
                // Anything else (a VLAN tag, QinQ, any other protocol): no container needs
                // it, and a tagged frame would pass `meta protocol` checks by its inner type
                // and skip br_netfilter.
                drop(),
            ],
        },
        Chain {
            name: chain(C::Ipv4),
            base: None,
            rules: vec![
                // A DHCP server answering other containers: from the server port, or to
                // the client port whatever it is sent from.
                drop_if(vec![Match::UdpSourcePort(67)]),
                drop_if(vec![Match::DestPort(PortRange::udp(68))]),
                // A DHCP client before it has an address: from 0.0.0.0, client port to
                // server port (the server it reaches is the host, or nobody: isolation
                // judges the broadcast on its way to other ports).
                Rule::new(
                    vec![
                        Match::Ipv4Unspecified,
                        Match::UdpSourcePort(68),
                        Match::DestPort(PortRange::udp(67)),
                    ],
                    Verdict::Accept,
                ),
                Rule::new(
                    vec![lookup(
                        &[Field::IifName, Field::IpSource(IpVersion::V4)],
                        S::PortIpv4,
                    )],
                    Verdict::Accept,
                ),
                drop(),
            ],
        },
        Chain {
            name: chain(C::Ipv6),
            base: None,
            rules: vec![
                // Router advertisements and redirects: only the host routes.
                drop_if(vec![Match::Icmpv6Types(134, 134)]),
                drop_if(vec![Match::Icmpv6Types(137, 137)]),
                // A DHCPv6 server or relay answering other containers (from the server
                // port, or to the client port).
                drop_if(vec![Match::UdpSourcePort(547)]),
                drop_if(vec![Match::DestPort(PortRange::udp(546))]),
                // Duplicate address detection: a solicitation and an MLD report from `::`
                // (a solicitation from `::` with a link-layer option is invalid, and
                // dropped by its receivers).
                Rule::new(
                    vec![Match::Ipv6Unspecified, Match::Icmpv6Types(135, 135)],
                    Verdict::Accept,
                ),
                Rule::new(
                    vec![Match::Ipv6Unspecified, Match::Icmpv6Types(143, 143)],
                    Verdict::Accept,
                ),
                // Neighbour discovery carries a MAC of its own, which its receivers
                // believe: judged apart.
                Rule::new(
                    vec![Match::Icmpv6Types(136, 136)],
                    Verdict::Goto(chain(C::Advert)),
                ),
                Rule::new(
                    vec![Match::Icmpv6Types(135, 135)],
                    Verdict::Goto(chain(C::Solicit)),
                ),
                Rule::new(
                    vec![Match::Icmpv6Types(133, 133)],
                    Verdict::Goto(chain(C::RouterSolicit)),
                ),
                Rule::new(vec![own_ipv6()], Verdict::Accept),
                drop(),
            ],
        },
        Chain {
            name: chain(C::Advert),
            base: None,
            rules: neighbour_discovery_checks(
                24,
                2,
                S::PortNdMac,
                Some(lookup(
                    &[Field::IifName, Field::AdvertTarget],
                    S::PortAdvert,
                )),
            ),
        },
        Chain {
            name: chain(C::Solicit),
            base: None,
            rules: neighbour_discovery_checks(24, 1, S::PortNdMac, None),
        },
        Chain {
            name: chain(C::RouterSolicit),
            base: None,
            // Routers (the host) believe a router solicitation's option too.
            rules: neighbour_discovery_checks(8, 1, S::PortRsMac, None),
        },
        Chain {
            name: chain(C::Arp),
            base: None,
            rules: vec![
                Rule::new(
                    vec![
                        port_and(Field::ArpSenderMac),
                        lookup(&[Field::IifName, Field::ArpSenderIp], S::PortIpv4),
                    ],
                    Verdict::Accept,
                ),
                Rule::new(
                    vec![port_and(Field::ArpSenderMac), Match::ArpProbe],
                    Verdict::Accept,
                ),
                drop(),
            ],
        },
        Chain {
            name: chain(C::Claims),
            base: None,
            rules: vec![
                drop_if(vec![lookup(&[Field::EtherSource], S::Mac)]),
                drop_if(vec![lookup(&[Field::IpSource(IpVersion::V4)], S::Ipv4)]),
                drop_if(vec![lookup(&[Field::IpSource(IpVersion::V6)], S::Ipv6)]),
                drop_if(vec![lookup(&[Field::ArpSenderMac], S::Mac)]),
                drop_if(vec![lookup(&[Field::ArpSenderIp], S::Ipv4)]),
                drop_if(vec![
                    Match::Icmpv6Types(136, 136),
                    lookup(&[Field::AdvertTarget], S::Advert),
                ]),
            ]
            .into_iter()
            // Alone in its namespace, an overlay's bridge has the remote port and its
            // containers' ports: one that is neither (a container Docker has not told us
            // of yet) is silent, or it could pass for a container of another node.
            .chain(
                net.remote_port
                    .iter()
                    .map(|remote| drop_if(vec![Match::IifNameNot(remote.clone())])),
            )
            .collect(),
        },
    ];
    // A port of no known container yet: the claims judge its identities (after this
    // chain returns); here, what no container may send whoever it is.
    chains.push(Chain {
        name: chain(C::Unbound),
        base: None,
        rules: vec![
            drop_if(vec![Match::LinkLocalGroup]),
            drop_if(vec![Match::Icmpv6Types(134, 134)]),
            drop_if(vec![Match::Icmpv6Types(137, 137)]),
            drop_if(vec![Match::UdpSourcePort(67)]),
            drop_if(vec![Match::DestPort(PortRange::udp(68))]),
            drop_if(vec![Match::UdpSourcePort(547)]),
            drop_if(vec![Match::DestPort(PortRange::udp(546))]),
            Rule::new(vec![Match::EtherType(EtherType::Ipv4)], Verdict::Return),
            Rule::new(vec![Match::EtherType(EtherType::Ipv6)], Verdict::Return),
            Rule::new(vec![Match::EtherType(EtherType::Arp)], Verdict::Return),
            drop(),
        ],
    });
    PortSecurity {
        sets,
        chains,
        // An honest frame of a bound port costs one lookup here: its port and MAC.
        dispatch: vec![
            Rule::new(
                vec![port_and(Field::EtherSource)],
                Verdict::Goto(chain(C::Source)),
            ),
            Rule::new(
                vec![lookup(&[Field::IifName], S::Ports)],
                Verdict::Goto(chain(C::Mac)),
            ),
            Rule::new(
                vec![lookup(&[Field::IifName], S::Unbound)],
                Verdict::Jump(chain(C::Unbound)),
            ),
        ],
        claims: Rule::new(vec![], Verdict::Jump(chain(C::Claims))),
    }
}
