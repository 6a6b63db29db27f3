//! What the loop tells the world: the status it publishes (D-Bus properties, systemd's
//! STATUS=), the metrics, READY=1, and the drop log it reads.

use super::*;

impl Daemon {
    pub(super) fn build_status(&self) -> Status {
        let (state, reason) = match &self.condition {
            Condition::Starting => (State::Starting, None),
            Condition::Active => (State::Active, None),
            Condition::Cleared => (State::Cleared, Some("cleared on request".to_owned())),
            Condition::Degraded(why) => (State::Degraded, Some(why.clone())),
        };
        let stateful = |network: &str, bridge: &str| match self.overlays.networks.get(network) {
            Some(o) => o.filtering.as_ref().map(|f| f.stateful),
            None => self
                .kernel
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
                    bridge: match self.overlays.networks.get(&n.name) {
                        Some(o) => o.bridge.0.clone(),
                        None => n.bridge.clone(),
                    },
                    not_isolated: self.overlays.problems.get(&n.name).cloned(),
                    stateful: stateful(&n.name, &n.bridge),
                    bound_ports: self.overlay_bound_ports(&n.name).unwrap_or_else(|| {
                        self.kernel
                            .enforced
                            .as_ref()
                            .map_or(0, |r| r.bound_ports(&n.name))
                    }),
                    ..NetworkStatus::of_snapshot(n)
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
            last_apply: self.report.last_apply.clone(),
            last_error: self.report.last_error.clone(),
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
    pub(super) async fn fresh_counters(&mut self, table: &str) -> Option<Counters> {
        if let Some((at, c)) = &self.kernel.counters
            && at.elapsed() < COUNTERS_MAX_AGE
        {
            return Some(c.clone());
        }
        let table = table.to_owned();
        match self.firewall.call(move |fw| fw.counters(&table)).await {
            Ok(c) => {
                self.kernel.counters = Some((Instant::now(), c.clone()));
                Some(c)
            }
            Err(e) => {
                debug!("cannot read the drop counters: {e}");
                None
            }
        }
    }

    /// The metrics text, with counters read from the kernel now.
    pub(super) async fn metrics(&mut self) -> String {
        let status = self.build_status();
        let counters = match self.kernel.enforced.clone() {
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
            &self.report.apply_stats,
        )
    }

    /// The status with the drop counters as the kernel holds them (read at most once a
    /// second).
    pub(super) async fn status_with_counters(&mut self) -> Status {
        let mut status = self.build_status();
        let Some(enforced) = self.kernel.enforced.clone() else {
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
    pub(super) fn publish(&mut self) {
        let status = self.build_status();
        let summary = status.summary();
        let changed = self.report.status_tx.send_if_modified(|current| {
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
    pub(super) fn announce_ready(&mut self) {
        self.publish();
        if !self.report.ready_sent {
            self.report.ready_sent = true;
            notify::ready(&self.report.status_tx.borrow().summary());
        }
    }

    /// The NFLOG group the rules report to: the configuration's, unless the kernel
    /// refused rules that log.
    pub(super) fn log_group(&self) -> Option<u16> {
        self.config
            .daemon
            .drop_log_group()
            .filter(|_| self.drop_log.rules_refused.is_none())
    }

    /// Reads the NFLOG group our deny chains report to (when the configuration logs
    /// drops), or stops reading it. Failing to is no reason to stop enforcing: drops are
    /// still dropped and counted; the status says why they are not logged.
    pub(super) async fn watch_drops(&mut self) {
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
}
