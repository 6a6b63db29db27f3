//! The ruleset as `nft` text: what `nft -f` would load, what `trafficjam plan` prints, and
//! what the kernel tier compares with `nft list ruleset`.

use std::fmt;
use std::net::IpAddr;

use super::names::{LOG_BURST, LOG_RATE};
use super::*;

impl fmt::Display for Match {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Match::IifName(name) => write!(f, "iifname \"{name}\""),
            Match::OifName(name) => write!(f, "oifname \"{name}\""),
            Match::OifNameNot(name) => write!(f, "oifname != \"{name}\""),
            Match::IifNameNot(name) => write!(f, "iifname != \"{name}\""),
            Match::DestPort(p) => {
                let proto = p.protocol.name();
                if p.first == p.last {
                    write!(f, "{proto} dport {}", p.first)
                } else {
                    write!(f, "{proto} dport {}-{}", p.first, p.last)
                }
            }
            Match::CtEstablishedRelated => f.write_str("ct state established,related"),
            Match::Subnet(dir, net) => write!(
                f,
                "{} {} {}/{}",
                IpVersion::of_net(net).keyword(),
                dir.keyword(),
                net.network(),
                net.prefix()
            ),
            Match::InSet(dir, version, set) => {
                write!(f, "{} {} @{set}", version.keyword(), dir.keyword())
            }
            Match::Icmpv6Types(from, to) if from == to => write!(f, "icmpv6 type {from}"),
            Match::Icmpv6Types(from, to) => write!(f, "icmpv6 type {from}-{to}"),
            Match::TcpSyn => f.write_str("tcp flags & (fin | syn | rst | ack) == syn"),
            Match::EchoRequest(IpVersion::V4) => f.write_str("icmp type echo-request"),
            Match::EchoRequest(IpVersion::V6) => f.write_str("icmpv6 type echo-request"),
            Match::Ipv4Fragment => f.write_str("ip frag-off & 0x3fff != 0"),
            Match::Ipv6Fragment => f.write_str("exthdr frag exists"),
            Match::EtherType(EtherType::Ipv4) => f.write_str("ether type ip"),
            Match::EtherType(EtherType::Ipv6) => f.write_str("ether type ip6"),
            Match::EtherType(EtherType::Arp) => f.write_str("ether type arp"),
            Match::UdpSourcePort(port) => write!(f, "udp sport {port}"),
            Match::Ipv6Unspecified => f.write_str("ip6 saddr ::"),
            Match::Ipv4Unspecified => f.write_str("ip saddr 0.0.0.0"),
            Match::ArpProbe => f.write_str("arp saddr ip 0.0.0.0"),
            Match::LinkLocalGroup => {
                f.write_str("ether daddr & ff:ff:ff:ff:ff:f0 == 01:80:c2:00:00:00")
            }
            Match::NdLinkLayerOption { offset, kind } => write!(
                f,
                "@th,{},16 {:#06x}",
                u32::from(*offset) * 8,
                u16::from_be_bytes([*kind, 1])
            ),
            Match::Ipv6Length(length) => write!(f, "ip6 length {length}"),
            Match::Ipv6NextHeader(next) => write!(f, "ip6 nexthdr {next}"),
            Match::Lookup(fields, set) => {
                let fields: Vec<String> = fields
                    .iter()
                    .map(|field| match field {
                        Field::NdOptionMac(offset) => {
                            format!("@th,{},48", (u32::from(*offset) + 2) * 8)
                        }
                        Field::IifName => "iifname".into(),
                        Field::EtherSource => "ether saddr".into(),
                        Field::IpSource(IpVersion::V4) => "ip saddr".into(),
                        Field::IpSource(IpVersion::V6) => "ip6 saddr".into(),
                        Field::ArpSenderMac => "arp saddr ether".into(),
                        Field::ArpSenderIp => "arp saddr ip".into(),
                        Field::AdvertTarget => "@th,64,128".into(),
                        Field::IpDest(IpVersion::V4) => "ip daddr".into(),
                        Field::IpDest(IpVersion::V6) => "ip6 daddr".into(),
                        Field::L4Proto => "meta l4proto".into(),
                        Field::DestPort => "th dport".into(),
                        Field::SourcePort => "th sport".into(),
                    })
                    .collect();
                write!(f, "{} @{set}", fields.join(" . "))
            }
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for m in &self.matches {
            write!(f, "{m} ")?;
        }
        if let Some(log) = &self.log {
            write!(
                f,
                "limit rate {LOG_RATE}/second burst {LOG_BURST} packets log prefix \"{}\" group {}",
                log.prefix, log.group
            )?;
        }
        if self.counter {
            f.write_str("counter ")?;
        }
        match &self.verdict {
            Verdict::Continue => Ok(()),
            Verdict::Return => f.write_str("return"),
            Verdict::Drop => f.write_str("drop"),
            Verdict::Accept => f.write_str("accept"),
            Verdict::Jump(chain) => write!(f, "jump {chain}"),
            Verdict::Goto(chain) => write!(f, "goto {chain}"),
        }
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "table {} {} {{", self.family.keyword(), self.name)?;
        for set in &self.sets {
            writeln!(f, "\tset {} {{", set.name)?;
            writeln!(f, "\t\t{}", set.key.declaration())?;
            if !set.elements.is_empty() {
                let list: Vec<String> = set.elements.iter().map(|e| e.text(set.key)).collect();
                writeln!(f, "\t\telements = {{ {} }}", list.join(", "))?;
            }
            writeln!(f, "\t}}")?;
        }
        for chain in &self.chains {
            writeln!(f, "\tchain {} {{", chain.name)?;
            if let Some(base) = chain.base {
                let hook = match base.hook {
                    Hook::Prerouting => "prerouting",
                    Hook::Forward => "forward",
                    Hook::Input => "input",
                };
                writeln!(
                    f,
                    "\t\ttype filter hook {hook} priority {}; policy accept;",
                    base.priority
                )?;
            }
            for rule in &chain.rules {
                writeln!(f, "\t\t{rule}")?;
            }
            writeln!(f, "\t}}")?;
        }
        writeln!(f, "}}")
    }
}

impl fmt::Display for Ruleset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, table) in self.tables.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{table}")?;
        }
        Ok(())
    }
}

impl SetKey {
    fn declaration(self) -> &'static str {
        match self {
            SetKey::Ipv4 => "type ipv4_addr",
            SetKey::Ipv6 => "type ipv6_addr",
            SetKey::Ether => "type ether_addr",
            SetKey::Ifname => "type ifname",
            SetKey::IfnameEther => "type ifname . ether_addr",
            SetKey::IfnameIpv4 => "type ifname . ipv4_addr",
            SetKey::IfnameIpv6 => "type ifname . ipv6_addr",
            SetKey::Raw128 => "typeof @th,64,128",
            SetKey::IfnameRaw128 => "typeof iifname . @th,64,128",
            SetKey::IfnameNdMac(8) => "typeof iifname . @th,80,48",
            SetKey::IfnameNdMac(_) => "typeof iifname . @th,208,48",
            SetKey::Pair(IpVersion::V4) => "type ipv4_addr . ipv4_addr",
            SetKey::Pair(IpVersion::V6) => "type ipv6_addr . ipv6_addr",
            SetKey::Service(IpVersion::V4) => {
                "type ipv4_addr . ipv4_addr . inet_proto . inet_service\n\t\tflags interval"
            }
            SetKey::Service(IpVersion::V6) => {
                "type ipv6_addr . ipv6_addr . inet_proto . inet_service\n\t\tflags interval"
            }
        }
    }

    /// Whether the address part is written as a raw 128-bit integer.
    fn raw(self) -> bool {
        matches!(self, SetKey::Raw128 | SetKey::IfnameRaw128)
    }
}

impl Element {
    pub(super) fn text(&self, key: SetKey) -> String {
        let addr = |a: &IpAddr| match a {
            IpAddr::V6(v6) if key.raw() => format!("0x{:032x}", u128::from(*v6)),
            _ => a.to_string(),
        };
        match self {
            Element::Ip(a) => addr(a),
            Element::Mac(m) => mac_text(m),
            Element::Port(p) => format!("\"{p}\""),
            Element::PortMac(p, m) if matches!(key, SetKey::IfnameNdMac(_)) => {
                let raw = m.iter().fold(0u64, |n, b| n << 8 | u64::from(*b));
                format!("\"{p}\" . 0x{raw:012x}")
            }
            Element::PortMac(p, m) => format!("\"{p}\" . {}", mac_text(m)),
            Element::PortIp(p, a) => format!("\"{p}\" . {}", addr(a)),
            Element::Pair(from, to) => format!("{from} . {to}"),
            Element::Service {
                from,
                to,
                protocol,
                first,
                last,
            } => {
                let ports = if first == last {
                    first.to_string()
                } else {
                    format!("{first}-{last}")
                };
                let protocol = match *protocol {
                    6 => "tcp".to_owned(),
                    17 => "udp".to_owned(),
                    other => other.to_string(),
                };
                format!("{from} . {to} . {protocol} . {ports}")
            }
        }
    }
}
