//! A simulated kernel for the loop's tests: it holds what was applied, counts batches, can
//! refuse, and can be changed behind the daemon's back, so the daemon's decisions are
//! tested without root. The real kernel tiers test [`super::Netlink`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use super::*;
use crate::plan::Change;

/// What the [`Fake`] firewall holds and has been asked, shared with the test that made it.
#[derive(Default)]
pub(crate) struct FakeKernel {
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
pub(crate) struct FakeNamespace {
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
pub(crate) struct Fake {
    pub kernel: Arc<Mutex<FakeKernel>>,
}

impl Fake {
    pub(crate) fn new() -> Fake {
        Fake::default()
    }

    /// The simulated kernel, to inspect or to change behind the daemon's back.
    pub(crate) fn kernel(&self) -> std::sync::MutexGuard<'_, FakeKernel> {
        self.kernel.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn refused(what: &str, reason: String, log_rule: bool) -> KernelError {
    KernelError::Refused {
        what: what.to_owned(),
        source: std::io::Error::other(reason),
        log_rule,
    }
}

impl Firewall for Fake {
    fn apply(
        &mut self,
        committed: Option<&Ruleset>,
        desired: &Ruleset,
    ) -> Result<ApplyReport, KernelError> {
        let mut kernel = self.kernel();
        if let Some(reason) = kernel.refuse_next_apply.take() {
            return Err(refused("the batch", reason, false));
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
                true,
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

    fn drift(&mut self, desired: &Ruleset) -> Result<Vec<String>, KernelError> {
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

    fn clear(&mut self, table: &str) -> Result<(), KernelError> {
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

    fn present(&mut self, table: &str) -> Result<bool, KernelError> {
        Ok(self
            .kernel()
            .installed
            .as_ref()
            .is_some_and(|r| r.table_name == table))
    }

    fn counters(&mut self, _table: &str) -> Result<Counters, KernelError> {
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
    ) -> Result<BTreeMap<String, BridgePorts>, KernelError> {
        let kernel = self.kernel();
        Ok(kernel
            .ports
            .iter()
            .filter(|(b, _)| bridges.contains(*b))
            .map(|(b, p)| (b.clone(), p.clone()))
            .collect())
    }

    fn bind_ports(&mut self, bridge: &str, ports: &[(String, Mac)]) -> Result<(), KernelError> {
        let mut kernel = self.kernel();
        kernel.bind_calls.push((bridge.to_owned(), ports.len()));
        let on_bridge = kernel.bound.entry(bridge.to_owned()).or_default();
        on_bridge.extend(ports.iter().cloned());
        Ok(())
    }

    fn watch_ports(&mut self, report: PortsReport) -> Result<(), KernelError> {
        self.kernel().watch_ports = Some(report);
        Ok(())
    }

    fn watch(&mut self, report: ChangeReport) -> Result<(), KernelError> {
        self.kernel().watch = Some(report);
        Ok(())
    }

    fn watch_drops(&mut self, group: u16, report: DropReport) -> Result<(), KernelError> {
        self.kernel().watch_drops = Some((group, report));
        Ok(())
    }

    /// The namespace's tables, applies and ports take the place of the host's until
    /// `leave`, so every other call acts on them unchanged.
    fn enter(&mut self, netns: &std::path::Path) -> Result<(), KernelError> {
        let mut guard = self.kernel();
        let kernel = &mut *guard;
        let Some(ns) = kernel.namespaces.get_mut(netns) else {
            return Err(crate::firewall::NetnsError::Gone(netns.to_owned()).into());
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

    fn overlay_bridge(&mut self) -> Result<Option<(String, String)>, KernelError> {
        let kernel = self.kernel();
        Ok(kernel
            .entered
            .as_ref()
            .and_then(|p| kernel.namespaces.get(p))
            .map(|ns| ns.bridge.clone()))
    }
}
