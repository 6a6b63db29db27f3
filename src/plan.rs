//! The pure heart of trafficjam: managed networks in, desired nftables ruleset out.
//!
//! Nothing here does I/O. [`plan`] turns a list of [`ManagedNetwork`]s into a [`Ruleset`]
//! value that `nft` applies in one batch and that renders as `nft` text (`Display`).
//!
//! Shape (DESIGN.md §3, "nftables layout"), per managed network N on bridge B:
//! - `inet` table: `forward` (hook forward, priority filter - 10) sends B-to-B traffic to
//!   `fwd_N`: established/related and whitelisted sources return, neighbour discovery
//!   returns, the rest is counted and dropped. `input` sends traffic from B to the host to
//!   `host_N` (unless the host is open): established/related and neighbour discovery
//!   return (and the whitelisted, and the host ports allowed), the rest is dropped. Allow
//!   rules are two set lookups in `fwd_N` (pairs allowed everything; pairs allowed a
//!   protocol and port ranges); `deny_outbound` is `out_N`, for connections routed out
//!   of the bridge.
//! - `bridge` table: a stateless backstop that works without br_netfilter. A packet with
//!   source and destination inside N's subnets goes to `iso_N`: whitelisted sources return;
//!   a non-whitelisted source may not open TCP or ping anyone; replies to a whitelisted
//!   destination return; the rest is dropped.
//!
//! - `bridge` table, port security (`prerouting`, before the bridge learns a source MAC):
//!   a frame from a container's resolved port must carry that container's own MAC, IP
//!   source, ARP sender and neighbour-advertisement target, and no router advertisement,
//!   redirect or DHCP server message; a frame from any other port may not claim the
//!   identity (MAC, address, ARP sender, advertised target) of a resolved container or of
//!   the gateway. Every check is a set lookup, so a container start is an element update.
//!
//! Isolation chains only ever `return` or `drop`: `accept` would not end another table's
//! chain anyway, and dropping composes with Docker's own rules whatever backend it uses.
//! Port security accepts a frame it has checked whole, which ends only our own
//! `prerouting` chain (so a checked frame skips the claims of other networks).

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;

use ipnetwork::IpNetwork;

/// The default name of our tables (one in the `inet` family, one in `bridge`).
pub const DEFAULT_TABLE: &str = "trafficjam";

/// Priority of our base chains in the `inet` family: `filter - 10`, so we drop before
/// Docker's own filter chains accept.
pub const INET_PRIORITY: i32 = -10;
/// Priority of the bridge backstop: `filter` of the bridge family.
pub const BRIDGE_PRIORITY: i32 = -200;
/// Priority of port security: `dstnat` of the bridge family, ahead of anything that could
/// act on a forged frame.
pub const PORT_PRIORITY: i32 = -300;

/// ICMPv6 neighbour discovery: router solicitation (133) to neighbour advertisement (136).
/// Without these, IPv6 neighbours cannot resolve each other's link-layer address.
pub const ND_TYPES: (u8, u8) = (133, 136);

/// The names the kernel sees, built here and nowhere else: base chains, per-network chains
/// and sets. Everything that needs to find one of them asks the [`Ruleset`] or these.
pub mod names {
    use super::IpVersion;

    /// The base chain at the forward hook (both families).
    pub const FORWARD: &str = "forward";
    /// The base chain at the input hook (`inet`).
    pub const INPUT: &str = "input";
    /// The base chain of port security at the prerouting hook (`bridge`).
    pub const PREROUTING: &str = "prerouting";

    /// `inet`: bridge-to-bridge traffic of one network.
    pub fn forward_chain(network: &str) -> String {
        format!("fwd_{network}")
    }

    /// `inet`: traffic from one network's bridge to the host.
    pub fn host_chain(network: &str) -> String {
        format!("host_{network}")
    }

    /// `bridge`: the stateless backstop of one network.
    pub fn isolation_chain(network: &str) -> String {
        format!("iso_{network}")
    }

    /// Where one network's drops of one reason go (in each family that has them): the
    /// chain logs (NFLOG) and counts the packet, then drops it, or, in audit mode, lets it
    /// be. So every drop has one counter per reason and at most one log line per packet.
    pub fn deny_chain(reason: super::Reason, network: &str) -> String {
        format!("deny_{}_{network}", reason.name())
    }

    /// `inet`: connections the containers of one network open through the host to
    /// elsewhere (`deny_outbound`).
    pub fn outbound_chain(network: &str) -> String {
        format!("out_{network}")
    }

    /// Pairs of addresses of one network and family allowed every port and protocol.
    pub fn pair_set(network: &str, version: IpVersion) -> String {
        match version {
            IpVersion::V4 => format!("allow4_{network}"),
            IpVersion::V6 => format!("allow6_{network}"),
        }
    }

    /// Pairs of addresses of one network and family allowed a protocol and port range.
    pub fn service_set(network: &str, version: IpVersion) -> String {
        match version {
            IpVersion::V4 => format!("svc4_{network}"),
            IpVersion::V6 => format!("svc6_{network}"),
        }
    }

    /// The whitelisted addresses of one network and family.
    pub fn whitelist_set(network: &str, version: IpVersion) -> String {
        match version {
            IpVersion::V4 => format!("wl4_{network}"),
            IpVersion::V6 => format!("wl6_{network}"),
        }
    }

    /// `inet`: the addresses of an overlay network's containers on this node.
    pub fn local_set(network: &str, version: IpVersion) -> String {
        match version {
            IpVersion::V4 => format!("loc4_{network}"),
            IpVersion::V6 => format!("loc6_{network}"),
        }
    }

    /// `bridge`: the port-security chains of one network, by role.
    pub fn port_chain(role: PortCheck, network: &str) -> String {
        let prefix = match role {
            PortCheck::Mac => "port",
            PortCheck::Source => "port_src",
            PortCheck::Ipv4 => "port_ip4",
            PortCheck::Ipv6 => "port_ip6",
            PortCheck::Advert => "port_na",
            PortCheck::Solicit => "port_ns",
            PortCheck::RouterSolicit => "port_rs",
            PortCheck::Arp => "port_arp",
            PortCheck::Claims => "claims",
            PortCheck::Dispatch => "portsec",
            PortCheck::Forward => "port_fwd",
            PortCheck::Unbound => "unbound",
        };
        format!("{prefix}_{network}")
    }

    /// `bridge`: the port-security sets of one network, by content.
    pub fn port_set(content: PortSet, network: &str) -> String {
        let prefix = match content {
            PortSet::Ports => "ports",
            PortSet::Unbound => "unbound",
            PortSet::PortMac => "pmac",
            PortSet::PortIpv4 => "pip4",
            PortSet::PortIpv6 => "pip6",
            PortSet::PortAdvert => "pna",
            PortSet::PortNdMac => "pndmac",
            PortSet::PortRsMac => "prsmac",
            PortSet::Mac => "idmac",
            PortSet::Ipv4 => "idip4",
            PortSet::Ipv6 => "idip6",
            PortSet::Advert => "idna",
        };
        format!("{prefix}_{network}")
    }

    /// The roles of the port-security chains.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum PortCheck {
        /// A resolved port's source MAC.
        Mac,
        /// Dispatch by ethertype, once the MAC is the port's own.
        Source,
        Ipv4,
        Ipv6,
        /// IPv6 neighbour advertisements: the target must be the port's own.
        Advert,
        /// Neighbour solicitations.
        Solicit,
        /// Router solicitations.
        RouterSolicit,
        Arp,
        /// Frames from every other port: no claim on a known identity.
        Claims,
        /// An audited network's dispatch (see `bridge_table`).
        Dispatch,
        /// The backstop's judgement of what a bound port sends on to other ports.
        Forward,
        /// What a port of no known container may not send, whoever it claims to be.
        Unbound,
    }

    impl PortCheck {
        pub const ALL: [PortCheck; 8] = [
            PortCheck::Mac,
            PortCheck::Source,
            PortCheck::Ipv4,
            PortCheck::Ipv6,
            PortCheck::Advert,
            PortCheck::Arp,
            PortCheck::Claims,
            PortCheck::Dispatch,
        ];
    }

    /// The contents of the port-security sets: per port (name . identity), and the known
    /// identities of the network (every resolved container and the gateway).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum PortSet {
        Ports,
        /// The bridge's ports of no known container.
        Unbound,
        PortMac,
        PortIpv4,
        PortIpv6,
        /// The same elements as `PortIpv6`, typed for a raw neighbour-advertisement target.
        PortAdvert,
        /// The same elements as `PortMac`, typed for the raw link-layer option of a
        /// neighbour solicitation or advertisement.
        PortNdMac,
        /// The same, for the link-layer option of a router solicitation.
        PortRsMac,
        Mac,
        Ipv4,
        Ipv6,
        /// The same elements as `Ipv6`, typed for a raw neighbour-advertisement target.
        Advert,
    }
}

/// An Ethernet address.
pub type Mac = [u8; 6];

/// What happens to a packet a network's policy forbids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Dropped (and logged).
    #[default]
    Enforce,
    /// Logged and counted, not dropped: to try a policy on a live network.
    Audit,
}

impl Mode {
    pub fn parse(text: &str) -> Option<Mode> {
        match text {
            "enforce" => Some(Mode::Enforce),
            "audit" => Some(Mode::Audit),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Audit => "audit",
        }
    }
}

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

/// The prefix of our NFLOG messages: `tj REASON NETWORK` (the kernel carries at most 127
/// bytes; a longer network name is cut, and the reader then knows the network by its
/// bridge).
pub fn log_prefix(reason: Reason, network: &str) -> String {
    let mut prefix = format!("{LOG_PREFIX_TAG} {} {network}", reason.name());
    if prefix.len() > LOG_PREFIX_MAX {
        let mut end = LOG_PREFIX_MAX;
        while !prefix.is_char_boundary(end) {
            end -= 1;
        }
        prefix.truncate(end);
    }
    prefix
}

/// The first word of our log prefixes.
pub const LOG_PREFIX_TAG: &str = "tj";
/// NF_LOG_PREFIXLEN less the terminating NUL.
pub const LOG_PREFIX_MAX: usize = 127;
/// How many drops per second (and in one burst) each deny chain reports to NFLOG: bounds
/// what a flood costs the kernel and the daemon. The drops themselves are never limited.
pub const LOG_RATE: u32 = 100;
pub const LOG_BURST: u32 = 200;

/// `limit rate LOG_RATE/second burst LOG_BURST packets log prefix "…" group N`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogAction {
    pub group: u16,
    pub prefix: String,
}

/// A container's port on a managed network's bridge, resolved from the kernel: the
/// host-side interface, the MAC of its peer in the container, and the container's
/// addresses on the network (from Docker's endpoint with that MAC).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Port {
    pub name: String,
    pub mac: Mac,
    pub addrs: Vec<IpAddr>,
}

/// One Docker network under isolation, as plain data.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ManagedNetwork {
    /// The Docker network's name (used in chain and set names).
    pub name: String,
    /// The Linux bridge interface behind it (`br-…`, `docker0`, or the configured name).
    pub bridge: String,
    /// Every subnet of the network, IPv4 and IPv6.
    pub subnets: Vec<IpNetwork>,
    /// Addresses of the whitelisted containers on this network.
    pub whitelist: BTreeSet<IpAddr>,
    /// Which containers may open connections to the host.
    pub host_access: HostAccess,
    /// Host ports every container may open even when `host_access` closes the host.
    pub host_ports: Vec<PortRange>,
    /// Destinations the containers may not open connections to through the host.
    pub deny_outbound: Vec<IpNetwork>,
    /// Whether the policy has allow rules: their sets and rules then exist even while no
    /// container matches, so containers coming and going are element updates.
    pub allow_rules: bool,
    /// Who else may open connections to whom (allow rules, resolved to addresses).
    pub grants: BTreeSet<Grant>,
    /// The containers' resolved ports (port security binds each to its own identity).
    pub ports: Vec<Port>,
    /// The bridge's other ports, of no known container yet (a container Docker has not
    /// reported, a veth that is not Docker's): they may claim no known identity, and send
    /// no router's or DHCP server's message and no tagged frame.
    pub unbound_ports: Vec<String>,
    /// The bridge's own MAC (the gateway's), when known.
    pub gateway_mac: Option<Mac>,
    /// The gateway addresses of the network's subnets.
    pub gateways: Vec<IpAddr>,
    /// Whether forbidden packets are dropped or only logged and counted.
    pub mode: Mode,
    /// The NFLOG group drops are reported to (`None`: not reported).
    pub log_group: Option<u16>,
    /// A Swarm overlay network, planned alone in its namespace on this node: the bridge's
    /// port to the other nodes (the VXLAN device). What comes in there was judged by the
    /// node it comes from; every other port is this node's to judge, and a port of no
    /// known container may not speak at all.
    pub remote_port: Option<String>,
    /// With `remote_port`: whether conntrack judges the bridge's traffic (br_netfilter on
    /// for it). Without, what goes out to other nodes cannot be told from answers to their
    /// proxies, and stays in (those proxies cannot reach this node's containers).
    pub remote_stateful: bool,
}

/// What the containers of a network may open to the host itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HostAccess {
    /// Nothing (but `host_ports`): published ports, docker-proxy and host services closed.
    #[default]
    Closed,
    /// The whitelisted containers only (a proxy in front of host services).
    Whitelisted,
    /// Every container.
    Open,
}

impl HostAccess {
    pub fn name(self) -> &'static str {
        match self {
            HostAccess::Closed => "closed",
            HostAccess::Whitelisted => "whitelisted",
            HostAccess::Open => "open",
        }
    }
}

/// A transport protocol of an allow rule or a host port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    /// The IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

/// A protocol and an inclusive range of destination ports: `53/udp`, `8000-8100/tcp`,
/// `tcp` (every port).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortRange {
    pub protocol: Protocol,
    pub first: u16,
    pub last: u16,
}

impl PortRange {
    /// One UDP port.
    pub fn udp(port: u16) -> PortRange {
        PortRange {
            protocol: Protocol::Udp,
            first: port,
            last: port,
        }
    }

    /// Parses `PORT/PROTO`, `FIRST-LAST/PROTO` or `PROTO`.
    pub fn parse(text: &str) -> Result<PortRange, String> {
        let protocol_of = |name: &str| match name {
            "tcp" => Ok(Protocol::Tcp),
            "udp" => Ok(Protocol::Udp),
            other => Err(format!(
                "{text:?}: unknown protocol {other:?} (tcp or udp; examples: \"5432/tcp\", \"53/udp\", \"8000-8100/tcp\", \"tcp\")"
            )),
        };
        let Some((ports, proto)) = text.split_once('/') else {
            if text.starts_with(|c: char| c.is_ascii_digit()) {
                return Err(format!(
                    "{text:?}: the protocol is missing: \"{text}/tcp\" or \"{text}/udp\""
                ));
            }
            return Ok(PortRange {
                protocol: protocol_of(text)?,
                first: 1,
                last: u16::MAX,
            });
        };
        let protocol = protocol_of(proto)?;
        let port = |p: &str| -> Result<u16, String> {
            match p.parse::<u16>() {
                Ok(n) if n > 0 => Ok(n),
                _ => Err(format!("{text:?}: {p:?} is not a port (1 to 65535)")),
            }
        };
        let (first, last) = match ports.split_once('-') {
            Some((a, b)) => (port(a)?, port(b)?),
            None => (port(ports)?, port(ports)?),
        };
        if first > last {
            return Err(format!("{text:?}: the range ends before it starts"));
        }
        Ok(PortRange {
            protocol,
            first,
            last,
        })
    }

    fn every_port(&self) -> bool {
        self.first <= 1 && self.last == u16::MAX
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let proto = self.protocol.name();
        if self.every_port() {
            f.write_str(proto)
        } else if self.first == self.last {
            write!(f, "{}/{proto}", self.first)
        } else {
            write!(f, "{}-{}/{proto}", self.first, self.last)
        }
    }
}

/// One permission, resolved: `from` may open connections to `to`, on `ports` (`None`:
/// every protocol and port). Answers flow back; the other direction stays closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Grant {
    pub from: IpAddr,
    pub to: IpAddr,
    pub ports: Option<PortRange>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error(
        "network name {0:?} is not a valid Docker network name ([a-zA-Z0-9][a-zA-Z0-9_.-]*, at most 200 characters)"
    )]
    BadNetworkName(String),
    #[error("network {network}: bridge name {bridge:?} is not a valid interface name")]
    BadBridgeName { network: String, bridge: String },
    #[error("network {0:?} is listed twice")]
    DuplicateNetwork(String),
    #[error("networks {first:?} and {second:?} share the bridge {bridge:?}")]
    SharedBridge {
        first: String,
        second: String,
        bridge: String,
    },
    #[error("table name {0:?} is not valid ([a-zA-Z][a-zA-Z0-9_]*, at most 64 characters)")]
    BadTableName(String),
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

    fn of_net(net: &IpNetwork) -> Self {
        IpVersion::of(&net.ip())
    }

    /// nft's data type number for an address of this family.
    fn type_id(self) -> u32 {
        match self {
            IpVersion::V4 => TYPE_IPV4,
            IpVersion::V6 => TYPE_IPV6,
        }
    }

    /// The length of an address of this family, in bytes.
    pub fn addr_len(self) -> u32 {
        match self {
            IpVersion::V4 => 4,
            IpVersion::V6 => 16,
        }
    }

    /// The `nft` keyword for this family's header (`ip` or `ip6`).
    fn keyword(self) -> &'static str {
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
    fn keyword(self) -> &'static str {
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
    fn new(matches: Vec<Match>, verdict: Verdict) -> Self {
        Rule {
            matches,
            counter: false,
            log: None,
            verdict,
        }
    }

    fn counted(matches: Vec<Match>, verdict: Verdict) -> Self {
        Rule {
            matches,
            counter: true,
            log: None,
            verdict,
        }
    }

    fn logged(log: LogAction) -> Self {
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
/// An interface name as the kernel compares it: NUL-padded to IFNAMSIZ.
pub const IFNAME_LEN: usize = 16;

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

    fn text(&self, key: SetKey) -> String {
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

/// Source, destination, protocol (padded to 4 bytes) and port (big-endian, padded).
fn service_key(from: &IpAddr, to: &IpAddr, protocol: u8, port: u16) -> Vec<u8> {
    let mut k = ip_bytes(from);
    k.extend(ip_bytes(to));
    k.extend([protocol, 0, 0, 0]);
    k.extend(port.to_be_bytes());
    k.extend([0, 0]);
    k
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
    /// Only whitelist set elements differ: an element batch.
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

/// Checks a table name: it goes into netlink messages and `nft` text.
pub fn validate_table_name(name: &str) -> Result<(), PlanError> {
    let mut chars = name.chars();
    let ok = name.len() <= 64
        && chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(PlanError::BadTableName(name.to_owned()))
    }
}

/// Docker's rule for network names, with a length that chain and set names can carry.
pub fn valid_network_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= 200
        && chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

/// An interface name that netlink messages and `nft` text can carry: IFNAMSIZ is 16 with
/// the terminating NUL; '/' and whitespace are never valid.
fn valid_interface_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() < IFNAME_LEN
        && name
            .chars()
            .all(|c| c.is_ascii_graphic() && c != '/' && c != '"')
}

fn validate_network(net: &ManagedNetwork) -> Result<(), PlanError> {
    if !valid_network_name(&net.name) {
        return Err(PlanError::BadNetworkName(net.name.clone()));
    }
    if !valid_interface_name(&net.bridge) {
        return Err(PlanError::BadBridgeName {
            network: net.name.clone(),
            bridge: net.bridge.clone(),
        });
    }
    Ok(())
}

/// An IPv4 and an IPv6 set of addresses, named by `name` per family.
fn address_sets(name: impl Fn(IpVersion) -> String, addrs: &BTreeSet<IpAddr>) -> Vec<Set> {
    [IpVersion::V4, IpVersion::V6]
        .into_iter()
        .map(|version| Set {
            name: name(version),
            key: match version {
                IpVersion::V4 => SetKey::Ipv4,
                IpVersion::V6 => SetKey::Ipv6,
            },
            elements: addrs
                .iter()
                .filter(|a| IpVersion::of(a) == version)
                .map(|a| Element::Ip(*a))
                .collect(),
        })
        .collect()
}

/// An overlay network's containers on this node, by address (their ports' identities).
fn local_sets(net: &ManagedNetwork) -> Vec<Set> {
    let local = net
        .ports
        .iter()
        .flat_map(|p| p.addrs.iter().copied().chain([link_local(&p.mac)]))
        .collect();
    address_sets(|v| names::local_set(&net.name, v), &local)
}

fn whitelist_sets(net: &ManagedNetwork) -> Vec<Set> {
    address_sets(|v| names::whitelist_set(&net.name, v), &net.whitelist)
}

/// The allow rules' sets of one network: pairs allowed everything, and pairs allowed a
/// protocol and port ranges (ranges of one pair and protocol merged, as the kernel refuses
/// overlapping ranges). A pair allowed everything needs no port element; a container is
/// never paired with itself (its own traffic does not cross the bridge).
fn grant_sets(net: &ManagedNetwork) -> Vec<Set> {
    use std::collections::BTreeMap;
    let open: BTreeSet<(IpAddr, IpAddr)> = net
        .grants
        .iter()
        .filter(|g| g.ports.is_none() && g.from != g.to)
        .filter(|g| IpVersion::of(&g.from) == IpVersion::of(&g.to))
        .map(|g| (g.from, g.to))
        .collect();
    let mut ranges: BTreeMap<(IpAddr, IpAddr, u8), Vec<(u16, u16)>> = BTreeMap::new();
    for g in &net.grants {
        let Some(ports) = g.ports else { continue };
        if g.from == g.to
            || IpVersion::of(&g.from) != IpVersion::of(&g.to)
            || open.contains(&(g.from, g.to))
        {
            continue;
        }
        ranges
            .entry((g.from, g.to, ports.protocol.number()))
            .or_default()
            .push((ports.first, ports.last));
    }
    let mut services = BTreeSet::new();
    for ((from, to, protocol), mut list) in ranges {
        list.sort();
        let mut merged: Vec<(u16, u16)> = Vec::new();
        for (first, last) in list {
            match merged.last_mut() {
                Some(prev) if u32::from(first) <= u32::from(prev.1) + 1 => {
                    prev.1 = prev.1.max(last)
                }
                _ => merged.push((first, last)),
            }
        }
        for (first, last) in merged {
            services.insert(Element::Service {
                from,
                to,
                protocol,
                first,
                last,
            });
        }
    }
    let of = |e: &Element, version| match e {
        Element::Pair(a, _) | Element::Service { from: a, .. } => IpVersion::of(a) == version,
        _ => false,
    };
    let mut sets = Vec::new();
    for version in [IpVersion::V4, IpVersion::V6] {
        sets.push(Set {
            name: names::pair_set(&net.name, version),
            key: SetKey::Pair(version),
            elements: open
                .iter()
                .map(|(a, b)| Element::Pair(*a, *b))
                .filter(|e| of(e, version))
                .collect(),
        });
        sets.push(Set {
            name: names::service_set(&net.name, version),
            key: SetKey::Service(version),
            elements: services
                .iter()
                .filter(|e| of(e, version))
                .cloned()
                .collect(),
        });
    }
    sets
}

/// The allow rules' lookups, for a packet from the opening side (`Dir::Src` is the
/// opener) or for an answer (`Dir::Dst` is the opener: addresses and ports swapped).
fn grant_rules(net: &ManagedNetwork, opener: Dir) -> Vec<Rule> {
    let mut rules = Vec::new();
    for version in [IpVersion::V4, IpVersion::V6] {
        let (first, second, port) = match opener {
            Dir::Src => (
                Field::IpSource(version),
                Field::IpDest(version),
                Field::DestPort,
            ),
            Dir::Dst => (
                Field::IpDest(version),
                Field::IpSource(version),
                Field::SourcePort,
            ),
        };
        rules.push(Rule::new(
            vec![Match::Lookup(
                vec![first, second],
                names::pair_set(&net.name, version),
            )],
            Verdict::Return,
        ));
        rules.push(Rule::new(
            vec![Match::Lookup(
                vec![first, second, Field::L4Proto, port],
                names::service_set(&net.name, version),
            )],
            Verdict::Return,
        ));
    }
    rules
}

/// `ip saddr @wl4_N return; ip6 saddr @wl6_N return` (or the destinations): the
/// whitelisted end of a packet lets it through this chain.
fn whitelisted(net: &ManagedNetwork, dir: Dir) -> Vec<Rule> {
    [IpVersion::V4, IpVersion::V6]
        .into_iter()
        .map(|version| {
            Rule::new(
                vec![Match::InSet(
                    dir,
                    version,
                    names::whitelist_set(&net.name, version),
                )],
                Verdict::Return,
            )
        })
        .collect()
}

/// Rules shared by every per-network chain: let IPv6 neighbour discovery through.
fn neighbour_discovery() -> Rule {
    Rule::new(
        vec![Match::Icmpv6Types(ND_TYPES.0, ND_TYPES.1)],
        Verdict::Return,
    )
}

/// Multicast listener reports and dones (MLD, ICMPv6 131, 132, 143): every IPv6 interface
/// sends them to `ff02::16`/`ff02::2` when it comes up. They open nothing in any container;
/// dropped, they would fill the drop log with a line per container start.
fn listener_reports() -> [Rule; 2] {
    [
        Rule::new(vec![Match::Icmpv6Types(131, 132)], Verdict::Return),
        Rule::new(vec![Match::Icmpv6Types(143, 143)], Verdict::Return),
    ]
}

/// Sends a forbidden packet to the network's deny chain for `reason`.
fn deny(net: &ManagedNetwork, reason: Reason) -> Verdict {
    Verdict::Goto(names::deny_chain(reason, &net.name))
}

/// Whether the network has a deny chain for `reason` in `family`.
fn denies(net: &ManagedNetwork, family: Family, reason: Reason) -> bool {
    match (family, reason) {
        (Family::Inet, Reason::Isolation) => true,
        (Family::Inet, Reason::Host) => net.host_access != HostAccess::Open,
        (Family::Inet, Reason::Outbound) => !net.deny_outbound.is_empty(),
        (Family::Bridge, Reason::Isolation | Reason::Spoofed) => true,
        _ => false,
    }
}

/// The chain every drop of `reason` goes to (by `goto`, so that in audit mode its
/// `return` resumes after the `jump` into the network's chains, i.e. lets the packet be;
/// every path here has such a jump, port security's in audit mode included):
/// reports the packet to NFLOG (rate-limited, in a rule of its own: a packet over the
/// limit is still dropped), then counts it and drops it.
fn deny_chain(net: &ManagedNetwork, reason: Reason) -> Chain {
    let mut rules = Vec::new();
    if let Some(group) = net.log_group {
        rules.push(Rule::logged(LogAction {
            group,
            prefix: log_prefix(reason, &net.name),
        }));
    }
    rules.push(Rule::counted(
        vec![],
        match net.mode {
            Mode::Enforce => Verdict::Drop,
            Mode::Audit => Verdict::Return,
        },
    ));
    Chain {
        name: names::deny_chain(reason, &net.name),
        base: None,
        rules,
    }
}

fn inet_table(table_name: &str, networks: &[ManagedNetwork], vxlan_guard: &[String]) -> Table {
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

/// Port security for one network: its sets, its chains, and the two rules it adds to
/// `prerouting` (send a resolved port's frames to its checks; check every other port's
/// frames for claims on the network's identities).
struct PortSecurity {
    sets: Vec<Set>,
    chains: Vec<Chain>,
    dispatch: Vec<Rule>,
    claims: Rule,
}

fn port_security(net: &ManagedNetwork) -> PortSecurity {
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

fn bridge_table(table_name: &str, networks: &[ManagedNetwork]) -> Table {
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
    // may not, :00 with STP on and :02; the others it forwards, see nft/fdb.rs) pass its
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

/// Splits networks into those `plan` accepts and the errors of the others, so that one
/// odd network (a name Docker allows but nftables cannot carry, two networks of one name)
/// does not stop the isolation of all the rest. The first of a name or a bridge wins.
pub fn retain_plannable(networks: Vec<ManagedNetwork>) -> (Vec<ManagedNetwork>, Vec<PlanError>) {
    let mut kept: Vec<ManagedNetwork> = Vec::new();
    let mut rejected = Vec::new();
    for net in networks {
        if let Err(e) = validate_network(&net) {
            rejected.push(e);
        } else if kept.iter().any(|k| k.name == net.name) {
            rejected.push(PlanError::DuplicateNetwork(net.name));
        } else if let Some(k) = kept.iter().find(|k| k.bridge == net.bridge) {
            rejected.push(PlanError::SharedBridge {
                first: k.name.clone(),
                second: net.name,
                bridge: net.bridge,
            });
        } else {
            kept.push(net);
        }
    }
    (kept, rejected)
}

/// Turns the managed networks into the ruleset that isolates them.
///
/// Networks are planned in name order, so the same input always gives the same ruleset
/// (and the same fingerprint) whatever order it came in.
pub fn plan(table_name: &str, networks: &[ManagedNetwork]) -> Result<Ruleset, PlanError> {
    plan_guarded(table_name, networks, &[])
}

/// Docker's VXLAN data port: Swarm's overlay traffic between nodes.
pub const VXLAN_PORT: u16 = 4789;

/// [`plan`], and closes the VXLAN data port to what comes in by `vxlan_guard` (bridges
/// of the host's containers): an overlay's VXLAN socket takes any datagram to that port,
/// unauthenticated, so a container could send one to its own node (through
/// `docker_gwbridge`) or to another (routed out, masqueraded) with a forged frame inside,
/// that the node receiving it would take for another node's and never judge.
pub fn plan_guarded(
    table_name: &str,
    networks: &[ManagedNetwork],
    vxlan_guard: &[String],
) -> Result<Ruleset, PlanError> {
    validate_table_name(table_name)?;
    let mut sorted: Vec<ManagedNetwork> = networks.to_vec();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    for net in &sorted {
        validate_network(net)?;
    }
    for pair in sorted.windows(2) {
        if pair[0].name == pair[1].name {
            return Err(PlanError::DuplicateNetwork(pair[0].name.clone()));
        }
    }
    for (i, a) in sorted.iter().enumerate() {
        if let Some(b) = sorted[i + 1..].iter().find(|b| b.bridge == a.bridge) {
            return Err(PlanError::SharedBridge {
                first: a.name.clone(),
                second: b.name.clone(),
                bridge: a.bridge.clone(),
            });
        }
    }
    for net in &mut sorted {
        for subnet in &mut net.subnets {
            // Host bits set (10.0.0.1/24) would never match after masking: normalise.
            *subnet = IpNetwork::new(subnet.network(), subnet.prefix())
                .expect("a network address with its own prefix is valid");
        }
        net.subnets.sort();
        net.subnets.dedup();
        for dest in &mut net.deny_outbound {
            *dest = IpNetwork::new(dest.network(), dest.prefix())
                .expect("a network address with its own prefix is valid");
        }
        net.deny_outbound.sort();
        net.deny_outbound.dedup();
    }
    let mut guard: Vec<String> = vxlan_guard
        .iter()
        .filter(|b| valid_interface_name(b))
        .cloned()
        .collect();
    guard.sort();
    guard.dedup();
    if sorted.is_empty() && guard.is_empty() {
        return Ok(Ruleset::empty(table_name));
    }
    let networks = sorted
        .iter()
        .map(|net| PlannedNetwork {
            name: net.name.clone(),
            bridge: net.bridge.clone(),
            mode: net.mode,
            deny_chains: Family::ALL
                .into_iter()
                .flat_map(|family| Reason::ALL.into_iter().map(move |r| (family, r)))
                .filter(|(family, r)| denies(net, *family, *r))
                .map(|(family, r)| (r, (family, names::deny_chain(r, &net.name))))
                .collect(),
        })
        .collect();
    Ok(Ruleset {
        table_name: table_name.to_owned(),
        tables: vec![
            inet_table(table_name, &sorted, &guard),
            bridge_table(table_name, &sorted),
        ],
        networks,
    })
}

// ---- nft text -------------------------------------------------------------------------

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

#[cfg(test)]
mod tests {
    use super::*;

    fn net(name: &str, bridge: &str, subnets: &[&str], whitelist: &[&str]) -> ManagedNetwork {
        ManagedNetwork {
            name: name.into(),
            bridge: bridge.into(),
            subnets: subnets.iter().map(|s| s.parse().unwrap()).collect(),
            whitelist: whitelist.iter().map(|s| s.parse().unwrap()).collect(),
            ..ManagedNetwork::default()
        }
    }

    fn public() -> ManagedNetwork {
        net(
            "public",
            "br-public",
            &["172.20.0.0/16", "fd00:20::/64"],
            &["172.20.0.2", "fd00:20::2"],
        )
    }

    fn chain<'a>(rs: &'a Ruleset, family: Family, name: &str) -> &'a Chain {
        rs.table(family)
            .unwrap()
            .chains
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("no chain {name} in\n{rs}"))
    }

    /// An overlay network alone in its namespace: the proxy and a backend on this node.
    fn overlay(stateful: bool) -> ManagedNetwork {
        let port = |name: &str, last: u8| Port {
            name: name.into(),
            mac: [2, 0x42, 10, 0, 1, last],
            addrs: vec![format!("10.0.1.{last}").parse().unwrap()],
        };
        ManagedNetwork {
            ports: vec![port("veth-proxy", 2), port("veth-b1", 3)],
            remote_port: Some("vxlan0".into()),
            remote_stateful: stateful,
            ..net("ovl", "br0", &["10.0.1.0/24"], &["10.0.1.2"])
        }
    }

    #[test]
    fn an_overlay_judges_what_its_own_containers_send_and_leaves_the_rest_to_their_nodes() {
        let rs = plan(DEFAULT_TABLE, &[overlay(true)]).unwrap();
        let text = rs.to_string();
        // Only this node's containers (by address: the inet hook cannot see the port)
        // enter the isolation chain.
        let fwd = chain(&rs, Family::Inet, "forward");
        assert_eq!(
            fwd.rules[0].to_string(),
            r#"iifname "br0" oifname "br0" ip saddr @loc4_ovl jump fwd_ovl"#
        );
        assert_eq!(
            fwd.rules[1].to_string(),
            r#"iifname "br0" oifname "br0" ip6 saddr @loc6_ovl jump fwd_ovl"#
        );
        assert!(text.contains("10.0.1.2, 10.0.1.3"), "{text}");
        // The backstop: what another node sent was judged there; what goes out to
        // another node passes the SYN and ping drops first.
        let iso = chain(&rs, Family::Bridge, "iso_ovl");
        let rules: Vec<String> = iso.rules.iter().map(|r| r.to_string()).collect();
        assert_eq!(rules[0], r#"iifname "vxlan0" return"#);
        let syn = rules.iter().position(|r| r.contains("tcp flags")).unwrap();
        let out = rules
            .iter()
            .position(|r| r == r#"oifname "vxlan0" return"#)
            .unwrap();
        assert!(syn < out, "{rules:#?}");
        assert_eq!(rules.last().unwrap(), "goto deny_isolation_ovl");
        // A port of no known container may not speak at all (it could pass for another
        // node's container); the VXLAN port may.
        let claims = chain(&rs, Family::Bridge, "claims_ovl");
        assert_eq!(
            claims.rules.last().unwrap().to_string(),
            r#"iifname != "vxlan0" goto deny_spoofed_ovl"#
        );
    }

    #[test]
    fn without_conntrack_an_overlay_sends_nothing_unjudged_to_other_nodes() {
        let rs = plan(DEFAULT_TABLE, &[overlay(false)]).unwrap();
        let iso = chain(&rs, Family::Bridge, "iso_ovl");
        assert!(
            !iso.rules
                .iter()
                .any(|r| r.to_string().starts_with("oifname")),
            "{rs}"
        );
    }

    #[test]
    fn the_vxlan_port_is_closed_to_the_guarded_bridges_even_with_no_network_here() {
        let rs = plan_guarded(DEFAULT_TABLE, &[], &["docker_gwbridge".into()]).unwrap();
        for base in ["forward", "input"] {
            let c = chain(&rs, Family::Inet, base);
            assert_eq!(
                c.rules[0].to_string(),
                r#"iifname "docker_gwbridge" udp dport 4789 counter drop"#
            );
        }
        let rs = plan_guarded(DEFAULT_TABLE, &[public()], &["br-public".into()]).unwrap();
        let fwd = chain(&rs, Family::Inet, "forward");
        assert!(fwd.rules[0].to_string().contains("udp dport 4789"), "{rs}");
    }

    #[test]
    fn nothing_managed_means_no_tables() {
        let rs = plan(DEFAULT_TABLE, &[]).unwrap();
        assert!(rs.tables.is_empty());
        assert_eq!(rs.to_string(), "");
    }

    #[test]
    fn one_network_gives_both_tables_with_base_chains() {
        let rs = plan(DEFAULT_TABLE, &[public()]).unwrap();
        let families: Vec<Family> = rs.tables.iter().map(|t| t.family).collect();
        assert_eq!(families, [Family::Inet, Family::Bridge]);
        let fwd = chain(&rs, Family::Inet, "forward");
        assert_eq!(
            fwd.base,
            Some(BaseChain {
                hook: Hook::Forward,
                priority: -10
            })
        );
        assert_eq!(
            fwd.rules[0].to_string(),
            r#"iifname "br-public" oifname "br-public" jump fwd_public"#
        );
        let input = chain(&rs, Family::Inet, "input");
        assert_eq!(input.base.unwrap().hook, Hook::Input);
        assert_eq!(
            input.rules[0].to_string(),
            r#"iifname "br-public" jump host_public"#
        );
        assert_eq!(
            chain(&rs, Family::Bridge, "forward").base.unwrap().priority,
            BRIDGE_PRIORITY
        );
    }

    #[test]
    fn per_network_forward_chain_is_stateful_and_ends_in_a_counted_drop() {
        let rs = plan(DEFAULT_TABLE, &[public()]).unwrap();
        let rules = rule_texts(chain(&rs, Family::Inet, "fwd_public"));
        assert_eq!(
            rules,
            [
                "ct state established,related return",
                "ip saddr @wl4_public return",
                "ip6 saddr @wl6_public return",
                "icmpv6 type 133-136 return",
                "icmpv6 type 131-132 return",
                "icmpv6 type 143 return",
                "goto deny_isolation_public",
            ]
        );
    }

    #[test]
    fn whitelist_is_split_by_family_into_sets_in_both_tables() {
        let rs = plan(DEFAULT_TABLE, &[public()]).unwrap();
        for family in Family::ALL {
            let sets = &rs.table(family).unwrap().sets;
            let wl4 = sets.iter().find(|s| s.name == "wl4_public").unwrap();
            let wl6 = sets.iter().find(|s| s.name == "wl6_public").unwrap();
            assert_eq!(wl4.key, SetKey::Ipv4);
            assert_eq!(
                wl4.elements,
                BTreeSet::from([Element::Ip("172.20.0.2".parse().unwrap())])
            );
            assert_eq!(
                wl6.elements,
                BTreeSet::from([Element::Ip("fd00:20::2".parse().unwrap())])
            );
        }
    }

    #[test]
    fn allow_host_traffic_removes_the_input_path_only() {
        let mut n = public();
        n.host_access = HostAccess::Open;
        let rs = plan(DEFAULT_TABLE, &[n]).unwrap();
        assert!(chain(&rs, Family::Inet, "input").rules.is_empty());
        let inet = rs.table(Family::Inet).unwrap();
        assert!(!inet.chains.iter().any(|c| c.name == "host_public"));
        assert_eq!(chain(&rs, Family::Inet, "forward").rules.len(), 1);
    }

    #[test]
    fn backstop_pairs_every_subnet_of_the_same_family() {
        let n = net(
            "multi",
            "br-multi",
            &["10.1.0.0/24", "10.2.0.0/24", "fd00:1::/64"],
            &[],
        );
        let rs = plan(DEFAULT_TABLE, &[n]).unwrap();
        let rules = rule_texts(chain(&rs, Family::Bridge, "forward"));
        assert_eq!(
            rules,
            [
                // A bound port's frames, whatever their addresses; then the subnets'.
                "iifname @ports_multi goto port_fwd_multi",
                "ip saddr 10.1.0.0/24 ip daddr 10.1.0.0/24 jump iso_multi",
                "ip saddr 10.1.0.0/24 ip daddr 10.2.0.0/24 jump iso_multi",
                "ip saddr 10.2.0.0/24 ip daddr 10.1.0.0/24 jump iso_multi",
                "ip saddr 10.2.0.0/24 ip daddr 10.2.0.0/24 jump iso_multi",
                "ip6 saddr fd00:1::/64 ip6 daddr fd00:1::/64 jump iso_multi",
            ]
        );
    }

    #[test]
    fn a_bound_ports_ip_frames_are_judged_whatever_their_addresses() {
        let rs = plan(DEFAULT_TABLE, &[public()]).unwrap();
        let rules = rule_texts(chain(&rs, Family::Bridge, "port_fwd_public"));
        assert_eq!(
            rules,
            [
                "ether type ip jump iso_public",
                "ether type ip6 jump iso_public"
            ]
        );
    }

    #[test]
    fn backstop_lets_whitelisted_sources_and_replies_to_them_through() {
        let rs = plan(DEFAULT_TABLE, &[public()]).unwrap();
        let rules = rule_texts(chain(&rs, Family::Bridge, "iso_public"));
        assert_eq!(
            rules,
            [
                "ip saddr @wl4_public return",
                "ip6 saddr @wl6_public return",
                "icmpv6 type 131-132 return",
                "icmpv6 type 143 return",
                "icmpv6 type 133-136 return",
                "ip frag-off & 0x3fff != 0 goto deny_isolation_public",
                "exthdr frag exists goto deny_isolation_public",
                "tcp flags & (fin | syn | rst | ack) == syn goto deny_isolation_public",
                "icmp type echo-request goto deny_isolation_public",
                "icmpv6 type echo-request goto deny_isolation_public",
                "ip daddr @wl4_public return",
                "ip6 daddr @wl6_public return",
                "goto deny_isolation_public",
            ]
        );
    }

    #[test]
    fn subnets_with_host_bits_are_normalised() {
        let n = net("x", "br-x", &["10.9.0.7/24"], &[]);
        let rs = plan(DEFAULT_TABLE, &[n]).unwrap();
        assert_eq!(
            chain(&rs, Family::Bridge, "forward").rules[1].to_string(),
            "ip saddr 10.9.0.0/24 ip daddr 10.9.0.0/24 jump iso_x"
        );
    }

    #[test]
    fn input_order_does_not_change_the_plan() {
        let a = net("a", "br-a", &["10.1.0.0/24"], &["10.1.0.2"]);
        let b = net("b", "br-b", &["10.2.0.0/24"], &["10.2.0.2"]);
        let one = plan(DEFAULT_TABLE, &[a.clone(), b.clone()]).unwrap();
        let two = plan(DEFAULT_TABLE, &[b, a]).unwrap();
        assert_eq!(one, two);
        assert_eq!(one.fingerprint(), two.fingerprint());
    }

    #[test]
    fn fingerprint_ignores_set_elements_but_not_structure() {
        let base = plan(DEFAULT_TABLE, &[public()]).unwrap();
        let mut more = public();
        more.whitelist.insert("172.20.0.99".parse().unwrap());
        let wl_changed = plan(DEFAULT_TABLE, &[more]).unwrap();
        assert_ne!(base, wl_changed);
        assert_eq!(base.skeleton(), wl_changed.skeleton());
        assert!(base.same_skeleton(&wl_changed));
        assert_eq!(base.fingerprint(), wl_changed.fingerprint());

        let mut host = public();
        host.host_access = HostAccess::Open;
        let structure_changed = plan(DEFAULT_TABLE, &[host]).unwrap();
        assert_ne!(base.fingerprint(), structure_changed.fingerprint());
        assert!(!base.same_skeleton(&structure_changed));
    }

    #[test]
    fn rejects_bad_names_duplicates_and_shared_bridges() {
        assert!(matches!(
            plan(DEFAULT_TABLE, &[net("-bad", "br0", &[], &[])]),
            Err(PlanError::BadNetworkName(_))
        ));
        assert!(matches!(
            plan(DEFAULT_TABLE, &[net("ok", "br\"0", &[], &[])]),
            Err(PlanError::BadBridgeName { .. })
        ));
        assert!(matches!(
            plan(DEFAULT_TABLE, &[net("ok", "a-very-long-bridge", &[], &[])]),
            Err(PlanError::BadBridgeName { .. })
        ));
        assert!(matches!(
            plan(
                DEFAULT_TABLE,
                &[net("a", "br0", &[], &[]), net("a", "br1", &[], &[])]
            ),
            Err(PlanError::DuplicateNetwork(_))
        ));
        assert!(matches!(
            plan(
                DEFAULT_TABLE,
                &[net("a", "br0", &[], &[]), net("b", "br0", &[], &[])]
            ),
            Err(PlanError::SharedBridge { .. })
        ));
        assert!(matches!(
            plan("bad name", &[]),
            Err(PlanError::BadTableName(_))
        ));
    }

    #[test]
    fn odd_networks_are_set_aside_not_fatal() {
        let (kept, rejected) = retain_plannable(vec![
            net("a", "br0", &[], &[]),
            net("-bad", "br1", &[], &[]),
            net("a", "br2", &[], &[]),
            net("b", "br0", &[], &[]),
            net("c", "br3", &[], &[]),
        ]);
        let names: Vec<&str> = kept.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["a", "c"]);
        assert_eq!(rejected.len(), 3, "{rejected:?}");
        assert!(plan(DEFAULT_TABLE, &kept).is_ok());
    }

    #[test]
    fn the_ruleset_answers_its_bridges_and_the_drops_of_each_network() {
        let mut open = net("open", "br-open", &["10.2.0.0/24"], &[]);
        open.host_access = HostAccess::Open;
        let rs = plan(DEFAULT_TABLE, &[public(), open]).unwrap();
        assert_eq!(
            rs.bridges(),
            BTreeSet::from(["br-open".to_owned(), "br-public".to_owned()])
        );
        // Every deny chain the plan named exists, in its family.
        for n in &rs.networks {
            for (_, (family, name)) in &n.deny_chains {
                chain(&rs, *family, name);
            }
        }
        let deny = |r| names::deny_chain(r, "public");
        let counters: Counters = [
            ((Family::Inet, deny(Reason::Isolation)), 3),
            ((Family::Inet, deny(Reason::Host)), 4),
            ((Family::Bridge, deny(Reason::Isolation)), 5),
            ((Family::Bridge, deny(Reason::Spoofed)), 6),
            (
                (Family::Inet, names::deny_chain(Reason::Isolation, "open")),
                7,
            ),
            ((Family::Inet, names::FORWARD.to_owned()), 1000),
        ]
        .into();
        assert_eq!(rs.dropped("public", &counters), 12);
        assert_eq!(rs.dropped_for("public", Reason::Isolation, &counters), 8);
        assert_eq!(rs.spoofed("public", &counters), 6);
        assert_eq!(rs.dropped("open", &counters), 7);
        // The open host has no host deny chain.
        assert!(
            !rs.networks[0]
                .deny_chains
                .iter()
                .any(|(r, _)| *r == Reason::Host)
        );
        assert_eq!(rs.dropped("absent", &counters), 0);
        assert!(Ruleset::empty(DEFAULT_TABLE).bridges().is_empty());
    }

    #[test]
    fn change_from_what_was_committed() {
        let base = plan(DEFAULT_TABLE, &[public()]).unwrap();
        assert_eq!(base.change_from(None), Change::Full);
        assert_eq!(base.change_from(Some(&base)), Change::None);
        let mut more = public();
        more.whitelist.insert("172.20.0.99".parse().unwrap());
        let more = plan(DEFAULT_TABLE, &[more]).unwrap();
        assert_eq!(more.change_from(Some(&base)), Change::Elements);
        let mut host = public();
        host.host_access = HostAccess::Open;
        let host = plan(DEFAULT_TABLE, &[host]).unwrap();
        assert_eq!(host.change_from(Some(&base)), Change::Full);
        let empty = Ruleset::empty(DEFAULT_TABLE);
        assert_eq!(empty.change_from(Some(&base)), Change::Full);
    }

    fn set<'a>(rs: &'a Ruleset, name: &str) -> &'a Set {
        rs.table(Family::Bridge)
            .unwrap()
            .sets
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no set {name}"))
    }

    #[test]
    fn a_bound_port_may_speak_only_as_its_container_and_nobody_else_may() {
        let mut n = public();
        let mac = [0x02, 0x42, 0xac, 0x14, 0x00, 0x02];
        n.ports = vec![
            Port {
                name: "veth1".into(),
                mac,
                addrs: vec!["172.20.0.2".parse().unwrap(), "fd00:20::2".parse().unwrap()],
            },
            // Not an interface name: never bound (it stays a port of unknown identity).
            Port {
                name: "bad/name".into(),
                mac: [2, 0, 0, 0, 0, 9],
                addrs: vec!["172.20.0.9".parse().unwrap()],
            },
        ];
        n.gateway_mac = Some([0x02, 0x42, 0, 0, 0, 1]);
        n.gateways = vec!["172.20.0.1".parse().unwrap()];
        let rs = plan(DEFAULT_TABLE, &[n]).unwrap();
        let link_local: IpAddr = "fe80::42:acff:fe14:2".parse().unwrap();
        assert_eq!(link_local, super::link_local(&mac));
        let port = |a: &str| Element::PortIp("veth1".into(), a.parse().unwrap());
        assert_eq!(
            set(&rs, "ports_public").elements,
            BTreeSet::from([Element::Port("veth1".into())])
        );
        assert_eq!(
            set(&rs, "pmac_public").elements,
            BTreeSet::from([Element::PortMac("veth1".into(), mac)])
        );
        assert_eq!(
            set(&rs, "pip4_public").elements,
            BTreeSet::from([port("172.20.0.2")])
        );
        let own6 = BTreeSet::from([port("fd00:20::2"), port("fe80::42:acff:fe14:2")]);
        assert_eq!(set(&rs, "pip6_public").elements, own6);
        assert_eq!(set(&rs, "pna_public").elements, own6);
        // Known identities: the bound container's and the gateway's.
        assert_eq!(
            set(&rs, "idmac_public").elements,
            BTreeSet::from([Element::Mac(mac), Element::Mac([0x02, 0x42, 0, 0, 0, 1])])
        );
        assert_eq!(
            set(&rs, "idip4_public").elements,
            BTreeSet::from([
                Element::Ip("172.20.0.1".parse().unwrap()),
                Element::Ip("172.20.0.2".parse().unwrap())
            ])
        );
        assert_eq!(set(&rs, "idip6_public").elements.len(), 3);
        assert_eq!(rs.bound_ports("public"), 1);
        let prerouting: Vec<String> = rule_texts(chain(&rs, Family::Bridge, "prerouting"));
        assert_eq!(
            prerouting,
            [
                "iifname . ether saddr @pmac_public goto port_src_public",
                "iifname @ports_public goto port_public",
                "iifname @unbound_public jump unbound_public",
                "jump claims_public"
            ]
        );
        assert_eq!(
            chain(&rs, Family::Bridge, "prerouting").base,
            Some(BaseChain {
                hook: Hook::Prerouting,
                priority: PORT_PRIORITY
            })
        );
        // Every drop of port security goes to the network's spoofed deny chain.
        for role in names::PortCheck::ALL {
            if role == names::PortCheck::Dispatch {
                continue;
            }
            for rule in &chain(&rs, Family::Bridge, &names::port_chain(role, "public")).rules {
                assert!(!rule.counter && rule.verdict != Verdict::Drop, "{rule}");
            }
        }
        let spoofed = names::deny_chain(Reason::Spoofed, "public");
        assert_eq!(
            rule_texts(chain(&rs, Family::Bridge, &spoofed)),
            ["counter drop"]
        );
    }

    /// Audited, a network's deny chains `return`: each must be reached under a `jump`, or
    /// the `return` would take the base chain's policy (accept) and skip the claims of
    /// every other network. Enforced, the dispatch stays `goto`s in `prerouting`.
    #[test]
    fn an_audited_networks_port_checks_sit_behind_a_jump() {
        let mut audited = public();
        audited.mode = Mode::Audit;
        audited.ports = vec![Port {
            name: "veth-a".into(),
            mac: [2, 0, 0, 0, 0, 3],
            addrs: vec!["172.20.0.3".parse().unwrap()],
        }];
        let mut enforced = net("zeta", "br-zeta", &["10.9.0.0/24"], &[]);
        enforced.ports = vec![Port {
            name: "veth-z".into(),
            mac: [2, 0, 0, 0, 0, 9],
            addrs: vec!["10.9.0.3".parse().unwrap()],
        }];
        let rs = plan(DEFAULT_TABLE, &[audited, enforced]).unwrap();
        let pre = rule_texts(chain(&rs, Family::Bridge, "prerouting"));
        assert_eq!(pre[0], "jump portsec_public", "{pre:?}");
        assert!(pre[1].ends_with("goto port_src_zeta"), "{pre:?}");
        assert!(pre.iter().any(|r| r == "jump claims_zeta"), "{pre:?}");
        let dispatch = rule_texts(chain(&rs, Family::Bridge, "portsec_public"));
        assert!(
            dispatch[0].ends_with("goto port_src_public"),
            "{dispatch:?}"
        );
        assert_eq!(
            rule_texts(chain(&rs, Family::Bridge, "deny_spoofed_public")),
            ["counter return"]
        );
        // Every other audited path into a deny chain is a jump from a base chain.
        for (family, base, to) in [
            (Family::Inet, "forward", "jump fwd_public"),
            (Family::Inet, "input", "jump host_public"),
            (Family::Bridge, "forward", "jump iso_public"),
        ] {
            assert!(
                rule_texts(chain(&rs, family, base))
                    .iter()
                    .any(|r| r.ends_with(to)),
                "{base}"
            );
        }
    }

    #[test]
    fn set_keys_are_laid_out_as_the_kernel_concatenates_them() {
        let mac = [1, 2, 3, 4, 5, 6];
        let port = Element::PortMac("v1".into(), mac).key_bytes();
        assert_eq!(port.len() as u32, SetKey::IfnameEther.key_len());
        assert_eq!(&port[..3], b"v1\0");
        assert_eq!(&port[16..], &[1, 2, 3, 4, 5, 6, 0, 0]);
        let v4 = Element::PortIp("v1".into(), "10.0.0.1".parse().unwrap()).key_bytes();
        assert_eq!(v4.len() as u32, SetKey::IfnameIpv4.key_len());
        let v6 = Element::PortIp("v1".into(), "fd00::1".parse().unwrap()).key_bytes();
        assert_eq!(v6.len() as u32, SetKey::IfnameRaw128.key_len());
        assert_eq!(
            Element::Mac(mac).key_bytes().len() as u32,
            SetKey::Ether.key_len()
        );
        assert_eq!(SetKey::IfnameEther.type_id(), (41 << 6) | 9);
        // The raw 128-bit target reads as nft prints it.
        assert_eq!(
            Element::Ip("fd00::1".parse().unwrap()).text(SetKey::Raw128),
            "0xfd000000000000000000000000000001"
        );
    }

    #[test]
    fn network_names_follow_docker_within_what_nftables_carries() {
        assert!(valid_network_name("traefik_public"));
        assert!(valid_network_name("a.b-c_1"));
        assert!(!valid_network_name("-x"));
        assert!(!valid_network_name(""));
        assert!(!valid_network_name("with space"));
        assert!(!valid_network_name(&"n".repeat(201)));
    }

    fn grant(from: &str, to: &str, ports: Option<&str>) -> Grant {
        Grant {
            from: from.parse().unwrap(),
            to: to.parse().unwrap(),
            ports: ports.map(|p| PortRange::parse(p).unwrap()),
        }
    }

    fn rule_texts(chain: &Chain) -> Vec<String> {
        chain.rules.iter().map(|r| r.to_string()).collect()
    }

    #[test]
    fn allow_rules_are_lookups_before_the_drop_and_only_when_the_policy_has_some() {
        let rs = plan(DEFAULT_TABLE, &[public()]).unwrap();
        assert!(!rs.to_string().contains("allow4_public"));
        let mut n = public();
        n.allow_rules = true;
        let rs = plan(DEFAULT_TABLE, &[n]).unwrap();
        let fwd = rule_texts(chain(&rs, Family::Inet, "fwd_public"));
        assert_eq!(
            fwd[6..],
            [
                "ip saddr . ip daddr @allow4_public return",
                "ip saddr . ip daddr . meta l4proto . th dport @svc4_public return",
                "ip6 saddr . ip6 daddr @allow6_public return",
                "ip6 saddr . ip6 daddr . meta l4proto . th dport @svc6_public return",
                "goto deny_isolation_public",
            ]
        );
        // The backstop: openers after the fragment check and before the SYN drop; answers
        // (addresses and ports swapped) after the whitelisted destinations.
        let iso = rule_texts(chain(&rs, Family::Bridge, "iso_public"));
        let at = |text: &str| iso.iter().position(|r| r == text).unwrap();
        let frag = at("ip frag-off & 0x3fff != 0 goto deny_isolation_public");
        let syn = at("tcp flags & (fin | syn | rst | ack) == syn goto deny_isolation_public");
        let opener = at("ip saddr . ip daddr . meta l4proto . th dport @svc4_public return");
        let answer = at("ip daddr . ip saddr . meta l4proto . th sport @svc4_public return");
        let wl_dst = at("ip daddr @wl4_public return");
        assert!(frag < opener && opener < syn && wl_dst < answer, "{iso:#?}");
        assert_eq!(iso.last().unwrap(), "goto deny_isolation_public");
        for family in Family::ALL {
            let t = rs.table(family).unwrap();
            for name in [
                "allow4_public",
                "allow6_public",
                "svc4_public",
                "svc6_public",
            ] {
                assert!(
                    t.sets.iter().any(|s| s.name == name),
                    "{name} in {family:?}"
                );
            }
        }
    }

    #[test]
    fn grants_become_merged_elements_per_pair_and_protocol() {
        let mut n = public();
        n.allow_rules = true;
        n.grants = BTreeSet::from([
            grant("172.20.0.3", "172.20.0.4", Some("5432/tcp")),
            grant("172.20.0.3", "172.20.0.4", Some("5433-5440/tcp")),
            grant("172.20.0.3", "172.20.0.4", Some("5435/tcp")),
            grant("172.20.0.3", "172.20.0.4", Some("53/udp")),
            grant("172.20.0.3", "172.20.0.4", Some("8000/tcp")),
            // An open pair needs no port element.
            grant("172.20.0.5", "172.20.0.6", None),
            grant("172.20.0.5", "172.20.0.6", Some("80/tcp")),
            // Never with itself, never across families.
            grant("172.20.0.7", "172.20.0.7", None),
            grant("172.20.0.7", "fd00:20::8", None),
            grant("fd00:20::3", "fd00:20::4", Some("tcp")),
        ]);
        let rs = plan(DEFAULT_TABLE, &[n]).unwrap();
        let text = |name: &str| -> Vec<String> {
            set(&rs, name)
                .elements
                .iter()
                .map(|e| e.text(set(&rs, name).key))
                .collect()
        };
        assert_eq!(
            text("svc4_public"),
            [
                "172.20.0.3 . 172.20.0.4 . tcp . 5432-5440",
                "172.20.0.3 . 172.20.0.4 . tcp . 8000",
                "172.20.0.3 . 172.20.0.4 . udp . 53",
            ]
        );
        assert_eq!(text("allow4_public"), ["172.20.0.5 . 172.20.0.6"]);
        assert!(text("allow6_public").is_empty());
        assert_eq!(
            text("svc6_public"),
            ["fd00:20::3 . fd00:20::4 . tcp . 1-65535"]
        );
        // A range element is stored with both ends.
        let e = set(&rs, "svc4_public").elements.first().unwrap().clone();
        assert_eq!(
            e.stored_bytes().len(),
            2 * SetKey::Service(IpVersion::V4).key_len() as usize
        );
    }

    #[test]
    fn a_new_grant_is_an_element_update() {
        let mut n = public();
        n.allow_rules = true;
        let before = plan(DEFAULT_TABLE, &[n.clone()]).unwrap();
        n.grants
            .insert(grant("172.20.0.3", "172.20.0.4", Some("5432/tcp")));
        let after = plan(DEFAULT_TABLE, &[n]).unwrap();
        assert_eq!(after.change_from(Some(&before)), Change::Elements);
    }

    #[test]
    fn host_access_and_host_ports() {
        let mut n = public();
        n.host_access = HostAccess::Whitelisted;
        n.host_ports = vec![
            PortRange::parse("53/udp").unwrap(),
            PortRange::parse("8000-8100/tcp").unwrap(),
            PortRange::parse("53/udp").unwrap(),
        ];
        let rs = plan(DEFAULT_TABLE, &[n]).unwrap();
        assert_eq!(
            rule_texts(chain(&rs, Family::Inet, "host_public")),
            [
                "ct state established,related return",
                "icmpv6 type 133-136 return",
                "icmpv6 type 131-132 return",
                "icmpv6 type 143 return",
                "ip saddr @wl4_public return",
                "ip6 saddr @wl6_public return",
                "tcp dport 8000-8100 return",
                "udp dport 53 return",
                "goto deny_host_public",
            ]
        );
        let mut open = public();
        open.host_access = HostAccess::Open;
        let rs = plan(DEFAULT_TABLE, &[open]).unwrap();
        assert!(!rs.to_string().contains("host_public"));
    }

    #[test]
    fn deny_chains_log_at_a_bounded_rate_then_drop_or_in_audit_mode_return() {
        let mut net = public();
        net.log_group = Some(4200);
        let rs = plan(DEFAULT_TABLE, &[net.clone()]).unwrap();
        let log =
            "limit rate 100/second burst 200 packets log prefix \"tj isolation public\" group 4200";
        for family in Family::ALL {
            assert_eq!(
                rule_texts(chain(&rs, family, "deny_isolation_public")),
                [log, "counter drop"]
            );
        }
        assert_eq!(
            rule_texts(chain(&rs, Family::Bridge, "deny_spoofed_public"))[0],
            log.replace("isolation", "spoofed")
        );
        net.mode = Mode::Audit;
        let rs = plan(DEFAULT_TABLE, &[net]).unwrap();
        assert_eq!(
            rule_texts(chain(&rs, Family::Inet, "deny_host_public")),
            [log.replace("isolation", "host").as_str(), "counter return"]
        );
        assert_eq!(rs.networks[0].mode, Mode::Audit);
        // Without a group: no log rule.
        let rs = plan(DEFAULT_TABLE, &[public()]).unwrap();
        assert!(!rs.to_string().contains("log prefix"));
        // A long network name is cut to what the kernel carries, on a character boundary.
        let long = "é".repeat(100);
        let prefix = log_prefix(Reason::Isolation, &long);
        assert!(prefix.len() <= LOG_PREFIX_MAX && prefix.starts_with("tj isolation é"));
    }

    #[test]
    fn deny_outbound_judges_new_connections_routed_out_of_the_bridge() {
        let mut n = public();
        n.deny_outbound = vec![
            "10.1.2.3/8".parse().unwrap(),
            "fc00::/7".parse().unwrap(),
            "10.0.0.0/8".parse().unwrap(),
        ];
        let rs = plan(DEFAULT_TABLE, &[n]).unwrap();
        assert_eq!(
            rule_texts(chain(&rs, Family::Inet, "forward")),
            [
                "iifname \"br-public\" oifname \"br-public\" jump fwd_public",
                "iifname \"br-public\" oifname != \"br-public\" jump out_public",
            ]
        );
        assert_eq!(
            rule_texts(chain(&rs, Family::Inet, "out_public")),
            [
                "ct state established,related return",
                "ip daddr 10.0.0.0/8 goto deny_outbound_public",
                "ip6 daddr fc00::/7 goto deny_outbound_public",
            ]
        );
        assert!(rs.networks[0].deny_chains.contains(&(
            Reason::Outbound,
            (Family::Inet, "deny_outbound_public".into())
        )));
        let rs = plan(DEFAULT_TABLE, &[public()]).unwrap();
        assert!(!rs.to_string().contains("out_public"));
    }

    #[test]
    fn port_ranges_parse_and_print_as_written() {
        for text in ["53/udp", "8000-8100/tcp", "tcp", "udp", "65535/tcp"] {
            assert_eq!(PortRange::parse(text).unwrap().to_string(), text);
        }
        assert_eq!(PortRange::parse("1-65535/tcp").unwrap().to_string(), "tcp");
        for bad in [
            "",
            "53",
            "53/icmp",
            "0/tcp",
            "65536/tcp",
            "9-8/tcp",
            "a-b/tcp",
            "-5/udp",
        ] {
            assert!(PortRange::parse(bad).is_err(), "{bad}");
        }
    }

    /// Every planner feature at once, in a few rulesets: what the kernel is given (the nft
    /// text, each set's key and its elements' bytes, the fingerprint stored with the
    /// tables) must not change when the code around it moves. `TRAFFICJAM_BLESS=1` writes
    /// the expected file anew after a change that means to change it.
    fn golden_fixtures() -> Vec<(&'static str, Ruleset)> {
        let port = |name: &str, last: u8, addrs: &[&str]| Port {
            name: name.into(),
            mac: [2, 0x42, 172, 21, 0, last],
            addrs: addrs.iter().map(|a| a.parse().unwrap()).collect(),
        };
        let mut busy = net(
            "busy",
            "br-busy",
            &["172.21.0.0/16", "fd00:21::/64"],
            &["172.21.0.2", "fd00:21::2"],
        );
        busy.ports = vec![
            port("veth-proxy", 2, &["172.21.0.2", "fd00:21::2"]),
            port("veth-app", 3, &["172.21.0.3"]),
            port("veth-db", 4, &["172.21.0.4", "fd00:21::4"]),
        ];
        busy.unbound_ports = vec!["veth-new".into()];
        busy.gateway_mac = Some([2, 0x43, 172, 21, 0, 1]);
        busy.gateways = vec!["172.21.0.1".parse().unwrap(), "fd00:21::1".parse().unwrap()];
        busy.host_access = HostAccess::Whitelisted;
        busy.host_ports = vec![
            PortRange::parse("53/udp").unwrap(),
            PortRange::parse("8000-8100/tcp").unwrap(),
        ];
        busy.deny_outbound = vec![
            "10.0.0.0/8".parse().unwrap(),
            "fd00:99::/48".parse().unwrap(),
        ];
        busy.allow_rules = true;
        busy.grants = [
            grant("172.21.0.3", "172.21.0.4", Some("5432/tcp")),
            grant("172.21.0.3", "172.21.0.4", Some("53/udp")),
            grant("fd00:21::2", "fd00:21::4", None),
        ]
        .into();
        busy.log_group = Some(7);
        let mut audited = net("audited", "br-audited", &["172.22.0.0/16"], &[]);
        audited.mode = Mode::Audit;
        audited.host_access = HostAccess::Open;
        audited.allow_rules = true;
        audited.ports = vec![port("veth-a1", 9, &["172.22.0.9"])];
        audited.log_group = Some(7);
        vec![
            ("empty", plan(DEFAULT_TABLE, &[]).unwrap()),
            ("public", plan(DEFAULT_TABLE, &[public()]).unwrap()),
            (
                "three-networks",
                plan("tj_custom", &[busy, audited, public()]).unwrap(),
            ),
            (
                "overlay-stateful",
                plan(DEFAULT_TABLE, &[overlay(true)]).unwrap(),
            ),
            (
                "overlay-stateless-guarded",
                plan_guarded(
                    DEFAULT_TABLE,
                    &[overlay(false)],
                    &["docker_gwbridge".into()],
                )
                .unwrap(),
            ),
            (
                "guard-only",
                plan_guarded(DEFAULT_TABLE, &[], &["docker_gwbridge".into()]).unwrap(),
            ),
        ]
    }

    fn golden_text(rs: &Ruleset) -> String {
        let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
        let mut out = format!("# fingerprint {:016x}\n{rs}", rs.fingerprint());
        for table in &rs.tables {
            for set in &table.sets {
                let key = set.key;
                out += &format!(
                    "# {} {}: type {} len {} ranges {:?} userdata {}\n",
                    table.family.keyword(),
                    set.name,
                    key.type_id(),
                    key.key_len(),
                    key.range_fields(),
                    hex(key.userdata().unwrap_or_default()),
                );
                for element in &set.elements {
                    out += &format!("#   {}\n", hex(&element.stored_bytes()));
                }
            }
        }
        out
    }

    #[test]
    fn the_kernel_is_given_what_it_was_given_before() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/plan");
        let bless = std::env::var_os("TRAFFICJAM_BLESS").is_some();
        for (name, rs) in golden_fixtures() {
            let path = dir.join(format!("{name}.nft"));
            let text = golden_text(&rs);
            if bless {
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(&path, &text).unwrap();
                continue;
            }
            let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
                panic!("{}: {e} (TRAFFICJAM_BLESS=1 writes it)", path.display())
            });
            if text != expected {
                let line = text
                    .lines()
                    .zip(expected.lines())
                    .position(|(a, b)| a != b)
                    .unwrap_or(text.lines().count().min(expected.lines().count()));
                panic!(
                    "{name}: the planned ruleset differs from {} from line {}:\n  now:    {:?}\n  before: {:?}",
                    path.display(),
                    line + 1,
                    text.lines().nth(line),
                    expected.lines().nth(line)
                );
            }
        }
    }

    #[test]
    fn renders_loadable_nft_text() {
        let rs = plan(DEFAULT_TABLE, &[public()]).unwrap();
        let text = rs.to_string();
        assert!(text.starts_with("table inet trafficjam {\n"), "{text}");
        assert!(text.contains(
            "\tset wl4_public {\n\t\ttype ipv4_addr\n\t\telements = { 172.20.0.2 }\n\t}\n"
        ));
        assert!(text.contains("\n\ntable bridge trafficjam {\n"));
        assert!(text.contains("type filter hook forward priority -200; policy accept;"));
    }
}
