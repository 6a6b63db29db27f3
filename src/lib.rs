//! trafficjam: keeps the containers on a Docker network from opening connections to each
//! other, except the whitelisted ones (typically the reverse proxy).
//!
//! Data flows one way, and so do the imports:
//! - `config` reads the policy from TOML files and labels, in the vocabulary of
//!   [`policy`]; [`docker`] reads a snapshot of the networks and resolves it;
//! - [`plan`] (pure, no I/O) turns the managed networks into a [`plan::Ruleset`];
//! - [`firewall`] is the seam to the kernel: a trait, its worker thread, a fake for the
//!   loop's tests, and the real one over [`kernel`] (nftables, links, NFLOG, namespaces),
//!   which nothing else reaches;
//! - `daemon` is the loop that owns all state and ties them together; it publishes a
//!   `status` and `metrics` over `dbus`, tells systemd (`sys::notify`), keeps state
//!   across reboots (`persist`) and names the drops the kernel logs ([`droplog`]);
//! - [`cli`] is the composition root: `trafficjam run`, `check`, and the D-Bus client.

#![forbid(unsafe_code)]
// pub(crate) where nothing outside the crate needs a name, so that dead code shows.
#![warn(unreachable_pub)]

pub mod cli;
pub(crate) mod config;
pub(crate) mod daemon;
pub(crate) mod dbus;
pub mod docker;
pub mod droplog;
pub mod firewall;
pub mod kernel;
pub(crate) mod metrics;
pub(crate) mod persist;
pub mod plan;
pub mod policy;
pub(crate) mod status;
pub(crate) mod sys;

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
