//! Everything trafficjam reads from and writes to the kernel, over netlink and the few
//! files that have no netlink form: the [`nftables`] tables and their watch, the bridges'
//! [`links`] (ports, br_netfilter, the forwarding database), the drop log ([`nflog`]) and
//! network namespaces ([`netns`]). Nothing here knows about Docker or the daemon; the
//! daemon reaches all of it through [`crate::firewall`].

pub mod links;
pub(crate) mod netlink;
pub mod netns;
pub mod nflog;
pub mod nftables;

use std::collections::BTreeSet;
use std::io;

use serde::{Deserialize, Serialize};

use netns::NetnsError;

#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("cannot open a netlink socket: {0}")]
    Socket(#[source] io::Error),
    #[error("cannot send to the kernel: {0}")]
    Send(#[source] io::Error),
    #[error("cannot read the kernel's answer: {0}")]
    Receive(#[source] io::Error),
    #[error("the kernel refused {what}: {source}")]
    Refused {
        what: String,
        #[source]
        source: io::Error,
        /// A rule that logs (NFLOG): a kernel without nfnetlink_log refuses every one.
        log_rule: bool,
    },
    #[error("no bridge named {0:?}")]
    NoSuchBridge(String),
    #[error("cannot build {what}: {reason}")]
    Build { what: String, reason: String },
    #[error(
        "table {family} {name} exists and was not created by trafficjam: refusing to replace or \
         delete it (choose another `table` name)"
    )]
    NotOurs { family: &'static str, name: String },
    #[error("the firewall worker has stopped")]
    WorkerStopped,
    #[error(transparent)]
    Netns(#[from] NetnsError),
    /// Another process committed a change while a dump was being read.
    #[error("the ruleset kept changing while it was read")]
    DumpInterrupted,
}

impl KernelError {
    /// Whether the kernel refused a rule that logs (NFLOG): a kernel without
    /// nfnetlink_log refuses every one, and nothing else.
    pub fn refused_a_log_rule(&self) -> bool {
        matches!(self, KernelError::Refused { log_rule: true, .. })
    }
}

/// How an apply reached the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BatchKind {
    /// Our tables replaced as a whole.
    Full,
    /// Only set elements changed (whitelists, grants, bound ports).
    Elements,
}

/// What one apply sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyReport {
    pub kind: BatchKind,
    /// Netlink messages in the batch.
    pub messages: usize,
    /// Set elements added and removed (element batches).
    pub added: usize,
    pub removed: usize,
}

/// Whether stateful filtering is active on one managed bridge, and why (not).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeFiltering {
    pub bridge: String,
    /// True when br_netfilter hands this bridge's IPv4 and IPv6 traffic to the `inet`
    /// chains, so connection tracking applies; false means the stateless backstop alone.
    pub stateful: bool,
    pub detail: String,
}

/// What a watch on the kernel's ruleset reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TableChange {
    /// Another process committed a change to tables of these names (in the families we
    /// use); changes committed by this process are never reported.
    Foreign(BTreeSet<String>),
    /// Notifications were lost (the socket overflowed): anything may have changed.
    Overrun,
}
