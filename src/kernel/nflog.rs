//! The kernel's NFLOG (nfnetlink_log): our deny chains report each drop (rate-limited) to
//! one group, and the daemon reads that group here, with CAP_NET_ADMIN only. Each message
//! carries the rule's prefix (`tj REASON NETWORK`), the input interfaces and the first
//! bytes of the packet, from which the addresses, protocol and ports are read.
//!
//! Layouts are linux/netfilter/nfnetlink_log.h's; only one socket may bind a group, so a
//! group taken by another program (ulogd) is an error that says so.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::OwnedFd;

use nix::sys::socket::{SockProtocol, setsockopt, sockopt};
use nix::sys::time::TimeVal;

use crate::kernel::KernelError;
use crate::kernel::netlink::{
    Notice, netlink_socket, next_notice, parse_answers, push_attr, read_acks, send_all,
};
use crate::kernel::nftables::dump::{attribute, string};
use crate::plan::names::{LOG_PREFIX_MAX, LOG_PREFIX_TAG};
use crate::plan::{Mac, Reason};

const NFNL_SUBSYS_ULOG: u16 = 4;
const NFULNL_MSG_PACKET: u16 = 0;
const NFULNL_MSG_CONFIG: u16 = 1;

const NFULA_CFG_CMD: u16 = 1;
const NFULA_CFG_MODE: u16 = 2;
const NFULA_CFG_TIMEOUT: u16 = 4;
const NFULA_CFG_QTHRESH: u16 = 5;
const NFULNL_CFG_CMD_BIND: u8 = 1;
const NFULNL_COPY_PACKET: u8 = 2;

const NFULA_PACKET_HDR: u16 = 1;
const NFULA_IFINDEX_INDEV: u16 = 4;
const NFULA_IFINDEX_PHYSINDEV: u16 = 6;
const NFULA_HWADDR: u16 = 8;
const NFULA_PAYLOAD: u16 = 9;
const NFULA_PREFIX: u16 = 10;

/// Enough of a packet for its IPv6 header, a few extension headers and the ports.
const COPY_RANGE: u32 = 160;
/// The kernel sends what it holds after this long (hundredths of a second) or this many
/// packets, whichever comes first: a drop is seen within 50 ms, a flood in batches.
const FLUSH_TIMEOUT: u32 = 5;
const FLUSH_PACKETS: u32 = 32;

/// What one NFLOG message says about a dropped packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedPacket {
    pub reason: Option<Reason>,
    /// The network named by the prefix (cut when the name is long: then `bridge` says).
    pub network: String,
    /// The interface the packet came in on: the bridge (its port is `port`).
    pub bridge_index: Option<u32>,
    pub port_index: Option<u32>,
    pub source_mac: Option<Mac>,
    pub packet: PacketHeaders,
}

/// The headers of a logged packet, as far as they were copied and could be read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PacketHeaders {
    pub ethertype: u16,
    pub source: Option<IpAddr>,
    pub destination: Option<IpAddr>,
    /// IP protocol number (6 TCP, 17 UDP, 1 ICMP, 58 ICMPv6).
    pub protocol: Option<u8>,
    pub source_port: Option<u16>,
    pub destination_port: Option<u16>,
    /// ICMP(v6) type.
    pub icmp_type: Option<u8>,
    /// A fragment (a later one has no ports to read).
    pub fragment: bool,
}

pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
pub const ETHERTYPE_ARP: u16 = 0x0806;

/// Reads the network and transport headers at the start of `payload`.
pub fn parse_headers(ethertype: u16, payload: &[u8]) -> PacketHeaders {
    let mut h = PacketHeaders {
        ethertype,
        ..PacketHeaders::default()
    };
    let byte = |at: usize| payload.get(at).copied();
    let u16_at = |at: usize| {
        payload
            .get(at..at + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
    };
    let transport = match ethertype {
        ETHERTYPE_IPV4 => {
            let (Some(first), Some(addrs)) = (byte(0), payload.get(12..20)) else {
                return h;
            };
            let header_len = usize::from(first & 0x0f) * 4;
            h.protocol = byte(9);
            h.source = Some(IpAddr::V4(Ipv4Addr::new(
                addrs[0], addrs[1], addrs[2], addrs[3],
            )));
            h.destination = Some(IpAddr::V4(Ipv4Addr::new(
                addrs[4], addrs[5], addrs[6], addrs[7],
            )));
            let frag = u16_at(6).unwrap_or(0);
            h.fragment = frag & 0x3fff != 0;
            // Only the first fragment (offset 0) carries the transport header.
            (frag & 0x1fff == 0).then_some(header_len)
        }
        ETHERTYPE_IPV6 => {
            let Some(addrs) = payload.get(8..40) else {
                return h;
            };
            let src: [u8; 16] = addrs[..16].try_into().expect("16 bytes");
            let dst: [u8; 16] = addrs[16..].try_into().expect("16 bytes");
            h.source = Some(IpAddr::V6(Ipv6Addr::from(src)));
            h.destination = Some(IpAddr::V6(Ipv6Addr::from(dst)));
            let mut next = byte(6);
            let mut at = 40;
            let mut first_fragment = true;
            // Hop-by-hop, routing, fragment and destination options headers.
            while let Some(kind @ (0 | 43 | 44 | 60)) = next {
                next = byte(at);
                if kind == 44 {
                    h.fragment = true;
                    first_fragment = u16_at(at + 2).is_some_and(|f| f & 0xfff8 == 0);
                    at += 8;
                } else {
                    at += (usize::from(byte(at + 1).unwrap_or(0)) + 1) * 8;
                }
            }
            h.protocol = next;
            first_fragment.then_some(at)
        }
        ETHERTYPE_ARP => {
            // Sender and target protocol addresses of an Ethernet/IPv4 ARP packet.
            if let (Some(s), Some(t)) = (payload.get(14..18), payload.get(24..28)) {
                h.source = Some(IpAddr::V4(Ipv4Addr::new(s[0], s[1], s[2], s[3])));
                h.destination = Some(IpAddr::V4(Ipv4Addr::new(t[0], t[1], t[2], t[3])));
            }
            None
        }
        _ => None,
    };
    if let (Some(at), Some(proto)) = (transport, h.protocol) {
        match proto {
            6 | 17 | 132 | 136 => {
                h.source_port = u16_at(at);
                h.destination_port = u16_at(at + 2);
            }
            1 | 58 => h.icmp_type = byte(at),
            _ => {}
        }
    }
    h
}

/// Reads one NFLOG packet message (its body: `nfgenmsg`, then attributes); `None` when it
/// is not one of ours.
pub fn parse_packet(body: &[u8]) -> Option<LoggedPacket> {
    let attrs = body.get(4..)?;
    let prefix = attribute(attrs, NFULA_PREFIX).map(string)?;
    let mut words = prefix.splitn(3, ' ');
    if words.next() != Some(LOG_PREFIX_TAG) {
        return None;
    }
    let reason = words.next().and_then(Reason::parse);
    // A prefix the kernel could not hold whole names a network cut short, which could be
    // another network's full name: then the bridge alone says which network it is.
    let network = match words.next() {
        Some(name) if prefix.len() < LOG_PREFIX_MAX => name.to_owned(),
        _ => String::new(),
    };
    let be32 = |kind| {
        attribute(attrs, kind)
            .and_then(|v| <[u8; 4]>::try_from(v).ok())
            .map(u32::from_be_bytes)
    };
    // struct nfulnl_msg_packet_hdr { __be16 hw_protocol; __u8 hook; __u8 _pad; }
    let ethertype = attribute(attrs, NFULA_PACKET_HDR)
        .and_then(|h| h.get(..2))
        .map_or(0, |b| u16::from_be_bytes([b[0], b[1]]));
    // struct nfulnl_msg_packet_hw { __be16 hw_addrlen; __u16 _pad; __u8 hw_addr[8]; }
    let source_mac = attribute(attrs, NFULA_HWADDR)
        .filter(|h| h.get(..2) == Some(&[0, 6]))
        .and_then(|h| h.get(4..10))
        .and_then(|m| Mac::try_from(m).ok());
    let payload = attribute(attrs, NFULA_PAYLOAD).unwrap_or_default();
    Some(LoggedPacket {
        reason,
        network,
        bridge_index: be32(NFULA_IFINDEX_INDEV),
        port_index: be32(NFULA_IFINDEX_PHYSINDEV),
        source_mac,
        packet: parse_headers(ethertype, payload),
    })
}

/// What the reader hands on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogEvent {
    Packet(LoggedPacket),
    /// The socket overflowed: some messages were lost.
    Lost,
    /// A second without a report of ours (nothing arrived, or only other programs'
    /// messages): lets a watch no longer wanted end.
    Idle,
}

fn config_message(group: u16, attrs: &[u8], seq: u32) -> Vec<u8> {
    // struct nfgenmsg { u8 family; u8 version; __be16 res_id; } then the attributes.
    let mut body = vec![libc::AF_UNSPEC as u8, 0];
    body.extend_from_slice(&group.to_be_bytes());
    body.extend_from_slice(attrs);
    let len = 16 + body.len();
    let mut msg = Vec::with_capacity(len);
    msg.extend_from_slice(&(len as u32).to_ne_bytes());
    msg.extend_from_slice(&((NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_CONFIG).to_ne_bytes());
    let flags = (libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16;
    msg.extend_from_slice(&flags.to_ne_bytes());
    msg.extend_from_slice(&seq.to_ne_bytes());
    msg.extend_from_slice(&0u32.to_ne_bytes());
    msg.extend_from_slice(&body);
    msg
}

/// Opens a socket bound to NFLOG `group`, copying the first bytes of each packet, in the
/// calling thread's network namespace.
pub fn subscribe(group: u16) -> Result<OwnedFd, KernelError> {
    let sock = netlink_socket(SockProtocol::NetlinkNetFilter)?;
    // Room for bursts; ENOBUFS, if it comes, is counted, not fatal.
    let _ = setsockopt(&sock, sockopt::RcvBuf, &(1usize << 20));
    setsockopt(&sock, sockopt::ReceiveTimeout, &TimeVal::new(1, 0))
        .map_err(|e| KernelError::Socket(e.into()))?;
    let mut bind = Vec::new();
    push_attr(&mut bind, NFULA_CFG_CMD, &[NFULNL_CFG_CMD_BIND]);
    let mut mode = Vec::new();
    let mut range = COPY_RANGE.to_be_bytes().to_vec();
    range.extend_from_slice(&[NFULNL_COPY_PACKET, 0]);
    push_attr(&mut mode, NFULA_CFG_MODE, &range);
    push_attr(&mut mode, NFULA_CFG_TIMEOUT, &FLUSH_TIMEOUT.to_be_bytes());
    push_attr(&mut mode, NFULA_CFG_QTHRESH, &FLUSH_PACKETS.to_be_bytes());
    for (seq, (attrs, what)) in [(bind, "bind"), (mode, "configure")]
        .into_iter()
        .enumerate()
    {
        let seq = seq as u32 + 1;
        send_all(&sock, &config_message(group, &attrs, seq))?;
        let mut errno = 0;
        read_acks(&sock, |s, e| {
            errno = e;
            s == seq
        })?;
        if errno != 0 {
            let source = io::Error::from_raw_os_error(errno);
            // The kernel answers EPERM when another socket has bound the group.
            let hint = if errno == libc::EBUSY || errno == libc::EPERM {
                " (is another program, ulogd perhaps, reading that group? choose another [daemon] log_group)"
            } else {
                ""
            };
            return Err(KernelError::Refused {
                what: format!("to {what} NFLOG group {group}{hint}"),
                source,
                log_rule: false,
            });
        }
    }
    Ok(sock)
}

/// Reads logged packets from `sock` and hands them to `report` until it returns false.
pub fn watch(sock: &OwnedFd, report: &mut impl FnMut(LogEvent) -> bool) -> Result<(), KernelError> {
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = match next_notice(sock, &mut buf)? {
            Notice::Datagram(n) => n,
            Notice::Idle if !report(LogEvent::Idle) => return Ok(()),
            Notice::Lost if !report(LogEvent::Lost) => return Ok(()),
            Notice::Idle | Notice::Lost => continue,
        };
        let mut ours = false;
        let stop = parse_answers(&buf[..n], &mut |answer| {
            if answer.kind != (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_PACKET {
                return None;
            }
            let packet = parse_packet(answer.body)?;
            ours = true;
            (!report(LogEvent::Packet(packet))).then_some(Ok(()))
        });
        match stop {
            Some(Ok(())) => return Ok(()),
            Some(Err(e)) => return Err(e),
            None => {}
        }
        // Only other programs' messages: the watch is asked whether it is still wanted.
        if !ours && !report(LogEvent::Idle) {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ipv4_tcp_syn() -> Vec<u8> {
        let mut p = vec![
            0x45, 0, 0, 60, 0x12, 0x34, 0x40, 0, 64, 6, 0, 0, 10, 1, 0, 3, 10, 1, 0, 4,
        ];
        p.extend_from_slice(&[0xc3, 0x50, 0x1f, 0x90, 0, 0, 0, 1, 0, 0, 0, 0, 0xa0, 0x02]);
        p
    }

    #[test]
    fn an_ipv4_syn_gives_addresses_protocol_and_ports() {
        let h = parse_headers(ETHERTYPE_IPV4, &ipv4_tcp_syn());
        assert_eq!(h.source, Some("10.1.0.3".parse().unwrap()));
        assert_eq!(h.destination, Some("10.1.0.4".parse().unwrap()));
        assert_eq!(h.protocol, Some(6));
        assert_eq!(
            (h.source_port, h.destination_port),
            (Some(50000), Some(8080))
        );
        assert!(!h.fragment);
        // A later fragment: addresses, no ports.
        let mut later = ipv4_tcp_syn();
        later[6] = 0x00;
        later[7] = 0x10;
        let h = parse_headers(ETHERTYPE_IPV4, &later);
        assert!(h.fragment);
        assert_eq!(h.destination_port, None);
        assert_eq!(h.destination, Some("10.1.0.4".parse().unwrap()));
    }

    #[test]
    fn ipv6_extension_headers_are_skipped_to_the_transport_header() {
        let mut p = vec![0x60, 0, 0, 0, 0, 16, 0, 64];
        let src: Ipv6Addr = "fd00::3".parse().unwrap();
        let dst: Ipv6Addr = "fd00::4".parse().unwrap();
        p.extend_from_slice(&src.octets());
        p.extend_from_slice(&dst.octets());
        // Hop-by-hop (8 bytes), then a first fragment, then UDP.
        p.extend_from_slice(&[44, 0, 1, 4, 0, 0, 0, 0]);
        p.extend_from_slice(&[17, 0, 0, 1, 0, 0, 0, 9]);
        p.extend_from_slice(&[0x30, 0x39, 0x00, 0x35, 0, 8, 0, 0]);
        let h = parse_headers(ETHERTYPE_IPV6, &p);
        assert_eq!(h.source, Some(IpAddr::V6(src)));
        assert_eq!(h.protocol, Some(17));
        assert!(h.fragment);
        assert_eq!((h.source_port, h.destination_port), (Some(12345), Some(53)));
        // Truncated: what can be read, no panic.
        for len in 0..p.len() {
            parse_headers(ETHERTYPE_IPV6, &p[..len]);
            parse_headers(ETHERTYPE_IPV4, &p[..len]);
            parse_headers(ETHERTYPE_ARP, &p[..len]);
        }
    }

    #[test]
    fn a_packet_message_names_reason_network_and_interfaces() {
        let mut attrs = Vec::new();
        push_attr(&mut attrs, NFULA_PACKET_HDR, &[0x08, 0x00, 2, 0]);
        push_attr(&mut attrs, NFULA_PREFIX, b"tj isolation web-net\0");
        push_attr(&mut attrs, NFULA_IFINDEX_INDEV, &7u32.to_be_bytes());
        push_attr(&mut attrs, NFULA_IFINDEX_PHYSINDEV, &9u32.to_be_bytes());
        push_attr(
            &mut attrs,
            NFULA_HWADDR,
            &[0, 6, 0, 0, 2, 0x42, 10, 1, 0, 3, 0, 0],
        );
        push_attr(&mut attrs, NFULA_PAYLOAD, &ipv4_tcp_syn());
        let mut body = vec![2, 0, 0x10, 0x68];
        body.extend_from_slice(&attrs);
        let p = parse_packet(&body).unwrap();
        assert_eq!(p.reason, Some(Reason::Isolation));
        assert_eq!(p.network, "web-net");
        assert_eq!((p.bridge_index, p.port_index), (Some(7), Some(9)));
        assert_eq!(p.source_mac, Some([2, 0x42, 10, 1, 0, 3]));
        assert_eq!(p.packet.destination_port, Some(8080));
        // A prefix the kernel cut names no network: the bridge will.
        let mut cut = vec![2, 0, 0x10, 0x68];
        // What the kernel keeps of a long prefix: its first 127 bytes, and a NUL.
        let mut long = format!("tj isolation {}", "n".repeat(200)).into_bytes();
        long.truncate(LOG_PREFIX_MAX);
        long.push(0);
        push_attr(&mut cut, NFULA_PREFIX, &long);
        let p = parse_packet(&cut).unwrap();
        assert_eq!(
            (p.reason, p.network.as_str()),
            (Some(Reason::Isolation), "")
        );
        // Another program's prefix is not ours.
        let mut other = vec![2, 0, 0x10, 0x68];
        push_attr(&mut other, NFULA_PREFIX, b"DROP \0");
        assert_eq!(parse_packet(&other), None);
    }
}
