//! The daemon loop: one task owns all state; Docker events, the resync timer, signals and
//! D-Bus calls are messages to it ([`Msg`]).
//!
//! Each pass: snapshot Docker → [`reconcile`] (pure: what the kernel must hold and how to
//! get there) → the [`Worker`] applies it (only when something changed, or the kernel
//! drifted). Fail safe: when Docker cannot be read, or a config reload is refused, or a
//! batch is refused, the rules in the kernel stay as they are.

mod inputs;
mod overlay;
pub use overlay::unplaced_reason;
pub mod reconcile;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{debug, error, info, warn};

pub use inputs::forward_signals;
use inputs::{now_nanos, resync_timer, watch_docker, watch_namespaces, watchdog_timer};
use reconcile::{bridges_to_set, reconcile};

use crate::config::{Config, ConfigError, PolicySource};
use crate::docker::{DockerClient, Snapshot};
use crate::droplog::{Directory, DropLog, Notices};
use crate::firewall::{ApplyReport, BridgeFiltering, TableChange, Worker};
use crate::firewall::{BridgePorts, KernelError};
use crate::metrics::{self, ApplyStats};
use crate::notify;
use crate::persist::{IsolatedNetwork, Saved, SavedFile, StateDir};
use crate::plan::{self, Change, Counters, Mac, Ruleset};
use crate::policy::HostAccess;
use crate::status::{
    AllowStatus, ApplyStatus, ContainerStatus, DropLogStatus, NetworkStatus, State, Status,
};

/// Why a reload or a clear asked of the loop did not happen.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The new configuration was refused; the previous one and its rules stay.
    #[error(transparent)]
    ConfigRejected(#[from] ConfigError),
    /// The kernel refused the change; nothing changed.
    #[error("{0}")]
    Failed(#[from] KernelError),
    /// The daemon is shutting down and no longer takes requests.
    #[error("the daemon is stopping")]
    Stopping,
}

/// A reply channel for requests that want to know how they ended.
pub type Reply = oneshot::Sender<Result<(), ControlError>>;

#[derive(Debug)]
pub enum Msg {
    /// The watcher (re)connected to Docker.
    DockerConnected(DockerClient),
    /// The watcher lost Docker (or could not reach it).
    DockerLost(String),
    /// A Docker event that may change the ruleset; carries the event's time (ns since the
    /// epoch) when Docker gave one.
    Changed(Option<i64>),
    /// Time for a full resync (and a drift check).
    Resync,
    Reload(Option<Reply>),
    Clear(Option<Reply>),
    /// The status, with the drop counters read from the kernel now.
    Status(oneshot::Sender<Status>),
    /// The metrics, in Prometheus' text format, with the counters read now.
    Metrics(oneshot::Sender<String>),
    /// Another process changed the ruleset (nftables notifications).
    TablesChanged(TableChange),
    /// Overlay networks' namespaces (`<epoch>-<id>`) were mounted (by Docker) at these paths.
    NamespacesMounted(Vec<PathBuf>),
    /// Time to tell systemd's watchdog the loop is alive.
    Watchdog,
    Shutdown,
}

/// At most this many repairs in [`REPAIR_WINDOW`]: beyond, another process keeps rewriting
/// our tables, and we retry at the end of the window instead of fighting it at full speed.
const REPAIR_BURST: usize = 10;
const REPAIR_WINDOW: Duration = Duration::from_secs(1);
/// A failed repair is retried after this long (and at every pass).
const REPAIR_RETRY: Duration = Duration::from_secs(1);
/// How long `Status()` reuses drop counters it read.
const COUNTERS_MAX_AGE: Duration = Duration::from_secs(1);

/// Where the loop stands (the published [`State`], with the reason of a degradation).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Condition {
    Starting,
    Active,
    Cleared,
    Degraded(String),
}

pub struct Daemon {
    config_dir: PathBuf,
    config: Config,
    firewall: Worker,
    /// What the kernel was last given, while it is believed to hold it: the base of
    /// element updates and drift checks. `None` makes the next apply a full one.
    committed: Option<Arc<Ruleset>>,
    /// What must be in force: the last ruleset applied (or restored at start). Repairs
    /// restore it, even after a failed apply or repair forgot `committed`; only a clear
    /// drops it.
    enforced: Option<Arc<Ruleset>>,
    /// Recent repairs, to bound how often we fight another process over our tables.
    repairs: VecDeque<Instant>,
    /// A repair retry is scheduled.
    repair_retry: Option<JoinHandle<()>>,
    /// Drop counters last read, and when: `Status()` is open to everyone, so a flood of
    /// calls reads the kernel at most once a second.
    counters: Option<(Instant, Counters)>,
    /// A write of the state directory failed (logged once).
    save_failed: bool,
    /// br_netfilter on the managed bridges, as last set.
    bridges: Vec<BridgeFiltering>,
    docker: Option<DockerClient>,
    condition: Condition,
    tx: mpsc::UnboundedSender<Msg>,
    rx: mpsc::UnboundedReceiver<Msg>,
    /// Messages taken out of the channel while coalescing events; served first.
    pending: VecDeque<Msg>,
    watcher: Option<JoinHandle<()>>,
    resync: Option<JoinHandle<()>>,
    /// Warnings already logged, so a resync does not repeat them every time.
    warned: BTreeSet<(String, String)>,
    /// The whitelisted containers of each network at the last pass (id, name): one that
    /// is still on the network but no longer matches has lost its access, loudly.
    whitelisted_before: BTreeMap<String, BTreeSet<(String, String)>>,
    waiting_logged: BTreeSet<String>,
    docker_lost_logged: bool,
    status_tx: watch::Sender<Status>,
    /// A table name a reload replaced: removed after the first apply under the new name.
    retired_table: Option<String>,
    /// READY=1 goes out once, at start.
    ready_sent: bool,
    last_snapshot: Option<Snapshot>,
    /// The managed bridges' ports, as last read from the kernel.
    ports: BTreeMap<String, BridgePorts>,
    /// The bridges whose forwarding database is programmed, with the ports bound there
    /// (their container's MAC static, learning off): see `bind_ports`.
    bound: BTreeMap<String, BTreeSet<(String, Mac)>>,
    last_apply: Option<ApplyStatus>,
    last_error: Option<String>,
    /// Where the isolated networks and the last good configuration are kept (none in
    /// unit tests).
    state: Option<StateDir>,
    /// What the state directory holds, as last written.
    saved: Saved,
    /// The configuration on disk that failed to load at start: the daemon runs on the
    /// last good one, degraded, until a reload succeeds.
    config_error: Option<ConfigError>,
    /// Names for the drops the kernel logs, and the watch on its NFLOG group.
    drop_log: DropLog,
    /// Applies and errors so far, for the metrics.
    apply_stats: ApplyStats,
    /// The overlay networks isolated in their namespaces on this node, by name.
    overlays: BTreeMap<String, overlay::OverlayState>,
    /// Overlay networks not isolated on this node, with why.
    overlay_problems: BTreeMap<String, String>,
    /// The last rules of each overlay namespace (path), with its network: restored the
    /// moment Docker mounts that namespace again, before it reports anything.
    overlay_memory: BTreeMap<PathBuf, (String, Arc<Ruleset>)>,
    /// The overlay networks of the last pass, for the mount watch.
    prepared: overlay::SharedPrepared,
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon")
            .field("config_dir", &self.config_dir)
            .field("condition", &self.condition)
            .finish_non_exhaustive()
    }
}

impl Daemon {
    pub fn new(config_dir: PathBuf, config: Config, firewall: Worker) -> Daemon {
        let (tx, rx) = mpsc::unbounded_channel();
        Daemon {
            config_dir,
            config,
            firewall,
            committed: None,
            enforced: None,
            repairs: VecDeque::new(),
            repair_retry: None,
            counters: None,
            save_failed: false,
            bridges: Vec::new(),
            docker: None,
            condition: Condition::Starting,
            tx,
            rx,
            pending: VecDeque::new(),
            watcher: None,
            resync: None,
            warned: BTreeSet::new(),
            whitelisted_before: BTreeMap::new(),
            waiting_logged: BTreeSet::new(),
            docker_lost_logged: false,
            status_tx: watch::Sender::new(Status::default()),
            retired_table: None,
            ready_sent: false,
            last_snapshot: None,
            ports: BTreeMap::new(),
            bound: BTreeMap::new(),
            last_apply: None,
            last_error: None,
            state: None,
            saved: Saved::default(),
            config_error: None,
            drop_log: DropLog::default(),
            apply_stats: ApplyStats::default(),
            overlays: BTreeMap::new(),
            overlay_problems: BTreeMap::new(),
            overlay_memory: BTreeMap::new(),
            prepared: overlay::SharedPrepared::default(),
        }
    }

    /// Where each drop line goes as JSON as well (the D-Bus `Dropped` signal).
    pub fn drop_notices(&self) -> Notices {
        self.drop_log.notices.clone()
    }

    /// Keeps state in `state` (see [`crate::persist`]); `config_error` is the error of the
    /// configuration on disk when the daemon starts on the last good one instead.
    pub fn with_state(mut self, state: StateDir, config_error: Option<ConfigError>) -> Daemon {
        self.state = Some(state);
        self.config_error = config_error;
        self
    }

    /// The published status (state, networks), for D-Bus properties.
    pub fn status(&self) -> watch::Receiver<Status> {
        self.status_tx.subscribe()
    }

    /// A handle to send messages to the loop (signals, D-Bus).
    pub fn sender(&self) -> mpsc::UnboundedSender<Msg> {
        self.tx.clone()
    }

    /// Active, unless the configuration on disk is broken (running the last good one).
    fn settle(&mut self) {
        self.condition = match &self.config_error {
            None => Condition::Active,
            Some(e) => Condition::Degraded(format!(
                "the configuration does not load ({e}); running the last good one"
            )),
        };
    }

    fn degrade(&mut self, why: String) {
        self.condition = Condition::Degraded(why.clone());
        self.last_error = Some(why);
        self.apply_stats.errors += 1;
        self.apply_stats.last_error_at = Some(unix_now());
    }

    fn build_status(&self) -> Status {
        let (state, reason) = match &self.condition {
            Condition::Starting => (State::Starting, None),
            Condition::Active => (State::Active, None),
            Condition::Cleared => (State::Cleared, Some("cleared on request".to_owned())),
            Condition::Degraded(why) => (State::Degraded, Some(why.clone())),
        };
        let stateful = |network: &str, bridge: &str| match self.overlays.get(network) {
            Some(o) => o.filtering.as_ref().map(|f| f.stateful),
            None => self
                .bridges
                .iter()
                .find(|b| b.bridge == bridge)
                .map(|b| b.stateful),
        };
        let networks = if self.condition == Condition::Cleared {
            Vec::new()
        } else {
            self.last_snapshot
                .iter()
                .flat_map(|s| &s.networks)
                .map(|n| NetworkStatus {
                    name: n.name.clone(),
                    mode: n.policy.mode.name().into(),
                    bridge: match self.overlays.get(&n.name) {
                        Some(o) => o.bridge.0.clone(),
                        None => n.bridge.clone(),
                    },
                    namespace: n.overlay.as_ref().map(|o| {
                        o.netns
                            .as_ref()
                            .map_or_else(String::new, |p| p.display().to_string())
                    }),
                    not_isolated: self.overlay_problems.get(&n.name).cloned(),
                    subnets: n.subnets.iter().map(|s| s.to_string()).collect(),
                    allow_host_traffic: n.policy.host_access == HostAccess::Open,
                    host_access: n.policy.host_access.name().into(),
                    host_ports: n.policy.host_ports.iter().map(|p| p.to_string()).collect(),
                    deny_outbound: n
                        .policy
                        .deny_outbound
                        .iter()
                        .map(|d| d.to_string())
                        .collect(),
                    allowed: AllowStatus::of_network(n),
                    source: match &n.source {
                        PolicySource::Labels => "labels".into(),
                        PolicySource::File(f) => f.display().to_string(),
                    },
                    stateful: stateful(&n.name, &n.bridge),
                    whitelisted: n
                        .whitelisted
                        .iter()
                        .map(|e| ContainerStatus {
                            id: e.container_id.clone(),
                            name: e.container_name.clone(),
                            addresses: e.addrs.iter().map(|a| a.to_string()).collect(),
                        })
                        .collect(),
                    dropped_packets: 0,
                    bound_ports: self.overlay_bound_ports(&n.name).unwrap_or_else(|| {
                        self.enforced.as_ref().map_or(0, |r| r.bound_ports(&n.name))
                    }),
                    spoofed_frames: 0,
                })
                .collect()
        };
        Status {
            state,
            reason,
            docker_host: self.config.daemon.docker_host(),
            table: self.config.daemon.table.clone(),
            networks,
            waiting: self
                .last_snapshot
                .as_ref()
                .map(|s| s.waiting.clone())
                .unwrap_or_default(),
            last_apply: self.last_apply.clone(),
            last_error: self.last_error.clone(),
            drop_log: DropLogStatus {
                enabled: self.config.daemon.log_drops,
                group: self.config.daemon.log_group,
                error: self
                    .drop_log
                    .rules_refused
                    .as_ref()
                    .map(|e| format!("the kernel refused rules that log ({e})"))
                    .or_else(|| self.drop_log.error.clone()),
            },
        }
    }

    /// The drop counters as the kernel holds them, read at most once a second (`Status()`
    /// and `Metrics()` are open to everyone).
    async fn fresh_counters(&mut self, table: &str) -> Option<Counters> {
        if let Some((at, c)) = &self.counters
            && at.elapsed() < COUNTERS_MAX_AGE
        {
            return Some(c.clone());
        }
        let table = table.to_owned();
        match self.firewall.call(move |fw| fw.counters(&table)).await {
            Ok(c) => {
                self.counters = Some((Instant::now(), c.clone()));
                Some(c)
            }
            Err(e) => {
                debug!("cannot read the drop counters: {e}");
                None
            }
        }
    }

    /// The metrics text, with counters read from the kernel now.
    async fn metrics(&mut self) -> String {
        let status = self.build_status();
        let counters = match self.enforced.clone() {
            Some(enforced) => self
                .fresh_counters(&enforced.table_name)
                .await
                .map(|c| (enforced, c)),
            None => None,
        };
        metrics::render(
            &status,
            counters.as_ref().map(|(r, c)| (r.as_ref(), c)),
            &self.drop_log.stats,
            &self.apply_stats,
        )
    }

    /// The NFLOG group the rules report to: the configuration's, unless the kernel
    /// refused rules that log.
    fn log_group(&self) -> Option<u16> {
        self.config
            .daemon
            .drop_log_group()
            .filter(|_| self.drop_log.rules_refused.is_none())
    }

    fn refuse_log_rules(&mut self, e: &KernelError) {
        error!(
            "the kernel refused the ruleset with its drop-log rules ({e}); enforcing without them: drops are counted, not logged (is nfnetlink_log available?)"
        );
        self.drop_log.rules_refused = Some(e.to_string());
    }

    /// Reads the NFLOG group our deny chains report to (when the configuration logs
    /// drops), or stops reading it. Failing to is no reason to stop enforcing: drops are
    /// still dropped and counted; the status says why they are not logged.
    async fn watch_drops(&mut self) {
        let wanted = self.config.daemon.drop_log_group();
        if wanted == self.drop_log.group() && self.drop_log.error.is_none() {
            return;
        }
        self.drop_log.stop();
        self.drop_log.error = None;
        let Some(group) = wanted else {
            return;
        };
        let delay = self.drop_log.rebind_delay(group);
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let report = self.drop_log.report(group);
        match self
            .firewall
            .call(move |fw| fw.watch_drops(group, report))
            .await
        {
            Ok(()) => info!("drop log: reading NFLOG group {group}"),
            Err(e) => {
                warn!(
                    "cannot read the drop log ({e}): drops are still dropped and counted, but not logged by name"
                );
                self.drop_log.stop();
                self.drop_log.error = Some(e.to_string());
            }
        }
    }

    /// The status with the drop counters as the kernel holds them (read at most once a
    /// second).
    async fn status_with_counters(&mut self) -> Status {
        let mut status = self.build_status();
        let Some(enforced) = self.enforced.clone() else {
            return status;
        };
        let Some(counters) = self.fresh_counters(&enforced.table_name).await else {
            return status;
        };
        for net in &mut status.networks {
            net.dropped_packets = enforced.dropped(&net.name, &counters);
            net.spoofed_frames = enforced.spoofed(&net.name, &counters);
        }
        status
    }

    /// Publishes the status (D-Bus properties, systemd's STATUS=) when it changed.
    fn publish(&mut self) {
        let status = self.build_status();
        let summary = status.summary();
        let changed = self.status_tx.send_if_modified(|current| {
            if *current == status {
                false
            } else {
                *current = status;
                true
            }
        });
        if changed {
            notify::status(&summary);
        }
    }

    /// Publishes the status; READY=1 the first time (at start, once the saved networks are
    /// isolated again).
    fn announce_ready(&mut self) {
        self.publish();
        if !self.ready_sent {
            self.ready_sent = true;
            notify::ready(&self.status_tx.borrow().summary());
        }
    }

    fn start_watcher(&mut self) {
        if let Some(w) = self.watcher.take() {
            w.abort();
        }
        self.docker = None;
        let host = self.config.daemon.docker_host();
        info!(docker_host = %host, "watching Docker");
        self.watcher = Some(tokio::spawn(watch_docker(host, self.tx.clone())));
    }

    fn start_resync_timer(&mut self) {
        if let Some(t) = self.resync.take() {
            t.abort();
        }
        let timer = resync_timer(self.config.daemon.resync_interval, self.tx.clone());
        self.resync = Some(tokio::spawn(timer));
    }

    /// The next message: one set aside while coalescing first, then the channel's.
    async fn next_message(&mut self) -> Option<Msg> {
        match self.pending.pop_front() {
            Some(m) => Some(m),
            None => self.rx.recv().await,
        }
    }

    /// Subscribes to the kernel's ruleset changes, so that tampering with our tables is
    /// repaired at once, whether or not Docker answers.
    async fn watch_ruleset(&self) {
        let tx = self.tx.clone();
        let report = Box::new(move |change| tx.send(Msg::TablesChanged(change)).is_ok());
        if let Err(e) = self.firewall.call(move |fw| fw.watch(report)).await {
            warn!("cannot watch the ruleset ({e}): tampering is repaired at the next resync only");
        }
        // A container's port appears before Docker reports the container: binding it
        // (port security) and reading its endpoint start from the kernel's notice.
        let tx = self.tx.clone();
        let report = Box::new(move || tx.send(Msg::Changed(None)).is_ok());
        if let Err(e) = self.firewall.call(move |fw| fw.watch_ports(report)).await {
            warn!("cannot watch the links ({e}): ports are bound on Docker's events only");
        }
    }

    /// Writes the state directory when what it should hold changed.
    fn save(&mut self, saved: Saved) {
        let Some(state) = &self.state else {
            return;
        };
        if saved == self.saved {
            return;
        }
        match state.save(&saved) {
            Ok(()) => {
                self.saved = saved;
                self.save_failed = false;
            }
            Err(e) if !self.save_failed => {
                self.save_failed = true;
                warn!("{e}: after a reboot the networks stay open until Docker answers");
            }
            Err(_) => {}
        }
    }

    fn save_networks(&mut self, networks: &[plan::ManagedNetwork]) {
        let mut networks: Vec<IsolatedNetwork> = networks.iter().map(IsolatedNetwork::of).collect();
        // In a stable order, so that Docker's listing order never causes a rewrite.
        for net in &mut networks {
            net.subnets.sort();
        }
        networks.sort_by(|a, b| a.name.cmp(&b.name));
        let saved = Saved {
            table: self.config.daemon.table.clone(),
            networks,
            config: self.saved.config.clone(),
        };
        self.save(saved);
    }

    /// Keeps the configuration that just loaded as the last good one.
    fn save_config(&mut self) {
        let saved = Saved {
            config: self
                .config
                .sources
                .iter()
                .map(|(path, text)| SavedFile {
                    path: path.clone(),
                    text: text.clone(),
                })
                .collect(),
            ..self.saved.clone()
        };
        self.save(saved);
    }

    /// At start: when none of our tables is in the kernel (after a reboot, say), isolates
    /// the networks isolated last time, with nobody whitelisted, before Docker starts any
    /// container. Tables left by a previous run (a restart) are kept as they are.
    async fn restore(&mut self) {
        let Some(state) = &self.state else {
            return;
        };
        let saved = match state.load() {
            Ok(Some(saved)) => saved,
            Ok(None) => return,
            Err(e) => {
                warn!("{e}");
                return;
            }
        };
        self.saved = saved.clone();
        let table = self.config.daemon.table.clone();
        if saved.table != table || saved.networks.is_empty() {
            return;
        }
        let closed =
            |log_group| -> Vec<_> { saved.networks.iter().map(|n| n.closed(log_group)).collect() };
        let ruleset = match plan::plan(&table, &closed(self.log_group())) {
            Ok(r) => Arc::new(r),
            Err(e) => {
                warn!("cannot plan the saved networks ({e})");
                return;
            }
        };
        // Until Docker answers, a repair restores at least this.
        self.enforced = Some(ruleset.clone());
        let present = {
            let table = table.clone();
            self.firewall.call(move |fw| fw.present(&table)).await
        };
        match present {
            Ok(false) => {}
            // A restart: the previous run's tables are in force, whitelists included.
            Ok(true) => return,
            Err(e) => warn!("cannot tell whether our tables are in the kernel ({e}); restoring"),
        }
        let desired = ruleset.clone();
        let mut applied = self.firewall.call(move |fw| fw.apply(None, &desired)).await;
        let mut ruleset = ruleset;
        if let Err(e) = &applied
            && e.refused_a_log_rule()
            && self.log_group().is_some()
            && let Ok(silent) = plan::plan(&table, &closed(None))
        {
            // Isolation first: a kernel that cannot log still drops.
            self.refuse_log_rules(e);
            ruleset = Arc::new(silent);
            self.enforced = Some(ruleset.clone());
            let desired = ruleset.clone();
            applied = self.firewall.call(move |fw| fw.apply(None, &desired)).await;
        }
        match applied {
            Ok(_) => {
                info!(
                    "isolated the {} network(s) of the last run from the state directory, nobody whitelisted until Docker answers",
                    saved.networks.len()
                );
                self.committed = Some(ruleset);
                self.settle();
            }
            Err(e) => {
                error!("cannot restore the saved networks ({e})");
                self.degrade(format!("the saved networks could not be isolated: {e}"));
            }
        }
    }

    /// Runs until a `Shutdown` message. The rules stay in the kernel on exit.
    pub async fn run(mut self) {
        self.restore().await;
        if self.config_error.is_none() {
            self.save_config();
        }
        self.log_config_warnings();
        // READY=1 now, without waiting for Docker: systemd starts Docker after us (and a
        // socket-activated Docker would wait for this very message). The saved networks
        // are isolated already.
        self.announce_ready();
        self.watch_ruleset().await;
        self.watch_drops().await;
        if let Err(e) = watch_namespaces(
            self.tx.clone(),
            self.firewall.clone(),
            self.prepared.clone(),
        ) {
            warn!(
                "cannot watch the mount table for overlay networks' namespaces ({e}): they are isolated when Docker reports their containers"
            );
        }
        self.start_watcher();
        self.start_resync_timer();
        let watchdog = notify::watchdog_period()
            .map(|period| tokio::spawn(watchdog_timer(period, self.tx.clone())));
        self.publish();
        while let Some(msg) = self.next_message().await {
            if matches!(msg, Msg::Shutdown) {
                break;
            }
            self.handle(msg).await;
        }
        notify::stopping();
        for task in [self.resync.take(), watchdog, self.watcher.take()]
            .into_iter()
            .flatten()
        {
            task.abort();
        }
        info!("stopping; the rules in force stay in the kernel");
    }

    /// Serves one message (every kind but `Shutdown`).
    async fn handle(&mut self, msg: Msg) {
        match msg {
            Msg::Shutdown => {}
            Msg::DockerConnected(client) => {
                let version = client.version().await.unwrap_or_default();
                info!(docker_host = %client.host, "connected to Docker {version}");
                self.docker = Some(client);
                self.docker_lost_logged = false;
                self.pass(true, None).await;
                self.announce_ready();
            }
            Msg::NamespacesMounted(paths) => {
                self.namespaces_mounted(paths).await;
                self.publish();
            }
            Msg::DockerLost(reason) => {
                self.docker = None;
                if !self.docker_lost_logged {
                    warn!(
                        docker_host = %self.config.daemon.docker_host(),
                        "Docker is unreachable ({reason}); the rules in force stay as they are, retrying"
                    );
                    self.docker_lost_logged = true;
                }
                if self.condition != Condition::Cleared {
                    self.condition = Condition::Degraded(format!(
                        "waiting for Docker at {}",
                        self.config.daemon.docker_host()
                    ));
                }
                self.announce_ready();
            }
            Msg::Changed(first) => {
                // Coalesce: every event already queued is covered by this one pass; other
                // messages keep their order, ahead of anything newer.
                let mut earliest = first;
                while let Ok(next) = self.rx.try_recv() {
                    match next {
                        Msg::Changed(t) => {
                            earliest = match (earliest, t) {
                                (Some(a), Some(b)) => Some(a.min(b)),
                                (a, b) => a.or(b),
                            }
                        }
                        other => self.pending.push_back(other),
                    }
                }
                self.pass(false, earliest).await;
                self.publish();
            }
            Msg::Resync => {
                self.pass(true, None).await;
                self.publish();
            }
            Msg::Watchdog => notify::watchdog(),
            Msg::Reload(reply) => {
                notify::reloading();
                let interval = self.config.daemon.resync_interval;
                let result = self.reload().await;
                self.publish();
                notify::ready(&self.status_tx.borrow().summary());
                if self.config.daemon.resync_interval != interval {
                    self.start_resync_timer();
                }
                if let Some(reply) = reply {
                    let _ = reply.send(result);
                }
            }
            Msg::Clear(reply) => {
                let result = self.clear().await;
                self.publish();
                if let Some(reply) = reply {
                    let _ = reply.send(result);
                }
            }
            Msg::Status(reply) => {
                let _ = reply.send(self.status_with_counters().await);
            }
            Msg::Metrics(reply) => {
                let _ = reply.send(self.metrics().await);
            }
            Msg::TablesChanged(change) => {
                // One repair answers every change already queued.
                let mut ours = self.touches_our_table(&change);
                while let Ok(next) = self.rx.try_recv() {
                    match next {
                        Msg::TablesChanged(c) => ours |= self.touches_our_table(&c),
                        other => self.pending.push_back(other),
                    }
                }
                if ours {
                    self.repair().await;
                    self.publish();
                }
            }
        }
    }

    fn touches_our_table(&self, change: &TableChange) -> bool {
        let ours = match change {
            TableChange::Foreign(tables) => tables.contains(&self.config.daemon.table),
            TableChange::Overrun => true,
        };
        if ours {
            debug!("our tables were changed by another process ({change:?})");
        }
        ours
    }

    /// Restores what must be in force when another process changed our tables: straight
    /// from the record, without asking Docker (which may be down). Bounded: against a
    /// process that keeps rewriting them, at most [`REPAIR_BURST`] repairs per
    /// [`REPAIR_WINDOW`].
    async fn repair(&mut self) {
        if self.condition == Condition::Cleared {
            return;
        }
        let Some(enforced) = self.enforced.clone() else {
            return;
        };
        let started = Instant::now();
        let problems = match self.drift(&enforced).await {
            Ok(problems) if problems.is_empty() => return,
            Ok(problems) => problems,
            // Unreadable (a dump interrupted by yet another commit, say): restore anyway; a
            // full replace is idempotent and checks that the tables are ours.
            Err(e) => vec![format!("they cannot be read back: {e}")],
        };
        while self
            .repairs
            .front()
            .is_some_and(|t| t.elapsed() > REPAIR_WINDOW)
        {
            self.repairs.pop_front();
        }
        if self.repairs.len() >= REPAIR_BURST {
            let why = format!(
                "another process keeps changing our tables ({}): at most {REPAIR_BURST} repairs per {} ms",
                problems.join("; "),
                REPAIR_WINDOW.as_millis()
            );
            if self.condition != Condition::Degraded(why.clone()) {
                error!("{why}");
            }
            self.degrade(why);
            self.schedule_repair(REPAIR_WINDOW);
            return;
        }
        self.repairs.push_back(started);
        let desired = enforced.clone();
        match self.firewall.call(move |fw| fw.apply(None, &desired)).await {
            Ok(report) => {
                self.committed = Some(enforced);
                self.settle();
                info!(
                    "another process changed our tables ({}): restored in {:.1} ms ({} messages)",
                    problems.join("; "),
                    started.elapsed().as_secs_f64() * 1e3,
                    report.messages
                );
            }
            Err(e) => {
                self.committed = None;
                error!(
                    "another process changed our tables ({}) and restoring them failed ({e}); retrying",
                    problems.join("; ")
                );
                self.degrade(e.to_string());
                self.schedule_repair(REPAIR_RETRY);
            }
        }
    }

    /// Asks for a repair after `delay` (one pending at a time).
    fn schedule_repair(&mut self, delay: Duration) {
        if self.repair_retry.as_ref().is_some_and(|t| !t.is_finished()) {
            return;
        }
        let tx = self.tx.clone();
        self.repair_retry = Some(tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = tx.send(Msg::TablesChanged(TableChange::Overrun));
        }));
    }

    /// Re-reads the configuration. A refused configuration changes nothing.
    async fn reload(&mut self) -> Result<(), ControlError> {
        let new = match Config::load_dir(&self.config_dir) {
            Ok(c) => c,
            Err(e) => {
                error!("reload refused, the previous configuration and rules stay: {e}");
                return Err(e.into());
            }
        };
        let old_table = self.config.daemon.table.clone();
        let host_changed = new.daemon.docker_host() != self.config.daemon.docker_host();
        if new.daemon.table != old_table {
            // Removed once the new table is in force, never before (see apply_snapshot).
            self.retired_table = Some(old_table);
        }
        self.config = new;
        // The mount watch acts on the next pass's view, not on the old configuration's.
        self.forget_prepared();
        self.config_error = None;
        self.save_config();
        self.warned.clear();
        self.waiting_logged.clear();
        // A whitelist changed on purpose is no surprise to report.
        self.whitelisted_before.clear();
        if self.condition == Condition::Cleared {
            self.condition = Condition::Starting;
        }
        info!(files = self.config.files.len(), "configuration reloaded");
        self.log_config_warnings();
        // Log rules are tried again.
        self.drop_log.rules_refused = None;
        self.watch_drops().await;
        // Whatever the kernel holds, the next apply replaces our tables whole.
        self.committed = None;
        if host_changed {
            // The new watcher's first connection triggers the pass.
            self.start_watcher();
            return Ok(());
        }
        self.pass(true, None).await;
        Ok(())
    }

    async fn clear(&mut self) -> Result<(), ControlError> {
        let table = self.config.daemon.table.clone();
        let cleared = match self.firewall.call(move |fw| fw.clear(&table)).await {
            Ok(()) => {
                // The host's tables are gone, whatever becomes of the namespaces'.
                self.committed = None;
                self.clear_overlays().await
            }
            Err(e) => Err(e),
        };
        match cleared {
            Ok(()) => {
                self.condition = Condition::Cleared;
                self.committed = None;
                self.enforced = None;
                warn!("rules cleared on request: no isolation until the next reload");
                Ok(())
            }
            Err(e) => {
                error!("clear failed: {e}");
                Err(e.into())
            }
        }
    }

    /// Logs the configuration's warnings (likely mistakes that still load).
    fn log_config_warnings(&self) {
        for w in &self.config.warnings {
            warn!("configuration: {w}");
        }
    }

    fn log_snapshot_news(&mut self, snapshot: &Snapshot) {
        for n in &snapshot.networks {
            let now: BTreeSet<(String, String)> = n
                .whitelisted
                .iter()
                .map(|e| (e.container_id.clone(), e.container_name.clone()))
                .collect();
            if let Some(before) = self.whitelisted_before.get(&n.name) {
                for (id, name) in before.difference(&now) {
                    if n.endpoints.iter().any(|e| &e.container_id == id) {
                        error!(
                            network = %n.name,
                            container_id = %id,
                            container_name = %name,
                            "container {name} was whitelisted and no longer matches the whitelist ({}) although it still runs on the network: it can no longer open connections to the other containers. An ancestor= filter stops matching when the image tag moves to a newer image (docker pull): recreate the container, or whitelist by label",
                            n.policy.whitelist
                        );
                    }
                }
            }
            self.whitelisted_before.insert(n.name.clone(), now);
        }
        self.whitelisted_before
            .retain(|name, _| snapshot.networks.iter().any(|n| &n.name == name));
        for (network, message) in &snapshot.warnings {
            if self.warned.insert((network.clone(), message.clone())) {
                warn!(network = %network, "{message}");
            }
        }
        for network in &snapshot.waiting {
            if self.waiting_logged.insert(network.clone()) {
                info!(network = %network, "configured network does not exist (yet): waiting for it");
            }
        }
        self.waiting_logged.retain(|n| snapshot.waiting.contains(n));
    }

    /// One reconcile. `resync`: compare the kernel with what we committed first, and set
    /// the bridges' attributes again. `event_time`: when the earliest event this pass
    /// answers happened (for latency logs).
    async fn pass(&mut self, resync: bool, event_time: Option<i64>) {
        if self.condition == Condition::Cleared {
            debug!("rules are cleared: not reconciling until a reload");
            return;
        }
        let Some(client) = self.docker.clone() else {
            return;
        };
        if resync && self.drop_log.error.is_some() {
            // The group may be free now.
            self.watch_drops().await;
        }
        let started = Instant::now();
        match client.snapshot(&self.config).await {
            Ok(snapshot) => {
                self.apply_snapshot(snapshot, resync, started, event_time)
                    .await
            }
            Err(e) => {
                warn!("cannot read Docker ({e}); the rules in force stay as they are");
                self.degrade(e.to_string());
            }
        }
    }

    /// How the kernel differs from `ruleset`; empty when it holds exactly that.
    async fn drift(&self, ruleset: &Arc<Ruleset>) -> Result<Vec<String>, KernelError> {
        let ruleset = ruleset.clone();
        self.firewall.call(move |fw| fw.drift(&ruleset)).await
    }

    /// Reads our tables back; when they are not what we committed, forgets it, so that the
    /// next apply replaces them whole.
    async fn check_drift(&mut self) {
        let Some(committed) = self.committed.clone() else {
            return;
        };
        match self.drift(&committed).await {
            Ok(problems) if !problems.is_empty() => {
                warn!(
                    "the kernel no longer holds our ruleset ({}); restoring it",
                    problems.join("; ")
                );
                self.committed = None;
            }
            Ok(_) => {}
            Err(e) => {
                warn!("cannot read our tables back ({e}); replacing them whole");
                self.committed = None;
            }
        }
    }

    /// Everything a pass does once Docker has been read: the loop's decisions, which the
    /// unit tests drive with a fake firewall.
    async fn apply_snapshot(
        &mut self,
        snapshot: Snapshot,
        resync: bool,
        started: Instant,
        event_time: Option<i64>,
    ) {
        self.log_snapshot_news(&snapshot);
        if resync {
            self.check_drift().await;
        }
        self.read_ports(&snapshot).await;
        // The overlay networks first, whatever becomes of the host's tables below.
        self.apply_overlays(&snapshot, resync).await;
        let log_group = self.log_group();
        let reconciled = match reconcile(
            &self.config.daemon.table,
            log_group,
            &snapshot,
            &self.ports,
            self.committed.as_deref(),
        ) {
            Ok(r) => r,
            Err(e) => {
                error!("cannot plan the ruleset ({e}); the rules in force stay as they are");
                self.degrade(e.to_string());
                return;
            }
        };
        for e in &reconciled.rejected {
            if self.warned.insert((String::new(), e.to_string())) {
                error!("{e}: that network is not isolated");
            }
        }
        // A network recreated under the same bridge name gets a new bridge, whose
        // br_netfilter attributes Docker left off: set them as on a resync.
        let ids = |s: &Snapshot| -> Vec<(String, String)> {
            s.networks
                .iter()
                .map(|n| (n.name.clone(), n.id.clone()))
                .collect()
        };
        let recreated = self
            .last_snapshot
            .as_ref()
            .is_some_and(|last| ids(last) != ids(&snapshot));
        let bridges = bridges_to_set(&reconciled, resync || recreated);
        let report = if reconciled.change == Change::None {
            None
        } else {
            let desired = Arc::new(reconciled.ruleset);
            let committed = self.committed.clone();
            let applied = {
                let desired = desired.clone();
                self.firewall
                    .call(move |fw| fw.apply(committed.as_deref(), &desired))
                    .await
            };
            match applied {
                Ok(report) => {
                    self.committed = Some(desired.clone());
                    self.enforced = Some(desired);
                    Some(report)
                }
                Err(e) if log_group.is_some() && e.refused_a_log_rule() => {
                    // Isolation first: a kernel that cannot log (no nfnetlink_log) refuses
                    // every rule that does; the same ruleset without them is tried.
                    self.refuse_log_rules(&e);
                    return Box::pin(self.apply_snapshot(snapshot, resync, started, event_time))
                        .await;
                }
                Err(e) => {
                    error!(
                        "the kernel refused the ruleset ({e}); the previous rules stay in force"
                    );
                    self.degrade(e.to_string());
                    return;
                }
            }
        };
        self.settle();
        self.save_networks(&reconciled.networks);
        self.bind_ports(&reconciled.networks, resync || recreated)
            .await;
        if let Some(bridges) = bridges {
            self.set_bridge_filtering(bridges).await;
        }
        if let Some(old) = self.retired_table.take() {
            // The new table is committed: the old one can go.
            let table = old.clone();
            match self.firewall.call(move |fw| fw.clear(&table)).await {
                Ok(()) => info!("removed the previous table {old}"),
                Err(e) => warn!("could not remove the previous table {old}: {e}"),
            }
            self.sweep_overlay_namespaces(&old).await;
        }
        if let Some(report) = report {
            self.log_apply(&report, &snapshot, started, event_time);
        }
        self.drop_log
            .directory
            .send_replace(Arc::new(Directory::new(&snapshot, &reconciled.networks)));
        self.last_snapshot = Some(snapshot);
    }

    /// Reads the ports of the snapshot's bridges from the kernel, for port security. On
    /// failure the ports last read stay bound (never unbind on an error).
    async fn read_ports(&mut self, snapshot: &Snapshot) {
        let bridges: BTreeSet<String> =
            snapshot.networks.iter().map(|n| n.bridge.clone()).collect();
        match self
            .firewall
            .call(move |fw| fw.bridge_ports(&bridges))
            .await
        {
            Ok(ports) => self.ports = ports,
            Err(e) => warn!("cannot read the bridges' ports ({e}); keeping those read before"),
        }
    }

    /// Programs each enforced bridge's forwarding database for its bound ports, so that no
    /// container can teach the bridge another's MAC (nft/fdb.rs says how): the bridges and
    /// ports new since the last pass, or all of them when `all` (a resync, which also
    /// repairs a port another program set learning on again). What fails is tried again
    /// at the next pass. An audited network's bridge is left learning: audit mode changes
    /// nothing a container sees.
    async fn bind_ports(&mut self, networks: &[plan::ManagedNetwork], all: bool) {
        if all {
            self.bound.clear();
        }
        let desired: BTreeMap<String, BTreeSet<(String, Mac)>> = networks
            .iter()
            .filter(|n| n.mode == crate::policy::Mode::Enforce)
            .map(|n| {
                let ports = n.ports.iter().map(|p| (p.name.clone(), p.mac)).collect();
                (n.bridge.clone(), ports)
            })
            .collect();
        self.bound.retain(|bridge, _| desired.contains_key(bridge));
        for (bridge, ports) in desired {
            let done = self.bound.get(&bridge);
            let new: Vec<(String, Mac)> = ports
                .iter()
                .filter(|p| done.is_none_or(|d| !d.contains(*p)))
                .cloned()
                .collect();
            if done.is_some() && new.is_empty() {
                // Only ports gone (their entries went with them).
                self.bound.insert(bridge, ports);
                continue;
            }
            let name = bridge.clone();
            match self
                .firewall
                .call(move |fw| fw.bind_ports(&name, &new))
                .await
            {
                Ok(()) => {
                    self.bound.insert(bridge, ports);
                }
                Err(e) => {
                    let detail = format!(
                        "cannot program the bridge's forwarding database ({e}): a container \
                         could teach it another container's MAC"
                    );
                    if self.warned.insert((bridge.clone(), detail.clone())) {
                        warn!(bridge = %bridge, "{detail}");
                    }
                }
            }
        }
    }

    async fn set_bridge_filtering(&mut self, bridges: BTreeSet<String>) {
        self.bridges = self
            .firewall
            .call(move |fw| Ok(fw.bridge_filtering(&bridges)))
            .await
            .unwrap_or_default();
        for b in self.bridges.iter().filter(|b| !b.stateful) {
            if self.warned.insert((b.bridge.clone(), b.detail.clone())) {
                warn!(bridge = %b.bridge, "{}", b.detail);
            }
        }
    }

    fn log_apply(
        &mut self,
        report: &ApplyReport,
        snapshot: &Snapshot,
        started: Instant,
        event_time: Option<i64>,
    ) {
        let elapsed_ms = started.elapsed().as_secs_f64() * 1e3;
        self.apply_stats.record(report.kind, elapsed_ms / 1e3);
        self.last_apply = Some(ApplyStatus {
            at: unix_now(),
            kind: report.kind,
            messages: report.messages,
            duration_ms: elapsed_ms,
        });
        let latency = event_time
            .map(|t| format!(", {:.1} ms after the event", (now_nanos() - t) as f64 / 1e6))
            .unwrap_or_default();
        info!(
            "ruleset applied ({:?}, {} messages, +{} -{} elements) in {elapsed_ms:.1} ms{latency}",
            report.kind, report.messages, report.added, report.removed
        );
        for net in snapshot.networks.iter().filter(|n| n.overlay.is_none()) {
            let names: Vec<&str> = net
                .whitelisted
                .iter()
                .map(|e| e.container_name.as_str())
                .collect();
            info!(
                network = %net.name,
                bridge = %net.bridge,
                "isolated: {} subnets, whitelisted: [{}]",
                net.subnets.len(),
                names.join(", ")
            );
            for e in &net.whitelisted {
                debug!(
                    network = %net.name,
                    container_id = %e.container_id,
                    container_name = %e.container_name,
                    "whitelisted at {:?}",
                    e.addrs
                );
            }
        }
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    //! The loop's decisions, against a fake firewall: no root, no Docker.

    use super::reconcile::tests::network;
    use super::*;
    use crate::firewall::{BatchKind, Fake};
    use crate::plan::Family;

    fn daemon(fake: &Fake) -> Daemon {
        Daemon::new(
            PathBuf::from("/nonexistent"),
            Config::default(),
            Worker::spawn(fake.clone()),
        )
    }

    fn snapshot(proxy: Option<&str>) -> Snapshot {
        Snapshot {
            networks: vec![network("web", "br-web", proxy)],
            ..Snapshot::default()
        }
    }

    async fn pass(d: &mut Daemon, snapshot: Snapshot, resync: bool) {
        d.apply_snapshot(snapshot, resync, Instant::now(), None)
            .await;
    }

    #[tokio::test]
    async fn first_pass_applies_whole_and_sets_the_bridges() {
        let fake = Fake::new();
        let mut d = daemon(&fake);
        pass(&mut d, snapshot(Some("10.1.0.2")), true).await;
        let k = fake.kernel();
        assert_eq!(k.applies, [BatchKind::Full]);
        assert_eq!(k.bridge_calls, [BTreeSet::from(["br-web".to_owned()])]);
        assert!(k.installed.is_some());
        assert_eq!(d.condition, Condition::Active);
        assert_eq!(d.last_apply.as_ref().unwrap().kind, BatchKind::Full);
    }

    #[tokio::test]
    async fn an_unchanged_snapshot_touches_nothing_and_a_whitelist_change_is_elements_only() {
        let fake = Fake::new();
        let mut d = daemon(&fake);
        pass(&mut d, snapshot(Some("10.1.0.2")), true).await;
        pass(&mut d, snapshot(Some("10.1.0.2")), false).await;
        pass(&mut d, snapshot(Some("10.1.0.3")), false).await;
        let k = fake.kernel();
        assert_eq!(k.applies, [BatchKind::Full, BatchKind::Elements]);
        // The bridges did not change: their attributes were set once.
        assert_eq!(k.bridge_calls.len(), 1);
    }

    #[tokio::test]
    async fn bound_ports_are_programmed_once_new_ones_as_they_come_and_all_on_a_resync() {
        use crate::firewall::PortLink;
        let fake = Fake::new();
        let mut d = daemon(&fake);
        let mut s = snapshot(Some("10.1.0.2"));
        s.networks[0].endpoints = s.networks[0].whitelisted.clone();
        let link = |name: &str, last| PortLink {
            name: name.into(),
            peer_mac: [2, 0, 0, 0, 0, last],
        };
        fake.kernel().ports = BTreeMap::from([(
            "br-web".to_owned(),
            BridgePorts {
                mac: Some([2, 0, 0, 0, 0, 1]),
                // A port of no known endpoint is not bound (nor programmed).
                ports: vec![link("veth-proxy", 2), link("veth-stray", 9)],
            },
        )]);
        pass(&mut d, s.clone(), true).await;
        pass(&mut d, s.clone(), false).await;
        assert_eq!(fake.kernel().bind_calls, [("br-web".to_owned(), 1)]);
        // A backend's port appears: only it is programmed.
        s.networks[0].endpoints.push(crate::docker::Endpoint {
            container_id: "b1".into(),
            container_name: "backend".into(),
            addrs: vec!["10.1.0.3".parse().unwrap()],
            mac: Some([2, 0, 0, 0, 0, 3]),
        });
        fake.kernel()
            .ports
            .get_mut("br-web")
            .unwrap()
            .ports
            .push(link("veth-b1", 3));
        pass(&mut d, s.clone(), false).await;
        // A resync programs everything again (another program may have undone it).
        pass(&mut d, s.clone(), true).await;
        let k = fake.kernel();
        assert_eq!(
            k.bind_calls,
            [
                ("br-web".to_owned(), 1),
                ("br-web".to_owned(), 1),
                ("br-web".to_owned(), 2)
            ]
        );
        assert_eq!(
            k.bound["br-web"],
            BTreeMap::from([
                ("veth-b1".to_owned(), [2, 0, 0, 0, 0, 3]),
                ("veth-proxy".to_owned(), [2, 0, 0, 0, 0, 2]),
            ])
        );
    }

    #[tokio::test]
    async fn a_resync_repairs_drift_with_a_full_batch_and_sets_the_bridges_again() {
        let fake = Fake::new();
        let mut d = daemon(&fake);
        pass(&mut d, snapshot(Some("10.1.0.2")), true).await;
        // Someone runs `nft flush ruleset`.
        fake.kernel().installed = None;
        // An event-driven pass does not read the kernel back: nothing to do.
        pass(&mut d, snapshot(Some("10.1.0.2")), false).await;
        assert_eq!(fake.kernel().applies.len(), 1);
        pass(&mut d, snapshot(Some("10.1.0.2")), true).await;
        let k = fake.kernel();
        assert_eq!(k.applies, [BatchKind::Full, BatchKind::Full]);
        assert!(k.installed.is_some());
        assert_eq!(k.bridge_calls.len(), 2);
    }

    #[tokio::test]
    async fn a_refused_batch_keeps_the_previous_rules_and_degrades() {
        let fake = Fake::new();
        let mut d = daemon(&fake);
        pass(&mut d, snapshot(Some("10.1.0.2")), true).await;
        let before = fake.kernel().installed.clone();
        fake.kernel().refuse_next_apply = Some("ENOMEM".into());
        pass(&mut d, snapshot(Some("10.1.0.3")), false).await;
        assert_eq!(fake.kernel().installed, before);
        assert!(matches!(d.condition, Condition::Degraded(ref why) if why.contains("ENOMEM")));
        assert_eq!(d.build_status().state, State::Degraded);
        // The next pass tries again, against what is still committed: elements only.
        pass(&mut d, snapshot(Some("10.1.0.3")), false).await;
        assert_eq!(d.condition, Condition::Active);
        assert_eq!(fake.kernel().applies.last(), Some(&BatchKind::Elements));
    }

    #[tokio::test]
    async fn a_kernel_that_cannot_log_still_gets_the_isolation_without_log_rules() {
        let fake = Fake::new();
        fake.kernel().refuse_log_rules = true;
        let mut d = daemon(&fake);
        pass(&mut d, snapshot(Some("10.1.0.2")), true).await;
        assert_eq!(d.condition, Condition::Active);
        let installed = fake.kernel().installed.clone().expect("isolated");
        assert!(!installed.to_string().contains("log prefix"), "{installed}");
        assert!(
            installed.to_string().contains("counter drop"),
            "{installed}"
        );
        let status = d.build_status();
        assert!(
            status
                .drop_log
                .error
                .as_deref()
                .is_some_and(|e| e.contains("refused rules that log")),
            "{:?}",
            status.drop_log
        );
        // Later passes do not try the log rules again (until a reload).
        let applies = fake.kernel().applies.len();
        pass(&mut d, snapshot(Some("10.1.0.3")), false).await;
        assert_eq!(fake.kernel().applies.len(), applies + 1);
        assert_eq!(fake.kernel().applies.last(), Some(&BatchKind::Elements));
    }

    #[tokio::test]
    async fn clear_removes_the_rules_and_passes_wait_for_a_reload() {
        let fake = Fake::new();
        let mut d = daemon(&fake);
        pass(&mut d, snapshot(Some("10.1.0.2")), true).await;
        let (reply, answer) = oneshot::channel();
        d.handle(Msg::Clear(Some(reply))).await;
        assert!(answer.await.unwrap().is_ok());
        assert!(fake.kernel().installed.is_none());
        assert_eq!(d.build_status().state, State::Cleared);
        // Docker events while cleared change nothing.
        d.docker = None;
        d.pass(true, None).await;
        assert_eq!(fake.kernel().applies.len(), 1);
        // A reload of a missing configuration directory is refused, with the reason.
        let (reply, answer) = oneshot::channel();
        d.handle(Msg::Reload(Some(reply))).await;
        assert!(matches!(
            answer.await.unwrap(),
            Err(ControlError::ConfigRejected(_))
        ));
        assert_eq!(d.build_status().state, State::Cleared);
    }

    #[tokio::test]
    async fn an_overlay_network_is_isolated_in_its_namespace_again_at_once_and_cleared() {
        use crate::docker::{NetworkSnapshot, Overlay};
        use crate::firewall::FakeNamespace;
        let fake = Fake::new();
        let ns = PathBuf::from("/run/docker/netns/1-ovl0000000");
        fake.kernel().stateful = true;
        fake.kernel().namespaces.insert(
            ns.clone(),
            FakeNamespace {
                bridge: ("br0".into(), "vxlan0".into()),
                ..FakeNamespace::default()
            },
        );
        let mut d = daemon(&fake);
        // The bridge network web, and the overlay network ovl in the namespace at `netns`.
        let with_overlay = |netns: &PathBuf| {
            let mut snap = snapshot(Some("10.1.0.2"));
            snap.networks.push(NetworkSnapshot {
                overlay: Some(Overlay {
                    netns: Some(netns.clone()),
                    problem: None,
                }),
                ..network("ovl", "", Some("10.1.0.9"))
            });
            snap
        };
        pass(&mut d, with_overlay(&ns), true).await;
        let in_ns = |fake: &Fake| fake.kernel().namespaces[&ns].installed.clone();
        let planned = in_ns(&fake).expect("our table in the overlay's namespace");
        let text = planned.to_string();
        assert!(text.contains("loc4_ovl") && text.contains(r#"iifname "vxlan0" return"#));
        assert!(!text.contains("fwd_web"), "{text}");
        // The host's tables: the bridge network, and the VXLAN port closed to containers.
        let host = fake.kernel().installed.clone().unwrap().to_string();
        assert!(
            host.contains("fwd_web") && !host.contains("fwd_ovl"),
            "{host}"
        );
        assert!(
            host.contains(r#"iifname "docker_gwbridge" udp dport 4789 counter drop"#),
            "{host}"
        );
        let status = d.build_status();
        let ovl = status.networks.iter().find(|n| n.name == "ovl").unwrap();
        assert_eq!(
            ovl.namespace.as_deref(),
            Some("/run/docker/netns/1-ovl0000000")
        );
        assert_eq!(
            (ovl.bridge.as_str(), ovl.not_isolated.as_ref()),
            ("br0", None)
        );

        // Docker builds the namespace again (its restart): the rules are back the moment it
        // is mounted, Docker out of reach.
        fake.kernel().namespaces.get_mut(&ns).unwrap().installed = None;
        d.docker = None;
        d.handle(Msg::NamespacesMounted(vec![ns.clone()])).await;
        assert_eq!(in_ns(&fake), Some(planned));

        // A namespace that is not there: said in the status, nothing else touched.
        let gone = PathBuf::from("/run/docker/netns/2-ovl0000000");
        pass(&mut d, with_overlay(&gone), false).await;
        let status = d.build_status();
        let ovl = status.networks.iter().find(|n| n.name == "ovl").unwrap();
        assert!(
            ovl.not_isolated
                .as_deref()
                .is_some_and(|w| w.contains("2-ovl0000000")),
            "{ovl:?}"
        );

        // Clear takes our tables out of every namespace, and the host's.
        let (reply, answer) = oneshot::channel();
        d.handle(Msg::Clear(Some(reply))).await;
        assert!(answer.await.unwrap().is_ok());
        assert!(fake.kernel().installed.is_none());
        assert!(in_ns(&fake).is_none());
    }

    #[tokio::test]
    async fn status_reads_the_drop_counters_of_each_network() {
        let fake = Fake::new();
        let mut d = daemon(&fake);
        pass(&mut d, snapshot(Some("10.1.0.2")), true).await;
        fake.kernel().counters = [
            ((Family::Inet, "deny_isolation_web".to_owned()), 5),
            ((Family::Inet, "deny_host_web".to_owned()), 2),
            ((Family::Bridge, "deny_isolation_web".to_owned()), 1),
            ((Family::Inet, "forward".to_owned()), 100),
        ]
        .into();
        fake.kernel().stateful = true;
        let (reply, answer) = oneshot::channel();
        d.handle(Msg::Status(reply)).await;
        let status = answer.await.unwrap();
        assert_eq!(status.state, State::Active);
        assert_eq!(status.networks[0].name, "web");
        assert_eq!(status.networks[0].dropped_packets, 8);
        assert_eq!(status.networks[0].whitelisted[0].addresses, ["10.1.0.2"]);
    }

    /// Reports a change through the watch the daemon started, as the kernel would.
    fn report(fake: &Fake, change: TableChange) {
        let mut kernel = fake.kernel();
        let watch = kernel
            .watch
            .as_mut()
            .expect("the daemon watches the ruleset");
        assert!(watch(change));
    }

    /// Serves the messages the watch sent, as the loop would.
    async fn serve_queued(d: &mut Daemon) {
        while let Ok(msg) = d.rx.try_recv() {
            d.handle(msg).await;
        }
    }

    #[tokio::test]
    async fn tampering_by_another_process_is_repaired_from_the_record_without_docker() {
        let fake = Fake::new();
        let mut d = daemon(&fake);
        d.watch_ruleset().await;
        pass(&mut d, snapshot(Some("10.1.0.2")), true).await;
        let committed = fake.kernel().installed.clone();
        // `nft flush ruleset` by someone else; Docker is not even connected.
        assert!(d.docker.is_none());
        fake.kernel().installed = None;
        report(
            &fake,
            TableChange::Foreign(BTreeSet::from(["trafficjam".into()])),
        );
        serve_queued(&mut d).await;
        let k = fake.kernel();
        assert_eq!(k.installed, committed);
        assert_eq!(k.applies, [BatchKind::Full, BatchKind::Full]);
    }

    #[tokio::test]
    async fn a_process_that_keeps_rewriting_our_tables_is_fought_at_a_bounded_rate() {
        let fake = Fake::new();
        let mut d = daemon(&fake);
        d.watch_ruleset().await;
        pass(&mut d, snapshot(Some("10.1.0.2")), true).await;
        for _ in 0..3 * REPAIR_BURST {
            fake.kernel().installed = None;
            report(
                &fake,
                TableChange::Foreign(BTreeSet::from(["trafficjam".into()])),
            );
            serve_queued(&mut d).await;
        }
        // The first pass, then REPAIR_BURST repairs: the rest waits for the window's end.
        assert_eq!(fake.kernel().applies.len(), 1 + REPAIR_BURST);
        assert!(
            matches!(d.condition, Condition::Degraded(ref why) if why.contains("keeps changing")),
            "{:?}",
            d.condition
        );
        assert!(d.repair_retry.is_some(), "no retry scheduled");
    }

    #[tokio::test]
    async fn changes_to_other_tables_or_to_nothing_of_ours_cause_no_apply() {
        let fake = Fake::new();
        let mut d = daemon(&fake);
        d.watch_ruleset().await;
        pass(&mut d, snapshot(Some("10.1.0.2")), true).await;
        // Someone else's table changed.
        fake.kernel().installed = None;
        report(
            &fake,
            TableChange::Foreign(BTreeSet::from(["filter".into()])),
        );
        serve_queued(&mut d).await;
        assert_eq!(fake.kernel().applies.len(), 1);
        // Our table named, but it holds what we committed (a no-op change): nothing to do.
        pass(&mut d, snapshot(Some("10.1.0.2")), true).await;
        let applies = fake.kernel().applies.len();
        report(&fake, TableChange::Overrun);
        serve_queued(&mut d).await;
        assert_eq!(fake.kernel().applies.len(), applies);
        // While cleared on request, tampering is not "repaired".
        d.handle(Msg::Clear(None)).await;
        report(&fake, TableChange::Overrun);
        serve_queued(&mut d).await;
        assert!(fake.kernel().installed.is_none());
    }

    fn state_dir(name: &str) -> StateDir {
        let dir = std::env::temp_dir().join(format!("tj-daemon-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        StateDir::new(dir)
    }

    #[tokio::test]
    async fn after_a_reboot_the_saved_networks_are_isolated_with_nobody_whitelisted() {
        let state = state_dir("reboot");
        // A first run isolates web, with the proxy whitelisted, and saves it.
        let fake = Fake::new();
        let mut d = daemon(&fake).with_state(state.clone(), None);
        d.restore().await;
        pass(&mut d, snapshot(Some("10.1.0.2")), true).await;
        assert_eq!(state.load().unwrap().unwrap().networks.len(), 1);

        // Reboot: the kernel holds nothing; Docker does not answer yet.
        let fake = Fake::new();
        let mut d = daemon(&fake).with_state(state.clone(), None);
        d.restore().await;
        {
            let k = fake.kernel();
            let installed = k
                .installed
                .as_ref()
                .expect("isolated before Docker answers");
            assert_eq!(installed.networks[0].name, "web");
            let whitelisted: usize = installed
                .tables
                .iter()
                .flat_map(|t| &t.sets)
                .map(|s| s.elements.len())
                .sum();
            assert_eq!(whitelisted, 0, "fail closed: nobody whitelisted");
        }
        // Docker answers: the proxy is whitelisted with an element update.
        pass(&mut d, snapshot(Some("10.1.0.2")), true).await;
        assert_eq!(
            fake.kernel().applies,
            [BatchKind::Full, BatchKind::Elements]
        );

        // A restart (our tables still in the kernel) leaves them as they are.
        let mut d = daemon(&fake).with_state(state.clone(), None);
        d.restore().await;
        assert_eq!(fake.kernel().applies.len(), 2);
        let _ = std::fs::remove_dir_all(state.path());
    }

    #[tokio::test]
    async fn a_configuration_broken_at_start_keeps_the_service_degraded_until_a_reload() {
        let fake = Fake::new();
        let error =
            Config::from_sources(&[("/etc/trafficjam/x.toml".into(), "[bad".into())]).unwrap_err();
        let mut d = daemon(&fake).with_state(state_dir("broken"), Some(error));
        pass(&mut d, snapshot(Some("10.1.0.2")), true).await;
        let status = d.build_status();
        assert_eq!(status.state, State::Degraded);
        let reason = status.reason.unwrap();
        assert!(reason.contains("/etc/trafficjam/x.toml:1:"), "{reason}");
        assert!(reason.contains("last good"), "{reason}");
        assert!(
            fake.kernel().installed.is_some(),
            "the last good one is enforced"
        );
    }

    #[tokio::test]
    async fn a_renamed_table_is_removed_only_after_the_new_one_is_in_force() {
        let fake = Fake::new();
        let mut d = daemon(&fake);
        pass(&mut d, snapshot(Some("10.1.0.2")), true).await;
        d.retired_table = Some("old_table".into());
        fake.kernel().refuse_next_apply = Some("no".into());
        d.committed = None;
        pass(&mut d, snapshot(Some("10.1.0.2")), false).await;
        assert!(
            fake.kernel().cleared.is_empty(),
            "removed before the new table"
        );
        pass(&mut d, snapshot(Some("10.1.0.2")), false).await;
        assert_eq!(fake.kernel().cleared, ["old_table"]);
    }
}
