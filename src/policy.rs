//! The policy vocabulary that the configuration speaks and the planner reads: enforce or
//! audit, what a network's containers may open on the host, port ranges, and the grants
//! that allow rules resolve to.

use std::fmt;
use std::net::IpAddr;

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
