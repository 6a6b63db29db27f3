//! systemd's notification protocol (sd_notify): readiness, status line, watchdog, reload
//! and stop. Outside systemd (no NOTIFY_SOCKET) every call is a no-op.

use std::time::Duration;

use sd_notify::NotifyState;

fn send(states: &[NotifyState]) {
    // A lost notification is not worth stopping the daemon for; systemd's own timeouts
    // report a daemon that never got READY=1 through.
    if let Err(e) = sd_notify::notify(states) {
        tracing::debug!("sd_notify failed: {e}");
    }
}

/// READY=1 with the current status line.
pub(crate) fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// RELOADING=1 (with MONOTONIC_USEC, as Type=notify-reload wants); READY=1 ends it.
pub(crate) fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(_) => send(&[NotifyState::Reloading]),
    }
}

pub(crate) fn stopping() {
    send(&[
        NotifyState::Stopping,
        NotifyState::Status("stopping; the rules stay in force"),
    ]);
}

pub(crate) fn status(line: &str) {
    send(&[NotifyState::Status(line)]);
}

pub(crate) fn watchdog() {
    send(&[NotifyState::Watchdog]);
}

/// How often the loop must ping the watchdog: half of WATCHDOG_USEC, when it is set.
pub(crate) fn watchdog_period() -> Option<Duration> {
    sd_notify::watchdog_enabled().map(|timeout| timeout / 2)
}
