//! Swarm overlay networks: each has a namespace of its own on every node with a local
//! container on it (Docker's `<exec-root>/netns/<epoch>-<id>`, see `docker::swarm`),
//! holding the network's bridge (`br0`) with the local containers' ports and a VXLAN port
//! to the other nodes. The daemon keeps a table of ours in each, planned from the network
//! alone: this node judges what its own containers send (see
//! [`crate::plan::ManagedNetwork::remote_port`]).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tracing::{debug, error, info, warn};

use super::Daemon;
use super::reconcile::reconcile_overlay;
use crate::docker::swarm::OVERLAY_BRIDGE;
use crate::docker::{NetworkSnapshot, Snapshot};
use crate::firewall::{BridgeFiltering, Worker};
use crate::firewall::{BridgePorts, KernelError, NetnsError};
use crate::plan::{Change, Ruleset};

/// What the mount watch needs to isolate an overlay namespace the moment Docker mounts
/// it, without waiting for the loop (which may be in a pass, waiting for a Docker busy
/// setting that very namespace up): the overlay networks the last pass saw, our table's
/// name, and our Docker's directory of namespaces. Kept up to date by the loop.
#[derive(Debug, Default)]
pub(super) struct Prepared {
    /// Counts every change: a job queued under one view does nothing under another.
    pub generation: u64,
    pub dir: Option<PathBuf>,
    pub table: String,
    /// Each with the names of its bridge and VXLAN port when seen before.
    pub networks: Vec<(NetworkSnapshot, Option<(String, String)>)>,
}

pub(super) type SharedPrepared = std::sync::Arc<std::sync::Mutex<Prepared>>;

/// Called by the mount watch for a namespace just mounted at `path`: when it is the
/// namespace of an overlay network the last pass saw, in our Docker's directory, the
/// worker puts its rules in at once, before Docker has even built the bridge in it (about
/// 0.2 s later), planned from that pass's view, with the bridge's names as last seen (or
/// Docker's) and no port bound (silent until the next pass binds them), and what goes out
/// to other nodes judged statelessly until conntrack is known to be on. Returns at once;
/// the loop's pass follows and puts the exact rules in.
pub(super) fn isolate_at_mount(prepared: &SharedPrepared, worker: &Worker, path: &std::path::Path) {
    let (net, names, table, generation) = {
        let p = prepared.lock().unwrap_or_else(|e| e.into_inner());
        let Some(name) = path.file_name().map(|n| n.to_string_lossy().into_owned()) else {
            return;
        };
        // Only in our Docker's directory: another Docker on the host (a test's nodes) may
        // have a namespace of the same network, and it is not ours to touch.
        if p.dir.is_none() || path.parent() != p.dir.as_deref() {
            return;
        }
        let Some((net, names)) = p
            .networks
            .iter()
            .find(|(n, _)| crate::docker::swarm::overlay_epoch(&name, &n.id).is_some())
        else {
            return;
        };
        let names = names
            .clone()
            .unwrap_or_else(|| (OVERLAY_BRIDGE.0.to_owned(), OVERLAY_BRIDGE.1.to_owned()));
        (net.clone(), names, p.table.clone(), p.generation)
    };
    let path = path.to_owned();
    let prepared = prepared.clone();
    worker.submit(move |fw| {
        // A clear or a reload came between: this view is no longer the daemon's.
        if prepared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .generation
            != generation
        {
            return;
        }
        if let Err(e) = fw.enter(&path) {
            debug!("namespace {}: {e}", path.display());
            return;
        }
        let result = (|| -> Result<bool, KernelError> {
            if fw.present(&table)? {
                return Ok(false);
            }
            let planned = reconcile_overlay(
                &table,
                &net,
                (&names.0, &names.1),
                (&BridgePorts::default(), false),
                None,
            )
            .map_err(|e| KernelError::Build {
                what: format!("the ruleset of overlay network {}", net.name),
                reason: e.to_string(),
            })?;
            fw.apply(None, &planned.ruleset)?;
            Ok(true)
        })();
        fw.leave();
        match result {
            Ok(true) => info!(
                network = %net.name,
                "overlay network isolated in namespace {} at its mount, before Docker reported it",
                path.display()
            ),
            Ok(false) => {}
            Err(e) => warn!(network = %net.name, "namespace {}: {e}", path.display()),
        }
    });
}

/// One overlay network's tables on this node.
#[derive(Debug, Clone)]
pub(super) struct OverlayState {
    pub netns: PathBuf,
    /// The bridge and its VXLAN port, read from the kernel in the namespace.
    pub bridge: (String, String),
    /// What the namespace was last given, while it is believed to hold it.
    pub committed: Option<Arc<Ruleset>>,
    /// The last ruleset applied there.
    pub enforced: Option<Arc<Ruleset>>,
    pub filtering: Option<BridgeFiltering>,
}

/// Why an overlay network with no namespace on this node is not isolated here.
pub(crate) fn unplaced_reason() -> &'static str {
    "no container of this node is on it: no namespace here, nothing to isolate"
}

/// Why an overlay network is not isolated on this node (status).
pub(super) fn unplaced(net: &NetworkSnapshot) -> Option<String> {
    let overlay = net.overlay.as_ref()?;
    if let Some(problem) = &overlay.problem {
        return Some(problem.clone());
    }
    overlay
        .netns
        .is_none()
        .then(|| unplaced_reason().to_owned())
}

/// The Swarm overlay networks on this node, each isolated in its own namespace.
#[derive(Debug, Default)]
pub(super) struct Overlays {
    /// The overlay networks isolated in their namespaces on this node, by name.
    pub(super) networks: BTreeMap<String, OverlayState>,
    /// Overlay networks not isolated on this node, with why.
    pub(super) problems: BTreeMap<String, String>,
    /// The last rules of each overlay namespace (path), with its network: restored the
    /// moment Docker mounts that namespace again, before it reports anything.
    pub(super) memory: BTreeMap<PathBuf, (String, Arc<Ruleset>)>,
    /// The overlay networks of the last pass, for the mount watch.
    pub(super) prepared: SharedPrepared,
}

impl Daemon {
    /// Brings every overlay network's namespace to its plan, after the host's apply.
    pub(super) async fn apply_overlays(&mut self, snapshot: &Snapshot, resync: bool) {
        let table = self.config.daemon.table.clone();
        let wanted: BTreeSet<String> = snapshot
            .networks
            .iter()
            .filter(|n| n.overlay.as_ref().is_some_and(|o| o.netns.is_some()))
            .map(|n| n.name.clone())
            .collect();
        // No longer managed here (the network is gone, or no longer configured): our table
        // leaves its namespace, if the namespace is still there.
        let gone: Vec<String> = self
            .overlays
            .networks
            .keys()
            .filter(|n| !wanted.contains(*n))
            .cloned()
            .collect();
        self.overlays
            .memory
            .retain(|_, (name, _)| snapshot.networks.iter().any(|n| &n.name == name));
        for name in gone {
            let state = self.overlays.networks.remove(&name).expect("listed above");
            match self.clear_in(&state.netns, &table).await {
                Ok(()) => {}
                Err(e) => {
                    warn!(network = %name, "cannot remove our table from {}: {e}", state.netns.display())
                }
            }
        }
        for net in snapshot
            .networks
            .iter()
            .filter(|n| wanted.contains(&n.name))
        {
            let netns = net
                .overlay
                .as_ref()
                .and_then(|o| o.netns.clone())
                .expect("wanted");
            match self.apply_overlay(&table, net, netns.clone(), resync).await {
                Ok(()) => {
                    self.overlays.problems.remove(&net.name);
                }
                Err(KernelError::Netns(NetnsError::Gone(_))) => {
                    // Docker has not mounted it yet, or just removed it: the next event
                    // (or the resync) comes back.
                    self.overlays.networks.remove(&net.name);
                    self.overlays.problems.insert(
                        net.name.clone(),
                        format!("namespace {} not there (yet)", netns.display()),
                    );
                }
                Err(e) => {
                    let why = e.to_string();
                    if self.overlays.problems.get(&net.name) != Some(&why) {
                        error!(network = %net.name, "overlay network NOT isolated on this node: {why}");
                    }
                    self.overlays.problems.insert(net.name.clone(), why);
                }
            }
        }
        for net in &snapshot.networks {
            if let Some(why) = unplaced(net) {
                self.overlays.problems.insert(net.name.clone(), why);
            }
        }
        self.overlays
            .problems
            .retain(|n, _| snapshot.networks.iter().any(|s| &s.name == n));
        let mut prepared = self
            .overlays
            .prepared
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        *prepared = Prepared {
            generation: prepared.generation + 1,
            dir: crate::docker::known_sandbox_directory(&self.config.daemon.docker_host()),
            table,
            networks: snapshot
                .networks
                .iter()
                .filter(|n| n.overlay.is_some())
                .map(|n| {
                    (
                        n.clone(),
                        self.overlays
                            .networks
                            .get(&n.name)
                            .map(|s| s.bridge.clone()),
                    )
                })
                .collect(),
        };
    }

    async fn apply_overlay(
        &mut self,
        table: &str,
        net: &NetworkSnapshot,
        netns: PathBuf,
        resync: bool,
    ) -> Result<(), KernelError> {
        let known = self
            .overlays
            .networks
            .get(&net.name)
            .filter(|s| s.netns == netns)
            .cloned();
        // A resync reads the namespace back first: whatever differs is replaced whole.
        let mut committed = known.as_ref().and_then(|s| s.committed.clone());
        if let (true, Some(c)) = (resync, committed.clone()) {
            let drifted = self
                .firewall
                .call_in(Some(netns.clone()), move |fw| fw.drift(&c))
                .await
                .map_or(true, |d| !d.is_empty());
            if drifted {
                warn!(network = %net.name, "our table in {} is not what we left: replacing it", netns.display());
                committed = None;
            }
        }
        let t = table.to_owned();
        let (bridge, ports, present, filtering) = self
            .firewall
            .call_in(Some(netns.clone()), move |fw| {
                let Some(bridge) = fw.overlay_bridge()? else {
                    return Ok(None);
                };
                let only = BTreeSet::from([bridge.0.clone()]);
                // Every pass: a namespace built again has its bridge's attributes reset.
                let filtering = fw.bridge_filtering(&only).into_iter().next();
                let ports = fw
                    .bridge_ports(&only)?
                    .remove(&bridge.0)
                    .unwrap_or_default();
                Ok(Some((bridge, ports, fw.present(&t)?, filtering)))
            })
            .await?
            .ok_or_else(|| NetnsError::Gone(netns.clone()))?;
        if !present {
            // A namespace made anew at the same path (Docker restarted, the last local
            // container left and another came): nothing of ours is in it.
            committed = None;
        }
        let stateful = filtering.as_ref().is_some_and(|f| f.stateful);
        if let Some(f) = filtering.as_ref().filter(|f| !f.stateful)
            && known.as_ref().and_then(|k| k.filtering.as_ref()) != Some(f)
        {
            warn!(network = %net.name, bridge = %f.bridge, "{}: proxies on other nodes cannot reach this node's containers on this network", f.detail);
        }
        let reconciled = reconcile_overlay(
            table,
            net,
            (&bridge.0, &bridge.1),
            (&ports, stateful),
            committed.as_deref(),
        )
        .map_err(|e| KernelError::Build {
            what: format!("the ruleset of overlay network {}", net.name),
            reason: e.to_string(),
        })?;
        if let Some(e) = reconciled.rejected.first() {
            return Err(KernelError::Build {
                what: format!("the ruleset of overlay network {}", net.name),
                reason: e.to_string(),
            });
        }
        let first = committed.is_none();
        let desired = Arc::new(reconciled.ruleset);
        if reconciled.change != Change::None {
            let d = desired.clone();
            let c = committed.clone();
            let report = self
                .firewall
                .call_in(Some(netns.clone()), move |fw| fw.apply(c.as_deref(), &d))
                .await?;
            if first {
                info!(
                    network = %net.name,
                    bridge = %bridge.0,
                    "overlay network isolated in namespace {} ({:?}, {} messages)",
                    netns.display(),
                    report.kind,
                    report.messages
                );
            }
        }
        let mut filtering = known.as_ref().and_then(|s| s.filtering.clone());
        if first || resync || filtering.as_ref().is_none_or(|f| f.bridge != bridge.0) {
            let bridges = BTreeSet::from([bridge.0.clone()]);
            filtering = self
                .firewall
                .call_in(Some(netns.clone()), move |fw| {
                    Ok(fw.bridge_filtering(&bridges))
                })
                .await?
                .into_iter()
                .next();
            if let Some(f) = filtering.as_ref().filter(|f| !f.stateful) {
                warn!(network = %net.name, bridge = %f.bridge, "{}", f.detail);
            }
        }
        self.overlays
            .memory
            .insert(netns.clone(), (net.name.clone(), desired.clone()));
        self.overlays.networks.insert(
            net.name.clone(),
            OverlayState {
                netns,
                bridge,
                committed: Some(desired.clone()),
                enforced: Some(desired),
                filtering,
            },
        );
        Ok(())
    }

    /// Docker mounted overlay namespaces at `paths`. One of a network this node isolated
    /// before (Docker restarted; its last local container left and another came) gets
    /// the rules it had at once, from memory, without waiting for Docker: its containers'
    /// new ports are bound to nobody yet, so they cannot send until the pass that follows
    /// binds them. Then a pass places the rest.
    pub(super) async fn namespaces_mounted(&mut self, paths: Vec<PathBuf>) {
        if self.condition == super::Condition::Cleared {
            return;
        }
        debug!("overlay namespaces mounted: {paths:?}");
        let table = self.config.daemon.table.clone();
        for state in self.overlays.networks.values_mut() {
            if paths.contains(&state.netns) {
                // A new namespace: whatever is in it (the mount watch's rules, or nothing)
                // is not what was committed to the old one.
                state.committed = None;
            }
        }
        for path in paths {
            let Some((name, ruleset)) = self.overlays.memory.get(&path).cloned() else {
                continue;
            };
            let t = table.clone();
            let restored = self
                .firewall
                .call_in(Some(path.clone()), move |fw| {
                    if fw.present(&t)? {
                        return Ok(false);
                    }
                    fw.apply(None, &ruleset).map(|_| true)
                })
                .await;
            match restored {
                Ok(true) => {
                    info!(network = %name, "namespace {} mounted again: our last rules for it restored before Docker reported anything", path.display());
                }
                Ok(false) | Err(KernelError::Netns(NetnsError::Gone(_))) => {}
                Err(e) => {
                    warn!(network = %name, "cannot restore our rules in {}: {e}", path.display())
                }
            }
        }
        self.pass(false, None).await;
    }

    /// The mount watch does nothing until the next pass gives it a view again.
    pub(super) fn forget_prepared(&self) {
        let mut prepared = self
            .overlays
            .prepared
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        prepared.generation += 1;
        prepared.networks.clear();
    }

    /// Every overlay namespace of our Docker's directory now, with those we know of.
    fn overlay_places(&self) -> BTreeSet<(PathBuf, String)> {
        let mut places: BTreeSet<(PathBuf, String)> = self
            .overlays
            .memory
            .iter()
            .map(|(path, (name, _))| (path.clone(), name.clone()))
            .collect();
        places.extend(
            self.overlays
                .networks
                .iter()
                .map(|(name, state)| (state.netns.clone(), name.clone())),
        );
        // Also those the mount watch may have filled behind the loop's back.
        let dir = crate::docker::known_sandbox_directory(&self.config.daemon.docker_host());
        if let Some(entries) = dir.and_then(|d| std::fs::read_dir(d).ok()) {
            for path in entries.filter_map(Result::ok).map(|e| e.path()) {
                let overlay = path
                    .file_name()
                    .is_some_and(|n| crate::docker::swarm::is_overlay_name(&n.to_string_lossy()));
                if overlay
                    && crate::firewall::mounted(&path)
                    && !places.iter().any(|(p, _)| *p == path)
                {
                    places.insert((path, String::new()));
                }
            }
        }
        places
    }

    /// Removes our table `table` (a name a reload retired) from every overlay namespace.
    pub(super) async fn sweep_overlay_namespaces(&mut self, table: &str) {
        for (path, name) in self.overlay_places() {
            match self.clear_in(&path, table).await {
                Ok(()) => {}
                Err(e) => {
                    warn!(network = %name, "cannot remove table {table} from {}: {e}", path.display())
                }
            }
        }
    }

    /// Removes our table from every overlay namespace we put one in (clear).
    pub(super) async fn clear_overlays(&mut self) -> Result<(), KernelError> {
        self.forget_prepared();
        let table = self.config.daemon.table.clone();
        let places = self.overlay_places();
        let mut first_error = None;
        for (path, name) in places {
            match self.clear_in(&path, &table).await {
                Ok(()) => {
                    self.overlays.memory.remove(&path);
                    self.overlays.networks.retain(|_, s| s.netns != path);
                }
                Err(e) => {
                    // Kept, so that a clear asked again tries it again.
                    error!(network = %name, "cannot clear {}: {e}", path.display());
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Removes our table `table` from the namespace at `netns`: one no longer there holds
    /// nothing to remove.
    async fn clear_in(&self, netns: &Path, table: &str) -> Result<(), KernelError> {
        let table = table.to_owned();
        match self
            .firewall
            .call_in(Some(netns.to_owned()), move |fw| fw.clear(&table))
            .await
        {
            Err(KernelError::Netns(NetnsError::Gone(_))) => Ok(()),
            other => other,
        }
    }

    /// The ports bound in an overlay network's namespace, for the status.
    pub(super) fn overlay_bound_ports(&self, network: &str) -> Option<usize> {
        let state = self.overlays.networks.get(network)?;
        Some(
            state
                .enforced
                .as_ref()
                .map_or(0, |r| r.bound_ports(network)),
        )
    }
}
