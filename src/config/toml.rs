//! The TOML file format: what a `*.toml` in the config directory may say, and how it is
//! read into a [`Config`], every error located by file, line and column.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ::toml::Spanned;
use serde::Deserialize;
use serde::de::{self, Deserializer, SeqAccess, Visitor};

use super::network::{AllowRule, NetworkPolicy, host_access, parse_destinations};
use super::selector::{Filter, Selector};
use super::{Config, ConfigError, PolicySource};
use crate::plan::{valid_network_name, validate_table_name};
use crate::policy::{HostAccess, Mode, PortRange};

const LOG_LEVELS: &[&str] = &["error", "warn", "info", "debug", "trace"];

impl ConfigError {
    pub(super) fn at(
        file: &Path,
        text: &str,
        span: Range<usize>,
        message: impl Into<String>,
    ) -> Self {
        let (line, column) = line_column(text, span.start);
        ConfigError {
            file: file.to_owned(),
            line,
            column,
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
    /// Adds one file's settings and networks.
    pub(super) fn add_file(
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
}
