//! trafficjam: keeps the containers on a Docker network from opening connections to each
//! other, except the whitelisted ones (typically the reverse proxy).
//!
//! Data flows one way: a description of the managed networks goes through [`plan`] (pure)
//! into a [`plan::Ruleset`], which [`nft`] applies to the kernel in one netlink batch.

pub mod nft;
pub mod plan;
