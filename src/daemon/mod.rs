//! The daemon loop: one task owns all state; Docker events, the resync timer, signals and
//! D-Bus calls are messages to it ([`Msg`]).
//!
//! Each pass: snapshot Docker → [`reconcile()`] (pure: what the kernel must hold and how to
//! get there) → the [`Worker`] applies it (only when something changed, or the kernel
//! drifted). Fail safe: when Docker cannot be read, or a config reload is refused, or a
//! batch is refused, the rules in the kernel stay as they are.

mod inputs;
mod overlay;
mod pass;
mod repair;
mod report;
mod restore;
pub(crate) use overlay::unplaced_reason;
pub(crate) mod reconcile;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{debug, error, info, warn};

pub(crate) use inputs::forward_signals;
use inputs::{now_nanos, resync_timer, watch_docker, watch_namespaces, watchdog_timer};
use reconcile::{bridges_to_set, reconcile};

use crate::config::{Config, ConfigError};
use crate::docker::{DockerClient, Snapshot};
use crate::droplog::{Directory, DropLog, Notices};
use crate::firewall::{ApplyReport, BridgeFiltering, TableChange, Worker};
use crate::firewall::{BridgePorts, KernelError};
use crate::metrics::{self, ApplyStats};
use crate::persist::{IsolatedNetwork, Saved, SavedFile, StateDir};
use crate::plan::{self, Change, Counters, Mac, Ruleset};
use crate::status::{ApplyStatus, DropLogStatus, NetworkStatus, State, Status};
use crate::sys::notify;

/// Why a reload or a clear asked of the loop did not happen.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ControlError {
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
pub(crate) type Reply = oneshot::Sender<Result<(), ControlError>>;

#[derive(Debug)]
pub(crate) enum Msg {
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
/// Requests (D-Bus calls, signals) queued at most: beyond, a D-Bus call is refused at once
/// (`LimitsExceeded`), so a flood of `Status()` calls from any local user holds this many
/// messages, not more.
pub(crate) const REQUESTS: usize = 64;
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

/// The daemon's state, owned by its one task.
pub(crate) struct Daemon {
    config_dir: PathBuf,
    config: Config,
    /// The configuration on disk that failed to load at start: the daemon runs on the
    /// last good one, degraded, until a reload succeeds.
    config_error: Option<ConfigError>,
    firewall: Worker,
    docker: Option<DockerClient>,
    last_snapshot: Option<Snapshot>,
    condition: Condition,
    inbox: Inbox,
    kernel: KernelRecord,
    overlays: overlay::Overlays,
    report: Reporting,
    persist: Persistence,
    /// Names for the drops the kernel logs, and the watch on its NFLOG group.
    drop_log: DropLog,
}

/// The loop's messages, and the tasks that send them. Two queues: events come from
/// Docker, the kernel and the timers, whose rate no local user controls, and are
/// coalesced; requests come from D-Bus and signals, and `Status()` and `Metrics()` are
/// open to every local user, so their queue is bounded ([`REQUESTS`]).
#[derive(Debug)]
struct Inbox {
    events_tx: mpsc::UnboundedSender<Msg>,
    events: mpsc::UnboundedReceiver<Msg>,
    requests_tx: mpsc::Sender<Msg>,
    requests: mpsc::Receiver<Msg>,
    /// Events taken out of the queue while coalescing; served first.
    pending: VecDeque<Msg>,
    /// Docker's event watch.
    watcher: Option<JoinHandle<()>>,
    /// The resync timer.
    resync: Option<JoinHandle<()>>,
}

/// What the host's kernel holds and must hold, as far as the loop knows.
#[derive(Debug, Default)]
struct KernelRecord {
    /// What the kernel was last given, while it is believed to hold it: the base of
    /// element updates and drift checks. `None` makes the next apply a full one.
    committed: Option<Arc<Ruleset>>,
    /// What must be in force: the last ruleset applied (or restored at start). Repairs
    /// restore it, even after a failed apply or repair forgot `committed`; only a clear
    /// drops it.
    enforced: Option<Arc<Ruleset>>,
    /// A table name a reload replaced: removed after the first apply under the new name.
    retired_table: Option<String>,
    /// Recent repairs, to bound how often we fight another process over our tables.
    repairs: VecDeque<Instant>,
    /// A repair retry is scheduled.
    repair_retry: Option<JoinHandle<()>>,
    /// Drop counters last read, and when: `Status()` is open to everyone, so a flood of
    /// calls reads the kernel at most once a second.
    counters: Option<(Instant, Counters)>,
    /// br_netfilter on the managed bridges, as last set.
    bridges: Vec<BridgeFiltering>,
    /// The managed bridges' ports, as last read from the kernel.
    ports: BTreeMap<String, BridgePorts>,
    /// The bridges whose forwarding database is programmed, with the ports bound there
    /// (their container's MAC static, learning off): see `bind_ports`.
    bound: BTreeMap<String, BTreeSet<(String, Mac)>>,
}

/// What the loop tells the world: the published status, the figures behind the metrics,
/// and what it already logged (so that a resync does not repeat it).
#[derive(Debug)]
struct Reporting {
    status_tx: watch::Sender<Status>,
    /// READY=1 goes out once, at start.
    ready_sent: bool,
    last_apply: Option<ApplyStatus>,
    last_error: Option<String>,
    /// Applies and errors so far, for the metrics.
    apply_stats: ApplyStats,
    /// Warnings already logged.
    warned: BTreeSet<(String, String)>,
    /// The whitelisted containers of each network at the last pass (id, name): one that
    /// is still on the network but no longer matches has lost its access, loudly.
    whitelisted_before: BTreeMap<String, BTreeSet<(String, String)>>,
    waiting_logged: BTreeSet<String>,
    docker_lost_logged: bool,
}

/// The state directory: where the isolated networks and the last good configuration are
/// kept across reboots.
#[derive(Debug, Default)]
struct Persistence {
    /// None in unit tests.
    state: Option<StateDir>,
    /// What the state directory holds, as last written.
    saved: Saved,
    /// A write failed (logged once).
    save_failed: bool,
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
    pub(crate) fn new(config_dir: PathBuf, config: Config, firewall: Worker) -> Daemon {
        let (events_tx, events) = mpsc::unbounded_channel();
        let (requests_tx, requests) = mpsc::channel(REQUESTS);
        Daemon {
            config_dir,
            config,
            config_error: None,
            firewall,
            docker: None,
            last_snapshot: None,
            condition: Condition::Starting,
            inbox: Inbox {
                events_tx,
                events,
                requests_tx,
                requests,
                pending: VecDeque::new(),
                watcher: None,
                resync: None,
            },
            kernel: KernelRecord::default(),
            overlays: overlay::Overlays::default(),
            report: Reporting {
                status_tx: watch::Sender::new(Status::default()),
                ready_sent: false,
                last_apply: None,
                last_error: None,
                apply_stats: ApplyStats::default(),
                warned: BTreeSet::new(),
                whitelisted_before: BTreeMap::new(),
                waiting_logged: BTreeSet::new(),
                docker_lost_logged: false,
            },
            persist: Persistence::default(),
            drop_log: DropLog::default(),
        }
    }

    /// Where each drop line goes as JSON as well (the D-Bus `Dropped` signal).
    pub(crate) fn drop_notices(&self) -> Notices {
        self.drop_log.notices.clone()
    }

    /// Keeps state in `state` (see [`crate::persist`]); `config_error` is the error of the
    /// configuration on disk when the daemon starts on the last good one instead.
    pub(crate) fn with_state(
        mut self,
        state: StateDir,
        config_error: Option<ConfigError>,
    ) -> Daemon {
        self.persist.state = Some(state);
        self.config_error = config_error;
        self
    }

    /// The published status (state, networks), for D-Bus properties.
    pub(crate) fn status(&self) -> watch::Receiver<Status> {
        self.report.status_tx.subscribe()
    }

    /// A handle to send messages to the loop (signals, D-Bus).
    pub(crate) fn sender(&self) -> mpsc::Sender<Msg> {
        self.inbox.requests_tx.clone()
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
        self.report.last_error = Some(why);
        self.report.apply_stats.errors += 1;
        self.report.apply_stats.last_error_at = Some(unix_now());
    }

    fn start_watcher(&mut self) {
        if let Some(w) = self.inbox.watcher.take() {
            w.abort();
        }
        self.docker = None;
        let host = self.config.daemon.docker_host();
        info!(docker_host = %host, "watching Docker");
        self.inbox.watcher = Some(tokio::spawn(watch_docker(
            host,
            self.inbox.events_tx.clone(),
        )));
    }

    fn start_resync_timer(&mut self) {
        if let Some(t) = self.inbox.resync.take() {
            t.abort();
        }
        let timer = resync_timer(
            self.config.daemon.resync_interval,
            self.inbox.events_tx.clone(),
        );
        self.inbox.resync = Some(tokio::spawn(timer));
    }

    /// The next message: one set aside while coalescing first, then the queues.
    async fn next_message(&mut self) -> Option<Msg> {
        match self.inbox.pending.pop_front() {
            Some(m) => Some(m),
            // Events first: a request is served once the events queued before it are (a
            // reload never overtakes news of the Docker it replaces); events are few and
            // coalesced, so requests are not starved.
            None => tokio::select! {
                biased;
                Some(m) = self.inbox.events.recv() => Some(m),
                Some(m) = self.inbox.requests.recv() => Some(m),
                else => None,
            },
        }
    }

    /// Runs until a `Shutdown` message. The rules stay in the kernel on exit.
    pub(crate) async fn run(mut self) {
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
            self.inbox.events_tx.clone(),
            self.firewall.clone(),
            self.overlays.prepared.clone(),
        ) {
            warn!(
                "cannot watch the mount table for overlay networks' namespaces ({e}): they are isolated when Docker reports their containers"
            );
        }
        self.start_watcher();
        self.start_resync_timer();
        let watchdog = notify::watchdog_period()
            .map(|period| tokio::spawn(watchdog_timer(period, self.inbox.events_tx.clone())));
        self.publish();
        while let Some(msg) = self.next_message().await {
            if self.handle(msg).await.is_break() {
                break;
            }
        }
        notify::stopping();
        for task in [
            self.inbox.resync.take(),
            watchdog,
            self.inbox.watcher.take(),
        ]
        .into_iter()
        .flatten()
        {
            task.abort();
        }
        info!("stopping; the rules in force stay in the kernel");
    }

    /// Serves one message; `Break` when it is time to stop.
    async fn handle(&mut self, msg: Msg) -> ControlFlow<()> {
        match msg {
            Msg::Shutdown => return ControlFlow::Break(()),
            Msg::DockerConnected(client) => {
                let version = client.version().await.unwrap_or_default();
                info!(docker_host = %client.host, "connected to Docker {version}");
                self.docker = Some(client);
                self.report.docker_lost_logged = false;
                self.pass(true, None).await;
                self.announce_ready();
            }
            Msg::NamespacesMounted(paths) => {
                self.namespaces_mounted(paths).await;
                self.publish();
            }
            Msg::DockerLost(reason) => {
                self.docker = None;
                if !self.report.docker_lost_logged {
                    warn!(
                        docker_host = %self.config.daemon.docker_host(),
                        "Docker is unreachable ({reason}); the rules in force stay as they are, retrying"
                    );
                    self.report.docker_lost_logged = true;
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
                while let Ok(next) = self.inbox.events.try_recv() {
                    match next {
                        Msg::Changed(t) => {
                            earliest = match (earliest, t) {
                                (Some(a), Some(b)) => Some(a.min(b)),
                                (a, b) => a.or(b),
                            }
                        }
                        other => self.inbox.pending.push_back(other),
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
                notify::ready(&self.report.status_tx.borrow().summary());
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
                while let Ok(next) = self.inbox.events.try_recv() {
                    match next {
                        Msg::TablesChanged(c) => ours |= self.touches_our_table(&c),
                        other => self.inbox.pending.push_back(other),
                    }
                }
                if ours {
                    self.repair().await;
                    self.publish();
                }
            }
        }
        ControlFlow::Continue(())
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
            self.kernel.retired_table = Some(old_table);
        }
        self.config = new;
        // The mount watch acts on the next pass's view, not on the old configuration's.
        self.forget_prepared();
        self.config_error = None;
        self.save_config();
        self.report.warned.clear();
        self.report.waiting_logged.clear();
        // A whitelist changed on purpose is no surprise to report.
        self.report.whitelisted_before.clear();
        if self.condition == Condition::Cleared {
            self.condition = Condition::Starting;
        }
        info!(files = self.config.files.len(), "configuration reloaded");
        self.log_config_warnings();
        // Log rules are tried again.
        self.drop_log.rules_refused = None;
        self.watch_drops().await;
        // Whatever the kernel holds, the next apply replaces our tables whole.
        self.kernel.committed = None;
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
                self.kernel.committed = None;
                self.clear_overlays().await
            }
            Err(e) => Err(e),
        };
        match cleared {
            Ok(()) => {
                self.condition = Condition::Cleared;
                self.kernel.committed = None;
                self.kernel.enforced = None;
                warn!("rules cleared on request: no isolation until the next reload");
                Ok(())
            }
            Err(e) => {
                error!("clear failed: {e}");
                Err(e.into())
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
mod tests;
