//! The pure heart of trafficjam: managed networks in, desired nftables ruleset out.
//!
//! Nothing here does I/O. [`plan`] turns a list of [`ManagedNetwork`]s into a [`Ruleset`]
//! value that `nft` applies in one batch and that renders as `nft` text (`Display`).
//!
//! Shape (DESIGN.md, "nftables layout"), per managed network N on bridge B:
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

//!
//! The rooms: [`ruleset`] is the model (tables, chains, rules, sets) and `text` renders it
//! as `nft` text; [`names`] names everything the kernel sees; `inet`, `bridge` and
//! `port_security` build the tables. The kernel encoding of sets lives with the netlink
//! backend, not here.

mod bridge;
mod inet;
pub mod names;
mod port_security;
pub mod ruleset;
mod shared;
#[cfg(test)]
mod tests;
mod text;

use std::collections::BTreeSet;
use std::net::IpAddr;

use ipnetwork::IpNetwork;

pub use ruleset::*;

use bridge::bridge_table;
use inet::inet_table;
use shared::denies;

use crate::policy::{Grant, HostAccess, Mode, PortRange};

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

/// An interface name as the kernel compares it: NUL-padded to IFNAMSIZ.
pub const IFNAME_LEN: usize = 16;

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

/// Whether `net` may join the networks already `kept`: a valid name and bridge, a name
/// and a bridge of its own. The one rule for both [`retain_plannable`] and [`plan`].
fn admit(kept: &[ManagedNetwork], net: &ManagedNetwork) -> Result<(), PlanError> {
    validate_network(net)?;
    if kept.iter().any(|k| k.name == net.name) {
        return Err(PlanError::DuplicateNetwork(net.name.clone()));
    }
    if let Some(k) = kept.iter().find(|k| k.bridge == net.bridge) {
        return Err(PlanError::SharedBridge {
            first: k.name.clone(),
            second: net.name.clone(),
            bridge: net.bridge.clone(),
        });
    }
    Ok(())
}

/// Splits networks into those `plan` accepts and the errors of the others, so that one
/// odd network (a name Docker allows but nftables cannot carry, two networks of one name)
/// does not stop the isolation of all the rest. The first of a name or a bridge wins.
pub fn retain_plannable(networks: Vec<ManagedNetwork>) -> (Vec<ManagedNetwork>, Vec<PlanError>) {
    let mut kept: Vec<ManagedNetwork> = Vec::new();
    let mut rejected = Vec::new();
    for net in networks {
        match admit(&kept, &net) {
            Ok(()) => kept.push(net),
            Err(e) => rejected.push(e),
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
    for (i, net) in sorted.iter().enumerate() {
        admit(&sorted[..i], net)?;
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
