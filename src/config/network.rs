//! A network's policy: [`NetworkPolicy`] and its [`AllowRule`]s.

use ipnetwork::IpNetwork;

use super::PRIVATE_DESTINATIONS;
use super::selector::Selector;
use crate::policy::{HostAccess, Mode, PortRange};

/// One allow rule: the containers chosen by `from` may open connections to those chosen
/// by `to`, on `ports` (`None`: every protocol and port).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowRule {
    pub from: Selector,
    pub to: Selector,
    pub ports: Option<Vec<PortRange>>,
    /// Where the rule was written (`FILE:LINE`, or the label), for `check` and `status`.
    pub origin: String,
}

/// How one network is isolated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkPolicy {
    pub whitelist: Selector,
    pub host_access: HostAccess,
    /// Host ports every container of the network may open.
    pub host_ports: Vec<PortRange>,
    /// Destinations (through the host) the containers may not open connections to.
    pub deny_outbound: Vec<IpNetwork>,
    pub allow: Vec<AllowRule>,
    /// Whether what the policy forbids is dropped, or only logged and counted.
    pub mode: Mode,
}

impl NetworkPolicy {
    /// A policy with a whitelist and nothing else.
    pub fn whitelisting(whitelist: Selector) -> NetworkPolicy {
        NetworkPolicy {
            whitelist,
            host_access: HostAccess::Closed,
            host_ports: Vec::new(),
            deny_outbound: Vec::new(),
            allow: Vec::new(),
            mode: Mode::Enforce,
        }
    }
}

/// Parses one `deny_outbound` entry: a CIDR, an address, or `private`.
pub fn parse_destinations(text: &str) -> Result<Vec<IpNetwork>, String> {
    if text == "private" {
        return Ok(PRIVATE_DESTINATIONS
            .iter()
            .map(|d| d.parse().expect("a valid constant"))
            .collect());
    }
    text.parse::<IpNetwork>().map(|n| vec![n]).map_err(|e| {
        format!("{text:?} is not a destination (a CIDR such as \"192.168.1.0/24\", an address, or \"private\"): {e}")
    })
}

/// Reads `allow_host_traffic` (TOML or label).
pub(super) fn host_access(value: &str) -> Option<HostAccess> {
    match value {
        "true" => Some(HostAccess::Open),
        "false" => Some(HostAccess::Closed),
        "whitelisted" => Some(HostAccess::Whitelisted),
        _ => None,
    }
}
