//! The bridge's forwarding database, programmed instead of learnt from containers.
//!
//! A Linux bridge learns where a MAC lives from the source of the frames a port sends, and
//! for frames to the IEEE link-local groups (01:80:c2:00:00:0x) it learns before any
//! netfilter hook that port security could use (`:0e` passes none at all). A container
//! with raw sockets could so move another container's MAC to its own port and receive its
//! traffic. So each bound port learns nothing: its container's MAC is a static, sticky
//! entry on it (never moved by a frame from elsewhere, never aged out, gone with the port),
//! learning is off and what the port learnt before it was bound is flushed. The port also
//! gets no unknown unicast (flooding off): a frame for another container never reaches it.
//! The bridge itself learns nothing from link-local frames (`no_linklocal_learn`), which
//! covers ports not bound yet, and forwards the link-local groups it may
//! ([`GROUP_FWD_MASK`]) rather than hand them to the port's own stack. The database stays bounded: one entry per bound container,
//! plus what unbound ports (containers Docker has not told us of yet) learn until bound.

use std::io;

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_REPLACE, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage,
    NetlinkPayload,
};
use netlink_packet_route::link::{
    BridgeBooleanOptionFlags, BridgeBooleanOptions, InfoBridge, InfoBridgePort, InfoData, InfoKind,
    InfoPortData, LinkAttribute, LinkInfo, LinkMessage,
};
use netlink_packet_route::neighbour::{
    NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use nix::sys::socket::SockProtocol;

use crate::kernel::KernelError;
use crate::kernel::netlink::{netlink_socket, read_acks, send_all, set_receive_timeout};
use crate::plan::{Mac, mac_text};

fn serialize(message: RouteNetlinkMessage, flags: u16, seq: u32) -> Vec<u8> {
    let mut header = NetlinkHeader::default();
    header.flags = flags;
    header.sequence_number = seq;
    let mut message = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(message));
    message.finalize();
    let mut bytes = vec![0; message.buffer_len()];
    message.serialize(&mut bytes);
    bytes
}

/// Frames to every IEEE link-local group the kernel lets a bridge forward (all but :00 to
/// :02): forwarded, they pass the bridge's prerouting hook and port security. Else the
/// bridge hands them to the port's own stack, `:0e` past every bridge hook: an IP packet
/// to such a group reached the host's addresses unjudged.
pub const GROUP_FWD_MASK: u16 = 0xfff8;

/// `ip link set BRIDGE type bridge no_linklocal_learn 1 group_fwd_mask 0xfff8`.
fn bridge_options_message(bridge: u32, seq: u32) -> Vec<u8> {
    let mut link = LinkMessage::default();
    link.header.index = bridge;
    let flag = BridgeBooleanOptionFlags::NoLinkLocalLearn;
    link.attributes.push(LinkAttribute::LinkInfo(vec![
        LinkInfo::Kind(InfoKind::Bridge),
        LinkInfo::Data(InfoData::Bridge(vec![
            InfoBridge::MultiBoolOpt(BridgeBooleanOptions {
                value: flag,
                mask: flag,
            }),
            InfoBridge::GroupFwdMask(GROUP_FWD_MASK),
        ])),
    ]));
    serialize(
        RouteNetlinkMessage::NewLink(link),
        NLM_F_REQUEST | NLM_F_ACK,
        seq,
    )
}

/// `bridge fdb replace MAC dev PORT master static sticky`. NUD_NOARP exactly (iproute2 adds
/// NUD_REACHABLE), so that replacing an unchanged entry changes and notifies nothing.
fn static_entry_message(port: u32, mac: &Mac, seq: u32) -> Vec<u8> {
    let mut neighbour = NeighbourMessage::default();
    neighbour.header.family = AddressFamily::Bridge;
    neighbour.header.ifindex = port;
    neighbour.header.state = NeighbourState::Noarp;
    neighbour.header.flags = NeighbourFlags::Controller | NeighbourFlags::Sticky;
    neighbour
        .attributes
        .push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
    serialize(
        RouteNetlinkMessage::NewNeighbour(neighbour),
        NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
        seq,
    )
}

/// `ip link set PORT type bridge_slave learning off flood off flush`: the port learns
/// nothing, gets no unknown unicast, and forgets what it learnt (static entries stay).
fn port_flags_message(port: u32, seq: u32) -> Vec<u8> {
    let mut link = LinkMessage::default();
    link.header.index = port;
    link.attributes
        .push(LinkAttribute::LinkInfo(vec![LinkInfo::PortData(
            InfoPortData::BridgePort(vec![
                InfoBridgePort::Learning(false),
                InfoBridgePort::UnicastFlood(false),
                InfoBridgePort::Flush,
            ]),
        )]));
    serialize(
        RouteNetlinkMessage::NewLink(link),
        NLM_F_REQUEST | NLM_F_ACK,
        seq,
    )
}

/// Programs `bridge` (in the calling thread's network namespace): no learning from
/// link-local frames; each of `ports` (a port's name and its container's MAC) with its
/// MAC static on it, then learning and unknown-unicast flooding off and its learnt
/// entries flushed. The flags go only to ports whose entry the kernel took: a port
/// without it would reach its container by unicast no more. A port that no longer exists
/// is skipped (its container went away).
pub fn bind_ports(bridge: &str, ports: &[(String, Mac)]) -> Result<(), KernelError> {
    let index = nix::net::if_::if_nametoindex(bridge)
        .map_err(|_| KernelError::NoSuchBridge(bridge.to_owned()))?;
    let present: Vec<(u32, &str, &Mac)> = ports
        .iter()
        .filter_map(|(name, mac)| {
            let port = nix::net::if_::if_nametoindex(name.as_str()).ok()?;
            Some((port, name.as_str(), mac))
        })
        .collect();
    // First the bridge's option and the entries, then the flags of the ports that got one.
    let mut first = vec![(
        bridge_options_message(index, 1),
        format!("no_linklocal_learn and group_fwd_mask on bridge {bridge}"),
    )];
    for (seq, (port, name, mac)) in (2..).zip(&present) {
        first.push((
            static_entry_message(*port, mac, seq),
            format!("a static entry for {} on port {name}", mac_text(mac)),
        ));
    }
    let refused = exchange(&first)?;
    let entered: Vec<&(u32, &str, &Mac)> = present
        .iter()
        .enumerate()
        .filter(|(i, _)| !refused.iter().any(|(seq, _)| *seq == *i + 2))
        .map(|(_, p)| p)
        .collect();
    let second: Vec<(Vec<u8>, String)> = (1..)
        .zip(&entered)
        .map(|(seq, (port, name, _))| {
            (
                port_flags_message(*port, seq),
                format!("learning and flooding off on port {name}"),
            )
        })
        .collect();
    let refused_flags = if second.is_empty() {
        Vec::new()
    } else {
        exchange(&second)?
    };
    match refused.into_iter().chain(refused_flags).next() {
        Some((_, error)) => Err(error),
        None => Ok(()),
    }
}

/// Sends `messages` (each with sequence number its place + 1, and what it does) in one
/// datagram and reads every acknowledgement: the refused ones, by sequence number.
fn exchange(messages: &[(Vec<u8>, String)]) -> Result<Vec<(usize, KernelError)>, KernelError> {
    let sock = netlink_socket(SockProtocol::NetlinkRoute)?;
    set_receive_timeout(&sock)?;
    let bytes: Vec<u8> = messages
        .iter()
        .flat_map(|(m, _)| m.iter().copied())
        .collect();
    send_all(&sock, &bytes)?;
    let mut answered = 0;
    let mut refused = Vec::new();
    read_acks(&sock, |seq, errno| {
        answered += 1;
        if errno != 0 {
            let what = messages
                .get((seq as usize).wrapping_sub(1))
                .map_or_else(|| format!("message {seq}"), |(_, what)| what.clone());
            refused.push((
                seq as usize,
                KernelError::Refused {
                    what,
                    source: io::Error::from_raw_os_error(errno),
                    log_rule: false,
                },
            ));
        }
        answered == messages.len()
    })?;
    Ok(refused)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `bridge fdb replace 02:42:0a:14:00:03 dev veth1 master static sticky` sends
    /// (iproute2 6.1, strace), with ndm_state NUD_NOARP alone (iproute2 adds 0x02).
    #[test]
    fn the_static_entry_is_what_iproute2_sends_but_for_reachable() {
        let mac = [0x02, 0x42, 0x0a, 0x14, 0x00, 0x03];
        let built = static_entry_message(9, &mac, 1);
        let expected: &[u8] = &[
            0x28, 0, 0, 0, 28, 0, 0x05, 0x05, 1, 0, 0, 0, 0, 0, 0, 0, // nlmsghdr
            7, 0, 0, 0, 9, 0, 0, 0, 0x40, 0, 0x44,
            0, // ndmsg: AF_BRIDGE, NOARP, MASTER|STICKY
            0x0a, 0, 2, 0, 0x02, 0x42, 0x0a, 0x14, 0x00, 0x03, 0, 0, // NDA_LLADDR
        ];
        assert_eq!(built, expected);
    }

    #[test]
    fn the_port_flags_are_slave_data_of_the_port() {
        let built = port_flags_message(9, 2);
        // nlmsghdr (RTM_NEWLINK, REQUEST|ACK), ifinfomsg for index 9, then IFLA_LINKINFO {
        // IFLA_INFO_SLAVE_DATA { LEARNING 0, UNICAST_FLOOD 0, FLUSH } }.
        assert_eq!(&built[4..8], &[16, 0, 0x05, 0]);
        assert_eq!(&built[20..24], &9u32.to_ne_bytes());
        // NLA_F_NESTED (bit 15 of an attribute's type) is optional for these two.
        let mut attrs = built[32..].to_vec();
        attrs[3] &= 0x7f;
        attrs[7] &= 0x7f;
        assert_eq!(&attrs[2..4], &[18, 0], "IFLA_LINKINFO");
        assert_eq!(&attrs[6..8], &[5, 0], "IFLA_INFO_SLAVE_DATA");
        assert_eq!(&attrs[8..16], &[5, 0, 8, 0, 0, 0, 0, 0], "learning off");
        assert_eq!(&attrs[16..24], &[5, 0, 9, 0, 0, 0, 0, 0], "flood off");
        assert_eq!(&attrs[24..28], &[4, 0, 24, 0], "flush");
        assert_eq!(attrs.len(), 28);
    }

    #[test]
    fn bridge_options_set_no_linklocal_learn_alone_and_the_forward_mask() {
        let built = bridge_options_message(7, 1);
        // ... IFLA_INFO_DATA { IFLA_BR_MULTI_BOOLOPT: optval 1, optmask 1;
        // IFLA_BR_GROUP_FWD_MASK: 0xfff8 (a u16, padded) }
        let tail = &built[built.len() - 20..];
        assert_eq!(
            tail,
            &[
                12, 0, 46, 0, 1, 0, 0, 0, 1, 0, 0, 0, 6, 0, 9, 0, 0xf8, 0xff, 0, 0
            ]
        );
    }
}
