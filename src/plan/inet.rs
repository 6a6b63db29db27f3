//! The `inet` table: stateful isolation at the forward and input hooks (br_netfilter hands
//! bridged traffic to them), allow rules, the host path and `deny_outbound`.

use super::shared::*;
use super::*;
use crate::policy::{HostAccess, PortRange};

pub(super) fn inet_table(
    table_name: &str,
    networks: &[ManagedNetwork],
    vxlan_guard: &[String],
) -> Table {
    let mut forward = Chain {
        name: names::FORWARD.into(),
        base: Some(BaseChain {
            hook: Hook::Forward,
            priority: INET_PRIORITY,
        }),
        rules: Vec::new(),
    };
    let mut input = Chain {
        name: names::INPUT.into(),
        base: Some(BaseChain {
            hook: Hook::Input,
            priority: INET_PRIORITY,
        }),
        rules: Vec::new(),
    };
    for bridge in vxlan_guard {
        let rule = Rule::counted(
            vec![
                Match::IifName(bridge.clone()),
                Match::DestPort(PortRange::udp(VXLAN_PORT)),
            ],
            Verdict::Drop,
        );
        forward.rules.push(rule.clone());
        input.rules.push(rule);
    }
    let mut sets = Vec::new();
    let mut chains = Vec::new();
    for net in networks {
        let fwd_name = names::forward_chain(&net.name);
        let between = vec![
            Match::IifName(net.bridge.clone()),
            Match::OifName(net.bridge.clone()),
        ];
        if net.remote_port.is_some() {
            // An overlay: this node judges what its own containers send, towards any node
            // (the inet hook cannot see the port a bridged packet came in by, so the
            // source address tells; port security lets a port speak only as its own).
            for version in [IpVersion::V4, IpVersion::V6] {
                let mut matches = between.clone();
                matches.push(Match::InSet(
                    Dir::Src,
                    version,
                    names::local_set(&net.name, version),
                ));
                forward
                    .rules
                    .push(Rule::new(matches, Verdict::Jump(fwd_name.clone())));
            }
            sets.extend(local_sets(net));
        } else {
            forward
                .rules
                .push(Rule::new(between, Verdict::Jump(fwd_name.clone())));
        }
        let mut fwd_rules = vec![Rule::new(
            vec![Match::CtEstablishedRelated],
            Verdict::Return,
        )];
        fwd_rules.extend(whitelisted(net, Dir::Src));
        fwd_rules.push(neighbour_discovery());
        fwd_rules.extend(listener_reports());
        if net.allow_rules {
            fwd_rules.extend(grant_rules(net, Dir::Src));
        }
        fwd_rules.push(Rule::new(vec![], deny(net, Reason::Isolation)));
        chains.push(Chain {
            name: fwd_name,
            base: None,
            rules: fwd_rules,
        });

        if !net.deny_outbound.is_empty() {
            // Routed out of the network (to the LAN, another network): only new
            // connections are judged, so answers to connections from there still flow.
            let out_name = names::outbound_chain(&net.name);
            forward.rules.push(Rule::new(
                vec![
                    Match::IifName(net.bridge.clone()),
                    Match::OifNameNot(net.bridge.clone()),
                ],
                Verdict::Jump(out_name.clone()),
            ));
            let mut rules = vec![Rule::new(
                vec![Match::CtEstablishedRelated],
                Verdict::Return,
            )];
            rules.extend(net.deny_outbound.iter().map(|d| {
                Rule::new(
                    vec![Match::Subnet(Dir::Dst, *d)],
                    deny(net, Reason::Outbound),
                )
            }));
            chains.push(Chain {
                name: out_name,
                base: None,
                rules,
            });
        }

        if net.host_access != HostAccess::Open {
            let host_name = names::host_chain(&net.name);
            input.rules.push(Rule::new(
                vec![Match::IifName(net.bridge.clone())],
                Verdict::Jump(host_name.clone()),
            ));
            let mut rules = vec![
                Rule::new(vec![Match::CtEstablishedRelated], Verdict::Return),
                neighbour_discovery(),
            ];
            rules.extend(listener_reports());
            if net.host_access == HostAccess::Whitelisted {
                rules.extend(whitelisted(net, Dir::Src));
            }
            let mut ports = net.host_ports.clone();
            ports.sort();
            ports.dedup();
            rules.extend(
                ports
                    .into_iter()
                    .map(|p| Rule::new(vec![Match::DestPort(p)], Verdict::Return)),
            );
            rules.push(Rule::new(vec![], deny(net, Reason::Host)));
            chains.push(Chain {
                name: host_name,
                base: None,
                rules,
            });
        }
        chains.extend(
            [Reason::Isolation, Reason::Host, Reason::Outbound]
                .into_iter()
                .filter(|r| denies(net, Family::Inet, *r))
                .map(|r| deny_chain(net, r)),
        );
        sets.extend(whitelist_sets(net));
        if net.allow_rules {
            sets.extend(grant_sets(net));
        }
    }
    let mut all_chains = vec![forward, input];
    all_chains.extend(chains);
    Table {
        family: Family::Inet,
        name: table_name.to_owned(),
        sets,
        chains: all_chains,
    }
}
