//! Each [`Match`] as the rustables expressions nft itself would emit for it: the payload
//! offsets, the protocol dependencies a payload match needs, the set lookups.

use rustables::expr::ct::{ConnTrackState, Conntrack, ConntrackKey};
use rustables::expr::{Bitwise, Cmp, CmpOp, Lookup, Meta, MetaType, Payload, Register};
use rustables::sys::{
    NFT_PAYLOAD_LL_HEADER, NFT_PAYLOAD_NETWORK_HEADER, NFT_PAYLOAD_TRANSPORT_HEADER,
};

use super::encode::{L3Key, address_field, l3_dependency};
use super::*;

/// Network-layer protocol check a payload match depends on. In `inet`, `meta nfproto`; in
/// `bridge`, the ethertype (`meta protocol`), as nft itself does.
pub(super) fn add_l3_dependency(rule: &mut rustables::Rule, family: Family, version: IpVersion) {
    let (key, value) = l3_dependency(family, version);
    rule.add_expr(Meta::new(match key {
        L3Key::NfProto => MetaType::NfProto,
        L3Key::Protocol => MetaType::Protocol,
    }));
    rule.add_expr(Cmp::new(CmpOp::Eq, value));
}

/// `ether type arp`, as nft checks it for an ARP field.
pub(super) fn add_arp_dependency(rule: &mut rustables::Rule, loaded: &mut Dependencies) {
    if !loaded.arp {
        rule.add_expr(payload(NFT_PAYLOAD_LL_HEADER, 12, 2));
        rule.add_expr(Cmp::new(CmpOp::Eq, (libc::ETH_P_ARP as u16).to_be_bytes()));
        loaded.arp = true;
    }
}

pub(super) fn payload(base: u32, offset: u32, len: u32) -> Payload {
    Payload::default()
        .with_base(base)
        .with_offset(offset)
        .with_len(len)
        .with_dreg(Register::Reg1)
}

pub(super) fn address_payload(dir: Dir, version: IpVersion) -> Payload {
    let (offset, len) = address_field(dir, version);
    payload(NFT_PAYLOAD_NETWORK_HEADER, offset, len)
}

pub(super) fn add_l4proto(rule: &mut rustables::Rule, proto: libc::c_int) {
    rule.add_expr(Meta::new(MetaType::L4Proto));
    rule.add_expr(Cmp::new(CmpOp::Eq, [proto as u8]));
}

pub(super) fn interface_name(name: &str) -> Vec<u8> {
    // As nft does: the name NUL-padded to IFNAMSIZ, an exact match.
    let mut bytes = name.as_bytes().to_vec();
    bytes.resize(libc::IFNAMSIZ, 0);
    bytes
}

/// The protocol checks a rule already made, so that each is made once, as nft does.
#[derive(Debug, Default)]
pub(super) struct Dependencies {
    network: Option<IpVersion>,
    arp: bool,
}

/// Where a lookup field is loaded from, and how long it is.
pub(super) fn field_payload(field: Field, dreg: Register) -> Payload {
    let (base, offset, len) = match field {
        Field::IifName => unreachable!("a meta field"),
        Field::EtherSource => (NFT_PAYLOAD_LL_HEADER, 6, 6),
        Field::IpSource(version) => {
            let p = address_payload(Dir::Src, version);
            return p.with_dreg(dreg);
        }
        // ARP for Ethernet and IPv4: sender MAC at 8, sender IP at 14.
        Field::ArpSenderMac => (NFT_PAYLOAD_NETWORK_HEADER, 8, 6),
        Field::ArpSenderIp => (NFT_PAYLOAD_NETWORK_HEADER, 14, 4),
        Field::AdvertTarget => (NFT_PAYLOAD_TRANSPORT_HEADER, 8, 16),
        Field::NdOptionMac(offset) => (NFT_PAYLOAD_TRANSPORT_HEADER, u32::from(offset) + 2, 6),
        flow => unreachable!("{flow:?} is looked up by raw::new_rule"),
    };
    payload(base, offset, len).with_dreg(dreg)
}

pub(super) fn add_match(
    rule: &mut rustables::Rule,
    family: Family,
    m: &Match,
    sets: &HashMap<String, rustables::Set>,
    loaded: &mut Dependencies,
) -> Result<(), String> {
    match m {
        Match::IifName(name) => {
            rule.add_expr(Meta::new(MetaType::IifName));
            rule.add_expr(Cmp::new(CmpOp::Eq, interface_name(name)));
        }
        Match::OifName(name) => {
            rule.add_expr(Meta::new(MetaType::OifName));
            rule.add_expr(Cmp::new(CmpOp::Eq, interface_name(name)));
        }
        Match::Ipv6Fragment => return Err("exthdr is encoded by raw::new_rule".into()),
        Match::OifNameNot(name) => {
            rule.add_expr(Meta::new(MetaType::OifName));
            rule.add_expr(Cmp::new(CmpOp::Neq, interface_name(name)));
        }
        Match::IifNameNot(name) => {
            rule.add_expr(Meta::new(MetaType::IifName));
            rule.add_expr(Cmp::new(CmpOp::Neq, interface_name(name)));
        }
        Match::DestPort(ports) => {
            add_l4proto(rule, libc::c_int::from(ports.protocol.number()));
            rule.add_expr(payload(NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2));
            if ports.first == ports.last {
                rule.add_expr(Cmp::new(CmpOp::Eq, ports.first.to_be_bytes()));
            } else {
                rule.add_expr(Cmp::new(CmpOp::Gte, ports.first.to_be_bytes()));
                rule.add_expr(Cmp::new(CmpOp::Lte, ports.last.to_be_bytes()));
            }
        }
        Match::CtEstablishedRelated => {
            let states = (ConnTrackState::ESTABLISHED | ConnTrackState::RELATED).bits();
            rule.add_expr(Conntrack::new(ConntrackKey::State));
            rule.add_expr(
                Bitwise::new(states.to_ne_bytes(), 0u32.to_ne_bytes())
                    .map_err(|e| e.to_string())?,
            );
            rule.add_expr(Cmp::new(CmpOp::Neq, 0u32.to_ne_bytes()));
        }
        Match::Subnet(dir, net) => {
            let version = IpVersion::of(&net.ip());
            if loaded.network != Some(version) {
                add_l3_dependency(rule, family, version);
                loaded.network = Some(version);
            }
            rule.add_expr(address_payload(*dir, version));
            let (mask, addr) = match (net.mask(), net.network()) {
                (IpAddr::V4(m), IpAddr::V4(a)) => (m.octets().to_vec(), a.octets().to_vec()),
                (IpAddr::V6(m), IpAddr::V6(a)) => (m.octets().to_vec(), a.octets().to_vec()),
                _ => return Err("mask and address of different families".into()),
            };
            if net.prefix() as usize != mask.len() * 8 {
                let zero = vec![0u8; mask.len()];
                rule.add_expr(Bitwise::new(mask, zero).map_err(|e| e.to_string())?);
            }
            rule.add_expr(Cmp::new(CmpOp::Eq, addr));
        }
        Match::InSet(dir, version, name) => {
            let set = sets.get(name).ok_or_else(|| format!("no set {name}"))?;
            add_l3_dependency(rule, family, *version);
            loaded.network = Some(*version);
            rule.add_expr(address_payload(*dir, *version));
            rule.add_expr(Lookup::new(set).map_err(|e| e.to_string())?);
        }
        Match::Icmpv6Types(from, to) => {
            add_l4proto(rule, libc::IPPROTO_ICMPV6);
            rule.add_expr(payload(NFT_PAYLOAD_TRANSPORT_HEADER, 0, 1));
            if from == to {
                rule.add_expr(Cmp::new(CmpOp::Eq, [*from]));
            } else {
                rule.add_expr(Cmp::new(CmpOp::Gte, [*from]));
                rule.add_expr(Cmp::new(CmpOp::Lte, [*to]));
            }
        }
        Match::TcpSyn => {
            // tcp flags & (fin | syn | rst | ack) == syn
            add_l4proto(rule, libc::IPPROTO_TCP);
            rule.add_expr(payload(NFT_PAYLOAD_TRANSPORT_HEADER, 13, 1));
            rule.add_expr(Bitwise::new([0x17u8], [0u8]).map_err(|e| e.to_string())?);
            rule.add_expr(Cmp::new(CmpOp::Eq, [0x02u8]));
        }
        Match::Ipv4Fragment => {
            add_l3_dependency(rule, family, IpVersion::V4);
            rule.add_expr(payload(NFT_PAYLOAD_NETWORK_HEADER, 6, 2));
            rule.add_expr(Bitwise::new([0x3fu8, 0xff], [0u8, 0]).map_err(|e| e.to_string())?);
            rule.add_expr(Cmp::new(CmpOp::Neq, [0u8, 0]));
        }
        Match::EtherType(ethertype) => {
            let value: u16 = match ethertype {
                EtherType::Ipv4 => libc::ETH_P_IP as u16,
                EtherType::Ipv6 => libc::ETH_P_IPV6 as u16,
                EtherType::Arp => libc::ETH_P_ARP as u16,
            };
            // The link-layer header as the frame carries it: the kernel rebuilds a moved-out
            // VLAN tag for this read (nft_payload_copy_vlan), so a tagged frame reads 0x8100.
            rule.add_expr(payload(NFT_PAYLOAD_LL_HEADER, 12, 2));
            rule.add_expr(Cmp::new(CmpOp::Eq, value.to_be_bytes()));
            if *ethertype == EtherType::Arp {
                loaded.arp = true;
            }
        }
        Match::UdpSourcePort(port) => {
            add_l4proto(rule, libc::IPPROTO_UDP);
            rule.add_expr(payload(NFT_PAYLOAD_TRANSPORT_HEADER, 0, 2));
            rule.add_expr(Cmp::new(CmpOp::Eq, port.to_be_bytes()));
        }
        Match::Ipv4Unspecified => {
            add_l3_dependency(rule, family, IpVersion::V4);
            loaded.network = Some(IpVersion::V4);
            rule.add_expr(address_payload(Dir::Src, IpVersion::V4));
            rule.add_expr(Cmp::new(CmpOp::Eq, [0u8; 4]));
        }
        Match::Ipv6Unspecified => {
            add_l3_dependency(rule, family, IpVersion::V6);
            loaded.network = Some(IpVersion::V6);
            rule.add_expr(address_payload(Dir::Src, IpVersion::V6));
            rule.add_expr(Cmp::new(CmpOp::Eq, [0u8; 16]));
        }
        Match::NdLinkLayerOption { offset, kind } => {
            rule.add_expr(payload(NFT_PAYLOAD_TRANSPORT_HEADER, u32::from(*offset), 2));
            rule.add_expr(Cmp::new(CmpOp::Eq, [*kind, 1]));
        }
        Match::Ipv6Length(length) => {
            if loaded.network != Some(IpVersion::V6) {
                add_l3_dependency(rule, family, IpVersion::V6);
                loaded.network = Some(IpVersion::V6);
            }
            rule.add_expr(payload(NFT_PAYLOAD_NETWORK_HEADER, 4, 2));
            rule.add_expr(Cmp::new(CmpOp::Eq, length.to_be_bytes()));
        }
        Match::Ipv6NextHeader(next) => {
            if loaded.network != Some(IpVersion::V6) {
                add_l3_dependency(rule, family, IpVersion::V6);
                loaded.network = Some(IpVersion::V6);
            }
            rule.add_expr(payload(NFT_PAYLOAD_NETWORK_HEADER, 6, 1));
            rule.add_expr(Cmp::new(CmpOp::Eq, [*next]));
        }
        Match::LinkLocalGroup => {
            rule.add_expr(payload(NFT_PAYLOAD_LL_HEADER, 0, 6));
            rule.add_expr(
                Bitwise::new([0xffu8, 0xff, 0xff, 0xff, 0xff, 0xf0], [0u8; 6])
                    .map_err(|e| e.to_string())?,
            );
            rule.add_expr(Cmp::new(CmpOp::Eq, [0x01u8, 0x80, 0xc2, 0, 0, 0]));
        }
        Match::ArpProbe => {
            add_arp_dependency(rule, loaded);
            rule.add_expr(field_payload(Field::ArpSenderIp, Register::Reg1));
            rule.add_expr(Cmp::new(CmpOp::Eq, [0u8; 4]));
        }
        Match::Lookup(fields, name) => {
            let set = sets.get(name).ok_or_else(|| format!("no set {name}"))?;
            for field in fields {
                match field {
                    Field::IpSource(version) if loaded.network != Some(*version) => {
                        add_l3_dependency(rule, family, *version);
                        loaded.network = Some(*version);
                    }
                    Field::ArpSenderMac | Field::ArpSenderIp => add_arp_dependency(rule, loaded),
                    _ => {}
                }
            }
            // A concatenation fills consecutive registers: the interface name takes
            // 16 bytes, exactly one 128-bit register.
            for (field, dreg) in fields.iter().zip([Register::Reg1, Register::Reg2]) {
                match field {
                    Field::IifName => {
                        rule.add_expr(Meta::new(MetaType::IifName).with_dreg(dreg));
                    }
                    other => {
                        rule.add_expr(field_payload(*other, dreg));
                    }
                }
            }
            if fields.len() > 2 || (fields.len() == 2 && fields[0] != Field::IifName) {
                return Err(format!("cannot concatenate {fields:?}"));
            }
            rule.add_expr(Lookup::new(set).map_err(|e| e.to_string())?);
        }
        Match::EchoRequest(version) => {
            let (proto, echo) = match version {
                IpVersion::V4 => (libc::IPPROTO_ICMP, 8u8),
                IpVersion::V6 => (libc::IPPROTO_ICMPV6, 128u8),
            };
            add_l4proto(rule, proto);
            rule.add_expr(payload(NFT_PAYLOAD_TRANSPORT_HEADER, 0, 1));
            rule.add_expr(Cmp::new(CmpOp::Eq, [echo]));
        }
    }
    Ok(())
}
