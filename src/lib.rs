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
pub mod logging;
pub mod metrics;
pub mod nft;
pub mod notify;
pub mod persist;
pub mod plan;
pub mod policy;
pub mod status;
