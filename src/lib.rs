//! trafficjam: keeps the containers on a Docker network from opening connections to each
//! other, except the whitelisted ones (typically the reverse proxy).
//!
//! Data flows one way: the [`daemon`] loop reads [`config`] and a [`docker`] snapshot, the
//! managed networks go through [`plan`] (pure) into a [`plan::Ruleset`], and the
//! [`firewall`] worker applies it to the kernel through [`nft`], in one netlink batch. The
//! loop publishes a [`status`] for D-Bus ([`dbus`]) and systemd ([`notify`]).

pub mod caps;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod dbus;
pub mod docker;
pub mod droplog;
pub mod firewall;
pub mod kernel;
pub mod logging;
pub mod metrics;
pub mod notify;
pub mod persist;
pub mod plan;
pub mod policy;
pub mod status;

/// The rooms' imports run one way: the planner knows no kernel, the kernel knows no
/// caller, and nothing but the firewall reaches into the kernel.
#[cfg(test)]
mod layering {
    use std::path::{Path, PathBuf};

    fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                sources(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }

    #[test]
    fn imports_run_one_way() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        sources(&src, &mut files);
        assert!(files.len() > 20, "{files:?}");
        let mut broken = Vec::new();
        for file in &files {
            let room = file
                .strip_prefix(&src)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if room == "lib.rs" {
                continue; // this test names them all
            }
            let forbidden: &[&str] = if room.starts_with("plan/") || room == "policy.rs" {
                &[
                    "crate::kernel",
                    "crate::firewall",
                    "crate::daemon",
                    "crate::docker",
                    "crate::config",
                ]
            } else if room.starts_with("kernel/") {
                &[
                    "crate::firewall",
                    "crate::daemon",
                    "crate::docker",
                    "crate::config",
                    "crate::cli",
                ]
            } else if room.starts_with("firewall/") {
                &[
                    "crate::daemon",
                    "crate::docker",
                    "crate::config",
                    "crate::cli",
                ]
            } else {
                &["crate::kernel"]
            };
            let text = std::fs::read_to_string(file).unwrap();
            for (n, line) in text.lines().enumerate() {
                for name in forbidden {
                    if line.contains(name) && !line.trim_start().starts_with("//") {
                        broken.push(format!("src/{room}:{}: {}", n + 1, line.trim()));
                    }
                }
            }
        }
        assert!(
            broken.is_empty(),
            "imports against the layering:\n{}",
            broken.join("\n")
        );
    }
}
