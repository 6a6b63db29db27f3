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

use super::network::{
    Choice, HostTraffic, Key, OnFailure, PolicyBuilder, Problem, RuleTo, Written, WrittenList,
    WrittenSelector, read_allow_rule,
};
use super::selector::Selector;
use super::{Config, ConfigError, PolicySource};
use crate::plan::{valid_network_name, validate_table_name};
use crate::policy::HostAccess;

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
pub(super) enum DurationError {
    #[error("{0:?} is not a duration (examples: \"30s\", \"5m\", \"1m30s\", \"500ms\")")]
    Invalid(String),
    #[error("{0:?} is longer than a year")]
    TooLong(String),
}

/// Parses `30s`, `5m`, `1h`, `500ms`, or sums of them (`1m30s`).
pub(super) fn parse_duration(text: &str) -> Result<Duration, DurationError> {
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

/// A `[network.NAME]` section being read: its errors and warnings name the file, line,
/// column and network, and a value it cannot read refuses the file.
#[derive(Debug, Clone, Copy)]
struct Section<'a> {
    file: &'a Path,
    text: &'a str,
    network: &'a str,
}

impl Section<'_> {
    /// An error (or a warning) about the network, at `span`.
    fn at(&self, span: Range<usize>, message: impl fmt::Display) -> ConfigError {
        let network = self.network;
        ConfigError::at(
            self.file,
            self.text,
            span,
            format!("network {network:?}: {message}"),
        )
    }
}

impl OnFailure for Section<'_> {
    type At = Range<usize>;
    type Error = ConfigError;

    fn failed(&mut self, key: Key, at: Range<usize>, problem: Problem) -> Result<(), ConfigError> {
        let name = key.name();
        let proxy = "name the proxy, e.g. \"label=trafficjam.role=proxy\"";
        let message = match problem {
            Problem::HostTraffic(v) => {
                format!("{name} = {v:?}: expected true, false or \"whitelisted\"")
            }
            Problem::Mode(v) => format!("{name} = {v:?}: expected \"enforce\" or \"audit\""),
            Problem::Unreadable(why) => format!("{name}: {why}"),
            Problem::Empty if key == Key::AllowPorts => {
                format!("{name} is empty: it would allow nothing (leave it out for every port)")
            }
            Problem::Empty if key == Key::AllowHostPorts => {
                format!("{name} is empty: it would allow nothing (leave it out for none)")
            }
            Problem::Empty => format!("{name} is empty ({proxy})"),
            Problem::EmptyQuery => format!("{name}: an empty query ({proxy})"),
            Problem::Mixed => format!(
                "{name}: mixes filters and lists of filters: write a list of filters (one query) or a list of lists (alternatives)"
            ),
            Problem::Missing => format!(
                "an allow rule needs `{}` (docker ps filters, as the whitelist)",
                name.trim_start_matches("allow.")
            ),
        };
        Err(self.at(at, message))
    }
}

fn written<T>(spanned: Spanned<T>) -> Written<Range<usize>, T> {
    Written::new(spanned.span(), spanned.into_inner())
}

fn written_list(list: Spanned<Vec<Spanned<String>>>) -> WrittenList<Range<usize>> {
    let list = written(list);
    Written::new(list.at, list.value.into_iter().map(written).collect())
}

/// A selection as the reader takes it: a lone string is located by the whole value.
fn written_selector(selection: Spanned<Selection>) -> WrittenSelector<Range<usize>> {
    let whole = selection.span();
    let query = |at: Range<usize>, items: Vec<Spanned<String>>| {
        let items = items
            .into_iter()
            .map(|item| {
                let item = written(item);
                let at = if item.at.is_empty() {
                    whole.clone()
                } else {
                    item.at
                };
                Written::new(at, item.value)
            })
            .collect();
        Written::new(at, items)
    };
    let selector = match selection.into_inner() {
        Selection::Query(items) => Choice::Queries(vec![query(whole.clone(), items)]),
        Selection::Alternatives(lists) => Choice::Queries(
            lists
                .into_iter()
                .map(|list| query(list.span(), list.into_inner()))
                .collect(),
        ),
        Selection::Mixed(span) => Choice::Mixed(span),
    };
    Written::new(whole, selector)
}

impl Config {
    /// Adds one file's settings and networks.
    pub(super) fn add_file(
        &mut self,
        file: &Path,
        text: &str,
        daemon_keys: &mut HashMap<&'static str, PathBuf>,
    ) -> Result<(), ConfigError> {
        let raw: RawFile = ::toml::from_str(text).map_err(|e| {
            ConfigError::at(file, text, e.span().unwrap_or(0..0), e.message().trim())
        })?;
        self.files.push(file.to_owned());
        if let Some(daemon) = raw.daemon {
            self.add_daemon(file, text, daemon, daemon_keys)?;
        }
        for (name, network) in raw.network {
            self.add_network(file, text, name, network)?;
        }
        Ok(())
    }

    /// Adds a file's `[daemon]` settings, each of which only one file may set.
    fn add_daemon(
        &mut self,
        file: &Path,
        text: &str,
        d: RawDaemon,
        daemon_keys: &mut HashMap<&'static str, PathBuf>,
    ) -> Result<(), ConfigError> {
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
            self.daemon.docker_host = Some(host.into_inner());
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
            self.daemon.resync_interval = parsed;
        }
        if let Some(table) = d.table {
            claim("table", table.span())?;
            validate_table_name(table.get_ref())
                .map_err(|e| ConfigError::at(file, text, table.span(), e.to_string()))?;
            self.daemon.table = table.into_inner();
        }
        if let Some(labels) = d.label_opt_in {
            claim("label_opt_in", labels.span())?;
            self.daemon.label_opt_in = labels.into_inner();
        }
        if let Some(log) = d.log_drops {
            claim("log_drops", log.span())?;
            self.daemon.log_drops = log.into_inner();
        }
        if let Some(group) = d.log_group {
            claim("log_group", group.span())?;
            self.daemon.log_group = group.into_inner();
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
            self.daemon.log_level = Some(level.into_inner());
        }
        Ok(())
    }

    /// Adds a file's `[network.NAME]` section.
    fn add_network(
        &mut self,
        file: &Path,
        text: &str,
        name: Spanned<String>,
        net: RawNetwork,
    ) -> Result<(), ConfigError> {
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
        if let Some((_, PolicySource::File(first))) = self.networks.get(&name) {
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
        let mut section = Section {
            file,
            text,
            network: &name,
        };
        let Some(whitelist) = net.whitelist else {
            return Err(section.at(
                span,
                "no whitelist (a [network.NAME] section replaces the network's labels, so it names its own whitelist, e.g. whitelist = \"label=trafficjam.role=proxy\")",
            ));
        };
        let mut policy = PolicyBuilder::new();
        let whitelist = written_selector(whitelist);
        let whole = whitelist.at.clone();
        policy.whitelist(&mut section, whitelist)?;
        self.warn_of_pitfalls(section, Key::Whitelist, whole, &policy.policy().whitelist);
        if let Some(value) = net.allow_host_traffic {
            policy.host_traffic(&mut section, written(value))?;
        }
        if let Some(list) = net.allow_host_ports {
            let span = list.span();
            policy.host_ports(&mut section, written_list(list))?;
            if policy.policy().host_access == HostAccess::Open {
                self.warnings.push(section.at(
                    span,
                    "allow_host_ports changes nothing: allow_host_traffic = true opens every host port",
                ));
            }
        }
        if let Some(list) = net.deny_outbound {
            policy.deny_outbound(&mut section, written_list(list))?;
        }
        if let Some(mode) = net.mode {
            policy.mode(&mut section, written(mode))?;
        }
        for rule in net.allow {
            let rule_span = rule.span();
            let (line, _) = line_column(text, rule_span.start);
            let rule = rule.into_inner();
            let from_span = rule.from.as_ref().map(Spanned::span);
            let to_span = rule.to.as_ref().map(Spanned::span);
            let Some(rule) = read_allow_rule(
                &mut section,
                rule_span,
                rule.from.map(written_selector),
                RuleTo::Written(rule.to.map(written_selector)),
                rule.ports.map(written_list),
                format!("{}:{line}", file.display()),
            )?
            else {
                continue; // never: the file is refused first
            };
            for (key, span, selector) in [
                (Key::AllowFrom, from_span, &rule.from),
                (Key::AllowTo, to_span, &rule.to),
            ] {
                if let Some(span) = span {
                    self.warn_of_pitfalls(section, key, span, selector);
                }
            }
            policy.allow(rule);
        }
        self.networks
            .insert(name, (policy.build(), PolicySource::File(file.to_owned())));
        Ok(())
    }

    /// Warns of the traps in a selector, where it is written.
    fn warn_of_pitfalls(
        &mut self,
        section: Section,
        key: Key,
        span: Range<usize>,
        selector: &Selector,
    ) {
        for pitfall in selector.pitfalls() {
            let warning = format!("{}: {pitfall}", key.name());
            self.warnings.push(section.at(span.clone(), warning));
        }
    }
}
