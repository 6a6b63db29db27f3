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
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{debug, error, info, warn};

use crate::config::Config;
use crate::docker::{self, DockerClient, Snapshot};
use crate::nft::{self, ApplyKind, Nft};
use crate::plan::plan;

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
    Shutdown,
}

/// Where the daemon stands, for logs and (later) status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    Starting,
    Active,
    /// Rules removed on request; no enforcement until the next reload.
    Cleared,
    /// Rules kept as they were; something is wrong.
    Degraded(String),
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
                backoff = BACKOFF_MIN;
                let reason = loop {
                    match events.next().await {
                        Some(Ok(event)) => {
                            if tx.send(Msg::Changed(event.time_nano)).is_err() {
                                return;
                            }
                        }
                        Some(Err(e)) => break e.to_string(),
                        None => break "the event stream ended".to_owned(),
                    }
                };
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
        let interval = self.config.daemon.resync_interval;
        let mut resync = tokio::spawn(resync_timer(interval, tx.clone()));
        while let Some(msg) = self.rx.recv().await {
            match msg {
                Msg::Shutdown => break,
                Msg::DockerConnected(client) => {
                    let version = client.version().await.unwrap_or_default();
                    info!(docker_host = %client.host, "connected to Docker {version}");
                    self.docker = Some(client);
                    self.docker_lost_logged = false;
                    self.pass(true, None).await;
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
                        self.state = State::Degraded(format!("waiting for Docker: {reason}"));
                    }
                }
                Msg::Changed(first) => {
                    // Coalesce: every event already queued is covered by this one pass.
                    let mut earliest = first;
                    let mut deferred = Vec::new();
                    while let Ok(next) = self.rx.try_recv() {
                        match next {
                            Msg::Changed(t) => {
                                earliest = match (earliest, t) {
                                    (Some(a), Some(b)) => Some(a.min(b)),
                                    (a, b) => a.or(b),
                                }
                            }
                            other => deferred.push(other),
                        }
                    }
                    self.pass(false, earliest).await;
                    for m in deferred {
                        // Re-queue in order; the loop handles them next.
                        let _ = self.tx.send(m);
                    }
                }
                Msg::Resync => self.pass(true, None).await,
                Msg::Reload(reply) => {
                    let result = self.reload().await;
                    if let Some(reply) = reply {
                        let _ = reply.send(result);
                    }
                    if self.config.daemon.resync_interval != interval {
                        resync.abort();
                        resync = tokio::spawn(resync_timer(
                            self.config.daemon.resync_interval,
                            tx.clone(),
                        ));
                    }
                }
                Msg::Clear(reply) => {
                    let result = self.clear();
                    if let Some(reply) = reply {
                        let _ = reply.send(result);
                    }
                }
            }
        }
        resync.abort();
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
        if self.config.daemon.table != old_table {
            // The new table is in force (or nothing is): the old one can go.
            if let Err(e) = nft::clear(&old_table) {
                warn!("could not remove the previous table {old_table}: {e}");
            }
        }
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
                return;
            }
        };
        self.log_snapshot_news(&snapshot);
        let networks = docker::managed_networks(&snapshot);
        let ruleset = match plan(&self.config.daemon.table, &networks) {
            Ok(r) => r,
            Err(e) => {
                error!("cannot plan the ruleset ({e}); the rules in force stay as they are");
                self.state = State::Degraded(e.to_string());
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
                if report.kind == ApplyKind::Unchanged {
                    return;
                }
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
            }
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
