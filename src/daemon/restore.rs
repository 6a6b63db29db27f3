//! The state directory: the isolated networks and the last good configuration written as
//! they change, and the networks isolated again at start, before Docker answers.

use super::pass::ApplyError;
use super::*;

impl Daemon {
    /// Writes the state directory when what it should hold changed.
    pub(super) fn save(&mut self, saved: Saved) {
        let Some(state) = &self.persist.state else {
            return;
        };
        if saved == self.persist.saved {
            return;
        }
        match state.save(&saved) {
            Ok(()) => {
                self.persist.saved = saved;
                self.persist.save_failed = false;
            }
            Err(e) if !self.persist.save_failed => {
                self.persist.save_failed = true;
                warn!("{e}: after a reboot the networks stay open until Docker answers");
            }
            Err(_) => {}
        }
    }

    pub(super) fn save_networks(&mut self, networks: &[plan::ManagedNetwork]) {
        let mut networks: Vec<IsolatedNetwork> = networks.iter().map(IsolatedNetwork::of).collect();
        // In a stable order, so that Docker's listing order never causes a rewrite.
        for net in &mut networks {
            net.subnets.sort();
        }
        networks.sort_by(|a, b| a.name.cmp(&b.name));
        let saved = Saved {
            table: self.config.daemon.table.clone(),
            networks,
            config: self.persist.saved.config.clone(),
        };
        self.save(saved);
    }

    /// Keeps the configuration that just loaded as the last good one.
    pub(super) fn save_config(&mut self) {
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
            ..self.persist.saved.clone()
        };
        self.save(saved);
    }

    /// At start: when none of our tables is in the kernel (after a reboot, say), isolates
    /// the networks isolated last time, with nobody whitelisted, before Docker starts any
    /// container. Tables left by a previous run (a restart) are kept as they are.
    pub(super) async fn restore(&mut self) {
        let Some(state) = &self.persist.state else {
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
        self.persist.saved = saved.clone();
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
        self.kernel.enforced = Some(ruleset.clone());
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
        let mut ruleset = ruleset;
        let mut applied = self.apply_ruleset(None, &ruleset).await;
        if matches!(applied, Err(ApplyError::LogRulesRefused)) {
            match plan::plan(&table, &closed(None)) {
                Ok(silent) => {
                    ruleset = Arc::new(silent);
                    self.kernel.enforced = Some(ruleset.clone());
                    applied = self.apply_ruleset(None, &ruleset).await;
                }
                Err(e) => warn!("cannot plan the saved networks without logging ({e})"),
            }
        }
        match applied {
            Ok(_) => {
                info!(
                    "isolated the {} network(s) of the last run from the state directory, nobody whitelisted until Docker answers",
                    saved.networks.len()
                );
                self.kernel.committed = Some(ruleset);
                self.settle();
            }
            Err(ApplyError::Refused(e)) => {
                error!("cannot restore the saved networks ({e})");
                self.degrade(format!("the saved networks could not be isolated: {e}"));
            }
            Err(ApplyError::LogRulesRefused) => {
                self.degrade("the saved networks could not be isolated: the kernel refused the rules that log".into());
            }
        }
    }
}
