//! The daemon loop: one task owns all state; Docker events, the resync timer, signals and
//! (later) D-Bus calls are messages to it.
//!
//! Each pass: snapshot Docker → plan → apply (only when the desired ruleset changed, or the
//! kernel drifted from it). Fail safe: when Docker cannot be read, or a config reload is
//! refused, or a batch is refused, the rules in the kernel stay as they are.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{debug, error, info, warn};

use crate::config::{Config, PolicySource};
use crate::docker::{self, DockerClient, Snapshot};
use crate::nft::{self, ApplyKind, ApplyReport, InstalledRuleset, Nft};
use crate::notify;
use crate::plan::{Family, plan};

/// Reconnection backoff when Docker is unreachable.
const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// A reply channel for requests that want to know how they ended.
pub type Reply = oneshot::Sender<Result<(), String>>;

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
    /// Time to tell systemd's watchdog the loop is alive.
    Watchdog,
    Shutdown,
}

/// Where the daemon stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    Starting,
    Active,
    /// Rules removed on request; no enforcement until the next reload.
    Cleared,
    /// Rules kept as they were; something is wrong.
    Degraded(String),
}

/// What `Status()` answers (JSON), published by the loop after every change.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// `starting`, `active`, `cleared` or `degraded`.
    pub state: String,
    /// Why the state is not `active`.
    pub reason: Option<String>,
    pub docker_host: String,
    pub table: String,
    pub networks: Vec<NetworkStatus>,
    /// Configured networks that do not exist (yet).
    pub waiting: Vec<String>,
    pub last_apply: Option<ApplyStatus>,
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NetworkStatus {
    pub name: String,
    pub bridge: String,
    pub subnets: Vec<String>,
    pub allow_host_traffic: bool,
    /// `labels`, or the file of its `[network.NAME]` section.
    pub source: String,
    /// Whether br_netfilter gives the bridge stateful filtering (None before an apply).
    pub stateful: Option<bool>,
    pub whitelisted: Vec<ContainerStatus>,
    /// Packets dropped by this network's rules (read from the kernel's counters).
    pub dropped_packets: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ContainerStatus {
    pub id: String,
    pub name: String,
    pub addresses: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ApplyStatus {
    /// Seconds since the Unix epoch.
    pub at: u64,
    /// `full` or `elements`.
    pub kind: String,
    pub messages: usize,
    pub duration_ms: f64,
}

impl Status {
    pub fn network_names(&self) -> Vec<String> {
        self.networks.iter().map(|n| n.name.clone()).collect()
    }

    /// Fills `dropped_packets` from our tables' counters.
    pub fn add_drop_counters(&mut self, installed: &InstalledRuleset) {
        for net in &mut self.networks {
            let chains = [
                (Family::Inet, format!("fwd_{}", net.name)),
                (Family::Inet, format!("host_{}", net.name)),
                (Family::Bridge, format!("iso_{}", net.name)),
            ];
            net.dropped_packets = chains
                .iter()
                .filter_map(|(family, chain)| {
                    installed.tables.get(family)?.dropped_per_chain.get(chain)
                })
                .sum();
        }
    }

    /// The one-line summary systemd shows (STATUS=).
    pub fn summary(&self) -> String {
        match self.state.as_str() {
            "active" => {
                let containers: usize = self.networks.iter().map(|n| n.whitelisted.len()).sum();
                let stateless: Vec<&str> = self
                    .networks
                    .iter()
                    .filter(|n| n.stateful == Some(false))
                    .map(|n| n.bridge.as_str())
                    .collect();
                let mut line = format!(
                    "{} network{} isolated, {containers} whitelisted container{}",
                    self.networks.len(),
                    if self.networks.len() == 1 { "" } else { "s" },
                    if containers == 1 { "" } else { "s" },
                );
                if !stateless.is_empty() {
                    line.push_str(&format!(
                        "; stateless only on {} (load br_netfilter)",
                        stateless.join(", ")
                    ));
                }
                line
            }
            "cleared" => "rules cleared: run systemctl reload trafficjam to re-apply".into(),
            "starting" => "starting".into(),
            _ => format!(
                "{}; the rules in force are kept",
                self.reason.as_deref().unwrap_or("degraded")
            ),
        }
    }
}

pub struct Daemon {
    config_dir: PathBuf,
    config: Config,
    nft: Nft,
    docker: Option<DockerClient>,
    state: State,
    tx: mpsc::UnboundedSender<Msg>,
    rx: mpsc::UnboundedReceiver<Msg>,
    watcher: Option<JoinHandle<()>>,
    /// Warnings already logged, so a resync does not repeat them every time.
    warned: BTreeSet<(String, String)>,
    waiting_logged: BTreeSet<String>,
    docker_lost_logged: bool,
    status_tx: watch::Sender<Status>,
    /// A table name a reload replaced: removed after the first apply under the new name.
    retired_table: Option<String>,
    /// READY=1 goes out once, after the first reconcile was attempted.
    ready_sent: bool,
    last_snapshot: Option<Snapshot>,
    last_report: Option<ApplyReport>,
    last_apply: Option<ApplyStatus>,
    last_error: Option<String>,
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon")
            .field("config_dir", &self.config_dir)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

fn now_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

/// Connects, subscribes to events, reports; forever, with backoff.
async fn watch_docker(host: String, tx: mpsc::UnboundedSender<Msg>) {
    let mut backoff = BACKOFF_MIN;
    loop {
        match DockerClient::connect(&host).await {
            Ok(client) => {
                // Events since just before the snapshot the daemon is about to take are
                // replayed, so nothing between the two is missed.
                let since = (now_nanos() / 1_000_000_000 - 1).to_string();
                let mut events = client.events_since(&since);
                if tx.send(Msg::DockerConnected(client)).is_err() {
                    return;
                }
                let connected = Instant::now();
                let reason = loop {
                    match events.next().await {
                        Some(Ok(event)) => {
                            // The stream works: the next loss starts the backoff afresh.
                            backoff = BACKOFF_MIN;
                            if tx.send(Msg::Changed(event.time_nano)).is_err() {
                                return;
                            }
                        }
                        Some(Err(e)) => break e.to_string(),
                        None => break "the event stream ended".to_owned(),
                    }
                };
                if connected.elapsed() > BACKOFF_MAX {
                    backoff = BACKOFF_MIN;
                }
                if tx.send(Msg::DockerLost(reason)).is_err() {
                    return;
                }
            }
            Err(e) => {
                if tx.send(Msg::DockerLost(e.to_string())).is_err() {
                    return;
                }
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

impl Daemon {
    pub fn new(config_dir: PathBuf, config: Config) -> Daemon {
        let (tx, rx) = mpsc::unbounded_channel();
        Daemon {
            config_dir,
            config,
            nft: Nft::default(),
            docker: None,
            state: State::Starting,
            tx,
            rx,
            watcher: None,
            warned: BTreeSet::new(),
            waiting_logged: BTreeSet::new(),
            docker_lost_logged: false,
            status_tx: watch::Sender::new(Status::default()),
            retired_table: None,
            ready_sent: false,
            last_snapshot: None,
            last_report: None,
            last_apply: None,
            last_error: None,
        }
    }

    /// The published status, for D-Bus.
    pub fn status(&self) -> watch::Receiver<Status> {
        self.status_tx.subscribe()
    }

    fn build_status(&self) -> Status {
        let (state, reason) = match &self.state {
            State::Starting => ("starting", None),
            State::Active => ("active", None),
            State::Cleared => ("cleared", Some("cleared on request".to_owned())),
            State::Degraded(why) => ("degraded", Some(why.clone())),
        };
        let stateful = |bridge: &str| {
            self.last_report
                .as_ref()?
                .bridges
                .iter()
                .find(|b| b.bridge == bridge)
                .map(|b| b.stateful)
        };
        let networks = if self.state == State::Cleared {
            Vec::new()
        } else {
            self.last_snapshot
                .iter()
                .flat_map(|s| &s.networks)
                .map(|n| NetworkStatus {
                    name: n.name.clone(),
                    bridge: n.bridge.clone(),
                    subnets: n.subnets.iter().map(|s| s.to_string()).collect(),
                    allow_host_traffic: n.policy.allow_host_traffic,
                    source: match &n.source {
                        PolicySource::Labels => "labels".into(),
                        PolicySource::File(f) => f.display().to_string(),
                    },
                    stateful: stateful(&n.bridge),
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
                })
                .collect()
        };
        Status {
            state: state.into(),
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
        }
    }

    /// Publishes the status (D-Bus, systemd's STATUS=) when it changed.
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

    /// READY=1 after the first reconcile attempt (whatever its outcome).
    fn first_reconcile_attempted(&mut self) {
        self.publish();
        if !self.ready_sent {
            self.ready_sent = true;
            notify::ready(&self.status_tx.borrow().summary());
        }
    }

    /// A handle to send messages to the loop (signals, D-Bus).
    pub fn sender(&self) -> mpsc::UnboundedSender<Msg> {
        self.tx.clone()
    }

    pub fn state(&self) -> &State {
        &self.state
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

    /// Runs until a `Shutdown` message. The rules stay in the kernel on exit.
    pub async fn run(mut self) {
        self.start_watcher();
        let tx = self.tx.clone();
        let mut interval = self.config.daemon.resync_interval;
        let mut resync = tokio::spawn(resync_timer(interval, tx.clone()));
        let watchdog = notify::watchdog_period()
            .map(|period| tokio::spawn(watchdog_timer(period, tx.clone())));
        self.publish();
        // Messages taken out of the channel while coalescing events; served first.
        let mut pending = std::collections::VecDeque::new();
        loop {
            let msg = match pending.pop_front() {
                Some(m) => m,
                None => match self.rx.recv().await {
                    Some(m) => m,
                    None => break,
                },
            };
            match msg {
                Msg::Shutdown => break,
                Msg::DockerConnected(client) => {
                    let version = client.version().await.unwrap_or_default();
                    info!(docker_host = %client.host, "connected to Docker {version}");
                    self.docker = Some(client);
                    self.docker_lost_logged = false;
                    self.pass(true, None).await;
                    self.first_reconcile_attempted();
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
                    if self.state != State::Cleared {
                        self.state = State::Degraded(format!(
                            "waiting for Docker at {}",
                            self.config.daemon.docker_host()
                        ));
                    }
                    self.first_reconcile_attempted();
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
                            other => pending.push_back(other),
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
                    let result = self.reload().await;
                    self.publish();
                    notify::ready(&self.status_tx.borrow().summary());
                    if let Some(reply) = reply {
                        let _ = reply.send(result);
                    }
                    if self.config.daemon.resync_interval != interval {
                        interval = self.config.daemon.resync_interval;
                        resync.abort();
                        resync = tokio::spawn(resync_timer(interval, tx.clone()));
                    }
                }
                Msg::Clear(reply) => {
                    let result = self.clear();
                    self.publish();
                    if let Some(reply) = reply {
                        let _ = reply.send(result);
                    }
                }
            }
        }
        notify::stopping();
        resync.abort();
        if let Some(w) = watchdog {
            w.abort();
        }
        if let Some(w) = self.watcher.take() {
            w.abort();
        }
        info!("stopping; the rules in force stay in the kernel");
    }

    /// Re-reads the configuration. A refused configuration changes nothing.
    async fn reload(&mut self) -> Result<(), String> {
        let new = match Config::load_dir(&self.config_dir) {
            Ok(c) => c,
            Err(e) => {
                error!("reload refused, the previous configuration and rules stay: {e}");
                return Err(e.to_string());
            }
        };
        let old_table = self.config.daemon.table.clone();
        let host_changed = new.daemon.docker_host() != self.config.daemon.docker_host();
        if new.daemon.table != old_table {
            // Removed once the new table is in force, never before (see pass).
            self.retired_table = Some(old_table);
        }
        self.config = new;
        self.warned.clear();
        self.waiting_logged.clear();
        if self.state == State::Cleared {
            self.state = State::Starting;
        }
        info!(files = self.config.files.len(), "configuration reloaded");
        if host_changed {
            // The new watcher's first connection triggers the pass.
            self.start_watcher();
            return Ok(());
        }
        self.nft.forget();
        self.pass(true, None).await;
        Ok(())
    }

    fn clear(&mut self) -> Result<(), String> {
        let table = self.config.daemon.table.clone();
        match self.nft.clear(&table) {
            Ok(()) => {
                self.state = State::Cleared;
                warn!("rules cleared on request: no isolation until the next reload");
                Ok(())
            }
            Err(e) => {
                error!("clear failed: {e}");
                Err(e.to_string())
            }
        }
    }

    fn log_snapshot_news(&mut self, snapshot: &Snapshot) {
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

    /// One reconcile. `check_drift`: compare the kernel with what we committed first.
    /// `event_time`: when the earliest event this pass answers happened (for latency logs).
    async fn pass(&mut self, check_drift: bool, event_time: Option<i64>) {
        if self.state == State::Cleared {
            debug!("rules are cleared: not reconciling until a reload");
            return;
        }
        let Some(client) = self.docker.clone() else {
            return;
        };
        let started = Instant::now();
        let snapshot = match client.snapshot(&self.config).await {
            Ok(s) => s,
            Err(e) => {
                warn!("cannot read Docker ({e}); the rules in force stay as they are");
                self.state = State::Degraded(e.to_string());
                self.last_error = Some(e.to_string());
                return;
            }
        };
        self.log_snapshot_news(&snapshot);
        let (networks, rejected) =
            crate::plan::retain_plannable(docker::managed_networks(&snapshot));
        for e in rejected {
            if self.warned.insert((String::new(), e.to_string())) {
                error!("{e}: that network is not isolated");
            }
        }
        let ruleset = match plan(&self.config.daemon.table, &networks) {
            Ok(r) => r,
            Err(e) => {
                error!("cannot plan the ruleset ({e}); the rules in force stay as they are");
                self.state = State::Degraded(e.to_string());
                self.last_error = Some(e.to_string());
                return;
            }
        };
        if check_drift && let Some(committed) = self.nft.committed() {
            match nft::drift(committed) {
                Ok(problems) if !problems.is_empty() => {
                    warn!(
                        "the kernel no longer holds our ruleset ({}); restoring it",
                        problems.join("; ")
                    );
                    self.nft.forget();
                }
                Ok(_) => {}
                Err(e) => warn!("cannot read our tables back: {e}"),
            }
        }
        match self.nft.apply(ruleset) {
            Ok(report) => {
                self.state = State::Active;
                if let Some(old) = self.retired_table.take() {
                    // The new table is committed: the old one can go.
                    match nft::clear(&old) {
                        Ok(()) => info!("removed the previous table {old}"),
                        Err(e) => warn!("could not remove the previous table {old}: {e}"),
                    }
                }
                let kind = report.kind.clone();
                let messages = report.messages;
                self.last_report = Some(report.clone());
                self.last_snapshot = Some(snapshot.clone());
                if kind == ApplyKind::Unchanged {
                    return;
                }
                self.last_apply = Some(ApplyStatus {
                    at: SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs()),
                    kind: match kind {
                        ApplyKind::Full => "full".into(),
                        _ => "elements".into(),
                    },
                    messages,
                    duration_ms: started.elapsed().as_secs_f64() * 1e3,
                });
                let latency = event_time
                    .map(|t| format!(", {:.1} ms after the event", (now_nanos() - t) as f64 / 1e6))
                    .unwrap_or_default();
                info!(
                    "ruleset applied ({:?}, {} messages) in {:.1} ms{latency}",
                    report.kind,
                    report.messages,
                    started.elapsed().as_secs_f64() * 1e3
                );
                for net in &snapshot.networks {
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
                for b in report.bridges.iter().filter(|b| !b.stateful) {
                    warn!(bridge = %b.bridge, "{}", b.detail);
                }
            }
            Err(e) => {
                error!("the kernel refused the ruleset ({e}); the previous rules stay in force");
                self.state = State::Degraded(e.to_string());
                self.last_error = Some(e.to_string());
            }
        }
    }
}

async fn watchdog_timer(period: Duration, tx: mpsc::UnboundedSender<Msg>) {
    let mut ticker = tokio::time::interval(period);
    loop {
        ticker.tick().await;
        if tx.send(Msg::Watchdog).is_err() {
            return;
        }
    }
}

async fn resync_timer(interval: Duration, tx: mpsc::UnboundedSender<Msg>) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await; // the first tick is immediate; the connection triggers a pass
    loop {
        ticker.tick().await;
        if tx.send(Msg::Resync).is_err() {
            return;
        }
    }
}

/// Turns SIGTERM/SIGINT into Shutdown, SIGHUP into Reload, SIGUSR1 into Clear.
pub fn forward_signals(tx: mpsc::UnboundedSender<Msg>) -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let kinds = [
        (SignalKind::terminate(), "TERM"),
        (SignalKind::interrupt(), "INT"),
        (SignalKind::hangup(), "HUP"),
        (SignalKind::user_defined1(), "USR1"),
    ];
    for (kind, name) in kinds {
        let mut stream = signal(kind)?;
        let tx = tx.clone();
        tokio::spawn(async move {
            while stream.recv().await.is_some() {
                let msg = match name {
                    "HUP" => Msg::Reload(None),
                    "USR1" => Msg::Clear(None),
                    _ => Msg::Shutdown,
                };
                debug!("SIG{name} received");
                if tx.send(msg).is_err() {
                    return;
                }
            }
        });
    }
    Ok(())
}
