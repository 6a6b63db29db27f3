//! The seam between the daemon's decisions and the kernel: every kernel effect goes through
//! a [`Firewall`], run on a [`Worker`] thread that only the daemon loop talks to.
//!
//! [`crate::nft::Netlink`] is the real one (one netlink batch per change); [`Fake`] keeps
//! a simulated kernel in memory, so that the loop's decisions are tested without root.
//! Netlink calls block: on the worker they never stall the async executor that serves
//! Docker events and D-Bus.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, mpsc};

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use std::collections::BTreeMap;

use crate::nft::{BridgePorts, NftError};
use crate::plan::{Change, Counters, Mac, Ruleset};

/// How an apply reached the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BatchKind {
    /// Our tables replaced as a whole.
    Full,
    /// Only whitelist set elements changed.
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

/// Receives [`TableChange`]s; returning false ends the watch.
pub type ChangeReport = Box<dyn FnMut(TableChange) -> bool + Send>;

/// Receives the drops the kernel reports to NFLOG; returning false ends the watch.
pub type DropReport = Box<dyn FnMut(crate::nft::LogEvent) -> bool + Send>;

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
    ) -> Result<ApplyReport, NftError>;

    /// The differences between the kernel and `desired`; empty when it holds exactly that.
    fn drift(&mut self, desired: &Ruleset) -> Result<Vec<String>, NftError>;

    /// Removes our tables named `table` (every family) in one transaction.
    fn clear(&mut self, table: &str) -> Result<(), NftError>;

    /// Whether a table of ours named `table` exists (in any family).
    fn present(&mut self, table: &str) -> Result<bool, NftError>;

    /// The drop counters of our tables named `table`.
    fn counters(&mut self, table: &str) -> Result<Counters, NftError>;

    /// Turns on (where the policy says so) and reports stateful filtering on each bridge.
    fn bridge_filtering(&mut self, bridges: &BTreeSet<String>) -> Vec<BridgeFiltering>;

    /// The ports of each of `bridges` that exists, with the MAC of the container
    /// interface behind each, read from the kernel (never from the bridge's forwarding
    /// database, which a container can write).
    fn bridge_ports(
        &mut self,
        bridges: &BTreeSet<String>,
    ) -> Result<BTreeMap<String, BridgePorts>, NftError>;

    /// Programs `bridge`'s forwarding database for its bound `ports` (a port's name and
    /// its container's MAC): each MAC static on its port, the ports learning nothing and
    /// getting no unknown unicast, the bridge learning nothing from link-local frames. A
    /// port that no longer exists is skipped.
    fn bind_ports(&mut self, bridge: &str, ports: &[(String, Mac)]) -> Result<(), NftError>;

    /// Starts watching the links: `report` hears of every port added to, changed on or
    /// removed from any bridge (the moment a container's interface appears, before Docker
    /// says anything), from a thread of the watch's own, until it returns false.
    fn watch_ports(&mut self, report: PortsReport) -> Result<(), NftError>;

    /// Starts watching the ruleset: `report` hears of every change another process makes
    /// to tables of ours, from a thread of the watch's own, until it returns false.
    fn watch(&mut self, report: ChangeReport) -> Result<(), NftError>;

    /// Moves the calling thread (the worker) into the network namespace mounted at
    /// `netns` (an overlay network's on this node): the calls that follow act there,
    /// until `leave`. Fails when no namespace is mounted there (any more).
    fn enter(&mut self, netns: &std::path::Path) -> Result<(), NftError>;

    /// Back to the namespace the worker started in.
    fn leave(&mut self);

    /// In an overlay network's namespace: its bridge and the bridge's VXLAN port.
    fn overlay_bridge(&mut self) -> Result<Option<(String, String)>, NftError>;

    /// Starts reading NFLOG `group`, where our deny chains report: `report` hears of
    /// every packet logged there, from a thread of the watch's own, until it returns
    /// false. Fails when the group cannot be bound (another program reads it).
    fn watch_drops(&mut self, group: u16, report: DropReport) -> Result<(), NftError>;
}

type Job = Box<dyn FnOnce(&mut dyn Firewall) + Send>;

/// A thread that owns a [`Firewall`] and runs the calls sent to it, one at a time.
#[derive(Debug, Clone)]
pub struct Worker {
    jobs: mpsc::Sender<Job>,
}

impl Worker {
    /// Starts the worker thread; it ends when every handle is dropped.
    pub fn spawn(mut firewall: impl Firewall) -> Worker {
        let (jobs, queue) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("firewall".into())
            .spawn(move || {
                for job in queue {
                    job(&mut firewall);
                }
            })
            .expect("a thread for the firewall");
        Worker { jobs }
    }

    /// Queues `call` on the worker without waiting for it (from a thread that is not the
    /// loop's: the mount watch).
    pub fn submit(&self, call: impl FnOnce(&mut dyn Firewall) + Send + 'static) {
        let _ = self.jobs.send(Box::new(call));
    }

    /// Runs `call` on the worker in the network namespace mounted at `netns` (the
    /// worker's own when `None`), and waits for its result.
    pub async fn call_in<T: Send + 'static>(
        &self,
        netns: Option<std::path::PathBuf>,
        call: impl FnOnce(&mut dyn Firewall) -> Result<T, NftError> + Send + 'static,
    ) -> Result<T, NftError> {
        self.call(move |fw| match netns {
            None => call(fw),
            Some(path) => {
                fw.enter(&path)?;
                let result = call(fw);
                fw.leave();
                result
            }
        })
        .await
    }

    /// Runs `call` on the worker and waits for its result without blocking the executor.
    pub async fn call<T: Send + 'static>(
        &self,
        call: impl FnOnce(&mut dyn Firewall) -> Result<T, NftError> + Send + 'static,
    ) -> Result<T, NftError> {
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move |firewall| {
            let _ = reply.send(call(firewall));
        });
        self.jobs.send(job).map_err(|_| NftError::WorkerStopped)?;
        answer.await.map_err(|_| NftError::WorkerStopped)?
    }
}

/// What the [`Fake`] firewall holds and has been asked, shared with the test that made it.
#[derive(Default)]
pub struct FakeKernel {
    /// The watch the daemon started, to report changes "made by another process".
    pub watch: Option<ChangeReport>,
    /// The link watch the daemon started, to report ports "moved by Docker".
    pub watch_ports: Option<PortsReport>,
    /// The drop-log watch the daemon started (its group), to report "logged" drops.
    pub watch_drops: Option<(u16, DropReport)>,
    /// Our tables as the simulated kernel holds them (None: absent).
    pub installed: Option<Ruleset>,
    /// Every apply, in order.
    pub applies: Vec<BatchKind>,
    /// Every `bridge_filtering` call, in order.
    pub bridge_calls: Vec<BTreeSet<String>>,
    /// The ports bound on each bridge by `bind_ports` (its MAC static, learning off).
    pub bound: BTreeMap<String, BTreeMap<String, Mac>>,
    /// Every `bind_ports` call, in order: the bridge and how many ports it named.
    pub bind_calls: Vec<(String, usize)>,
    /// Every table cleared, in order.
    pub cleared: Vec<String>,
    /// Counters `counters` answers with.
    pub counters: Counters,
    /// When set, the next apply is refused with this reason (and the kernel unchanged).
    pub refuse_next_apply: Option<String>,
    /// When set, every apply with a rule that logs is refused, as by a kernel without
    /// nfnetlink_log.
    pub refuse_log_rules: bool,
    /// Whether bridges report stateful filtering.
    pub stateful: bool,
    /// The bridges' ports `bridge_ports` answers with.
    pub ports: BTreeMap<String, BridgePorts>,
    /// The namespaces that "exist", with their overlay bridge and its VXLAN port, and
    /// what each holds: the simulated kernel of each overlay network's namespace.
    pub namespaces: BTreeMap<std::path::PathBuf, FakeNamespace>,
    /// The namespace the worker is in (None: its own).
    pub entered: Option<std::path::PathBuf>,
}

/// An overlay network's namespace in the [`Fake`] kernel.
#[derive(Debug, Clone, Default)]
pub struct FakeNamespace {
    pub bridge: (String, String),
    pub ports: BTreeMap<String, BridgePorts>,
    pub installed: Option<Ruleset>,
    pub applies: Vec<BatchKind>,
}

impl std::fmt::Debug for FakeKernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeKernel")
            .field("installed", &self.installed.is_some())
            .field("applies", &self.applies)
            .field("watching", &self.watch.is_some())
            .finish_non_exhaustive()
    }
}

/// A firewall with a simulated kernel: applies, drift and clears act on [`FakeKernel`].
#[derive(Debug, Clone, Default)]
pub struct Fake {
    pub kernel: Arc<Mutex<FakeKernel>>,
}

impl Fake {
    pub fn new() -> Fake {
        Fake::default()
    }

    /// The simulated kernel, to inspect or to change behind the daemon's back.
    pub fn kernel(&self) -> std::sync::MutexGuard<'_, FakeKernel> {
        self.kernel.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn refused(what: &str, reason: String) -> NftError {
    NftError::Refused {
        what: what.to_owned(),
        source: std::io::Error::other(reason),
    }
}

impl Firewall for Fake {
    fn apply(
        &mut self,
        committed: Option<&Ruleset>,
        desired: &Ruleset,
    ) -> Result<ApplyReport, NftError> {
        let mut kernel = self.kernel();
        if let Some(reason) = kernel.refuse_next_apply.take() {
            return Err(refused("the batch", reason));
        }
        if kernel.refuse_log_rules
            && let Some(rule) = desired
                .tables
                .iter()
                .flat_map(|t| &t.chains)
                .flat_map(|c| &c.rules)
                .find(|r| r.log.is_some())
        {
            return Err(refused(
                &format!("rule \"{rule}\" in chain deny"),
                "No such file or directory".into(),
            ));
        }
        // As the kernel would: an element batch against tables that no longer hold what
        // was committed fails, and the real firewall falls back to a full one.
        let kind = match desired.change_from(committed) {
            Change::Elements if kernel.installed.as_ref() == committed => BatchKind::Elements,
            _ => BatchKind::Full,
        };
        kernel.installed = (!desired.tables.is_empty()).then(|| desired.clone());
        kernel.applies.push(kind);
        Ok(ApplyReport {
            kind,
            messages: 1,
            added: 0,
            removed: 0,
        })
    }

    fn drift(&mut self, desired: &Ruleset) -> Result<Vec<String>, NftError> {
        let kernel = self.kernel();
        let holds = match &kernel.installed {
            None => desired.tables.is_empty(),
            Some(installed) => installed == desired,
        };
        Ok(if holds {
            Vec::new()
        } else {
            vec!["the fake kernel holds something else".into()]
        })
    }

    fn clear(&mut self, table: &str) -> Result<(), NftError> {
        let mut kernel = self.kernel();
        if kernel
            .installed
            .as_ref()
            .is_some_and(|r| r.table_name == table)
        {
            kernel.installed = None;
        }
        kernel.cleared.push(table.to_owned());
        Ok(())
    }

    fn present(&mut self, table: &str) -> Result<bool, NftError> {
        Ok(self
            .kernel()
            .installed
            .as_ref()
            .is_some_and(|r| r.table_name == table))
    }

    fn counters(&mut self, _table: &str) -> Result<Counters, NftError> {
        Ok(self.kernel().counters.clone())
    }

    fn bridge_filtering(&mut self, bridges: &BTreeSet<String>) -> Vec<BridgeFiltering> {
        let mut kernel = self.kernel();
        kernel.bridge_calls.push(bridges.clone());
        bridges
            .iter()
            .map(|b| BridgeFiltering {
                bridge: b.clone(),
                stateful: kernel.stateful,
                detail: "fake".into(),
            })
            .collect()
    }

    fn bridge_ports(
        &mut self,
        bridges: &BTreeSet<String>,
    ) -> Result<BTreeMap<String, BridgePorts>, NftError> {
        let kernel = self.kernel();
        Ok(kernel
            .ports
            .iter()
            .filter(|(b, _)| bridges.contains(*b))
            .map(|(b, p)| (b.clone(), p.clone()))
            .collect())
    }

    fn bind_ports(&mut self, bridge: &str, ports: &[(String, Mac)]) -> Result<(), NftError> {
        let mut kernel = self.kernel();
        kernel.bind_calls.push((bridge.to_owned(), ports.len()));
        let on_bridge = kernel.bound.entry(bridge.to_owned()).or_default();
        on_bridge.extend(ports.iter().cloned());
        Ok(())
    }

    fn watch_ports(&mut self, report: PortsReport) -> Result<(), NftError> {
        self.kernel().watch_ports = Some(report);
        Ok(())
    }

    fn watch(&mut self, report: ChangeReport) -> Result<(), NftError> {
        self.kernel().watch = Some(report);
        Ok(())
    }

    fn watch_drops(&mut self, group: u16, report: DropReport) -> Result<(), NftError> {
        self.kernel().watch_drops = Some((group, report));
        Ok(())
    }

    /// The namespace's tables, applies and ports take the place of the host's until
    /// `leave`, so every other call acts on them unchanged.
    fn enter(&mut self, netns: &std::path::Path) -> Result<(), NftError> {
        let mut guard = self.kernel();
        let kernel = &mut *guard;
        let Some(ns) = kernel.namespaces.get_mut(netns) else {
            return Err(crate::nft::NetnsError::Gone(netns.to_owned()).into());
        };
        std::mem::swap(&mut kernel.installed, &mut ns.installed);
        std::mem::swap(&mut kernel.applies, &mut ns.applies);
        std::mem::swap(&mut kernel.ports, &mut ns.ports);
        kernel.entered = Some(netns.to_owned());
        Ok(())
    }

    fn leave(&mut self) {
        let mut guard = self.kernel();
        let kernel = &mut *guard;
        let Some(path) = kernel.entered.take() else {
            return;
        };
        if let Some(ns) = kernel.namespaces.get_mut(&path) {
            std::mem::swap(&mut kernel.installed, &mut ns.installed);
            std::mem::swap(&mut kernel.applies, &mut ns.applies);
            std::mem::swap(&mut kernel.ports, &mut ns.ports);
        }
    }

    fn overlay_bridge(&mut self) -> Result<Option<(String, String)>, NftError> {
        let kernel = self.kernel();
        Ok(kernel
            .entered
            .as_ref()
            .and_then(|p| kernel.namespaces.get(p))
            .map(|ns| ns.bridge.clone()))
    }
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
