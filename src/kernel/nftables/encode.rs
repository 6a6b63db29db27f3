//! How the kernel holds our sets: nft's key type numbers, key lengths, the user data `nft`
//! needs to print a set, and each element's key bytes.

use std::net::IpAddr;

use crate::plan::{Dir, Element, Family, IFNAME_LEN, IpVersion, SetKey};

/// nft's user data for the keys that need it to print (captured from nft 1.0.6 with
/// `strace -e read=3 nft list set`): an interface name is in host byte order, and the two
/// `typeof` keys carry the expression they were declared with.
const HOST_BYTE_ORDER: &[u8] = b"\x00\x04\x01\x00\x00\x00";
const TYPEOF_RAW128: &[u8] = b"\x00\x04\x02\x00\x00\x00\x03\x26\x00\x04\x07\x00\x00\x00\x01\x1e\x00\x04\x00\x00\x00\x00\x01\x04\x00\x00\x00\x00\x02\x04\x03\x00\x00\x00\x03\x04\x40\x00\x00\x00\x04\x04\x80\x00\x00\x00";
const TYPEOF_IFNAME_ND_MAC_24: &[u8] = b"\x00\x04\x00\x00\x00\x00\x03\x40\x00\x04\x0d\x00\x00\x00\x01\x38\x00\x0e\x00\x04\x09\x00\x00\x00\x01\x06\x00\x04\x06\x00\x00\x00\x01\x26\x00\x04\x07\x00\x00\x00\x01\x1e\x00\x04\x00\x00\x00\x00\x01\x04\x00\x00\x00\x00\x02\x04\x03\x00\x00\x00\x03\x04\xd0\x00\x00\x00\x04\x04\x30\x00\x00\x00";
const TYPEOF_IFNAME_ND_MAC_8: &[u8] = b"\x00\x04\x00\x00\x00\x00\x03\x40\x00\x04\x0d\x00\x00\x00\x01\x38\x00\x0e\x00\x04\x09\x00\x00\x00\x01\x06\x00\x04\x06\x00\x00\x00\x01\x26\x00\x04\x07\x00\x00\x00\x01\x1e\x00\x04\x00\x00\x00\x00\x01\x04\x00\x00\x00\x00\x02\x04\x03\x00\x00\x00\x03\x04\x50\x00\x00\x00\x04\x04\x30\x00\x00\x00";
const TYPEOF_IFNAME_RAW128: &[u8] = b"\x00\x04\x00\x00\x00\x00\x03\x40\x00\x04\x0d\x00\x00\x00\x01\x38\x00\x0e\x00\x04\x09\x00\x00\x00\x01\x06\x00\x04\x06\x00\x00\x00\x01\x26\x00\x04\x07\x00\x00\x00\x01\x1e\x00\x04\x00\x00\x00\x00\x01\x04\x00\x00\x00\x00\x02\x04\x03\x00\x00\x00\x03\x04\x40\x00\x00\x00\x04\x04\x80\x00\x00\x00";

/// nft's data type numbers, and how it numbers a concatenation of two.
const TYPE_INTEGER: u32 = 4;
const TYPE_IPV4: u32 = 7;
const TYPE_IPV6: u32 = 8;
const TYPE_ETHER: u32 = 9;
const TYPE_IFNAME: u32 = 41;
const TYPE_INET_PROTOCOL: u32 = 12;
const TYPE_INET_SERVICE: u32 = 13;
const fn concat(first: u32, second: u32) -> u32 {
    (first << 6) | second
}

impl IpVersion {
    /// nft's data type number for an address of this family.
    fn type_id(self) -> u32 {
        match self {
            IpVersion::V4 => TYPE_IPV4,
            IpVersion::V6 => TYPE_IPV6,
        }
    }
}

impl SetKey {
    /// nft's key type number.
    pub fn type_id(self) -> u32 {
        match self {
            SetKey::Ipv4 => TYPE_IPV4,
            SetKey::Ipv6 => TYPE_IPV6,
            SetKey::Ether => TYPE_ETHER,
            SetKey::Ifname => TYPE_IFNAME,
            SetKey::IfnameEther => concat(TYPE_IFNAME, TYPE_ETHER),
            SetKey::IfnameIpv4 => concat(TYPE_IFNAME, TYPE_IPV4),
            SetKey::IfnameIpv6 => concat(TYPE_IFNAME, TYPE_IPV6),
            SetKey::Raw128 => TYPE_INTEGER,
            SetKey::IfnameRaw128 | SetKey::IfnameNdMac(_) => concat(TYPE_IFNAME, TYPE_INTEGER),
            SetKey::Pair(v) => concat(v.type_id(), v.type_id()),
            SetKey::Service(v) => concat(
                concat(concat(v.type_id(), v.type_id()), TYPE_INET_PROTOCOL),
                TYPE_INET_SERVICE,
            ),
        }
    }

    /// The lengths of a concatenation's fields, for a set whose elements are ranges (the
    /// kernel's pipapo set needs them); `None` for others.
    pub fn range_fields(self) -> Option<Vec<u32>> {
        match self {
            SetKey::Service(v) => Some(vec![v.addr_len(), v.addr_len(), 1, 2]),
            _ => None,
        }
    }

    /// Key length in bytes: each part of a concatenation padded to 4 bytes.
    pub fn key_len(self) -> u32 {
        match self {
            SetKey::Ipv4 => 4,
            SetKey::Ipv6 | SetKey::Ifname | SetKey::Raw128 => 16,
            SetKey::Ether => 6,
            SetKey::IfnameEther | SetKey::IfnameNdMac(_) => 24,
            SetKey::IfnameIpv4 => 20,
            SetKey::IfnameIpv6 | SetKey::IfnameRaw128 => 32,
            SetKey::Pair(v) => 2 * v.addr_len(),
            SetKey::Service(v) => 2 * v.addr_len() + 8,
        }
    }

    /// The user data nft stores with a set of this key, where nft needs it.
    pub fn userdata(self) -> Option<&'static [u8]> {
        match self {
            SetKey::Ifname => Some(HOST_BYTE_ORDER),
            SetKey::Raw128 => Some(TYPEOF_RAW128),
            SetKey::IfnameRaw128 => Some(TYPEOF_IFNAME_RAW128),
            SetKey::IfnameNdMac(8) => Some(TYPEOF_IFNAME_ND_MAC_8),
            SetKey::IfnameNdMac(_) => Some(TYPEOF_IFNAME_ND_MAC_24),
            _ => None,
        }
    }
}

fn ifname_bytes(name: &str) -> Vec<u8> {
    let mut bytes = name.as_bytes().to_vec();
    bytes.resize(IFNAME_LEN, 0);
    bytes
}

fn ip_bytes(addr: &IpAddr) -> Vec<u8> {
    match addr {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

impl Element {
    /// The key as the kernel holds it (concatenated parts padded to 4 bytes).
    pub fn key_bytes(&self) -> Vec<u8> {
        match self {
            Element::Ip(a) => ip_bytes(a),
            Element::Mac(m) => m.to_vec(),
            Element::Port(p) => ifname_bytes(p),
            Element::PortMac(p, m) => {
                let mut k = ifname_bytes(p);
                k.extend_from_slice(m);
                k.extend_from_slice(&[0, 0]);
                k
            }
            Element::PortIp(p, a) => {
                let mut k = ifname_bytes(p);
                k.extend(ip_bytes(a));
                k
            }
            Element::Pair(from, to) => {
                let mut k = ip_bytes(from);
                k.extend(ip_bytes(to));
                k
            }
            Element::Service {
                from,
                to,
                protocol,
                first,
                ..
            } => service_key(from, to, *protocol, *first),
        }
    }

    /// The end of a range element's key (the kernel holds both ends), `None` for others.
    pub fn key_end_bytes(&self) -> Option<Vec<u8>> {
        match self {
            Element::Service {
                from,
                to,
                protocol,
                last,
                ..
            } => Some(service_key(from, to, *protocol, *last)),
            _ => None,
        }
    }

    /// The key and, for a range, its end: what a read-back of the set gives.
    pub fn stored_bytes(&self) -> Vec<u8> {
        let mut bytes = self.key_bytes();
        bytes.extend(self.key_end_bytes().unwrap_or_default());
        bytes
    }
}

/// Source, destination, protocol (padded to 4 bytes) and port (big-endian, padded).
fn service_key(from: &IpAddr, to: &IpAddr, protocol: u8, port: u16) -> Vec<u8> {
    let mut k = ip_bytes(from);
    k.extend(ip_bytes(to));
    k.extend([protocol, 0, 0, 0]);
    k.extend(port.to_be_bytes());
    k.extend([0, 0]);
    k
}

/// The meta key of the network-layer check a payload match depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum L3Key {
    /// `meta nfproto` (`inet`).
    NfProto,
    /// `meta protocol`, the ethertype (`bridge`).
    Protocol,
}

/// The network-layer check a payload match of `version` depends on in `family`, as nft
/// makes it: the meta key, and the value it must hold.
pub(super) fn l3_dependency(family: Family, version: IpVersion) -> (L3Key, Vec<u8>) {
    match (family, version) {
        (Family::Inet, IpVersion::V4) => (L3Key::NfProto, vec![libc::NFPROTO_IPV4 as u8]),
        (Family::Inet, IpVersion::V6) => (L3Key::NfProto, vec![libc::NFPROTO_IPV6 as u8]),
        (Family::Bridge, IpVersion::V4) => (
            L3Key::Protocol,
            (libc::ETH_P_IP as u16).to_be_bytes().to_vec(),
        ),
        (Family::Bridge, IpVersion::V6) => (
            L3Key::Protocol,
            (libc::ETH_P_IPV6 as u16).to_be_bytes().to_vec(),
        ),
    }
}

/// Where an address sits in the network header (offset, length in bytes).
pub(super) fn address_field(dir: Dir, version: IpVersion) -> (u32, u32) {
    let offset = match (version, dir) {
        (IpVersion::V4, Dir::Src) => 12,
        (IpVersion::V4, Dir::Dst) => 16,
        (IpVersion::V6, Dir::Src) => 8,
        (IpVersion::V6, Dir::Dst) => 24,
    };
    (offset, version.addr_len())
}
