//! What survives a reboot, in the state directory (`$STATE_DIRECTORY`, which systemd sets
//! from the unit's `StateDirectory=`, else `/var/lib/trafficjam`): the networks last
//! isolated and the last configuration that loaded.
//!
//! At start, before Docker answers (and before `docker.service` starts its containers),
//! the daemon isolates the persisted networks with nobody whitelisted: fail closed. A
//! configuration that no longer parses at start is replaced by the last good one.

use std::io;
use std::path::{Path, PathBuf};

use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};

use crate::plan::ManagedNetwork;
use crate::policy::{HostAccess, Mode};

pub(crate) const DEFAULT_STATE_DIR: &str = "/var/lib/trafficjam";
const STATE_FILE: &str = "state.json";

/// The state directory to use: the one given, else systemd's, else the default.
pub(crate) fn state_dir(given: Option<PathBuf>) -> PathBuf {
    given
        .or_else(|| std::env::var_os("STATE_DIRECTORY").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR))
}

/// A network as isolated, without its whitelist (which only Docker can tell).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct IsolatedNetwork {
    pub name: String,
    pub bridge: String,
    pub subnets: Vec<IpNetwork>,
    pub allow_host_traffic: bool,
    /// Kept so that a boot does not open what the policy denies.
    #[serde(default)]
    pub deny_outbound: Vec<IpNetwork>,
    /// An audited network stays audited: the operator chose to drop nothing there yet.
    #[serde(default)]
    pub audit: bool,
}

impl IsolatedNetwork {
    pub(crate) fn of(net: &ManagedNetwork) -> Self {
        IsolatedNetwork {
            name: net.name.clone(),
            bridge: net.bridge.clone(),
            subnets: net.subnets.clone(),
            allow_host_traffic: net.host_access == HostAccess::Open,
            deny_outbound: net.deny_outbound.clone(),
            audit: net.mode == Mode::Audit,
        }
    }

    /// The network isolated with nobody whitelisted, no allow rule, no host port: what a
    /// boot enforces before Docker answers (its drops reported to `log_group`).
    pub(crate) fn closed(&self, log_group: Option<u16>) -> ManagedNetwork {
        ManagedNetwork {
            name: self.name.clone(),
            bridge: self.bridge.clone(),
            subnets: self.subnets.clone(),
            host_access: if self.allow_host_traffic {
                HostAccess::Open
            } else {
                HostAccess::Closed
            },
            deny_outbound: self.deny_outbound.clone(),
            mode: if self.audit {
                Mode::Audit
            } else {
                Mode::Enforce
            },
            log_group,
            ..ManagedNetwork::default()
        }
    }
}

/// A configuration file as it was when it last loaded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SavedFile {
    pub path: PathBuf,
    pub text: String,
}

/// Everything the state directory holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Saved {
    /// The table the networks were isolated in.
    pub table: String,
    pub networks: Vec<IsolatedNetwork>,
    /// The last configuration that loaded.
    pub config: Vec<SavedFile>,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum PersistError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} is not trafficjam's state ({source}); ignoring it", path.display())]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The state directory.
#[derive(Debug, Clone)]
pub(crate) struct StateDir {
    dir: PathBuf,
}

impl StateDir {
    pub(crate) fn new(dir: PathBuf) -> Self {
        StateDir { dir }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.dir
    }

    fn file(&self) -> PathBuf {
        self.dir.join(STATE_FILE)
    }

    /// What was saved; `None` when nothing was (first start).
    pub(crate) fn load(&self) -> Result<Option<Saved>, PersistError> {
        let path = self.file();
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(PersistError::Read { path, source }),
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|source| PersistError::Corrupt { path, source })
    }

    /// Replaces what is saved, atomically (a crash leaves the old file or the new one).
    pub(crate) fn save(&self, saved: &Saved) -> Result<(), PersistError> {
        let path = self.file();
        let write_err = |source| PersistError::Write {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(&self.dir).map_err(write_err)?;
        let tmp = self.dir.join(format!("{STATE_FILE}.tmp"));
        let text = serde_json::to_string_pretty(saved).expect("plain data serialises");
        // On disk before the rename, and the rename on disk before we return: a power cut
        // (the very reboot this file is for) leaves the old state or the new one.
        let mut file = std::fs::File::create(&tmp).map_err(write_err)?;
        std::io::Write::write_all(&mut file, text.as_bytes()).map_err(write_err)?;
        file.sync_all().map_err(write_err)?;
        std::fs::rename(&tmp, &path).map_err(write_err)?;
        std::fs::File::open(&self.dir)
            .and_then(|dir| dir.sync_all())
            .map_err(write_err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_state_round_trips_and_a_missing_one_is_none() {
        let dir = std::env::temp_dir().join(format!("tj-state-{}", std::process::id()));
        let state = StateDir::new(dir.clone());
        assert_eq!(state.load().unwrap(), None);
        let saved = Saved {
            table: "trafficjam".into(),
            networks: vec![IsolatedNetwork {
                name: "web".into(),
                bridge: "br-web".into(),
                subnets: vec!["10.1.0.0/24".parse().unwrap(), "fd00::/64".parse().unwrap()],
                allow_host_traffic: false,
                deny_outbound: vec!["10.0.0.0/8".parse().unwrap()],
                audit: true,
            }],
            config: vec![SavedFile {
                path: "/etc/trafficjam/web.toml".into(),
                text: "[network.web]\nwhitelist = \"name=proxy\"\n".into(),
            }],
        };
        state.save(&saved).unwrap();
        assert_eq!(state.load().unwrap(), Some(saved.clone()));
        let closed = saved.networks[0].closed(Some(7));
        assert!(closed.whitelist.is_empty());
        assert_eq!((closed.mode, closed.log_group), (Mode::Audit, Some(7)));
        assert_eq!(IsolatedNetwork::of(&closed), saved.networks[0]);
        std::fs::write(dir.join(STATE_FILE), "not json").unwrap();
        assert!(matches!(state.load(), Err(PersistError::Corrupt { .. })));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
