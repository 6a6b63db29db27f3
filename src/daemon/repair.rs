//! Drift and tampering: the kernel read back against what we committed, and what must be
//! in force restored from the record, at once, without asking Docker.

use super::*;

impl Daemon {
    /// Subscribes to the kernel's ruleset changes, so that tampering with our tables is
    /// repaired at once, whether or not Docker answers.
    pub(super) async fn watch_ruleset(&self) {
        let tx = self.inbox.events_tx.clone();
        let report = Box::new(move |change| tx.send(Msg::TablesChanged(change)).is_ok());
        if let Err(e) = self.firewall.call(move |fw| fw.watch(report)).await {
            warn!("cannot watch the ruleset ({e}): tampering is repaired at the next resync only");
        }
        // A container's port appears before Docker reports the container: binding it
        // (port security) and reading its endpoint start from the kernel's notice.
        let tx = self.inbox.events_tx.clone();
        let report = Box::new(move || tx.send(Msg::Changed(None)).is_ok());
        if let Err(e) = self.firewall.call(move |fw| fw.watch_ports(report)).await {
            warn!("cannot watch the links ({e}): ports are bound on Docker's events only");
        }
    }

    pub(super) fn touches_our_table(&self, change: &TableChange) -> bool {
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
    pub(super) async fn repair(&mut self) {
        if self.condition == Condition::Cleared {
            return;
        }
        let Some(enforced) = self.kernel.enforced.clone() else {
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
            .kernel
            .repairs
            .front()
            .is_some_and(|t| t.elapsed() > REPAIR_WINDOW)
        {
            self.kernel.repairs.pop_front();
        }
        if self.kernel.repairs.len() >= REPAIR_BURST {
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
        self.kernel.repairs.push_back(started);
        let desired = enforced.clone();
        match self.firewall.call(move |fw| fw.apply(None, &desired)).await {
            Ok(report) => {
                self.kernel.committed = Some(enforced);
                self.settle();
                info!(
                    "another process changed our tables ({}): restored in {:.1} ms ({} messages)",
                    problems.join("; "),
                    started.elapsed().as_secs_f64() * 1e3,
                    report.messages
                );
            }
            Err(e) => {
                self.kernel.committed = None;
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
    pub(super) fn schedule_repair(&mut self, delay: Duration) {
        if self
            .kernel
            .repair_retry
            .as_ref()
            .is_some_and(|t| !t.is_finished())
        {
            return;
        }
        let tx = self.inbox.events_tx.clone();
        self.kernel.repair_retry = Some(tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = tx.send(Msg::TablesChanged(TableChange::Overrun));
        }));
    }

    /// How the kernel differs from `ruleset`; empty when it holds exactly that.
    pub(super) async fn drift(&self, ruleset: &Arc<Ruleset>) -> Result<Vec<String>, KernelError> {
        let ruleset = ruleset.clone();
        self.firewall.call(move |fw| fw.drift(&ruleset)).await
    }

    /// Reads our tables back; when they are not what we committed, forgets it, so that the
    /// next apply replaces them whole.
    pub(super) async fn check_drift(&mut self) {
        let Some(committed) = self.kernel.committed.clone() else {
            return;
        };
        match self.drift(&committed).await {
            Ok(problems) if !problems.is_empty() => {
                warn!(
                    "the kernel no longer holds our ruleset ({}); restoring it",
                    problems.join("; ")
                );
                self.kernel.committed = None;
            }
            Ok(_) => {}
            Err(e) => {
                warn!("cannot read our tables back ({e}); replacing them whole");
                self.kernel.committed = None;
            }
        }
    }
}
