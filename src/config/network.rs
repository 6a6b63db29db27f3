//! A network's policy ([`NetworkPolicy`], [`AllowRule`]) and the one reader of it that a
//! `[network.NAME]` section of a TOML file and the Docker labels both feed. Each source
//! hands over what is written, with where ([`Written`]); the reading is the same. What
//! becomes of a value that cannot be read is the source's [`OnFailure`]: the TOML file is
//! refused with a located error, while a label is warned of and set aside, and the key
//! falls back to what fails closed (see [`PolicyBuilder`]).

use std::fmt;

use ipnetwork::IpNetwork;

use super::PRIVATE_DESTINATIONS;
use super::selector::{Filter, Selector};
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
fn parse_destinations(text: &str) -> Result<Vec<IpNetwork>, String> {
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

/// A key of a network's policy, whichever way it is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Key {
    Whitelist,
    AllowHostTraffic,
    AllowHostPorts,
    DenyOutbound,
    Mode,
    AllowFrom,
    AllowTo,
    AllowPorts,
}

impl Key {
    /// The key as a TOML file spells it.
    pub(super) fn name(self) -> &'static str {
        match self {
            Key::Whitelist => "whitelist",
            Key::AllowHostTraffic => "allow_host_traffic",
            Key::AllowHostPorts => "allow_host_ports",
            Key::DenyOutbound => "deny_outbound",
            Key::Mode => "mode",
            Key::AllowFrom => "allow.from",
            Key::AllowTo => "allow.to",
            Key::AllowPorts => "allow.ports",
        }
    }
}

/// Why a value cannot be read. Each source words it its own way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Problem {
    /// `allow_host_traffic` is none of true, false and whitelisted: the value.
    HostTraffic(String),
    /// `mode` is neither enforce nor audit: the value.
    Mode(String),
    /// An item (a filter, a port range, a destination) does not parse: why.
    Unreadable(String),
    /// A list of ports, or a selection, that may not be empty is.
    Empty,
    /// One query of a selection has no filter.
    EmptyQuery,
    /// A selection mixes filters and lists of filters (TOML).
    Mixed,
    /// An allow rule without this key, which it needs.
    Missing,
}

/// The problem in a few words, as a label's warning puts it (the TOML file words each
/// problem with its key).
impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::HostTraffic(v) => write!(f, "{v:?} is not true, false or whitelisted"),
            Problem::Mode(v) => write!(f, "{v:?} is not enforce or audit"),
            Problem::Unreadable(why) => f.write_str(why),
            Problem::Empty => f.write_str("empty"),
            Problem::EmptyQuery => f.write_str("an empty query"),
            Problem::Mixed => f.write_str("mixes filters and lists of filters"),
            Problem::Missing => f.write_str("missing"),
        }
    }
}

/// What a source does with a value it cannot read.
pub(super) trait OnFailure {
    /// Where a value was written: a span of a TOML file, or a label.
    type At: Clone;
    /// What stops the reading: a located error (TOML); nothing for the labels, which go on.
    type Error;
    /// The value of `key` written at `at` cannot be read. `Err` stops the reading; `Ok`
    /// (having warned, or not, as the source sees fit) sets the value aside, and the key
    /// fails closed.
    fn failed(&mut self, key: Key, at: Self::At, problem: Problem) -> Result<(), Self::Error>;
}

/// A value as written, and where: what a source hands to the reader.
#[derive(Debug, Clone)]
pub(super) struct Written<A, T> {
    pub(super) at: A,
    pub(super) value: T,
}

impl<A, T> Written<A, T> {
    pub(super) fn new(at: A, value: T) -> Self {
        Written { at, value }
    }
}

/// A list as written (port ranges, destinations): each item with where it is.
pub(super) type WrittenList<A> = Written<A, Vec<Written<A, String>>>;

/// Containers chosen as written: alternatives, each a query of filters.
#[derive(Debug)]
pub(super) enum Choice<A> {
    Queries(Vec<WrittenList<A>>),
    /// A list mixing filters and lists of filters (TOML): where the form breaks.
    Mixed(A),
}

/// A selection as written (a whitelist, a side of an allow rule).
pub(super) type WrittenSelector<A> = Written<A, Choice<A>>;

/// `allow_host_traffic` as written: a TOML boolean, or a word (TOML string or label).
#[derive(Debug)]
pub(super) enum HostTraffic {
    Bool(bool),
    Text(String),
}

/// Whom an allow rule opens: containers chosen as written (TOML), or the container
/// whose labels carry the rule (the rule's `to` is left empty).
#[derive(Debug)]
pub(super) enum RuleTo<A> {
    Written(Option<WrittenSelector<A>>),
    Carrier,
}

/// Reads a selection into a [`Selector`]: `None` when it is set aside.
fn read_selector<F: OnFailure>(
    on_failure: &mut F,
    key: Key,
    written: WrittenSelector<F::At>,
) -> Result<Option<Selector>, F::Error> {
    let queries = match written.value {
        Choice::Queries(queries) => queries,
        Choice::Mixed(at) => {
            on_failure.failed(key, at, Problem::Mixed)?;
            return Ok(None);
        }
    };
    let mut selector = Selector::default();
    let mut read = true;
    for query in queries {
        if query.value.is_empty() {
            on_failure.failed(key, query.at, Problem::EmptyQuery)?;
            read = false;
            continue;
        }
        let mut filters = Vec::new();
        for item in query.value {
            match Filter::parse(&item.value) {
                Ok(filter) => filters.push(filter),
                Err(e) => {
                    on_failure.failed(key, item.at, Problem::Unreadable(e.to_string()))?;
                    read = false;
                }
            }
        }
        selector.queries.push(filters);
    }
    if !read {
        return Ok(None);
    }
    if selector.is_empty() {
        on_failure.failed(key, written.at, Problem::Empty)?;
        return Ok(None);
    }
    Ok(Some(selector))
}

/// Reads a list of port ranges (`"5432/tcp"`, `"8000-8100/tcp"`, `"udp"`), never empty:
/// `None` when it is set aside.
fn read_ports<F: OnFailure>(
    on_failure: &mut F,
    key: Key,
    written: WrittenList<F::At>,
) -> Result<Option<Vec<PortRange>>, F::Error> {
    if written.value.is_empty() {
        on_failure.failed(key, written.at, Problem::Empty)?;
        return Ok(None);
    }
    let mut ports = Vec::new();
    for item in written.value {
        match PortRange::parse(&item.value) {
            Ok(range) => ports.push(range),
            Err(e) => {
                on_failure.failed(key, item.at, Problem::Unreadable(e))?;
                return Ok(None);
            }
        }
    }
    Ok(Some(ports))
}

/// Reads one allow rule: `None` when a part of it is set aside (the rule opens nothing).
pub(super) fn read_allow_rule<F: OnFailure>(
    on_failure: &mut F,
    rule_at: F::At,
    from: Option<WrittenSelector<F::At>>,
    to: RuleTo<F::At>,
    ports: Option<WrittenList<F::At>>,
    origin: String,
) -> Result<Option<AllowRule>, F::Error> {
    let Some(from) = read_side(on_failure, Key::AllowFrom, &rule_at, from)? else {
        return Ok(None);
    };
    let to = match to {
        RuleTo::Written(to) => match read_side(on_failure, Key::AllowTo, &rule_at, to)? {
            Some(to) => to,
            None => return Ok(None),
        },
        RuleTo::Carrier => Selector::default(),
    };
    let ports = match ports {
        None => None,
        Some(list) => match read_ports(on_failure, Key::AllowPorts, list)? {
            Some(ports) => Some(ports),
            None => return Ok(None),
        },
    };
    Ok(Some(AllowRule {
        from,
        to,
        ports,
        origin,
    }))
}

/// Reads a side of an allow rule, which the rule needs.
fn read_side<F: OnFailure>(
    on_failure: &mut F,
    key: Key,
    rule_at: &F::At,
    written: Option<WrittenSelector<F::At>>,
) -> Result<Option<Selector>, F::Error> {
    match written {
        Some(written) => read_selector(on_failure, key, written),
        None => {
            on_failure.failed(key, rule_at.clone(), Problem::Missing)?;
            Ok(None)
        }
    }
}

/// A network's policy as it is read, key by key, from either source. A key not written
/// keeps its default (no host access or port, no destination denied, enforce); a key set
/// aside fails closed (no container whitelisted, no host access or port, every
/// destination denied, enforce).
#[derive(Debug)]
pub(super) struct PolicyBuilder {
    policy: NetworkPolicy,
}

impl PolicyBuilder {
    pub(super) fn new() -> PolicyBuilder {
        PolicyBuilder {
            policy: NetworkPolicy::whitelisting(Selector::default()),
        }
    }

    /// The policy as read so far.
    pub(super) fn policy(&self) -> &NetworkPolicy {
        &self.policy
    }

    pub(super) fn build(self) -> NetworkPolicy {
        self.policy
    }

    /// Reads the whitelist: whether it could be (else no container is whitelisted).
    pub(super) fn whitelist<F: OnFailure>(
        &mut self,
        on_failure: &mut F,
        written: WrittenSelector<F::At>,
    ) -> Result<bool, F::Error> {
        let whitelist = read_selector(on_failure, Key::Whitelist, written)?;
        let read = whitelist.is_some();
        self.policy.whitelist = whitelist.unwrap_or_default();
        Ok(read)
    }

    pub(super) fn host_traffic<F: OnFailure>(
        &mut self,
        on_failure: &mut F,
        written: Written<F::At, HostTraffic>,
    ) -> Result<(), F::Error> {
        self.policy.host_access = match written.value {
            HostTraffic::Bool(true) => HostAccess::Open,
            HostTraffic::Bool(false) => HostAccess::Closed,
            HostTraffic::Text(word) => match word.as_str() {
                "true" => HostAccess::Open,
                "false" => HostAccess::Closed,
                "whitelisted" => HostAccess::Whitelisted,
                _ => {
                    let problem = Problem::HostTraffic(word);
                    on_failure.failed(Key::AllowHostTraffic, written.at, problem)?;
                    HostAccess::Closed
                }
            },
        };
        Ok(())
    }

    pub(super) fn host_ports<F: OnFailure>(
        &mut self,
        on_failure: &mut F,
        written: WrittenList<F::At>,
    ) -> Result<(), F::Error> {
        self.policy.host_ports =
            read_ports(on_failure, Key::AllowHostPorts, written)?.unwrap_or_default();
        Ok(())
    }

    pub(super) fn deny_outbound<F: OnFailure>(
        &mut self,
        on_failure: &mut F,
        written: WrittenList<F::At>,
    ) -> Result<(), F::Error> {
        let mut denied = Vec::new();
        for item in written.value {
            match parse_destinations(&item.value) {
                Ok(destinations) => denied.extend(destinations),
                Err(e) => {
                    on_failure.failed(Key::DenyOutbound, item.at, Problem::Unreadable(e))?;
                    denied = vec![
                        "0.0.0.0/0".parse().expect("valid"),
                        "::/0".parse().expect("valid"),
                    ];
                    break;
                }
            }
        }
        self.policy.deny_outbound = denied;
        Ok(())
    }

    pub(super) fn mode<F: OnFailure>(
        &mut self,
        on_failure: &mut F,
        written: Written<F::At, String>,
    ) -> Result<(), F::Error> {
        self.policy.mode = match Mode::parse(&written.value) {
            Some(mode) => mode,
            None => {
                on_failure.failed(Key::Mode, written.at, Problem::Mode(written.value))?;
                Mode::Enforce
            }
        };
        Ok(())
    }

    pub(super) fn allow(&mut self, rule: AllowRule) {
        self.policy.allow.push(rule);
    }
}
