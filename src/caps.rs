//! Capabilities: trafficjam needs CAP_NET_ADMIN (nftables, bridge attributes) and nothing
//! else. At start it checks that CAP_NET_ADMIN is effective, then drops every other
//! capability from every set it can, so that run as root by hand it ends up like under
//! the unit: CAP_NET_ADMIN alone.

use caps::{CapSet, Capability, CapsHashSet};

#[derive(Debug, thiserror::Error)]
pub enum CapsError {
    #[error(
        "CAP_NET_ADMIN is not effective: run trafficjam as root, or through trafficjam.service \
         (AmbientCapabilities=CAP_NET_ADMIN)"
    )]
    NoNetAdmin,
    #[error("cannot change capabilities: {0}")]
    Change(#[from] caps::errors::CapsError),
}

/// Keeps CAP_NET_ADMIN only, in the effective, permitted, inheritable and ambient sets,
/// and in the bounding set when allowed to change it (CAP_SETPCAP).
pub fn keep_net_admin_only() -> Result<(), CapsError> {
    if !caps::has_cap(None, CapSet::Effective, Capability::CAP_NET_ADMIN)? {
        return Err(CapsError::NoNetAdmin);
    }
    let only = CapsHashSet::from([Capability::CAP_NET_ADMIN]);
    // The bounding set first: dropping from it needs CAP_SETPCAP, which goes next.
    if caps::has_cap(None, CapSet::Effective, Capability::CAP_SETPCAP)? {
        for cap in caps::read(None, CapSet::Bounding)? {
            if cap != Capability::CAP_NET_ADMIN {
                caps::drop(None, CapSet::Bounding, cap)?;
            }
        }
    }
    for cap in caps::read(None, CapSet::Ambient)? {
        if cap != Capability::CAP_NET_ADMIN {
            caps::drop(None, CapSet::Ambient, cap)?;
        }
    }
    // Only when something changes: under the unit the sets are right already, and its
    // system call filter refuses capset.
    for set in [CapSet::Inheritable, CapSet::Effective, CapSet::Permitted] {
        if caps::read(None, set)? != only {
            caps::set(None, set, &only)?;
        }
    }
    Ok(())
}
