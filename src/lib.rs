//! trafficjam: keeps the containers on a Docker network from opening connections to each
//! other, except the whitelisted ones (typically the reverse proxy).
//!
//! Data flows one way: the [`daemon`] loop reads [`config`] and a [`docker`] snapshot, the
//! managed networks go through [`plan`] (pure) into a [`plan::Ruleset`], which [`nft`]
//! applies to the kernel in one netlink batch.

pub mod caps;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod dbus;
pub mod docker;
pub mod logging;
pub mod nft;
pub mod notify;
pub mod plan;
