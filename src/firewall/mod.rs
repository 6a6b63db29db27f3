//! The seam between the daemon's decisions and the kernel: every kernel effect goes through
//! a [`Firewall`], run on a [`Worker`] thread that only the daemon loop talks to.
//!
//! [`crate::firewall::Netlink`] is the real one (one netlink batch per change); [`Fake`] keeps
//! a simulated kernel in memory, so that the loop's decisions are tested without root.
//! Netlink calls block: on the worker they never stall the async executor that serves
//! Docker events and D-Bus.

#[cfg(test)]
mod fake;
mod netlink;
mod worker;

use std::collections::{BTreeMap, BTreeSet};

#[cfg(test)]
pub(crate) use fake::{Fake, FakeNamespace};
pub use netlink::Netlink;
pub use worker::Worker;

// What crosses the seam: the kernel's answers and errors, by the names the daemon uses.
pub use crate::kernel::links::bridge::BridgeNetfilter;
pub use crate::kernel::links::ports::{BridgePorts, PortLink};
pub use crate::kernel::netns::{NetnsError, mounted, nsfs_mounts};
pub use crate::kernel::nflog::{
    ETHERTYPE_ARP, ETHERTYPE_IPV4, ETHERTYPE_IPV6, LogEvent, LoggedPacket, PacketHeaders,
};
pub use crate::kernel::{ApplyReport, BatchKind, BridgeFiltering, KernelError, TableChange};
use crate::plan::{Counters, Mac, Ruleset};

/// Receives [`TableChange`]s; returning false ends the watch.
pub type ChangeReport = Box<dyn FnMut(TableChange) -> bool + Send>;

/// Receives the drops the kernel reports to NFLOG; returning false ends the watch.
pub type DropReport = Box<dyn FnMut(LogEvent) -> bool + Send>;

/// Hears that a bridge's ports may have changed; returning false ends the watch.
pub type PortsReport = Box<dyn FnMut() -> bool + Send>;

/// Every effect trafficjam has on the kernel. Implementations touch only the tables named
/// by the rulesets and table names they are given.
pub trait Firewall: Send + 'static {
    /// Makes the kernel hold `desired` in one transaction. `committed` is what this
    /// firewall was last told to hold, if that is still believed to be in the kernel: an
    /// element batch is sent when only set elements differ from it, else a full one.
    fn apply(
        &mut self,
        committed: Option<&Ruleset>,
        desired: &Ruleset,
    ) -> Result<ApplyReport, KernelError>;

    /// The differences between the kernel and `desired`; empty when it holds exactly that.
    fn drift(&mut self, desired: &Ruleset) -> Result<Vec<String>, KernelError>;

    /// Removes our tables named `table` (every family) in one transaction.
    fn clear(&mut self, table: &str) -> Result<(), KernelError>;

    /// Whether a table of ours named `table` exists (in any family).
    fn present(&mut self, table: &str) -> Result<bool, KernelError>;

    /// The drop counters of our tables named `table`.
    fn counters(&mut self, table: &str) -> Result<Counters, KernelError>;

    /// Turns on (where the policy says so) and reports stateful filtering on each bridge.
    fn bridge_filtering(&mut self, bridges: &BTreeSet<String>) -> Vec<BridgeFiltering>;

    /// The ports of each of `bridges` that exists, with the MAC of the container
    /// interface behind each, read from the kernel (never from the bridge's forwarding
    /// database, which a container can write).
    fn bridge_ports(
        &mut self,
        bridges: &BTreeSet<String>,
    ) -> Result<BTreeMap<String, BridgePorts>, KernelError>;

    /// Programs `bridge`'s forwarding database for its bound `ports` (a port's name and
    /// its container's MAC): each MAC static on its port, the ports learning nothing and
    /// getting no unknown unicast, the bridge learning nothing from link-local frames. A
    /// port that no longer exists is skipped.
    fn bind_ports(&mut self, bridge: &str, ports: &[(String, Mac)]) -> Result<(), KernelError>;

    /// Starts watching the links: `report` hears of every port added to, changed on or
    /// removed from any bridge (the moment a container's interface appears, before Docker
    /// says anything), from a thread of the watch's own, until it returns false.
    fn watch_ports(&mut self, report: PortsReport) -> Result<(), KernelError>;

    /// Starts watching the ruleset: `report` hears of every change another process makes
    /// to tables of ours, from a thread of the watch's own, until it returns false.
    fn watch(&mut self, report: ChangeReport) -> Result<(), KernelError>;

    /// Moves the calling thread (the worker) into the network namespace mounted at
    /// `netns` (an overlay network's on this node): the calls that follow act there,
    /// until `leave`. Fails when no namespace is mounted there (any more).
    fn enter(&mut self, netns: &std::path::Path) -> Result<(), KernelError>;

    /// Back to the namespace the worker started in.
    fn leave(&mut self);

    /// In an overlay network's namespace: its bridge and the bridge's VXLAN port.
    fn overlay_bridge(&mut self) -> Result<Option<(String, String)>, KernelError>;

    /// Starts reading NFLOG `group`, where our deny chains report: `report` hears of
    /// every packet logged there, from a thread of the watch's own, until it returns
    /// false. Fails when the group cannot be bound (another program reads it).
    fn watch_drops(&mut self, group: u16, report: DropReport) -> Result<(), KernelError>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{DEFAULT_TABLE, ManagedNetwork, plan};

    fn ruleset(whitelist: &[&str]) -> Ruleset {
        plan(
            DEFAULT_TABLE,
            &[ManagedNetwork {
                name: "web".into(),
                bridge: "br-web".into(),
                subnets: vec!["10.1.0.0/24".parse().unwrap()],
                whitelist: whitelist.iter().map(|a| a.parse().unwrap()).collect(),
                ..ManagedNetwork::default()
            }],
        )
        .unwrap()
    }

    #[tokio::test]
    async fn the_worker_runs_calls_in_order_off_the_executor() {
        let fake = Fake::new();
        let worker = Worker::spawn(fake.clone());
        let first = ruleset(&["10.1.0.2"]);
        let report = worker
            .call({
                let first = first.clone();
                move |fw| fw.apply(None, &first)
            })
            .await
            .unwrap();
        assert_eq!(report.kind, BatchKind::Full);
        let second = ruleset(&["10.1.0.3"]);
        let report = worker
            .call({
                let second = second.clone();
                move |fw| fw.apply(Some(&first), &second)
            })
            .await
            .unwrap();
        assert_eq!(report.kind, BatchKind::Elements);
        assert_eq!(fake.kernel().installed.as_ref(), Some(&second));
        let drift = worker.call(move |fw| fw.drift(&second)).await.unwrap();
        assert!(drift.is_empty());
    }

    #[tokio::test]
    async fn a_refused_apply_leaves_the_fake_kernel_as_it_was() {
        let fake = Fake::new();
        let mut fw = fake.clone();
        let first = ruleset(&["10.1.0.2"]);
        fw.apply(None, &first).unwrap();
        fake.kernel().refuse_next_apply = Some("no".into());
        assert!(fw.apply(Some(&first), &ruleset(&[])).is_err());
        assert_eq!(fake.kernel().installed.as_ref(), Some(&first));
        // Someone flushed the ruleset: an element update cannot work, the fake (like the
        // kernel) falls back to a full batch.
        fake.kernel().installed = None;
        assert!(!fw.drift(&first).unwrap().is_empty());
        let report = fw.apply(Some(&first), &ruleset(&["10.1.0.9"])).unwrap();
        assert_eq!(report.kind, BatchKind::Full);
    }
}
