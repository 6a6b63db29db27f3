//! Configuration: every `*.toml` in the config directory, read in name order, plus the
//! opt-in labels of Docker networks.
//!
//! Every error names the file, line and column (`FILE:LINE:COL: what is wrong`). Loading
//! is all or nothing: a caller that gets an error keeps its previous configuration.
//!
//! Here: what a configuration holds, and loading a directory. The file format is in
//! `toml`, the labels in `labels`, Docker's container filters in `selector`, and in
//! `network` a network's policy and the one reader of it that the file and the labels
//! both feed.

mod labels;
mod network;
mod selector;
#[cfg(test)]
mod tests;
mod toml;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::plan::DEFAULT_TABLE;

pub(crate) use labels::container_allow_rules;
#[cfg(test)]
pub(crate) use network::AllowRule;
pub(crate) use network::NetworkPolicy;
pub(crate) use selector::{Filter, Selector};

pub(crate) const DEFAULT_CONFIG_DIR: &str = "/etc/trafficjam";
pub(crate) const DEFAULT_DOCKER_HOST: &str = "unix:///var/run/docker.sock";
pub(crate) const DEFAULT_RESYNC_INTERVAL: Duration = Duration::from_secs(30);
/// Label that opts a Docker network in: its value is one whitelist filter. More filters
/// go in labels that start with `trafficjam.whitelist.` (any suffix).
pub(crate) const LABEL_WHITELIST: &str = "trafficjam.whitelist";
pub(crate) const LABEL_ALLOW_HOST_TRAFFIC: &str = "trafficjam.allow_host_traffic";
pub(crate) const LABEL_ALLOW_HOST_PORTS: &str = "trafficjam.allow_host_ports";
pub(crate) const LABEL_DENY_OUTBOUND: &str = "trafficjam.deny_outbound";
/// `enforce` (the default) or `audit`: log and count what would be dropped, drop nothing.
pub(crate) const LABEL_MODE: &str = "trafficjam.mode";
/// The NFLOG group our drop rules report to, unless `[daemon] log_group` says otherwise.
pub(crate) const DEFAULT_LOG_GROUP: u16 = 4200;
/// Container labels that open the container to others: `trafficjam.allow.from` (a filter
/// choosing who may connect) and `trafficjam.allow.ports`, or several rules named
/// `trafficjam.allow.<rule>.from` and `trafficjam.allow.<rule>.ports`.
pub(crate) const LABEL_ALLOW_PREFIX: &str = "trafficjam.allow.";

/// What `deny_outbound = ["private"]` stands for: RFC 1918, shared address space (RFC
/// 6598), link-local, unique local and link-local IPv6.
pub(crate) const PRIVATE_DESTINATIONS: &[&str] = &[
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "169.254.0.0/16",
    "fc00::/7",
    "fe80::/10",
];

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
    fn whole_file(file: &Path, message: impl Into<String>) -> Self {
        ConfigError {
            file: file.to_owned(),
            line: 1,
            column: 1,
            message: message.into(),
        }
    }
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
}
