//! The daemon's inputs, each a task that turns what it sees into messages to the loop:
//! Docker's event stream (with reconnection), the resync and watchdog timers, signals.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use tokio::sync::mpsc;
use tracing::debug;

use super::Msg;
use crate::docker::DockerClient;

/// Reconnection backoff when Docker is unreachable.
const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// Until Docker first answers (at boot, it starts after us), try every second at least:
/// its containers start as soon as it does, and the proxy waits for its whitelist.
const BACKOFF_MAX_NEVER_CONNECTED: Duration = Duration::from_secs(1);

pub(crate) fn now_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

/// Connects, subscribes to events, reports; forever, with backoff.
pub(crate) async fn watch_docker(host: String, tx: mpsc::UnboundedSender<Msg>) {
    let mut backoff = BACKOFF_MIN;
    let mut max = BACKOFF_MAX_NEVER_CONNECTED;
    loop {
        match DockerClient::connect(&host).await {
            Ok(client) => {
                max = BACKOFF_MAX;
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
        backoff = (backoff * 2).min(max);
    }
}

pub(crate) async fn watchdog_timer(period: Duration, tx: mpsc::UnboundedSender<Msg>) {
    let mut ticker = tokio::time::interval(period);
    loop {
        ticker.tick().await;
        if tx.send(Msg::Watchdog).is_err() {
            return;
        }
    }
}

pub(crate) async fn resync_timer(interval: Duration, tx: mpsc::UnboundedSender<Msg>) {
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
pub(crate) fn forward_signals(tx: mpsc::Sender<Msg>) -> std::io::Result<()> {
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
                if tx.send(msg).await.is_err() {
                    return;
                }
            }
        });
    }
    Ok(())
}

/// Watches the kernel's mount table (a thread of its own, woken by the kernel on every
/// change) for network namespaces mounted under a name Docker gives overlay networks'
/// (`<epoch>-<id>`): has the worker isolate each newly mounted one of a network it knows
/// at once ([`super::overlay::isolate_at_mount`]), and reports it to the loop, before
/// Docker says anything about the container that brought it.
pub(crate) fn watch_namespaces(
    tx: mpsc::UnboundedSender<Msg>,
    worker: crate::firewall::Worker,
    prepared: super::overlay::SharedPrepared,
) -> std::io::Result<()> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use std::io::{Read, Seek};
    use std::os::fd::AsFd;

    let mut table = std::fs::File::open("/proc/self/mountinfo")?;
    let mut known = overlay_mounts(&mut table)?;
    std::thread::Builder::new()
        .name("namespaces".into())
        .spawn(move || {
            loop {
                // The mount table signals a change with POLLERR|POLLPRI.
                let mut fds = [PollFd::new(table.as_fd(), PollFlags::POLLPRI)];
                if poll(&mut fds, PollTimeout::NONE).is_err() {
                    std::thread::sleep(Duration::from_millis(100));
                }
                let Ok(now) = overlay_mounts(&mut table) else {
                    continue;
                };
                let new: Vec<std::path::PathBuf> = now
                    .difference(&known)
                    .map(|(_, path)| path.clone())
                    .collect();
                known = now;
                for path in &new {
                    super::overlay::isolate_at_mount(&prepared, &worker, path);
                }
                if !new.is_empty() && tx.send(Msg::NamespacesMounted(new)).is_err() {
                    return;
                }
            }
        })?;

    /// The overlay namespaces mounted now, each with its mount's id: a namespace unmounted
    /// and mounted again at the same path between two reads is a new mount.
    fn overlay_mounts(
        table: &mut std::fs::File,
    ) -> std::io::Result<std::collections::BTreeSet<(String, std::path::PathBuf)>> {
        table.rewind()?;
        let mut bytes = Vec::new();
        table.read_to_end(&mut bytes)?;
        let text = String::from_utf8_lossy(&bytes);
        Ok(text
            .lines()
            .filter_map(|line| {
                let path = crate::firewall::nsfs_mounts(line).pop()?;
                let name = path.file_name()?.to_string_lossy().into_owned();
                crate::docker::swarm::is_overlay_name(&name)
                    .then(|| (line.split(' ').next().unwrap_or_default().to_owned(), path))
            })
            .collect())
    }
    Ok(())
}
