//! The names the kernel sees, built here and nowhere else: base chains, per-network chains
//! and sets. Everything that needs to find one of them asks the [`super::Ruleset`] or these.

use super::{IpVersion, Reason};

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
