//! The ports of a bridge, and behind each, the MAC address of its veth peer: the
//! container's own interface, in the container's network namespace.
//!
//! Read from the kernel's links over rtnetlink, never from the bridge's forwarding
//! database (a container writes that one: any source address it sends is learnt). One
//! RTM_GETLINK dump lists every link here with its master (the bridge a port is enslaved
//! to) and, for a veth, its peer's interface index and, when the peer lives in another
//! network namespace, that namespace's id as seen from here (IFLA_LINK_NETNSID). The
//! peer's address is then one RTM_GETLINK aimed at that namespace (IFLA_TARGET_NETNSID):
//! CAP_NET_ADMIN over the peer's namespace suffices, no setns and no `/proc/<pid>/ns`.
//!
//! A port is only reported when the kernel vouches for the pair both ways (the peer is a
//! veth whose own peer index is the port's): a port that is not a veth, or whose peer
//! went away meanwhile, is left out rather than guessed.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use netlink_packet_core::{
    NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REQUEST, NLMSG_DONE, NLMSG_ERROR, NetlinkHeader,
    NetlinkMessage, NetlinkPayload, NlasIterator, Parseable, ParseableParametrized,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::link::{
    InfoKind, LinkAttribute, LinkExtentMask, LinkHeader, LinkMessage,
};
use nix::errno::Errno;
use nix::sys::socket::{MsgFlags, SockProtocol, recv};

use crate::kernel::KernelError;
use crate::kernel::netlink::{
    Answer, Notice, netlink_socket, next_notice, parse_answers, send_all, set_receive_timeout,
};

pub use crate::plan::Mac;

/// One bridge as the kernel describes it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BridgePorts {
    /// The bridge device's own address.
    pub mac: Option<Mac>,
    /// Its veth ports whose peer could be read, sorted by name.
    pub ports: Vec<PortLink>,
}

/// A host-side bridge port and the address of its veth peer.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct PortLink {
    /// The host-side port (`veth1a2b3c`).
    pub name: String,
    /// The address of the veth peer, inside the container's namespace.
    pub peer_mac: Mac,
}

// Link attributes (linux/if_link.h) this module reads; the crate decodes their values.
const IFLA_ADDRESS: u16 = 1;
const IFLA_IFNAME: u16 = 3;
const IFLA_LINK: u16 = 5;
const IFLA_MASTER: u16 = 10;
const IFLA_LINKINFO: u16 = 18;
const IFLA_LINK_NETNSID: u16 = 37;
/// Called IFLA_IF_NETNSID before Linux 4.17 (`LinkAttribute::IfNetnsId` in the crate).
const IFLA_TARGET_NETNSID: u16 = 46;
/// struct ifinfomsg.
const IFINFOMSG_LEN: usize = 16;
/// A dump that links changed under (NLM_F_DUMP_INTR) is taken again, this many times.
const DUMP_TRIES: usize = 5;

/// What this module needs of one RTM_NEWLINK message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Link {
    index: u32,
    name: String,
    mac: Option<Mac>,
    kind: Option<InfoKind>,
    /// IFLA_MASTER: the bridge (or bond…) this link is enslaved to.
    master: Option<u32>,
    /// IFLA_LINK: for a veth, its peer's index (in the peer's namespace).
    link: Option<u32>,
    /// IFLA_LINK_NETNSID: the namespace of `link`, when it is not the link's own.
    link_netnsid: Option<i32>,
    /// IFLA_TARGET_NETNSID, echoed by the kernel in answer to a request that named it.
    target_netnsid: Option<i32>,
}

impl Link {
    /// Whether this link is the veth peer of `port`.
    fn is_peer_of(&self, port: &Link) -> bool {
        self.kind == Some(InfoKind::Veth) && self.link == Some(port.index)
    }
}

/// Decodes the body of an RTM_NEWLINK message (ifinfomsg and attributes). Attributes this
/// module does not read are not decoded, so an attribute the crate does not know (or
/// decodes wrongly) on some unrelated link cannot fail the whole dump.
fn parse_link(body: &[u8]) -> Option<Link> {
    let header = LinkHeader::parse(body).ok()?;
    let mut link = Link {
        index: header.index,
        ..Link::default()
    };
    for nla in NlasIterator::new(body.get(IFINFOMSG_LEN..)?) {
        let Ok(nla) = nla else { break };
        match nla.kind() {
            IFLA_LINKINFO => {
                // The kind only: a port's linkinfo also carries its bridge-port data.
                link.kind = NlasIterator::new(nla.value())
                    .filter_map(Result::ok)
                    .find_map(|info| InfoKind::parse(&info).ok());
            }
            IFLA_ADDRESS | IFLA_IFNAME | IFLA_LINK | IFLA_MASTER | IFLA_LINK_NETNSID
            | IFLA_TARGET_NETNSID => {
                match LinkAttribute::parse_with_param(&nla, header.interface_family) {
                    Ok(LinkAttribute::Address(mac)) => link.mac = mac.try_into().ok(),
                    Ok(LinkAttribute::IfName(name)) => link.name = name,
                    // A veth whose peer is gone reports peer index 0.
                    Ok(LinkAttribute::Link(index)) => link.link = (index != 0).then_some(index),
                    Ok(LinkAttribute::Controller(index)) => {
                        link.master = (index != 0).then_some(index);
                    }
                    Ok(LinkAttribute::LinkNetNsId(id)) => link.link_netnsid = Some(id),
                    Ok(LinkAttribute::IfNetnsId(id)) => link.target_netnsid = Some(id),
                    _ => {}
                }
            }
            _ => {}
        }
    }
    Some(link)
}

/// Where a port's peer is, according to the dump.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Peer {
    /// In this namespace, and listed in the dump: its address, if it has one.
    Here(Option<Mac>),
    /// In the namespace with id `nsid` (as seen from here), at interface `index`.
    Elsewhere { index: u32, nsid: i32 },
}

/// One requested bridge as the dump shows it: its address and its veth ports.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Found<'a> {
    mac: Option<Mac>,
    ports: Vec<(&'a Link, Peer)>,
}

/// The requested bridges in a dump, with their veth ports and where each port's peer is.
fn find<'a>(links: &'a [Link], bridges: &BTreeSet<String>) -> BTreeMap<String, Found<'a>> {
    let by_index: HashMap<u32, &Link> = links.iter().map(|l| (l.index, l)).collect();
    let mut found: BTreeMap<String, Found<'a>> = BTreeMap::new();
    let mut names: HashMap<u32, &str> = HashMap::new();
    for link in links {
        if link.kind == Some(InfoKind::Bridge) && bridges.contains(&link.name) {
            names.insert(link.index, &link.name);
            found.insert(
                link.name.clone(),
                Found {
                    mac: link.mac,
                    ports: Vec::new(),
                },
            );
        }
    }
    for port in links {
        let Some(bridge) = port.master.and_then(|m| names.get(&m)) else {
            continue;
        };
        let (Some(InfoKind::Veth), Some(index)) = (&port.kind, port.link) else {
            continue;
        };
        let peer = match port.link_netnsid {
            Some(nsid) => Peer::Elsewhere { index, nsid },
            None => match by_index.get(&index) {
                Some(peer) if peer.is_peer_of(port) => Peer::Here(peer.mac),
                _ => continue,
            },
        };
        if let Some(entry) = found.get_mut(*bridge) {
            entry.ports.push((port, peer));
        }
    }
    found
}

/// In an overlay network's namespace (the calling thread's): the bridge with a VXLAN
/// port, and that port (`br0`, `vxlan0` as Docker names them, read from the kernel).
pub fn overlay_bridge() -> Result<Option<(String, String)>, KernelError> {
    let sock = netlink_socket(SockProtocol::NetlinkRoute)?;
    set_receive_timeout(&sock)?;
    let links = Reader::new(sock).dump_links()?;
    let mut pairs: Vec<(String, String)> = links
        .iter()
        .filter(|l| l.kind == Some(InfoKind::Vxlan))
        .filter_map(|vxlan| {
            let bridge = links
                .iter()
                .find(|b| Some(b.index) == vxlan.master && b.kind == Some(InfoKind::Bridge))?;
            Some((bridge.name.clone(), vxlan.name.clone()))
        })
        .collect();
    pairs.sort();
    if pairs.len() > 1 {
        // One bridge and VXLAN device per subnet: not planned (yet); said, not half done.
        let bridges: Vec<&str> = pairs.iter().map(|(b, _)| b.as_str()).collect();
        return Err(KernelError::Build {
            what: "the overlay network's rules".into(),
            reason: format!(
                "it has several subnets (bridges {}), which trafficjam does not isolate yet",
                bridges.join(", ")
            ),
        });
    }
    Ok(pairs.into_iter().next())
}

/// The ports of each of `bridges` (in the calling thread's network namespace) that are
/// veths, with the address of each one's peer. A bridge that does not exist (or is not a
/// bridge) is absent from the map; a port that is not a veth, or whose peer went away
/// while it was being read, is absent from its bridge's ports.
///
/// Needs CAP_NET_ADMIN over the peers' namespaces (the user namespace owning them), for
/// IFLA_TARGET_NETNSID; the kernel refusing that (EACCES, say) is an error, not a port
/// left out.
pub fn bridge_ports(
    bridges: &BTreeSet<String>,
) -> Result<BTreeMap<String, BridgePorts>, KernelError> {
    let sock = netlink_socket(SockProtocol::NetlinkRoute)?;
    set_receive_timeout(&sock)?;
    let mut reader = Reader::new(sock);
    let links = reader.dump_links()?;
    let mut out = BTreeMap::new();
    for (bridge, found) in find(&links, bridges) {
        let mut ports = Vec::new();
        for (port, peer) in found.ports {
            let peer_mac = match peer {
                Peer::Here(mac) => mac,
                Peer::Elsewhere { index, nsid } => reader.peer_mac(port, index, nsid)?,
            };
            if let Some(peer_mac) = peer_mac {
                ports.push(PortLink {
                    name: port.name.clone(),
                    peer_mac,
                });
            }
        }
        ports.sort();
        out.insert(
            bridge,
            BridgePorts {
                mac: found.mac,
                ports,
            },
        );
    }
    Ok(out)
}

/// An RTM_GETLINK request, without stats in the answer (which are most of its size).
fn get_link_message(mut link: LinkMessage, flags: u16, seq: u32) -> Vec<u8> {
    link.attributes
        .push(LinkAttribute::ExtMask(vec![LinkExtentMask::SkipStats]));
    let mut header = NetlinkHeader::default();
    header.flags = flags;
    header.sequence_number = seq;
    let mut message = NetlinkMessage::new(
        header,
        NetlinkPayload::InnerMessage(RouteNetlinkMessage::GetLink(link)),
    );
    message.finalize();
    let mut bytes = vec![0; message.buffer_len()];
    message.serialize(&mut bytes);
    bytes
}

/// A dump of every link in the socket's namespace.
fn dump_message(seq: u32) -> Vec<u8> {
    get_link_message(LinkMessage::default(), NLM_F_REQUEST | NLM_F_DUMP, seq)
}

/// The link with index `index` in the namespace with id `nsid` (as seen from the socket's).
fn peer_message(index: u32, nsid: i32, seq: u32) -> Vec<u8> {
    let mut link = LinkMessage::default();
    link.header.index = index;
    link.attributes.push(LinkAttribute::IfNetnsId(nsid));
    get_link_message(link, NLM_F_REQUEST, seq)
}

/// The errno an NLMSG_ERROR or NLMSG_DONE message carries (0 when there is none).
fn errno_of(answer: &Answer<'_>) -> Result<i32, KernelError> {
    if answer.kind == NLMSG_DONE && answer.body.len() < 4 {
        return Ok(0);
    }
    answer.errno()
}

/// One route netlink socket, with a receive buffer reused by every request.
struct Reader {
    sock: OwnedFd,
    buf: Vec<u8>,
    seq: u32,
}

impl Reader {
    fn new(sock: OwnedFd) -> Self {
        // Dump datagrams are at most 32 KiB; one link answer is a few KiB.
        Reader {
            sock,
            buf: vec![0; 1 << 16],
            seq: 0,
        }
    }

    fn next_seq(&mut self) -> u32 {
        self.seq += 1;
        self.seq
    }

    /// Hands every answer to the request `seq` to `on_answer` until it returns a result.
    fn read<T>(
        &mut self,
        seq: u32,
        mut on_answer: impl FnMut(Answer<'_>) -> Option<Result<T, KernelError>>,
    ) -> Result<T, KernelError> {
        loop {
            let n = match recv(self.sock.as_raw_fd(), &mut self.buf, MsgFlags::empty()) {
                Ok(n) => n,
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(KernelError::Receive(e.into())),
            };
            let mine = &mut |answer: Answer<'_>| {
                if answer.seq == seq {
                    on_answer(answer)
                } else {
                    None
                }
            };
            if let Some(result) = parse_answers(&self.buf[..n], mine) {
                return result;
            }
        }
    }

    /// Every link in the namespace, from one dump that no change interrupted.
    fn dump_links(&mut self) -> Result<Vec<Link>, KernelError> {
        for _ in 0..DUMP_TRIES {
            let seq = self.next_seq();
            send_all(&self.sock, &dump_message(seq))?;
            let mut links = Vec::new();
            let mut interrupted = false;
            self.read(seq, |answer| {
                interrupted |= answer.flags & NLM_F_DUMP_INTR != 0;
                match answer.kind {
                    NLMSG_DONE | NLMSG_ERROR => Some(match errno_of(&answer) {
                        Ok(0) => Ok(()),
                        Ok(errno) => Err(KernelError::Refused {
                            what: "the link dump".into(),
                            source: io::Error::from_raw_os_error(errno),
                            log_rule: false,
                        }),
                        Err(e) => Err(e),
                    }),
                    libc::RTM_NEWLINK => {
                        links.extend(parse_link(answer.body));
                        None
                    }
                    _ => None,
                }
            })?;
            if !interrupted {
                return Ok(links);
            }
        }
        Err(KernelError::Receive(io::Error::other(format!(
            "links kept changing during the link dump ({DUMP_TRIES} tries)"
        ))))
    }

    /// The address of `port`'s veth peer, interface `index` in the namespace `nsid`; None
    /// when it is gone (or is not `port`'s peer after all).
    fn peer_mac(&mut self, port: &Link, index: u32, nsid: i32) -> Result<Option<Mac>, KernelError> {
        let seq = self.next_seq();
        send_all(&self.sock, &peer_message(index, nsid, seq))?;
        self.read(seq, |answer| match answer.kind {
            NLMSG_ERROR => Some(match answer.errno() {
                // Without NLM_F_ACK a success has no acknowledgement; just in case.
                Ok(0) => Ok(None),
                // The peer is gone (ENODEV), or its whole namespace is (EINVAL: the nsid
                // names no namespace any more).
                Ok(libc::ENODEV | libc::EINVAL) => Ok(None),
                Ok(errno) => Err(KernelError::Refused {
                    what: format!(
                        "reading the veth peer of {} (index {index} in namespace id {nsid})",
                        port.name
                    ),
                    source: io::Error::from_raw_os_error(errno),
                    log_rule: false,
                }),
                Err(e) => Err(e),
            }),
            libc::RTM_NEWLINK => Some(Ok(parse_link(answer.body)
                .filter(|peer| answer_is_peer(peer, port, index, nsid))
                .and_then(|peer| peer.mac))),
            _ => None,
        })
    }
}

/// Whether an answer to [`peer_message`] is `port`'s peer. The echoed target id proves
/// the kernel looked in the peer's namespace (a kernel that ignored the attribute would
/// answer with link `index` of our own), the back link that the pair was not replaced
/// meanwhile.
fn answer_is_peer(peer: &Link, port: &Link, index: u32, nsid: i32) -> bool {
    peer.index == index && peer.target_netnsid == Some(nsid) && peer.is_peer_of(port)
}

/// The rtnetlink multicast group of link changes (RTNLGRP_LINK).
const RTNLGRP_LINK: u32 = 1;

/// A socket subscribed to link changes in the calling thread's network namespace.
pub fn subscribe_links() -> Result<OwnedFd, KernelError> {
    let sock = netlink_socket(SockProtocol::NetlinkRoute)?;
    nix::sys::socket::bind(
        sock.as_raw_fd(),
        &nix::sys::socket::NetlinkAddr::new(0, 1 << (RTNLGRP_LINK - 1)),
    )
    .map_err(|e| KernelError::Socket(e.into()))?;
    Ok(sock)
}

/// Whether a link notification may change a bridge's ports: a link enslaved to a master
/// (a port added, or changed), or a link deleted.
fn moves_ports(answer: &Answer<'_>) -> bool {
    match answer.kind {
        libc::RTM_DELLINK => true,
        libc::RTM_NEWLINK => parse_link(answer.body).is_some_and(|l| l.master.is_some()),
        _ => false,
    }
}

/// Reads link notifications from `sock` (see [`subscribe_links`]) and calls `report` after
/// every datagram that may have moved a bridge port (and when notifications were lost),
/// until it returns false.
pub fn watch_links(sock: &OwnedFd, mut report: impl FnMut() -> bool) -> Result<(), KernelError> {
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = match next_notice(sock, &mut buf)? {
            Notice::Datagram(n) => n,
            // Notifications were lost: anything may have moved.
            Notice::Lost if !report() => return Ok(()),
            Notice::Lost | Notice::Idle => continue,
        };
        let mut moved = false;
        parse_answers::<()>(&buf[..n], &mut |answer| {
            moved |= moves_ports(&answer);
            None
        });
        if moved && !report() {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use netlink_packet_core::Emitable;
    use netlink_packet_route::link::{InfoBridgePort, InfoPortData, InfoPortKind, LinkInfo};

    use super::*;

    const MAC_A: Mac = [0x02, 0x42, 0xac, 0x11, 0x00, 0x02];
    const MAC_B: Mac = [0x02, 0x42, 0xac, 0x11, 0x00, 0x03];

    /// The body of an RTM_NEWLINK message (as the kernel would send it) with these
    /// attributes.
    fn body(index: u32, attributes: Vec<LinkAttribute>) -> Vec<u8> {
        let mut link = LinkMessage::default();
        link.header.index = index;
        link.attributes = attributes;
        let mut bytes = vec![0; link.buffer_len()];
        link.emit(&mut bytes);
        bytes
    }

    fn link(index: u32, name: &str, kind: InfoKind) -> Link {
        Link {
            index,
            name: name.into(),
            kind: Some(kind),
            ..Link::default()
        }
    }

    fn port(index: u32, name: &str, master: u32, peer: u32, nsid: Option<i32>) -> Link {
        Link {
            master: Some(master),
            link: Some(peer),
            link_netnsid: nsid,
            ..link(index, name, InfoKind::Veth)
        }
    }

    #[test]
    fn a_port_message_is_read_with_its_kind_under_its_bridge_port_data() {
        let bytes = body(
            7,
            vec![
                LinkAttribute::IfName("veth1a2b3c".into()),
                LinkAttribute::Address(MAC_A.to_vec()),
                LinkAttribute::Link(2),
                LinkAttribute::Controller(3),
                LinkAttribute::LinkInfo(vec![
                    LinkInfo::Kind(InfoKind::Veth),
                    LinkInfo::PortKind(InfoPortKind::Bridge),
                    LinkInfo::PortData(InfoPortData::BridgePort(vec![InfoBridgePort::Priority(
                        32,
                    )])),
                ]),
                LinkAttribute::LinkNetNsId(4),
                LinkAttribute::Mtu(1500),
            ],
        );
        let parsed = parse_link(&bytes).unwrap();
        assert_eq!(
            parsed,
            Link {
                index: 7,
                name: "veth1a2b3c".into(),
                mac: Some(MAC_A),
                kind: Some(InfoKind::Veth),
                master: Some(3),
                link: Some(2),
                link_netnsid: Some(4),
                target_netnsid: None,
            }
        );
        // An answer to a request aimed at another namespace says which.
        let bytes = body(2, vec![LinkAttribute::IfNetnsId(4)]);
        assert_eq!(parse_link(&bytes).unwrap().target_netnsid, Some(4));
        // A veth whose peer is gone: peer index 0. Not an address: no MAC.
        let bytes = body(
            2,
            vec![LinkAttribute::Link(0), LinkAttribute::Address(vec![0; 4])],
        );
        let parsed = parse_link(&bytes).unwrap();
        assert_eq!((parsed.link, parsed.mac), (None, None));
        assert!(parse_link(&[0; 8]).is_none());
    }

    #[test]
    fn ports_are_the_veths_enslaved_to_a_requested_bridge() {
        let links = vec![
            Link {
                mac: Some(MAC_B),
                ..link(3, "br-a", InfoKind::Bridge)
            },
            link(4, "br-b", InfoKind::Bridge),
            // A bond with a wanted name is not a bridge.
            link(5, "bond0", InfoKind::Bond),
            // Peer in a container.
            port(10, "veth-c1", 3, 2, Some(1)),
            // Peer here.
            port(11, "veth-h", 3, 12, None),
            Link {
                mac: Some(MAC_A),
                link: Some(11),
                ..link(12, "veth-h-peer", InfoKind::Veth)
            },
            // Peer here, but not its peer (the pair changed meanwhile): left out.
            port(13, "veth-x", 3, 14, None),
            Link {
                mac: Some(MAC_A),
                link: Some(99),
                ..link(14, "veth-x-peer", InfoKind::Veth)
            },
            // Not a veth: left out.
            Link {
                master: Some(3),
                ..link(15, "dummy0", InfoKind::Dummy)
            },
            // Another bridge's port.
            port(16, "veth-other", 4, 2, Some(2)),
            // On a bridge not asked for.
            port(17, "veth-y", 5, 2, Some(3)),
        ];
        let wanted: BTreeSet<String> = ["br-a", "bond0", "br-gone"].map(String::from).into();
        let found = find(&links, &wanted);
        assert_eq!(found.keys().collect::<Vec<_>>(), ["br-a"]);
        let br = &found["br-a"];
        assert_eq!(br.mac, Some(MAC_B));
        let ports: Vec<(&str, &Peer)> =
            br.ports.iter().map(|(l, p)| (l.name.as_str(), p)).collect();
        assert_eq!(
            ports,
            [
                ("veth-c1", &Peer::Elsewhere { index: 2, nsid: 1 }),
                ("veth-h", &Peer::Here(Some(MAC_A))),
            ]
        );
    }

    #[test]
    fn a_peer_answer_counts_only_from_the_peer_namespace_and_pointing_back() {
        let port = port(10, "veth-c1", 3, 2, Some(1));
        let peer = Link {
            mac: Some(MAC_A),
            link: Some(10),
            link_netnsid: Some(0),
            target_netnsid: Some(1),
            ..link(2, "eth0", InfoKind::Veth)
        };
        assert!(answer_is_peer(&peer, &port, 2, 1));
        // A kernel that ignored IFLA_TARGET_NETNSID answered with our own link 2.
        let ours = Link {
            target_netnsid: None,
            ..peer.clone()
        };
        assert!(!answer_is_peer(&ours, &port, 2, 1));
        // Another device got the index meanwhile.
        let other = Link {
            link: Some(11),
            ..peer.clone()
        };
        assert!(!answer_is_peer(&other, &port, 2, 1));
        let dummy = Link {
            kind: Some(InfoKind::Dummy),
            ..peer
        };
        assert!(!answer_is_peer(&dummy, &port, 2, 1));
    }

    #[test]
    fn requests_name_the_peer_and_its_namespace() {
        let bytes = peer_message(2, 5, 9);
        // nlmsghdr: RTM_GETLINK, NLM_F_REQUEST only, seq 9; ifinfomsg index 2.
        assert_eq!(u16::from_ne_bytes([bytes[4], bytes[5]]), libc::RTM_GETLINK);
        assert_eq!(u16::from_ne_bytes([bytes[6], bytes[7]]), NLM_F_REQUEST);
        assert_eq!(u32::from_ne_bytes(bytes[8..12].try_into().unwrap()), 9);
        let request = parse_link(&bytes[16..]).unwrap();
        assert_eq!((request.index, request.target_netnsid), (2, Some(5)));
        let dump = dump_message(1);
        assert_eq!(
            u16::from_ne_bytes([dump[6], dump[7]]),
            NLM_F_REQUEST | NLM_F_DUMP
        );
    }
}
