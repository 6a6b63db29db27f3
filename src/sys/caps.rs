//! Capabilities: trafficjam needs CAP_NET_ADMIN (nftables, bridge attributes). On a Swarm
//! node it also needs CAP_SYS_ADMIN, to enter the overlay networks' namespaces (setns),
//! and CAP_DAC_READ_SEARCH, to reach them under Docker's exec-root, which only root may
//! search: the unit's swarm drop-in grants those two as ambient capabilities.
//!
//! At start it checks that CAP_NET_ADMIN is effective, then drops every other capability
//! from every set it can, but for the Swarm pair when they are ambient (granted on
//! purpose): run as root by hand it ends up like under the unit, CAP_NET_ADMIN alone.

use caps::{CapSet, Capability, CapsHashSet};

#[derive(Debug, thiserror::Error)]
pub(crate) enum CapsError {
    #[error(
        "CAP_NET_ADMIN is not effective: run trafficjam as root, or through trafficjam.service \
         (AmbientCapabilities=CAP_NET_ADMIN)"
    )]
    NoNetAdmin,
    #[error("cannot change capabilities: {0}")]
    Change(#[from] caps::errors::CapsError),
}

/// The capabilities an overlay network's namespace needs, on top of CAP_NET_ADMIN.
pub(crate) const SWARM: [Capability; 2] =
    [Capability::CAP_SYS_ADMIN, Capability::CAP_DAC_READ_SEARCH];

/// Keeps CAP_NET_ADMIN, and the [`SWARM`] capabilities that are ambient, in the effective,
/// permitted, inheritable and ambient sets, and in the bounding set when allowed to
/// change it (CAP_SETPCAP). Returns the capabilities kept.
pub(crate) fn keep_needed_only() -> Result<CapsHashSet, CapsError> {
    if !caps::has_cap(None, CapSet::Effective, Capability::CAP_NET_ADMIN)? {
        return Err(CapsError::NoNetAdmin);
    }
    let ambient = caps::read(None, CapSet::Ambient)?;
    let mut keep = CapsHashSet::from([Capability::CAP_NET_ADMIN]);
    keep.extend(SWARM.into_iter().filter(|c| ambient.contains(c)));
    // The bounding set first: dropping from it needs CAP_SETPCAP, which goes next.
    if caps::has_cap(None, CapSet::Effective, Capability::CAP_SETPCAP)? {
        for cap in caps::read(None, CapSet::Bounding)? {
            if !keep.contains(&cap) {
                caps::drop(None, CapSet::Bounding, cap)?;
            }
        }
    }
    for cap in ambient {
        if !keep.contains(&cap) {
            caps::drop(None, CapSet::Ambient, cap)?;
        }
    }
    // Only when something changes: under the unit the sets are right already, and its
    // system call filter refuses capset.
    for set in [CapSet::Inheritable, CapSet::Effective, CapSet::Permitted] {
        if caps::read(None, set)? != keep {
            caps::set(None, set, &keep)?;
        }
    }
    Ok(keep)
}
