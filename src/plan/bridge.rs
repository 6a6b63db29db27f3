//! The `bridge` table: the stateless backstop that holds without br_netfilter, the bridge's
//! input hook, and the place of each network's port security in `prerouting`.

use super::port_security::port_security;
use super::shared::*;
use super::*;
use crate::policy::Mode;

pub(super) fn bridge_table(table_name: &str, networks: &[ManagedNetwork]) -> Table {
    let mut forward = Chain {
        name: names::FORWARD.into(),
        base: Some(BaseChain {
            hook: Hook::Forward,
            priority: BRIDGE_PRIORITY,
        }),
        rules: Vec::new(),
    };
    let mut prerouting = Chain {
        name: names::PREROUTING.into(),
        base: Some(BaseChain {
            hook: Hook::Prerouting,
            priority: PORT_PRIORITY,
        }),
        rules: Vec::new(),
    };
    // Frames to the IEEE link-local groups that the bridge does not forward (those it
    // may not, :00 with STP on and :02; the others it forwards, see kernel/links/fdb.rs) pass its
    // input hook only, then the port's own stack: a bound port's would reach the host's
    // addresses as if from no bridge at all, past port security and host access.
    let mut input = Chain {
        name: names::INPUT.into(),
        base: Some(BaseChain {
            hook: Hook::Input,
            priority: PORT_PRIORITY,
        }),
        rules: Vec::new(),
    };
    let mut claims = Vec::new();
    let mut sets = Vec::new();
    let mut chains = Vec::new();
    for net in networks {
        // Bound ports and those of no known container yet alike.
        for ports in [names::PortSet::Ports, names::PortSet::Unbound] {
            input.rules.push(Rule::new(
                vec![
                    Match::Lookup(vec![Field::IifName], names::port_set(ports, &net.name)),
                    Match::LinkLocalGroup,
                ],
                deny(net, Reason::Spoofed),
            ));
        }
        let ps = port_security(net);
        match net.mode {
            // The dispatch `goto`s a port's chains: nothing is on the jump stack, and a
            // drop ends the packet.
            Mode::Enforce => prerouting.rules.extend(ps.dispatch),
            // Audited, the deny chain `return`s: behind a `jump`, that resumes
            // `prerouting`, so the other networks' claims still judge the frame (a
            // `return` with an empty stack would take the base chain's policy, accept).
            Mode::Audit => {
                let name = names::port_chain(names::PortCheck::Dispatch, &net.name);
                prerouting
                    .rules
                    .push(Rule::new(vec![], Verdict::Jump(name.clone())));
                chains.push(Chain {
                    name,
                    base: None,
                    rules: ps.dispatch,
                });
            }
        }
        claims.push(ps.claims);
        sets.extend(ps.sets);
        chains.extend(ps.chains);
    }
    // Every network's resolved ports first: a frame checked whole is accepted and skips
    // the claims, which judge the frames of every other port.
    prerouting.rules.extend(claims);
    for net in networks {
        let iso_name = names::isolation_chain(&net.name);
        // Every IP frame a bound port sends on to other ports, whatever its addresses
        // (broadcast, multicast, link-local, other subnets: the bridge forwards them all),
        // not only those between two addresses of the network; its source is the port's
        // own (port security). Its chain ends in our base chain's policy: the subnet
        // rules below do not judge it twice.
        let from_port = names::port_chain(names::PortCheck::Forward, &net.name);
        forward.rules.push(Rule::new(
            vec![Match::Lookup(
                vec![Field::IifName],
                names::port_set(names::PortSet::Ports, &net.name),
            )],
            Verdict::Goto(from_port.clone()),
        ));
        chains.push(Chain {
            name: from_port,
            base: None,
            rules: [EtherType::Ipv4, EtherType::Ipv6]
                .into_iter()
                .map(|t| Rule::new(vec![Match::EtherType(t)], Verdict::Jump(iso_name.clone())))
                .collect(),
        });
        // Both ends inside the network's subnets (any pair: --ip-range slices and several
        // subnets of one family are all one network).
        for src in &net.subnets {
            for dst in &net.subnets {
                if IpVersion::of_net(src) == IpVersion::of_net(dst) {
                    forward.rules.push(Rule::new(
                        vec![Match::Subnet(Dir::Src, *src), Match::Subnet(Dir::Dst, *dst)],
                        Verdict::Jump(iso_name.clone()),
                    ));
                }
            }
        }
        let mut rules = Vec::new();
        if let Some(remote) = &net.remote_port {
            // Sent by a container of another node: judged there.
            rules.push(Rule::new(
                vec![Match::IifName(remote.clone())],
                Verdict::Return,
            ));
        }
        rules.extend(whitelisted(net, Dir::Src));
        rules.extend(listener_reports());
        rules.extend([
            neighbour_discovery(),
            // Without conntrack, a non-whitelisted source may still answer a whitelisted
            // peer, but never open TCP or ping, whoever the destination; nor send
            // fragments, which could hide a SYN. (With br_netfilter on, fragments are
            // reassembled before this hook.)
            Rule::new(vec![Match::Ipv4Fragment], deny(net, Reason::Isolation)),
            Rule::new(vec![Match::Ipv6Fragment], deny(net, Reason::Isolation)),
        ]);
        if net.allow_rules {
            // An allowed opener towards its allowed destination and port (after the
            // fragment check: a fragment's ports cannot be read).
            rules.extend(grant_rules(net, Dir::Src));
        }
        rules.extend([
            Rule::new(vec![Match::TcpSyn], deny(net, Reason::Isolation)),
            Rule::new(
                vec![Match::EchoRequest(IpVersion::V4)],
                deny(net, Reason::Isolation),
            ),
            Rule::new(
                vec![Match::EchoRequest(IpVersion::V6)],
                deny(net, Reason::Isolation),
            ),
        ]);
        rules.extend(whitelisted(net, Dir::Dst));
        if net.allow_rules {
            // Answers of an allowed destination, from the allowed port (never a SYN or a
            // ping: those were dropped above).
            rules.extend(grant_rules(net, Dir::Dst));
        }
        if let Some(remote) = net.remote_port.as_ref().filter(|_| net.remote_stateful) {
            // Towards another node, past the SYN and ping drops: this node cannot tell
            // statelessly whether the party there is whitelisted; conntrack judges in
            // `fwd_N` (br_netfilter is on for the overlay's bridge).
            rules.push(Rule::new(
                vec![Match::OifName(remote.clone())],
                Verdict::Return,
            ));
        }
        rules.push(Rule::new(vec![], deny(net, Reason::Isolation)));
        chains.push(Chain {
            name: iso_name,
            base: None,
            rules,
        });
        chains.extend(
            [Reason::Isolation, Reason::Spoofed]
                .into_iter()
                .map(|r| deny_chain(net, r)),
        );
        sets.extend(whitelist_sets(net));
        if net.allow_rules {
            sets.extend(grant_sets(net));
        }
    }
    let mut all_chains = vec![prerouting, input, forward];
    all_chains.extend(chains);
    Table {
        family: Family::Bridge,
        name: table_name.to_owned(),
        sets,
        chains: all_chains,
    }
}
