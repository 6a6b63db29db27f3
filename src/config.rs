//! Configuration: every `*.toml` in the config directory, read in name order, plus the
//! opt-in labels of Docker networks.
//!
//! Every error names the file, line and column (`FILE:LINE:COL: what is wrong`). Loading
//! is all or nothing: a caller that gets an error keeps its previous configuration.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use toml::Spanned;

use ipnetwork::IpNetwork;

use crate::plan::{DEFAULT_TABLE, valid_network_name, validate_table_name};
use crate::policy::{HostAccess, Mode, PortRange};

pub const DEFAULT_CONFIG_DIR: &str = "/etc/trafficjam";
pub const DEFAULT_DOCKER_HOST: &str = "unix:///var/run/docker.sock";
pub const DEFAULT_RESYNC_INTERVAL: Duration = Duration::from_secs(30);
/// Label that opts a Docker network in: its value is one whitelist filter. More filters
/// go in labels that start with `trafficjam.whitelist.` (any suffix).
pub const LABEL_WHITELIST: &str = "trafficjam.whitelist";
pub const LABEL_ALLOW_HOST_TRAFFIC: &str = "trafficjam.allow_host_traffic";
pub const LABEL_ALLOW_HOST_PORTS: &str = "trafficjam.allow_host_ports";
pub const LABEL_DENY_OUTBOUND: &str = "trafficjam.deny_outbound";
/// `enforce` (the default) or `audit`: log and count what would be dropped, drop nothing.
pub const LABEL_MODE: &str = "trafficjam.mode";
/// The NFLOG group our drop rules report to, unless `[daemon] log_group` says otherwise.
pub const DEFAULT_LOG_GROUP: u16 = 4200;
/// Container labels that open the container to others: `trafficjam.allow.from` (a filter
/// choosing who may connect) and `trafficjam.allow.ports`, or several rules named
/// `trafficjam.allow.<rule>.from` and `trafficjam.allow.<rule>.ports`.
pub const LABEL_ALLOW_PREFIX: &str = "trafficjam.allow.";

/// What `deny_outbound = ["private"]` stands for: RFC 1918, shared address space (RFC
/// 6598), link-local, unique local and link-local IPv6.
pub const PRIVATE_DESTINATIONS: &[&str] = &[
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "169.254.0.0/16",
    "fc00::/7",
    "fe80::/10",
];

/// The `docker ps --filter` keys Docker knows.
const FILTER_KEYS: &[&str] = &[
    "ancestor",
    "before",
    "expose",
    "exited",
    "health",
    "id",
    "isolation",
    "is-task",
    "label",
    "name",
    "network",
    "publish",
    "since",
    "status",
    "volume",
];

const LOG_LEVELS: &[&str] = &["error", "warn", "info", "debug", "trace"];

/// One `docker ps --filter KEY=VALUE`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Filter {
    pub key: String,
    pub value: String,
}

/// Why a whitelist entry is not a `docker ps --filter`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    #[error("an empty filter")]
    Empty,
    #[error("{0:?} is not a filter: expected KEY=VALUE, as in `docker ps --filter`")]
    NotKeyValue(String),
    #[error("{entry:?}: unknown filter {key:?} (one of {})", FILTER_KEYS.join(", "))]
    UnknownKey { entry: String, key: String },
    #[error("filter {0:?} has an empty value")]
    EmptyValue(String),
    #[error("filter {entry:?}: Docker accepts only {expected}")]
    BadValue { entry: String, expected: String },
}

impl Filter {
    pub fn parse(text: &str) -> Result<Filter, FilterError> {
        if text.trim().is_empty() {
            return Err(FilterError::Empty);
        }
        let Some((key, value)) = text.split_once('=') else {
            return Err(FilterError::NotKeyValue(text.to_owned()));
        };
        if !FILTER_KEYS.contains(&key) {
            return Err(FilterError::UnknownKey {
                entry: text.to_owned(),
                key: key.to_owned(),
            });
        }
        if value.is_empty() {
            return Err(FilterError::EmptyValue(text.to_owned()));
        }
        // Docker refuses other values of these keys (the query would fail).
        let allowed: &[&str] = match key {
            "status" => &[
                "created",
                "restarting",
                "running",
                "removing",
                "paused",
                "exited",
                "dead",
            ],
            "health" => &["starting", "healthy", "unhealthy", "none"],
            "is-task" => &["true", "false"],
            _ => &[],
        };
        let bad_number = key == "exited" && value.parse::<i64>().is_err();
        if (!allowed.is_empty() && !allowed.contains(&value)) || bad_number {
            return Err(FilterError::BadValue {
                entry: text.to_owned(),
                expected: if bad_number {
                    "an exit code".to_owned()
                } else {
                    allowed.join(", ")
                },
            });
        }
        Ok(Filter {
            key: key.to_owned(),
            value: value.to_owned(),
        })
    }

    /// The filters as Docker's API takes them, exactly like repeated `docker ps --filter`:
    /// different keys AND'ed; a repeated `label` AND'ed too, other repeated keys OR'ed.
    pub fn to_docker(filters: &[Filter]) -> HashMap<String, Vec<String>> {
        let mut map: HashMap<String, Vec<String>> = HashMap::new();
        for f in filters {
            map.entry(f.key.clone()).or_default().push(f.value.clone());
        }
        map
    }
}

impl fmt::Display for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.key, self.value)
    }
}

/// Containers chosen by `docker ps` queries: a container is chosen when any of the queries
/// lists it. Within one query, filters combine exactly as repeated `docker ps --filter`.
#[derive(Debug, Clone, PartialEq, Eq, Default, PartialOrd, Ord)]
pub struct Selector {
    pub queries: Vec<Vec<Filter>>,
}

impl Selector {
    /// One query.
    pub fn query(filters: Vec<Filter>) -> Selector {
        Selector {
            queries: vec![filters],
        }
    }

    pub fn is_empty(&self) -> bool {
        self.queries.iter().all(Vec::is_empty)
    }

    /// The traps users fall into with these filters, as warnings (empty when none).
    pub fn pitfalls(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        for query in &self.queries {
            let labels = query.iter().filter(|f| f.key == "label").count();
            if labels > 1 {
                let list: Vec<String> = query.iter().map(|f| format!("\"{f}\"")).collect();
                warnings.push(format!(
                    "[{}] is one query, and Docker ANDs repeated label filters: only a container with every one of these labels matches. For alternatives write a list of lists: [{}]",
                    list.join(", "),
                    query
                        .iter()
                        .map(|f| format!("[\"{f}\"]"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            for f in query {
                match f.key.as_str() {
                    "ancestor" => warnings.push(format!(
                        "\"{f}\" follows the image tag: once the tag moves to a newer image (a docker pull), the running container no longer matches until it is recreated. Prefer a label, such as \"label=trafficjam.role=proxy\""
                    )),
                    "name" if !(f.value.starts_with('^') && f.value.ends_with('$')) => {
                        warnings.push(format!(
                            "\"{f}\" is a regular expression that matches anywhere in a container's name (name={v} also matches {v}-forward-auth). Anchor it: \"name=^{v}$\", or use a label",
                            v = f.value.trim_start_matches('^').trim_end_matches('$')
                        ))
                    }
                    "label" if f.value.starts_with("traefik.enable") => warnings.push(format!(
                        "\"{f}\" matches every container Traefik routes to, the backends too: they would all be whitelisted. Use a label only the proxy carries"
                    )),
                    _ => {}
                }
            }
        }
        warnings
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let query = |q: &Vec<Filter>| {
            q.iter()
                .map(Filter::to_string)
                .collect::<Vec<_>>()
                .join(" + ")
        };
        let parts: Vec<String> = self.queries.iter().map(query).collect();
        f.write_str(&parts.join(" | "))
    }
}

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

/// The allow rules a container's labels declare towards the container itself, and the
/// problems of those that cannot be read (such a rule opens nothing: fail closed). The
/// rules' `to` is left empty: it is the container.
pub fn container_allow_rules(
    container: &str,
    labels: &HashMap<String, String>,
) -> (Vec<AllowRule>, Vec<String>) {
    // rule name -> (from, ports), from the label keys.
    let mut rules: BTreeMap<String, (Option<&String>, Option<&String>)> = BTreeMap::new();
    let mut broken = std::collections::BTreeSet::new();
    let mut problems = Vec::new();
    for (key, value) in labels {
        let Some(rest) = key.strip_prefix(LABEL_ALLOW_PREFIX) else {
            continue;
        };
        let (name, field) = match rest.rsplit_once('.') {
            Some((name, field)) => (name, field),
            None => ("", rest),
        };
        let entry = rules.entry(name.to_owned()).or_default();
        match field {
            "from" => entry.0 = Some(value),
            "ports" => entry.1 = Some(value),
            _ => {
                // A typo (`.port`) must not leave the rule open on every port.
                broken.insert(name.to_owned());
                problems.push(format!(
                    "container {container}: label {key}: unknown (trafficjam.allow.from, trafficjam.allow.ports, or trafficjam.allow.<rule>.from and .ports): that rule opens nothing"
                ));
            }
        }
    }
    rules.retain(|name, _| !broken.contains(name));
    let mut out = Vec::new();
    for (name, (from, ports)) in rules {
        let label = |field: &str| {
            if name.is_empty() {
                format!("{LABEL_ALLOW_PREFIX}{field}")
            } else {
                format!("{LABEL_ALLOW_PREFIX}{name}.{field}")
            }
        };
        let origin = format!("label {} on {container}", label("from"));
        let Some(from) = from else {
            problems.push(format!(
                "container {container}: {} without {}: it opens nothing",
                label("ports"),
                label("from")
            ));
            continue;
        };
        let from = match Filter::parse(from) {
            Ok(f) => Selector::query(vec![f]),
            Err(e) => {
                problems.push(format!(
                    "container {container}: label {}: {e}: it opens nothing",
                    label("from")
                ));
                continue;
            }
        };
        let ports = match ports {
            None => None,
            Some(list) => match list
                .split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(PortRange::parse)
                .collect::<Result<Vec<_>, _>>()
            {
                Ok(p) if !p.is_empty() => Some(p),
                Ok(_) => {
                    problems.push(format!(
                        "container {container}: label {} is empty: it opens nothing",
                        label("ports")
                    ));
                    continue;
                }
                Err(e) => {
                    problems.push(format!(
                        "container {container}: label {}: {e}: it opens nothing",
                        label("ports")
                    ));
                    continue;
                }
            },
        };
        for p in from.pitfalls() {
            problems.push(format!(
                "container {container}: label {}: {p}",
                label("from")
            ));
        }
        out.push(AllowRule {
            from,
            to: Selector::default(),
            ports,
            origin,
        });
    }
    (out, problems)
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

/// Where a network's policy came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicySource {
    /// A `[network.NAME]` section (file name).
    File(PathBuf),
    /// The network's own `trafficjam.*` labels.
    Labels,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonConfig {
    /// `unix://…` or `tcp://…`; `None` means `$DOCKER_HOST`, then the default socket.
    pub docker_host: Option<String>,
    pub resync_interval: Duration,
    pub table: String,
    pub log_level: Option<String>,
    /// Whether networks opt in with `trafficjam.*` labels (else TOML sections only).
    pub label_opt_in: bool,
    /// Whether our drops report to the kernel's NFLOG and the daemon logs them by name.
    pub log_drops: bool,
    /// The NFLOG group they report to.
    pub log_group: u16,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            docker_host: None,
            resync_interval: DEFAULT_RESYNC_INTERVAL,
            table: DEFAULT_TABLE.to_owned(),
            log_level: None,
            label_opt_in: true,
            log_drops: true,
            log_group: DEFAULT_LOG_GROUP,
        }
    }
}

impl DaemonConfig {
    /// The NFLOG group our drop rules report to, when drops are logged.
    pub fn drop_log_group(&self) -> Option<u16> {
        self.log_drops.then_some(self.log_group)
    }

    /// The Docker endpoint to use: the config, then `$DOCKER_HOST`, then the socket.
    pub fn docker_host(&self) -> String {
        self.docker_host
            .clone()
            .or_else(|| std::env::var("DOCKER_HOST").ok().filter(|h| !h.is_empty()))
            .unwrap_or_else(|| DEFAULT_DOCKER_HOST.to_owned())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Config {
    pub daemon: DaemonConfig,
    /// Networks with a `[network.NAME]` section, by name.
    pub networks: BTreeMap<String, (NetworkPolicy, PolicySource)>,
    /// The files read, in order.
    pub files: Vec<PathBuf>,
    /// Their text, as read: what the state directory keeps of the last good configuration.
    pub sources: Vec<(PathBuf, String)>,
    /// Likely mistakes that are still valid configuration, located like errors.
    pub warnings: Vec<ConfigError>,
}

/// A configuration error, located in its file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}:{line}:{column}: {message}", file.display())]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl ConfigError {
    fn at(file: &Path, text: &str, span: Range<usize>, message: impl Into<String>) -> Self {
        let (line, column) = line_column(text, span.start);
        ConfigError {
            file: file.to_owned(),
            line,
            column,
            message: message.into(),
        }
    }

    fn whole_file(file: &Path, message: impl Into<String>) -> Self {
        ConfigError {
            file: file.to_owned(),
            line: 1,
            column: 1,
            message: message.into(),
        }
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

/// A selection as written: one filter string, a list of them (one query), or a list of
/// lists (alternatives); each string keeps its position. A span of 0..0 stands for the
/// span of the whole value (a lone string), which the caller fills in.
#[derive(Debug)]
enum Selection {
    Query(Vec<Spanned<String>>),
    Alternatives(Vec<Spanned<Vec<Spanned<String>>>>),
    /// A list mixing strings and lists: the span of the first item that breaks the form.
    Mixed(Range<usize>),
}

/// One item of a selection list: a string or a list of strings.
#[derive(Debug)]
enum SelectionItem {
    One(String),
    Many(Vec<Spanned<String>>),
}

impl<'de> Deserialize<'de> for SelectionItem {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ItemVisitor;
        impl<'de> Visitor<'de> for ItemVisitor {
            type Value = SelectionItem;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a filter string or a list of filter strings")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<SelectionItem, E> {
                Ok(SelectionItem::One(v.to_owned()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<SelectionItem, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<Spanned<String>>()? {
                    items.push(item);
                }
                Ok(SelectionItem::Many(items))
            }
        }
        deserializer.deserialize_any(ItemVisitor)
    }
}

impl<'de> Deserialize<'de> for Selection {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SelectionVisitor;
        impl<'de> Visitor<'de> for SelectionVisitor {
            type Value = Selection;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a filter string, a list of filter strings, or a list of lists of them")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Selection, E> {
                Ok(Selection::Query(vec![Spanned::new(0..0, v.to_owned())]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Selection, A::Error> {
                let mut strings = Vec::new();
                let mut lists = Vec::new();
                let mut mixed = None;
                while let Some(item) = seq.next_element::<Spanned<SelectionItem>>()? {
                    let span = item.span();
                    match item.into_inner() {
                        SelectionItem::One(s) => strings.push(Spanned::new(span.clone(), s)),
                        SelectionItem::Many(l) => lists.push(Spanned::new(span.clone(), l)),
                    }
                    if !strings.is_empty() && !lists.is_empty() && mixed.is_none() {
                        mixed = Some(span);
                    }
                }
                Ok(match mixed {
                    Some(span) => Selection::Mixed(span),
                    None if lists.is_empty() => Selection::Query(strings),
                    None => Selection::Alternatives(lists),
                })
            }
        }
        deserializer.deserialize_any(SelectionVisitor)
    }
}

/// `allow_host_traffic`: a boolean, or `"whitelisted"`.
#[derive(Debug)]
enum HostTraffic {
    Bool(bool),
    Text(String),
}

impl<'de> Deserialize<'de> for HostTraffic {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct HostVisitor;
        impl<'de> Visitor<'de> for HostVisitor {
            type Value = HostTraffic;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("true, false or \"whitelisted\"")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<HostTraffic, E> {
                Ok(HostTraffic::Bool(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<HostTraffic, E> {
                Ok(HostTraffic::Text(v.to_owned()))
            }
        }
        deserializer.deserialize_any(HostVisitor)
    }
}

/// Reads `allow_host_traffic` (TOML or label).
fn host_access(value: &str) -> Option<HostAccess> {
    match value {
        "true" => Some(HostAccess::Open),
        "false" => Some(HostAccess::Closed),
        "whitelisted" => Some(HostAccess::Whitelisted),
        _ => None,
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    daemon: Option<RawDaemon>,
    #[serde(default)]
    network: BTreeMap<Spanned<String>, RawNetwork>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDaemon {
    docker_host: Option<Spanned<String>>,
    resync_interval: Option<Spanned<String>>,
    table: Option<Spanned<String>>,
    log_level: Option<Spanned<String>>,
    label_opt_in: Option<Spanned<bool>>,
    log_drops: Option<Spanned<bool>>,
    log_group: Option<Spanned<u16>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNetwork {
    whitelist: Option<Spanned<Selection>>,
    allow_host_traffic: Option<Spanned<HostTraffic>>,
    allow_host_ports: Option<Spanned<Vec<Spanned<String>>>>,
    deny_outbound: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    allow: Vec<Spanned<RawAllow>>,
    mode: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAllow {
    from: Option<Spanned<Selection>>,
    to: Option<Spanned<Selection>>,
    ports: Option<Spanned<Vec<Spanned<String>>>>,
}

/// Why a text is not a duration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("{0:?} is not a duration (examples: \"30s\", \"5m\", \"1m30s\", \"500ms\")")]
    Invalid(String),
    #[error("{0:?} is longer than a year")]
    TooLong(String),
}

/// Parses `30s`, `5m`, `1h`, `500ms`, or sums of them (`1m30s`).
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let bad = || DurationError::Invalid(text.to_owned());
    let mut total = Duration::ZERO;
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest.chars().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 {
            return Err(bad());
        }
        let number: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest.chars().take_while(|c| c.is_ascii_alphabetic()).count();
        let millis_per_unit = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            _ => return Err(bad()),
        };
        // At most a year: anything longer is a typo, and must not overflow.
        total = number
            .checked_mul(millis_per_unit)
            .map(Duration::from_millis)
            .and_then(|part| total.checked_add(part))
            .filter(|t| *t <= Duration::from_secs(366 * 24 * 3600))
            .ok_or_else(|| DurationError::TooLong(text.to_owned()))?;
        rest = &rest[unit_len..];
    }
    Ok(total)
}

/// A warning about a selection, at a span.
type SpannedWarning = (Range<usize>, String);

/// Checks a selection as written and turns it into a [`Selector`], with its pitfalls.
fn selector(
    written: Spanned<Selection>,
    key: &str,
    at: &impl Fn(Range<usize>, String) -> ConfigError,
) -> Result<(Selector, Vec<SpannedWarning>), ConfigError> {
    let whole = written.span();
    let located = |s: Range<usize>| if s.is_empty() { whole.clone() } else { s };
    let query = |items: Vec<Spanned<String>>, span: Range<usize>| {
        if items.is_empty() {
            return Err(at(
                span,
                format!(
                    "{key}: an empty query (name the proxy, e.g. \"label=trafficjam.role=proxy\")"
                ),
            ));
        }
        items
            .into_iter()
            .map(|item| {
                let span = located(item.span());
                Filter::parse(item.get_ref()).map_err(|e| at(span, format!("{key}: {e}")))
            })
            .collect::<Result<Vec<Filter>, ConfigError>>()
    };
    let selector = match written.into_inner() {
        Selection::Mixed(span) => {
            return Err(at(
                span,
                format!(
                    "{key}: mixes filters and lists of filters: write a list of filters (one query) or a list of lists (alternatives)"
                ),
            ));
        }
        Selection::Query(items) => Selector::query(query(items, whole.clone())?),
        Selection::Alternatives(lists) => {
            let mut queries = Vec::new();
            for list in lists {
                let span = list.span();
                queries.push(query(list.into_inner(), span)?);
            }
            Selector { queries }
        }
    };
    if selector.is_empty() {
        return Err(at(
            whole,
            format!("{key} is empty (name the proxy, e.g. \"label=trafficjam.role=proxy\")"),
        ));
    }
    let warnings = selector
        .pitfalls()
        .into_iter()
        .map(|w| (whole.clone(), format!("{key}: {w}")))
        .collect();
    Ok((selector, warnings))
}

/// A list of port ranges (`"5432/tcp"`, `"8000-8100/tcp"`, `"udp"`), never empty.
fn ports(
    list: Spanned<Vec<Spanned<String>>>,
    key: &str,
    at: &impl Fn(Range<usize>, String) -> ConfigError,
) -> Result<Vec<PortRange>, ConfigError> {
    let span = list.span();
    let list = list.into_inner();
    if list.is_empty() {
        let hint = if key == "allow.ports" {
            "leave it out for every port"
        } else {
            "leave it out for none"
        };
        return Err(at(
            span,
            format!("{key} is empty: it would allow nothing ({hint})"),
        ));
    }
    list.into_iter()
        .map(|p| {
            let span = p.span();
            PortRange::parse(p.get_ref()).map_err(|e| at(span, format!("{key}: {e}")))
        })
        .collect()
}

impl Config {
    /// Reads every `*.toml` in `dir`, in name order. A missing directory is an error; an
    /// empty one is a valid configuration (label-managed networks only).
    pub fn load_dir(dir: &Path) -> Result<Config, ConfigError> {
        let entries = std::fs::read_dir(dir).map_err(|e| {
            ConfigError::whole_file(dir, format!("cannot read the config directory: {e}"))
        })?;
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml") && p.is_file())
            .collect();
        files.sort();
        let mut sources = Vec::new();
        for file in files {
            let text = std::fs::read_to_string(&file)
                .map_err(|e| ConfigError::whole_file(&file, format!("cannot read: {e}")))?;
            sources.push((file, text));
        }
        Config::from_sources(&sources)
    }

    /// Parses files given as (path, text), in the given order.
    pub fn from_sources(sources: &[(PathBuf, String)]) -> Result<Config, ConfigError> {
        let mut config = Config {
            sources: sources.to_vec(),
            ..Config::default()
        };
        // Which file set each daemon key, to refuse a key set twice.
        let mut daemon_keys: HashMap<&'static str, PathBuf> = HashMap::new();
        for (file, text) in sources {
            // This file's warnings, in the order they are written.
            let first_warning = config.warnings.len();
            config.add_file(file, text, &mut daemon_keys)?;
            config.warnings[first_warning..].sort_by_key(|w| (w.line, w.column));
        }
        Ok(config)
    }

    /// Adds one file's settings and networks.
    fn add_file(
        &mut self,
        file: &Path,
        text: &str,
        daemon_keys: &mut HashMap<&'static str, PathBuf>,
    ) -> Result<(), ConfigError> {
        let config = self;
        {
            let raw: RawFile = toml::from_str(text).map_err(|e| {
                ConfigError::at(file, text, e.span().unwrap_or(0..0), e.message().trim())
            })?;
            config.files.push(file.to_owned());
            if let Some(d) = raw.daemon {
                let mut claim = |key: &'static str, span: Range<usize>| {
                    if let Some(first) = daemon_keys.insert(key, file.to_owned()) {
                        return Err(ConfigError::at(
                            file,
                            text,
                            span,
                            format!("daemon.{key} is already set in {}", first.display()),
                        ));
                    }
                    Ok(())
                };
                if let Some(host) = d.docker_host {
                    claim("docker_host", host.span())?;
                    let value = host.get_ref();
                    if !(value.starts_with("unix://") || value.starts_with("tcp://")) {
                        return Err(ConfigError::at(
                            file,
                            text,
                            host.span(),
                            format!("docker_host {value:?} must start with unix:// or tcp://"),
                        ));
                    }
                    config.daemon.docker_host = Some(host.into_inner());
                }
                if let Some(interval) = d.resync_interval {
                    claim("resync_interval", interval.span())?;
                    let parsed = parse_duration(interval.get_ref())
                        .map_err(|e| ConfigError::at(file, text, interval.span(), e.to_string()))?;
                    if parsed < Duration::from_secs(1) {
                        return Err(ConfigError::at(
                            file,
                            text,
                            interval.span(),
                            "resync_interval must be at least 1s",
                        ));
                    }
                    config.daemon.resync_interval = parsed;
                }
                if let Some(table) = d.table {
                    claim("table", table.span())?;
                    validate_table_name(table.get_ref())
                        .map_err(|e| ConfigError::at(file, text, table.span(), e.to_string()))?;
                    config.daemon.table = table.into_inner();
                }
                if let Some(labels) = d.label_opt_in {
                    claim("label_opt_in", labels.span())?;
                    config.daemon.label_opt_in = labels.into_inner();
                }
                if let Some(log) = d.log_drops {
                    claim("log_drops", log.span())?;
                    config.daemon.log_drops = log.into_inner();
                }
                if let Some(group) = d.log_group {
                    claim("log_group", group.span())?;
                    config.daemon.log_group = group.into_inner();
                }
                if let Some(level) = d.log_level {
                    claim("log_level", level.span())?;
                    if !LOG_LEVELS.contains(&level.get_ref().as_str()) {
                        return Err(ConfigError::at(
                            file,
                            text,
                            level.span(),
                            format!("log_level must be one of {}", LOG_LEVELS.join(", ")),
                        ));
                    }
                    config.daemon.log_level = Some(level.into_inner());
                }
            }
            for (name, net) in raw.network {
                let span = name.span();
                let name = name.into_inner();
                if !valid_network_name(&name) {
                    return Err(ConfigError::at(
                        file,
                        text,
                        span,
                        format!("{name:?} is not a valid Docker network name"),
                    ));
                }
                if let Some((_, PolicySource::File(first))) = config.networks.get(&name) {
                    return Err(ConfigError::at(
                        file,
                        text,
                        span,
                        format!(
                            "network {name:?} is already configured in {}",
                            first.display()
                        ),
                    ));
                }
                let at = |span: Range<usize>, message: String| {
                    ConfigError::at(file, text, span, format!("network {name:?}: {message}"))
                };
                let Some(whitelist) = net.whitelist else {
                    return Err(at(
                        span,
                        "no whitelist (a [network.NAME] section replaces the network's labels, so it names its own whitelist, e.g. whitelist = \"label=trafficjam.role=proxy\")".into(),
                    ));
                };
                let whitelist = selector(whitelist, "whitelist", &at)?;
                for w in whitelist.1 {
                    config.warnings.push(at(w.0, w.1));
                }
                let whitelist = whitelist.0;
                let host_access = match net.allow_host_traffic {
                    None => HostAccess::Closed,
                    Some(value) => {
                        let span = value.span();
                        match value.into_inner() {
                            HostTraffic::Bool(true) => HostAccess::Open,
                            HostTraffic::Bool(false) => HostAccess::Closed,
                            HostTraffic::Text(t) => host_access(&t).ok_or_else(|| {
                                at(
                                    span,
                                    format!("allow_host_traffic = {t:?}: expected true, false or \"whitelisted\""),
                                )
                            })?,
                        }
                    }
                };
                let host_ports = match net.allow_host_ports {
                    None => Vec::new(),
                    Some(list) => {
                        let span = list.span();
                        let p = ports(list, "allow_host_ports", &at)?;
                        if host_access == HostAccess::Open {
                            config.warnings.push(at(
                                span,
                                "allow_host_ports changes nothing: allow_host_traffic = true opens every host port".into(),
                            ));
                        }
                        p
                    }
                };
                let mut deny_outbound = Vec::new();
                for entry in net
                    .deny_outbound
                    .map(Spanned::into_inner)
                    .unwrap_or_default()
                {
                    let span = entry.span();
                    deny_outbound.extend(
                        parse_destinations(entry.get_ref())
                            .map_err(|e| at(span, format!("deny_outbound: {e}")))?,
                    );
                }
                let mode = match net.mode {
                    None => Mode::Enforce,
                    Some(m) => Mode::parse(m.get_ref()).ok_or_else(|| {
                        at(
                            m.span(),
                            format!(
                                "mode = {:?}: expected \"enforce\" or \"audit\"",
                                m.get_ref()
                            ),
                        )
                    })?,
                };
                let mut allow = Vec::new();
                for rule in net.allow {
                    let rule_span = rule.span();
                    let (line, _) = line_column(text, rule_span.start);
                    let rule = rule.into_inner();
                    let side = |sel: Option<Spanned<Selection>>, key: &str| {
                        let sel = sel.ok_or_else(|| {
                            at(
                                rule_span.clone(),
                                format!("an allow rule needs `{key}` (docker ps filters, as the whitelist)"),
                            )
                        })?;
                        selector(sel, &format!("allow.{key}"), &at)
                    };
                    let (from, from_warnings) = side(rule.from, "from")?;
                    let (to, to_warnings) = side(rule.to, "to")?;
                    for w in from_warnings.into_iter().chain(to_warnings) {
                        config.warnings.push(at(w.0, w.1));
                    }
                    let ports = match rule.ports {
                        None => None,
                        Some(list) => Some(ports(list, "allow.ports", &at)?),
                    };
                    allow.push(AllowRule {
                        from,
                        to,
                        ports,
                        origin: format!("{}:{line}", file.display()),
                    });
                }
                config.networks.insert(
                    name,
                    (
                        NetworkPolicy {
                            whitelist,
                            host_access,
                            host_ports,
                            deny_outbound,
                            allow,
                            mode,
                        },
                        PolicySource::File(file.to_owned()),
                    ),
                );
            }
        }
        Ok(())
    }

    /// The policy of a Docker network: its `[network.NAME]` section if there is one (it
    /// overrides the labels), else its labels if it opted in, else `None` (not managed).
    /// A label that cannot be read isolates the network with an empty whitelist: the
    /// network asked for isolation, so it fails closed; the error says why.
    pub fn policy_for(
        &self,
        name: &str,
        labels: &HashMap<String, String>,
    ) -> Option<(NetworkPolicy, PolicySource, Vec<String>)> {
        if let Some((policy, source)) = self.networks.get(name) {
            return Some((policy.clone(), source.clone(), Vec::new()));
        }
        if !self.daemon.label_opt_in {
            return None;
        }
        let mut keys: Vec<&String> = labels
            .keys()
            .filter(|k| {
                k.as_str() == LABEL_WHITELIST
                    || k.strip_prefix(LABEL_WHITELIST)
                        .is_some_and(|rest| rest.starts_with('.'))
            })
            .collect();
        if keys.is_empty() {
            return None;
        }
        keys.sort();
        let mut errors = Vec::new();
        // Each whitelist label is one alternative: a container matching any is whitelisted.
        let mut whitelist = Selector::default();
        for key in keys {
            match Filter::parse(&labels[key]) {
                Ok(f) => whitelist.queries.push(vec![f]),
                Err(e) => errors.push(format!("label {key}: {e}")),
            }
        }
        if !errors.is_empty() {
            whitelist = Selector::default();
            errors.push("isolating the network with no container whitelisted".into());
        }
        let host_access = match labels.get(LABEL_ALLOW_HOST_TRAFFIC) {
            None => HostAccess::Closed,
            Some(value) => host_access(value).unwrap_or_else(|| {
                errors.push(format!(
                    "label {LABEL_ALLOW_HOST_TRAFFIC}={value:?} is not true, false or whitelisted: host traffic stays blocked"
                ));
                HostAccess::Closed
            }),
        };
        let list = |value: &str| -> Vec<String> {
            value
                .split(',')
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
                .collect()
        };
        let mut host_ports = Vec::new();
        if let Some(value) = labels.get(LABEL_ALLOW_HOST_PORTS) {
            match list(value)
                .iter()
                .map(|p| PortRange::parse(p))
                .collect::<Result<Vec<_>, _>>()
            {
                Ok(ports) => host_ports = ports,
                Err(e) => errors.push(format!(
                    "label {LABEL_ALLOW_HOST_PORTS}: {e}: no host port is opened"
                )),
            }
        }
        let mut deny_outbound = Vec::new();
        if let Some(value) = labels.get(LABEL_DENY_OUTBOUND) {
            match list(value)
                .iter()
                .map(|d| parse_destinations(d))
                .collect::<Result<Vec<_>, _>>()
            {
                Ok(d) => deny_outbound = d.into_iter().flatten().collect(),
                Err(e) => {
                    errors.push(format!(
                        "label {LABEL_DENY_OUTBOUND}: {e}: denying every destination outside the network"
                    ));
                    deny_outbound = vec![
                        "0.0.0.0/0".parse().expect("valid"),
                        "::/0".parse().expect("valid"),
                    ];
                }
            }
        }
        let mode = match labels.get(LABEL_MODE) {
            None => Mode::Enforce,
            Some(value) => Mode::parse(value).unwrap_or_else(|| {
                errors.push(format!(
                    "label {LABEL_MODE}={value:?} is not enforce or audit: enforcing"
                ));
                Mode::Enforce
            }),
        };
        Some((
            NetworkPolicy {
                whitelist,
                host_access,
                host_ports,
                deny_outbound,
                allow: Vec::new(),
                mode,
            },
            PolicySource::Labels,
            errors,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(files: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let sources: Vec<(PathBuf, String)> = files
            .iter()
            .map(|(n, t)| (PathBuf::from(format!("/etc/trafficjam/{n}")), t.to_string()))
            .collect();
        Config::from_sources(&sources)
    }

    fn error(files: &[(&str, &str)]) -> String {
        parse(files).expect_err("should be refused").to_string()
    }

    #[test]
    fn full_example_parses() {
        let c = parse(&[(
            "a.toml",
            r#"
[daemon]
docker_host = "tcp://127.0.0.1:2375"
resync_interval = "1m30s"
table = "tj_test"
log_level = "debug"

[network.traefik_public]
whitelist = ["ancestor=traefik:latest", "label=role=proxy"]
allow_host_traffic = true

[network.other]
whitelist = "name=proxy"
"#,
        )])
        .unwrap();
        assert_eq!(
            c.daemon.docker_host.as_deref(),
            Some("tcp://127.0.0.1:2375")
        );
        assert_eq!(c.daemon.resync_interval, Duration::from_secs(90));
        assert_eq!(c.daemon.table, "tj_test");
        assert_eq!(c.daemon.log_level.as_deref(), Some("debug"));
        let (p, _) = &c.networks["traefik_public"];
        assert_eq!(p.host_access, HostAccess::Open);
        assert_eq!(
            p.whitelist,
            Selector::query(vec![
                Filter {
                    key: "ancestor".into(),
                    value: "traefik:latest".into()
                },
                Filter {
                    key: "label".into(),
                    value: "role=proxy".into()
                },
            ])
        );
        let (p, _) = &c.networks["other"];
        assert_eq!(p.host_access, HostAccess::Closed);
        assert_eq!(p.whitelist.to_string(), "name=proxy");
        // ancestor= and an unanchored name= are warned about, where they are written.
        let warnings: Vec<String> = c.warnings.iter().map(|w| w.to_string()).collect();
        assert_eq!(warnings.len(), 2, "{warnings:#?}");
        assert!(warnings[0].starts_with("/etc/trafficjam/a.toml:9:13: network \"traefik_public\": whitelist: \"ancestor=traefik:latest\" follows the image tag"), "{warnings:#?}");
        assert!(
            warnings[1].contains(
                "a.toml:13:13: network \"other\": whitelist: \"name=proxy\" is a regular expression"
            ),
            "{warnings:#?}"
        );
    }

    #[test]
    fn empty_and_default() {
        let c = parse(&[("a.toml", "# nothing\n")]).unwrap();
        assert_eq!(c.daemon, DaemonConfig::default());
        assert!(c.networks.is_empty());
    }

    #[test]
    fn errors_name_file_line_and_column() {
        assert_eq!(
            error(&[("a.toml", "[daemon]\ntable = \"x\"\nbogus = 1\n")]),
            "/etc/trafficjam/a.toml:3:1: unknown field `bogus`, expected one of `docker_host`, `resync_interval`, `table`, `log_level`, `label_opt_in`, `log_drops`, `log_group`"
        );
        let e = error(&[("a.toml", "[network.n]\nwhitelist = 5\n")]);
        assert!(
            e.starts_with("/etc/trafficjam/a.toml:2:13: invalid type: integer `5`"),
            "{e}"
        );
        let e = error(&[(
            "a.toml",
            "[network.n]\nwhitelist = [\"name=a\", \"nope\"]\n",
        )]);
        assert!(
            e.starts_with(
                "/etc/trafficjam/a.toml:2:24: network \"n\": whitelist: \"nope\" is not a filter"
            ),
            "{e}"
        );
        let e = error(&[("a.toml", "[network.n]\nwhitelist = \"colour=red\"\n")]);
        assert!(e.starts_with("/etc/trafficjam/a.toml:2:13: network \"n\": whitelist: \"colour=red\": unknown filter \"colour\""), "{e}");
        let e = error(&[("a.toml", "[network.n]\nwhitelist = [\"name=a\", \"\"]\n")]);
        assert_eq!(
            e,
            "/etc/trafficjam/a.toml:2:24: network \"n\": whitelist: an empty filter"
        );
        let e = error(&[("a.toml", "[network.n]\nwhitelist = []\n")]);
        assert!(
            e.starts_with("/etc/trafficjam/a.toml:2:13: network \"n\": whitelist: an empty query"),
            "{e}"
        );
        let e = error(&[("a.toml", "[network.n]\nallow_host_traffic = true\n")]);
        assert!(
            e.starts_with("/etc/trafficjam/a.toml:1:10: network \"n\": no whitelist"),
            "{e}"
        );
        let e = error(&[("a.toml", "[daemon]\nresync_interval = \"soon\"\n")]);
        assert!(
            e.starts_with("/etc/trafficjam/a.toml:2:19: \"soon\" is not a duration"),
            "{e}"
        );
        let e = error(&[("a.toml", "[daemon]\nresync_interval = \"10ms\"\n")]);
        assert!(
            e.starts_with("/etc/trafficjam/a.toml:2:19: resync_interval must be at least 1s"),
            "{e}"
        );
        let e = error(&[("a.toml", "[daemon]\ndocker_host = \"http://x\"\n")]);
        assert!(e.contains("a.toml:2:15: docker_host"), "{e}");
        let e = error(&[("a.toml", "[daemon]\ntable = \"bad name\"\n")]);
        assert!(e.contains("a.toml:2:9: table name"), "{e}");
        let e = error(&[("a.toml", "[daemon]\nlog_level = \"loud\"\n")]);
        assert!(e.contains("a.toml:2:13: log_level must be one of"), "{e}");
        let e = error(&[("a.toml", "[network.\"-x\"]\nwhitelist = \"name=a\"\n")]);
        assert!(
            e.contains("a.toml:1:10: \"-x\" is not a valid Docker network name"),
            "{e}"
        );
        let e = error(&[("a.toml", "[network.n]\nwhitelist = \"name=a\"\n[network\n")]);
        assert!(e.starts_with("/etc/trafficjam/a.toml:3:"), "{e}");
    }

    #[test]
    fn the_same_network_or_daemon_key_in_two_files_is_refused() {
        let net = "[network.web]\nwhitelist = \"name=proxy\"\n";
        assert_eq!(
            error(&[("a.toml", net), ("b.toml", &format!("\n{net}"))]),
            "/etc/trafficjam/b.toml:2:10: network \"web\" is already configured in /etc/trafficjam/a.toml"
        );
        let e = error(&[
            ("a.toml", "[daemon]\ntable = \"one\"\n"),
            ("b.toml", "[daemon]\ntable = \"two\"\n"),
        ]);
        assert_eq!(
            e,
            "/etc/trafficjam/b.toml:2:9: daemon.table is already set in /etc/trafficjam/a.toml"
        );
        // Different keys in different files are fine.
        let c = parse(&[
            ("a.toml", "[daemon]\ntable = \"one\"\n"),
            ("b.toml", "[daemon]\nresync_interval = \"5s\"\n"),
        ])
        .unwrap();
        assert_eq!(c.daemon.table, "one");
        assert_eq!(c.daemon.resync_interval, Duration::from_secs(5));
    }

    #[test]
    fn load_dir_reads_toml_files_in_name_order() {
        let dir = std::env::temp_dir().join(format!("tj-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("20-b.toml"), "[daemon]\ntable = \"late\"\n").unwrap();
        std::fs::write(
            dir.join("10-a.toml"),
            "[network.x]\nwhitelist = \"name=p\"\n",
        )
        .unwrap();
        std::fs::write(dir.join("ignored.conf"), "not toml at all [").unwrap();
        let c = Config::load_dir(&dir).unwrap();
        assert_eq!(c.files, [dir.join("10-a.toml"), dir.join("20-b.toml")]);
        assert_eq!(c.daemon.table, "late");
        std::fs::remove_dir_all(&dir).unwrap();
        let e = Config::load_dir(&dir).unwrap_err();
        assert!(
            e.to_string().contains("cannot read the config directory"),
            "{e}"
        );
    }

    /// The shipped default parses, and so does every example in it once uncommented.
    #[test]
    fn shipped_default_and_its_examples_parse() {
        let shipped = include_str!("../etc/trafficjam/trafficjam.toml");
        let c = parse(&[("trafficjam.toml", shipped)]).unwrap();
        assert_eq!(c.daemon, DaemonConfig::default());
        assert!(c.networks.is_empty());
        let uncommented: String = shipped
            .lines()
            .map(|l| match l.strip_prefix('#') {
                Some(rest) if rest.starts_with(|c: char| c.is_ascii_alphabetic() || c == '[') => {
                    rest
                }
                _ => l,
            })
            .map(|l| format!("{l}\n"))
            .collect();
        let c = parse(&[("trafficjam.toml", &uncommented)]).unwrap();
        assert_eq!(c.daemon.docker_host.as_deref(), Some(DEFAULT_DOCKER_HOST));
        assert_eq!(c.daemon.resync_interval, DEFAULT_RESYNC_INTERVAL);
        assert_eq!(c.daemon.table, DEFAULT_TABLE);
        let (p, _) = &c.networks["traefik_public"];
        assert_eq!(p.whitelist.to_string(), "label=trafficjam.role=proxy");
        assert_eq!(p.host_access, HostAccess::Closed);
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(
            parse_duration("99999999h"),
            Err(DurationError::TooLong("99999999h".into()))
        );
        assert_eq!(
            parse_duration("5d"),
            Err(DurationError::Invalid("5d".into()))
        );
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1h2m3s"), Ok(Duration::from_secs(3723)));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("5d").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("1s18446744073709551615s").is_err());
        assert!(parse_duration("99999999h").is_err());
    }

    fn labels(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn labels_opt_a_network_in_and_a_section_overrides_them() {
        let c = parse(&[("a.toml", "[network.web]\nwhitelist = \"name=proxy\"\n")]).unwrap();
        let l = labels(&[
            ("trafficjam.whitelist", "ancestor=traefik"),
            ("trafficjam.whitelist.second", "label=proxy=yes"),
            ("trafficjam.allow_host_traffic", "true"),
            ("trafficjam.whitelistx", "name=ignored"),
        ]);
        let (p, source, errors) = c.policy_for("api", &l).unwrap();
        assert_eq!(source, PolicySource::Labels);
        assert!(errors.is_empty());
        assert_eq!(p.host_access, HostAccess::Open);
        // Each whitelist label is an alternative.
        assert_eq!(
            p.whitelist.to_string(),
            "ancestor=traefik | label=proxy=yes"
        );
        let (p, source, _) = c.policy_for("web", &l).unwrap();
        assert!(matches!(source, PolicySource::File(_)));
        assert_eq!(p.whitelist.to_string(), "name=proxy");
        assert_eq!(p.host_access, HostAccess::Closed);
        assert!(
            c.policy_for("plain", &labels(&[("com.example", "x")]))
                .is_none()
        );

        // With label_opt_in = false only sections count.
        let c = parse(&[(
            "a.toml",
            "[daemon]\nlabel_opt_in = false\n[network.web]\nwhitelist = \"name=proxy\"\n",
        )])
        .unwrap();
        assert!(c.policy_for("api", &l).is_none());
        assert!(c.policy_for("web", &l).is_some());
    }

    #[test]
    fn a_broken_label_fails_closed() {
        let c = Config::default();
        let (p, _, errors) = c
            .policy_for("api", &labels(&[("trafficjam.whitelist", "nonsense")]))
            .unwrap();
        assert!(p.whitelist.is_empty());
        assert_eq!(errors.len(), 2, "{errors:?}");
        let (p, _, errors) = c
            .policy_for(
                "api",
                &labels(&[
                    ("trafficjam.whitelist", "name=p"),
                    ("trafficjam.allow_host_traffic", "yes"),
                ]),
            )
            .unwrap();
        assert_eq!(p.host_access, HostAccess::Closed);
        assert_eq!(errors.len(), 1);
        // Broken port and destination labels: no port opened, every destination denied.
        let (p, _, errors) = c
            .policy_for(
                "api",
                &labels(&[
                    ("trafficjam.whitelist", "name=p"),
                    ("trafficjam.allow_host_ports", "53/udp, dns"),
                    ("trafficjam.deny_outbound", "private,10.0.0.0/33"),
                ]),
            )
            .unwrap();
        assert!(p.host_ports.is_empty());
        assert_eq!(p.deny_outbound.len(), 2);
        assert!(p.deny_outbound.iter().all(|d| d.prefix() == 0));
        assert_eq!(errors.len(), 2, "{errors:?}");
        // A broken mode label enforces.
        let (p, _, errors) = c
            .policy_for(
                "api",
                &labels(&[
                    ("trafficjam.whitelist", "name=p"),
                    ("trafficjam.mode", "audti"),
                ]),
            )
            .unwrap();
        assert_eq!(p.mode, Mode::Enforce);
        assert_eq!(errors.len(), 1, "{errors:?}");
    }

    #[test]
    fn audit_mode_and_the_drop_log_settings() {
        let c = parse(&[(
            "a.toml",
            "[daemon]\nlog_drops = false\nlog_group = 7\n[network.web]\nwhitelist = \"name=^p$\"\nmode = \"audit\"\n",
        )])
        .unwrap();
        assert_eq!(c.networks["web"].0.mode, Mode::Audit);
        assert_eq!((c.daemon.log_drops, c.daemon.log_group), (false, 7));
        assert_eq!(c.daemon.drop_log_group(), None);
        let d = Config::default();
        assert_eq!(d.daemon.drop_log_group(), Some(DEFAULT_LOG_GROUP));
        let (p, _, errors) = d
            .policy_for(
                "api",
                &labels(&[
                    ("trafficjam.whitelist", "name=p"),
                    ("trafficjam.mode", "audit"),
                ]),
            )
            .unwrap();
        assert_eq!((p.mode, errors.len()), (Mode::Audit, 0));
        let e = error(&[("a.toml", "[daemon]\nlog_group = 70000\n")]);
        assert!(e.starts_with("/etc/trafficjam/a.toml:2:13:"), "{e}");
    }

    #[test]
    fn network_labels_carry_host_access_ports_and_outbound_denials() {
        let (p, _, errors) = Config::default()
            .policy_for(
                "api",
                &labels(&[
                    ("trafficjam.whitelist", "label=role=proxy"),
                    ("trafficjam.allow_host_traffic", "whitelisted"),
                    ("trafficjam.allow_host_ports", "53/udp, 8000-8100/tcp"),
                    ("trafficjam.deny_outbound", "private, 203.0.113.7"),
                ]),
            )
            .unwrap();
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(p.host_access, HostAccess::Whitelisted);
        let ports: Vec<String> = p.host_ports.iter().map(|p| p.to_string()).collect();
        assert_eq!(ports, ["53/udp", "8000-8100/tcp"]);
        assert_eq!(p.deny_outbound.len(), PRIVATE_DESTINATIONS.len() + 1);
        assert_eq!(
            p.deny_outbound.last().unwrap().to_string(),
            "203.0.113.7/32"
        );
    }

    /// What labels that cannot be read are warned of, to the letter: the operator reads it.
    #[test]
    fn label_warnings_are_worded_as_they_were() {
        let (p, _, errors) = Config::default()
            .policy_for(
                "api",
                &labels(&[
                    ("trafficjam.whitelist", "nonsense"),
                    ("trafficjam.whitelist.b", "colour=red"),
                    ("trafficjam.allow_host_traffic", "yes"),
                    ("trafficjam.allow_host_ports", "53/udp, dns"),
                    ("trafficjam.deny_outbound", "lan"),
                    ("trafficjam.mode", "audti"),
                ]),
            )
            .unwrap();
        assert_eq!(
            errors,
            [
                "label trafficjam.whitelist: \"nonsense\" is not a filter: expected KEY=VALUE, as in `docker ps --filter`",
                "label trafficjam.whitelist.b: \"colour=red\": unknown filter \"colour\" (one of ancestor, before, expose, exited, health, id, isolation, is-task, label, name, network, publish, since, status, volume)",
                "isolating the network with no container whitelisted",
                "label trafficjam.allow_host_traffic=\"yes\" is not true, false or whitelisted: host traffic stays blocked",
                "label trafficjam.allow_host_ports: \"dns\": unknown protocol \"dns\" (tcp or udp; examples: \"5432/tcp\", \"53/udp\", \"8000-8100/tcp\", \"tcp\"): no host port is opened",
                "label trafficjam.deny_outbound: \"lan\" is not a destination (a CIDR such as \"192.168.1.0/24\", an address, or \"private\"): invalid address: lan: denying every destination outside the network",
                "label trafficjam.mode=\"audti\" is not enforce or audit: enforcing",
            ]
        );
        assert_eq!(
            (p.whitelist, p.host_access, p.host_ports, p.mode),
            (
                Selector::default(),
                HostAccess::Closed,
                Vec::new(),
                Mode::Enforce
            )
        );
        // A port label that lists nothing opens nothing, and is not warned of.
        let (p, _, errors) = Config::default()
            .policy_for(
                "api",
                &labels(&[
                    ("trafficjam.whitelist", "name=^p$"),
                    ("trafficjam.allow_host_ports", " , "),
                    ("trafficjam.deny_outbound", ""),
                ]),
            )
            .unwrap();
        assert!(errors.is_empty(), "{errors:?}");
        assert!(p.host_ports.is_empty() && p.deny_outbound.is_empty());

        let (rules, problems) = container_allow_rules(
            "db",
            &labels(&[
                ("trafficjam.allow.ports", "5432/tcp"),
                ("trafficjam.allow.a.from", "nonsense"),
                ("trafficjam.allow.a.ports", "5432/udp"),
                ("trafficjam.allow.b.from", "name=^b$"),
                ("trafficjam.allow.b.ports", " , "),
                ("trafficjam.allow.c.from", "name=^c$"),
                ("trafficjam.allow.c.ports", "80/icmp"),
                ("trafficjam.allow.d.from", "name=d"),
                ("trafficjam.allow.e.colour", "red"),
                ("trafficjam.allow.e.from", "name=^e$"),
            ]),
        );
        assert_eq!(
            problems,
            [
                "container db: label trafficjam.allow.e.colour: unknown (trafficjam.allow.from, trafficjam.allow.ports, or trafficjam.allow.<rule>.from and .ports): that rule opens nothing",
                "container db: trafficjam.allow.ports without trafficjam.allow.from: it opens nothing",
                "container db: label trafficjam.allow.a.from: \"nonsense\" is not a filter: expected KEY=VALUE, as in `docker ps --filter`: it opens nothing",
                "container db: label trafficjam.allow.b.ports is empty: it opens nothing",
                "container db: label trafficjam.allow.c.ports: \"80/icmp\": unknown protocol \"icmp\" (tcp or udp; examples: \"5432/tcp\", \"53/udp\", \"8000-8100/tcp\", \"tcp\"): it opens nothing",
                "container db: label trafficjam.allow.d.from: \"name=d\" is a regular expression that matches anywhere in a container's name (name=d also matches d-forward-auth). Anchor it: \"name=^d$\", or use a label",
            ]
        );
        let origins: Vec<&str> = rules.iter().map(|r| r.origin.as_str()).collect();
        assert_eq!(origins, ["label trafficjam.allow.d.from on db"]);
    }

    #[test]
    fn container_labels_open_the_container_to_whom_they_name() {
        let (rules, problems) = container_allow_rules(
            "db",
            &labels(&[
                (
                    "trafficjam.allow.from",
                    "label=com.docker.compose.service=nextcloud",
                ),
                ("trafficjam.allow.ports", "5432/tcp"),
                ("trafficjam.allow.admin.from", "name=^adminer$"),
                // A typo in a field name: the rule opens nothing (not every port).
                ("trafficjam.allow.bad.from", "nonsense"),
                ("trafficjam.allow.lonely.ports", "80/tcp"),
                ("trafficjam.allow.wrong.ports", "80/icmp"),
                ("trafficjam.allow.wrong.from", "name=^x$"),
                ("trafficjam.allow.admin.color", "red"),
                ("com.example", "x"),
            ]),
        );
        let summary: Vec<String> = rules
            .iter()
            .map(|r| {
                format!(
                    "{} {} {:?}",
                    r.origin,
                    r.from,
                    r.ports.as_ref().map(|p| p.len())
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                "label trafficjam.allow.from on db label=com.docker.compose.service=nextcloud Some(1)"
            ]
        );
        // The broken ones open nothing, and each says why.
        assert_eq!(problems.len(), 4, "{problems:#?}");
        assert!(problems.iter().all(|p| p.starts_with("container db: ")));
    }

    #[test]
    fn allow_rules_alternatives_and_host_keys_parse() {
        let c = parse(&[(
            "cloud.toml",
            r#"
[network.cloud]
whitelist = [["label=role=proxy"], ["label=role=admin"]]
allow_host_traffic = "whitelisted"
allow_host_ports = ["53/udp", "8000-8100/tcp"]
deny_outbound = ["private", "203.0.113.0/24"]

[[network.cloud.allow]]
from = "label=app=nextcloud"
to = ["label=app=db"]
ports = ["5432/tcp", "tcp"]

[[network.cloud.allow]]
from = [["label=app=sso"], ["name=^auth$"]]
to = "label=role=proxy"
"#,
        )])
        .unwrap();
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        let (p, _) = &c.networks["cloud"];
        assert_eq!(p.whitelist.queries.len(), 2);
        assert_eq!(
            p.whitelist.to_string(),
            "label=role=proxy | label=role=admin"
        );
        assert_eq!(p.host_access, HostAccess::Whitelisted);
        assert_eq!(p.host_ports.len(), 2);
        assert_eq!(p.deny_outbound.len(), PRIVATE_DESTINATIONS.len() + 1);
        assert_eq!(p.allow.len(), 2);
        let a = &p.allow[0];
        assert_eq!(a.from.to_string(), "label=app=nextcloud");
        assert_eq!(a.to.to_string(), "label=app=db");
        let ports: Vec<String> = a
            .ports
            .as_ref()
            .unwrap()
            .iter()
            .map(|p| p.to_string())
            .collect();
        assert_eq!(ports, ["5432/tcp", "tcp"]);
        assert_eq!(a.origin, "/etc/trafficjam/cloud.toml:8");
        let b = &p.allow[1];
        assert_eq!(b.from.queries.len(), 2);
        assert_eq!(b.ports, None);
        assert_eq!(b.origin, "/etc/trafficjam/cloud.toml:13");
    }

    #[test]
    fn filter_values_docker_would_refuse_are_refused_here() {
        for bad in ["status=up", "health=fine", "is-task=yes", "exited=x"] {
            let e = Filter::parse(bad).unwrap_err().to_string();
            assert!(e.contains("Docker accepts only"), "{bad}: {e}");
        }
        for good in [
            "status=running",
            "health=healthy",
            "is-task=false",
            "exited=137",
        ] {
            assert!(Filter::parse(good).is_ok(), "{good}");
        }
        let c = parse(&[(
            "a.toml",
            "[network.n]\nwhitelist = \"name=^p$\"\nallow_host_traffic = true\nallow_host_ports = [\"53/udp\"]\n",
        )])
        .unwrap();
        assert!(
            c.warnings[0]
                .to_string()
                .contains("a.toml:4:20: network \"n\": allow_host_ports changes nothing"),
            "{:?}",
            c.warnings
        );
    }

    #[test]
    fn a_list_repeating_label_is_warned_about() {
        let c = parse(&[(
            "a.toml",
            "[network.n]\nwhitelist = [\"label=role=proxy\", \"label=role=admin\"]\n",
        )])
        .unwrap();
        assert_eq!(c.warnings.len(), 1);
        let w = c.warnings[0].to_string();
        assert!(w.starts_with("/etc/trafficjam/a.toml:2:13: network \"n\": whitelist: [\"label=role=proxy\", \"label=role=admin\"] is one query, and Docker ANDs repeated label filters"), "{w}");
        assert!(
            w.contains("[[\"label=role=proxy\"], [\"label=role=admin\"]]"),
            "{w}"
        );
        let c = parse(&[(
            "a.toml",
            "[network.n]\nwhitelist = \"label=traefik.enable=true\"\n",
        )])
        .unwrap();
        assert!(
            c.warnings[0]
                .to_string()
                .contains("every container Traefik routes to")
        );
        let c = parse(&[("a.toml", "[network.n]\nwhitelist = \"name=^traefik$\"\n")]).unwrap();
        assert!(c.warnings.is_empty());
    }

    #[test]
    fn policy_errors_are_located() {
        let net = |body: &str| format!("[network.n]\nwhitelist = \"name=^p$\"\n{body}");
        let cases = [
            (
                "allow_host_ports = [\"53/icmp\"]\n",
                "3:21: network \"n\": allow_host_ports: \"53/icmp\": unknown protocol \"icmp\"",
            ),
            (
                "allow_host_ports = [\"0/tcp\"]\n",
                "3:21: network \"n\": allow_host_ports: \"0/tcp\": \"0\" is not a port",
            ),
            (
                "allow_host_ports = [\"70000/tcp\"]\n",
                "is not a port (1 to 65535)",
            ),
            (
                "allow_host_ports = [\"9-8/tcp\"]\n",
                "the range ends before it starts",
            ),
            (
                "allow_host_ports = []\n",
                "3:20: network \"n\": allow_host_ports is empty",
            ),
            (
                "allow_host_traffic = \"proxy\"\n",
                "3:22: network \"n\": allow_host_traffic = \"proxy\": expected true, false or \"whitelisted\"",
            ),
            (
                "deny_outbound = [\"10.0.0.0/33\"]\n",
                "3:18: network \"n\": deny_outbound: \"10.0.0.0/33\" is not a destination",
            ),
            ("deny_outbound = [\"lan\"]\n", "is not a destination"),
            (
                "mode = \"warn\"\n",
                "3:8: network \"n\": mode = \"warn\": expected \"enforce\" or \"audit\"",
            ),
            (
                "[[network.n.allow]]\nto = \"name=^db$\"\n",
                "network \"n\": an allow rule needs `from`",
            ),
            (
                "[[network.n.allow]]\nfrom = \"nope\"\n",
                "4:8: network \"n\": allow.from: \"nope\" is not a filter",
            ),
            (
                "[[network.n.allow]]\nfrom = \"name=^a$\"\nto = \"\"\n",
                "5:6: network \"n\": allow.to: an empty filter",
            ),
            (
                "[[network.n.allow]]\nfrom = []\nto = \"name=^db$\"\n",
                "4:8: network \"n\": allow.from: an empty query",
            ),
            (
                "[[network.n.allow]]\nfrom = [\"name=^a$\", [\"name=^b$\"]]\nto = \"name=^db$\"\n",
                "4:21: network \"n\": allow.from: mixes filters and lists",
            ),
            (
                "[[network.n.allow]]\nfrom = \"name=^a$\"\nto = \"name=^db$\"\nports = [\"5432\"]\n",
                "6:10: network \"n\": allow.ports: \"5432\": the protocol is missing: \"5432/tcp\" or \"5432/udp\"",
            ),
            (
                "[[network.n.allow]]\nfrom = \"name=^a$\"\nto = \"name=^db$\"\nport = [\"5432/tcp\"]\n",
                "unknown field `port`",
            ),
        ];
        for (body, want) in cases {
            let e = error(&[("a.toml", &net(body))]);
            assert!(e.contains(want), "{body:?}: {e}");
        }
        // Allow rules for a network with no section (no whitelist) of their own.
        let e = error(&[(
            "a.toml",
            "[[network.cloud.allow]]\nfrom = \"name=^a$\"\nto = \"name=^b$\"\n",
        )]);
        assert!(
            e.starts_with("/etc/trafficjam/a.toml:1:11: network \"cloud\": no whitelist"),
            "{e}"
        );
    }

    #[test]
    fn filters_become_docker_query_filters() {
        let filters = [
            Filter::parse("label=a").unwrap(),
            Filter::parse("name=b").unwrap(),
            Filter::parse("label=c=d").unwrap(),
        ];
        let map = Filter::to_docker(&filters);
        assert_eq!(map["label"], ["a", "c=d"]);
        assert_eq!(map["name"], ["b"]);
    }
}
