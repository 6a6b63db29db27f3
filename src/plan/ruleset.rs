//! The ruleset model: tables, chains, rules and sets as plain values, and the questions
//! the daemon asks of a planned ruleset (its bridges, its drops, how it differs from what
//! the kernel holds).

use std::collections::BTreeSet;
use std::net::IpAddr;

use ipnetwork::IpNetwork;

use super::names;
use crate::policy::{Mode, PortRange};

/// An Ethernet address.
pub type Mac = [u8; 6];

/// Why a packet is dropped. Each reason has its own deny chain per network (and family),
/// hence its own counter and log prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reason {
    /// A connection between two containers of the network that the policy does not allow.
    Isolation,
    /// A connection from a container to the host.
    Host,
    /// A connection through the host to a `deny_outbound` destination.
    Outbound,
    /// A forged frame (port security): another's MAC or address, a rogue router or DHCP
    /// server.
    Spoofed,
}

impl Reason {
    pub const ALL: [Reason; 4] = [
        Reason::Isolation,
        Reason::Host,
        Reason::Outbound,
        Reason::Spoofed,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Reason::Isolation => "isolation",
            Reason::Host => "host",
            Reason::Outbound => "outbound",
            Reason::Spoofed => "spoofed",
        }
    }

    pub fn parse(text: &str) -> Option<Reason> {
        Reason::ALL.into_iter().find(|r| r.name() == text)
    }
}

/// `limit rate LOG_RATE/second burst LOG_BURST packets log prefix "…" group N`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogAction {
    pub group: u16,
    pub prefix: String,
}

/// Address family of a set or a match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum IpVersion {
    V4,
    V6,
}

impl IpVersion {
    pub fn of(addr: &IpAddr) -> Self {
        match addr {
            IpAddr::V4(_) => IpVersion::V4,
            IpAddr::V6(_) => IpVersion::V6,
        }
    }

    pub(super) fn of_net(net: &IpNetwork) -> Self {
        IpVersion::of(&net.ip())
    }

    /// The length of an address of this family, in bytes.
    pub fn addr_len(self) -> u32 {
        match self {
            IpVersion::V4 => 4,
            IpVersion::V6 => 16,
        }
    }

    /// The `nft` keyword for this family's header (`ip` or `ip6`).
    pub(super) fn keyword(self) -> &'static str {
        match self {
            IpVersion::V4 => "ip",
            IpVersion::V6 => "ip6",
        }
    }
}

/// The nftables family of one of our tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    Inet,
    Bridge,
}

impl Family {
    pub const ALL: [Family; 2] = [Family::Inet, Family::Bridge];

    pub fn keyword(self) -> &'static str {
        match self {
            Family::Inet => "inet",
            Family::Bridge => "bridge",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    Prerouting,
    Forward,
    Input,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BaseChain {
    pub hook: Hook,
    pub priority: i32,
}

/// Which end of a packet a match looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    Src,
    Dst,
}

impl Dir {
    pub(super) fn keyword(self) -> &'static str {
        match self {
            Dir::Src => "saddr",
            Dir::Dst => "daddr",
        }
    }
}

/// One condition of a rule; a rule matches when all of its conditions do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Match {
    IifName(String),
    OifName(String),
    /// `oifname != "br-…"`
    OifNameNot(String),
    /// `iifname != "vxlan0"`
    IifNameNot(String),
    /// `tcp dport 8000-8100`: a protocol and a destination port range.
    DestPort(PortRange),
    /// `ct state established,related`
    CtEstablishedRelated,
    /// `ip saddr 10.0.0.0/24`
    Subnet(Dir, IpNetwork),
    /// `ip saddr @set`
    InSet(Dir, IpVersion, String),
    /// `icmpv6 type FROM-TO` (inclusive)
    Icmpv6Types(u8, u8),
    /// `tcp flags & (fin | syn | rst | ack) == syn`: the first packet of a TCP connection.
    TcpSyn,
    /// `icmp type echo-request` / `icmpv6 type echo-request`
    EchoRequest(IpVersion),
    /// `ip frag-off & 0x3fff != 0`: an IPv4 fragment, whose transport header cannot be
    /// read (so the TCP and ICMP matches above cannot judge it).
    Ipv4Fragment,
    /// `exthdr frag exists`: an IPv6 fragment (the same, for IPv6).
    Ipv6Fragment,
    /// `ether type ip` (bridge family): the ethertype in the frame's own header, at offset
    /// 12. A VLAN-tagged frame reads 0x8100 (0x88a8) there even once the kernel has moved
    /// its tag out of the packet, where `meta protocol` would read the inner type: so only
    /// an untagged frame of that type matches.
    EtherType(EtherType),
    /// `udp sport 67`
    UdpSourcePort(u16),
    /// `ip6 saddr ::`: duplicate address detection speaks from the unspecified address.
    Ipv6Unspecified,
    /// `ip saddr 0.0.0.0`: so does a DHCP client before it has an address.
    Ipv4Unspecified,
    /// `arp saddr ip 0.0.0.0`: an ARP probe.
    ArpProbe,
    /// `@th,192,16 0x0101`: the option at this offset of a neighbour discovery message
    /// (ICMPv6) is a link-layer address option (source 1, target 2) of one unit (a MAC).
    NdLinkLayerOption {
        offset: u8,
        kind: u8,
    },
    /// `ip6 length 24`: the payload length (a neighbour discovery message with no option
    /// at all, when no extension header comes first).
    Ipv6Length(u16),
    /// `ip6 nexthdr 58`: the header after IPv6's own.
    Ipv6NextHeader(u8),
    /// `ether daddr & ff:ff:ff:ff:ff:f0 == 01:80:c2:00:00:00`: a frame to one of the IEEE
    /// link-local groups, which the bridge does not forward but hands to the port's own
    /// stack, past its prerouting hook (and port security).
    LinkLocalGroup,
    /// `iifname . ether saddr @set`: the concatenation of fields, looked up in a set.
    Lookup(Vec<Field>, String),
}

/// The ethertypes port security lets through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EtherType {
    Ipv4,
    Ipv6,
    Arp,
}

/// One field of a set lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    IifName,
    EtherSource,
    IpSource(IpVersion),
    ArpSenderMac,
    ArpSenderIp,
    /// The target address of an IPv6 neighbour advertisement (`@th,64,128`: nft 1.0.6
    /// has no name for it).
    AdvertTarget,
    /// The MAC of the link-layer address option at this offset of a neighbour discovery
    /// message (`@th,208,48` for offset 24).
    NdOptionMac(u8),
    IpDest(IpVersion),
    /// `meta l4proto`
    L4Proto,
    /// `th dport`
    DestPort,
    /// `th sport`
    SourcePort,
}

impl Field {
    /// Whether the field is one of a connection's (addresses, protocol, ports): lookups of
    /// those are laid out in 32-bit registers, as nft does.
    pub fn of_flow(self) -> bool {
        matches!(
            self,
            Field::IpDest(_) | Field::L4Proto | Field::DestPort | Field::SourcePort
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Return,
    Drop,
    /// Ends our base chain for this packet (port security: a frame checked whole).
    Accept,
    Jump(String),
    Goto(String),
    /// No verdict: the next rule judges (a rule that only logs).
    Continue,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub matches: Vec<Match>,
    pub counter: bool,
    /// Rate-limited: a packet over the limit skips the rest of this rule (so a rule that
    /// logs must not also decide anything).
    pub log: Option<LogAction>,
    pub verdict: Verdict,
}

impl Rule {
    pub(super) fn new(matches: Vec<Match>, verdict: Verdict) -> Self {
        Rule {
            matches,
            counter: false,
            log: None,
            verdict,
        }
    }

    pub(super) fn counted(matches: Vec<Match>, verdict: Verdict) -> Self {
        Rule {
            matches,
            counter: true,
            log: None,
            verdict,
        }
    }

    pub(super) fn logged(log: LogAction) -> Self {
        Rule {
            matches: Vec::new(),
            counter: false,
            log: Some(log),
            verdict: Verdict::Continue,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    pub name: String,
    pub base: Option<BaseChain>,
    pub rules: Vec<Rule>,
}

/// What a set's elements are: the kernel's key type and length follow from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetKey {
    Ipv4,
    Ipv6,
    Ether,
    Ifname,
    IfnameEther,
    IfnameIpv4,
    IfnameIpv6,
    /// `typeof @th,64,128`: IPv6 addresses, looked up as a raw transport-header field.
    Raw128,
    /// `typeof iifname . @th,64,128`
    IfnameRaw128,
    /// `typeof iifname . @th,208,48`: MACs, looked up as the raw link-layer option at this
    /// offset of a neighbour discovery message (24: a neighbour solicitation or
    /// advertisement, 8: a router solicitation; no other).
    IfnameNdMac(u8),
    /// `type ipv4_addr . ipv4_addr` (and IPv6): a source and a destination.
    Pair(IpVersion),
    /// `type ipv4_addr . ipv4_addr . inet_proto . inet_service; flags interval` (and
    /// IPv6): a source, a destination, a protocol and a range of ports.
    Service(IpVersion),
}

/// One element of a set.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Element {
    Ip(IpAddr),
    Mac(Mac),
    Port(String),
    PortMac(String, Mac),
    PortIp(String, IpAddr),
    /// A source and a destination of one family.
    Pair(IpAddr, IpAddr),
    /// A source, a destination, a protocol number and a range of destination ports.
    Service {
        from: IpAddr,
        to: IpAddr,
        protocol: u8,
        first: u16,
        last: u16,
    },
}

pub fn mac_text(m: &Mac) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The IPv6 link-local address the kernel derives from a MAC (EUI-64), as a container's
/// interface and a Docker bridge get by default.
pub fn link_local(mac: &Mac) -> IpAddr {
    let eui = [
        mac[0] ^ 0x02,
        mac[1],
        mac[2],
        0xff,
        0xfe,
        mac[3],
        mac[4],
        mac[5],
    ];
    let mut octets = [0u8; 16];
    octets[0] = 0xfe;
    octets[1] = 0x80;
    octets[8..].copy_from_slice(&eui);
    IpAddr::V6(octets.into())
}

/// A named set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Set {
    pub name: String,
    pub key: SetKey,
    pub elements: BTreeSet<Element>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    pub family: Family,
    pub name: String,
    pub sets: Vec<Set>,
    pub chains: Vec<Chain>,
}

/// A chain of ours, by family and name: where the kernel keeps a counter.
pub type ChainId = (Family, String);

/// Packets counted by the `counter` rules of each chain (our counters only count drops).
pub type Counters = std::collections::BTreeMap<ChainId, u64>;

/// What the ruleset holds for one network: its bridge, and the chains whose counters are
/// its drops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedNetwork {
    pub name: String,
    pub bridge: String,
    pub mode: Mode,
    /// The deny chains, whose counters count the network's drops (or, in audit mode,
    /// would-be drops), by reason.
    pub deny_chains: Vec<(Reason, ChainId)>,
}

/// The complete desired state of our tables. `tables` is empty when nothing is managed:
/// then none of our tables should exist in the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ruleset {
    /// Name of our tables, in every family.
    pub table_name: String,
    pub tables: Vec<Table>,
    /// The networks the tables isolate, in name order.
    pub networks: Vec<PlannedNetwork>,
}

/// How the kernel must change to hold a ruleset, given what was last committed there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// The kernel holds it already: nothing to send.
    None,
    /// Only set elements differ (whitelists, grants, bound ports): an element batch.
    Elements,
    /// Our tables are replaced whole.
    Full,
}

impl Ruleset {
    /// An empty ruleset: none of our tables should exist.
    pub fn empty(table_name: &str) -> Ruleset {
        Ruleset {
            table_name: table_name.to_owned(),
            tables: Vec::new(),
            networks: Vec::new(),
        }
    }

    /// The bridges of the managed networks.
    pub fn bridges(&self) -> BTreeSet<String> {
        self.networks.iter().map(|n| n.bridge.clone()).collect()
    }

    /// The packets dropped for `network` for `reason`, from the counters read back.
    pub fn dropped_for(&self, network: &str, reason: Reason, counters: &Counters) -> u64 {
        self.networks
            .iter()
            .filter(|n| n.name == network)
            .flat_map(|n| &n.deny_chains)
            .filter(|(r, _)| *r == reason)
            .filter_map(|(_, chain)| counters.get(chain))
            .sum()
    }

    /// The packets dropped for `network` (every reason but forged frames), from the
    /// counters read back from the kernel.
    pub fn dropped(&self, network: &str, counters: &Counters) -> u64 {
        [Reason::Isolation, Reason::Host, Reason::Outbound]
            .into_iter()
            .map(|r| self.dropped_for(network, r, counters))
            .sum()
    }

    /// How many container ports of `network` are bound to their identity.
    pub fn bound_ports(&self, network: &str) -> usize {
        let name = names::port_set(names::PortSet::Ports, network);
        self.table(Family::Bridge)
            .and_then(|t| t.sets.iter().find(|s| s.name == name))
            .map_or(0, |s| s.elements.len())
    }

    /// The forged frames dropped for `network` (port security).
    pub fn spoofed(&self, network: &str, counters: &Counters) -> u64 {
        self.dropped_for(network, Reason::Spoofed, counters)
    }

    /// What it takes to go from `committed` (what the kernel was last given, if known) to
    /// this ruleset.
    pub fn change_from(&self, committed: Option<&Ruleset>) -> Change {
        match committed {
            Some(current) if current == self => Change::None,
            Some(current) if current.same_skeleton(self) => Change::Elements,
            _ => Change::Full,
        }
    }

    /// The same ruleset with every set emptied: what must match for an update to be a
    /// set-element change only.
    pub fn skeleton(&self) -> Ruleset {
        Ruleset {
            table_name: self.table_name.clone(),
            tables: self
                .tables
                .iter()
                .map(|t| Table {
                    family: t.family,
                    name: t.name.clone(),
                    sets: t
                        .sets
                        .iter()
                        .map(|s| Set {
                            name: s.name.clone(),
                            key: s.key,
                            elements: BTreeSet::new(),
                        })
                        .collect(),
                    chains: t.chains.clone(),
                })
                .collect(),
            networks: self.networks.clone(),
        }
    }

    /// Whether `other` differs from this ruleset in set elements at most (the same as
    /// comparing skeletons, without copying anything).
    pub fn same_skeleton(&self, other: &Ruleset) -> bool {
        self.table_name == other.table_name
            && self.tables.len() == other.tables.len()
            && self.tables.iter().zip(&other.tables).all(|(a, b)| {
                a.family == b.family
                    && a.name == b.name
                    && a.chains == b.chains
                    && a.sets.len() == b.sets.len()
                    && a.sets
                        .iter()
                        .zip(&b.sets)
                        .all(|(x, y)| x.name == y.name && x.key == y.key)
            })
    }

    /// A stable 64-bit fingerprint of the skeleton (FNV-1a of its `nft` text), stored in the
    /// kernel with our tables so a read-back can tell whether they are the ones we wrote.
    pub fn fingerprint(&self) -> u64 {
        let text = self.skeleton().to_string();
        text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
        })
    }

    pub fn table(&self, family: Family) -> Option<&Table> {
        self.tables.iter().find(|t| t.family == family)
    }
}
