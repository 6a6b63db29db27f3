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

use crate::plan::{DEFAULT_TABLE, valid_network_name, validate_table_name};

pub const DEFAULT_CONFIG_DIR: &str = "/etc/trafficjam";
pub const DEFAULT_DOCKER_HOST: &str = "unix:///var/run/docker.sock";
pub const DEFAULT_RESYNC_INTERVAL: Duration = Duration::from_secs(30);
/// Label that opts a Docker network in: its value is one whitelist filter. More filters
/// go in labels that start with `trafficjam.whitelist.` (any suffix).
pub const LABEL_WHITELIST: &str = "trafficjam.whitelist";
pub const LABEL_ALLOW_HOST_TRAFFIC: &str = "trafficjam.allow_host_traffic";

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
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Filter {
    pub key: String,
    pub value: String,
}

/// Why a whitelist entry is not a `docker ps --filter`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    #[error("empty whitelist entry")]
    Empty,
    #[error(
        "whitelist entry {0:?} is not a filter: expected KEY=VALUE, as in `docker ps --filter`"
    )]
    NotKeyValue(String),
    #[error("whitelist entry {entry:?}: unknown filter {key:?} (one of {})", FILTER_KEYS.join(", "))]
    UnknownKey { entry: String, key: String },
    #[error("whitelist entry {0:?} has an empty value")]
    EmptyValue(String),
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

/// How one network is isolated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkPolicy {
    pub whitelist: Vec<Filter>,
    pub allow_host_traffic: bool,
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
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            docker_host: None,
            resync_interval: DEFAULT_RESYNC_INTERVAL,
            table: DEFAULT_TABLE.to_owned(),
            log_level: None,
            label_opt_in: true,
        }
    }
}

impl DaemonConfig {
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

/// `whitelist`: one filter string or a list of them, each keeping its position.
#[derive(Debug)]
struct Whitelist(Vec<Spanned<String>>);

impl<'de> Deserialize<'de> for Whitelist {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct WhitelistVisitor;
        impl<'de> Visitor<'de> for WhitelistVisitor {
            type Value = Whitelist;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a filter string or a list of filter strings")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Whitelist, E> {
                // The span of a single string is the one of the whole value (filled in by
                // the caller); 0..0 marks it.
                Ok(Whitelist(vec![Spanned::new(0..0, v.to_owned())]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Whitelist, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<Spanned<String>>()? {
                    items.push(item);
                }
                Ok(Whitelist(items))
            }
        }
        deserializer.deserialize_any(WhitelistVisitor)
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
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNetwork {
    whitelist: Spanned<Whitelist>,
    #[serde(default)]
    allow_host_traffic: bool,
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
            let raw: RawFile = toml::from_str(text).map_err(|e| {
                ConfigError::at(file, text, e.span().unwrap_or(0..0), e.message().trim())
            })?;
            config.files.push(file.clone());
            if let Some(d) = raw.daemon {
                let mut claim = |key: &'static str, span: Range<usize>| {
                    if let Some(first) = daemon_keys.insert(key, file.clone()) {
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
                let list_span = net.whitelist.span();
                let items = net.whitelist.into_inner().0;
                if items.is_empty() {
                    return Err(ConfigError::at(
                        file,
                        text,
                        list_span,
                        format!(
                            "network {name:?}: the whitelist is empty (whitelist the proxy, e.g. \"label=trafficjam.role=proxy\")"
                        ),
                    ));
                }
                let mut whitelist = Vec::new();
                for item in items {
                    let span = if item.span().is_empty() {
                        list_span.clone()
                    } else {
                        item.span()
                    };
                    let filter = Filter::parse(item.get_ref()).map_err(|e| {
                        ConfigError::at(file, text, span, format!("network {name:?}: {e}"))
                    })?;
                    whitelist.push(filter);
                }
                config.networks.insert(
                    name,
                    (
                        NetworkPolicy {
                            whitelist,
                            allow_host_traffic: net.allow_host_traffic,
                        },
                        PolicySource::File(file.clone()),
                    ),
                );
            }
        }
        Ok(config)
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
        let mut whitelist = Vec::new();
        for key in keys {
            match Filter::parse(&labels[key]) {
                Ok(f) => whitelist.push(f),
                Err(e) => errors.push(format!("label {key}: {e}")),
            }
        }
        if !errors.is_empty() {
            whitelist.clear();
            errors.push("isolating the network with no container whitelisted".into());
        }
        let allow_host_traffic = match labels.get(LABEL_ALLOW_HOST_TRAFFIC).map(String::as_str) {
            None | Some("false") => false,
            Some("true") => true,
            Some(other) => {
                errors.push(format!(
                    "label {LABEL_ALLOW_HOST_TRAFFIC}={other:?} is neither true nor false: host traffic stays blocked"
                ));
                false
            }
        };
        Some((
            NetworkPolicy {
                whitelist,
                allow_host_traffic,
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
        assert!(p.allow_host_traffic);
        assert_eq!(
            p.whitelist,
            [
                Filter {
                    key: "ancestor".into(),
                    value: "traefik:latest".into()
                },
                Filter {
                    key: "label".into(),
                    value: "role=proxy".into()
                },
            ]
        );
        let (p, _) = &c.networks["other"];
        assert!(!p.allow_host_traffic);
        assert_eq!(p.whitelist.len(), 1);
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
            "/etc/trafficjam/a.toml:3:1: unknown field `bogus`, expected one of `docker_host`, `resync_interval`, `table`, `log_level`, `label_opt_in`"
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
        assert!(e.starts_with("/etc/trafficjam/a.toml:2:24: network \"n\": whitelist entry \"nope\" is not a filter"), "{e}");
        let e = error(&[("a.toml", "[network.n]\nwhitelist = \"colour=red\"\n")]);
        assert!(e.starts_with("/etc/trafficjam/a.toml:2:13: network \"n\": whitelist entry \"colour=red\": unknown filter \"colour\""), "{e}");
        let e = error(&[("a.toml", "[network.n]\nwhitelist = [\"name=a\", \"\"]\n")]);
        assert_eq!(
            e,
            "/etc/trafficjam/a.toml:2:24: network \"n\": empty whitelist entry"
        );
        let e = error(&[("a.toml", "[network.n]\nwhitelist = []\n")]);
        assert!(
            e.starts_with("/etc/trafficjam/a.toml:2:13: network \"n\": the whitelist is empty"),
            "{e}"
        );
        let e = error(&[("a.toml", "[network.n]\nallow_host_traffic = true\n")]);
        assert!(
            e.starts_with("/etc/trafficjam/a.toml:1:1: missing field `whitelist`"),
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
        assert_eq!(p.whitelist[0].to_string(), "label=trafficjam.role=proxy");
        assert!(!p.allow_host_traffic);
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
        assert!(p.allow_host_traffic);
        assert_eq!(
            p.whitelist
                .iter()
                .map(|f| f.to_string())
                .collect::<Vec<_>>(),
            ["ancestor=traefik", "label=proxy=yes"]
        );
        let (p, source, _) = c.policy_for("web", &l).unwrap();
        assert!(matches!(source, PolicySource::File(_)));
        assert_eq!(p.whitelist[0].to_string(), "name=proxy");
        assert!(!p.allow_host_traffic);
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
        assert!(!p.allow_host_traffic);
        assert_eq!(errors.len(), 1);
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
