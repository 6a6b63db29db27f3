//! One pass: Docker read, the ruleset reconciled and applied, the bridges' ports bound,
//! br_netfilter set, and what changed logged.

use super::*;

impl Daemon {
    /// Logs the configuration's warnings (likely mistakes that still load).
    pub(super) fn log_config_warnings(&self) {
        for w in &self.config.warnings {
            warn!("configuration: {w}");
        }
    }

    pub(super) fn log_snapshot_news(&mut self, snapshot: &Snapshot) {
        for n in &snapshot.networks {
            let now: BTreeSet<(String, String)> = n
                .whitelisted
                .iter()
                .map(|e| (e.container_id.clone(), e.container_name.clone()))
                .collect();
            if let Some(before) = self.report.whitelisted_before.get(&n.name) {
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
            self.report.whitelisted_before.insert(n.name.clone(), now);
        }
        self.report
            .whitelisted_before
            .retain(|name, _| snapshot.networks.iter().any(|n| &n.name == name));
        for (network, message) in &snapshot.warnings {
            if self
                .report
                .warned
                .insert((network.clone(), message.clone()))
            {
                warn!(network = %network, "{message}");
            }
        }
        for network in &snapshot.waiting {
            if self.report.waiting_logged.insert(network.clone()) {
                info!(network = %network, "configured network does not exist (yet): waiting for it");
            }
        }
        self.report
            .waiting_logged
            .retain(|n| snapshot.waiting.contains(n));
    }

    /// One reconcile. `resync`: compare the kernel with what we committed first, and set
    /// the bridges' attributes again. `event_time`: when the earliest event this pass
    /// answers happened (for latency logs).
    pub(super) async fn pass(&mut self, resync: bool, event_time: Option<i64>) {
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

    /// Everything a pass does once Docker has been read: the loop's decisions, which the
    /// unit tests drive with a fake firewall.
    pub(super) async fn apply_snapshot(
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
            &self.kernel.ports,
            self.kernel.committed.as_deref(),
        ) {
            Ok(r) => r,
            Err(e) => {
                error!("cannot plan the ruleset ({e}); the rules in force stay as they are");
                self.degrade(e.to_string());
                return;
            }
        };
        for e in &reconciled.rejected {
            if self.report.warned.insert((String::new(), e.to_string())) {
                error!("{e}: that network is not isolated");
            }
        }
        // A network recreated under the same bridge name gets a new bridge, whose
        // br_netfilter attributes Docker left off: set them as on a resync.
        // As sets: Docker lists networks in no fixed order.
        let ids = |s: &Snapshot| -> BTreeSet<(String, String)> {
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
            let committed = self.kernel.committed.clone();
            match self.apply_ruleset(committed, &desired).await {
                Ok(report) => {
                    self.kernel.committed = Some(desired.clone());
                    self.kernel.enforced = Some(desired);
                    Some(report)
                }
                Err(ApplyError::LogRulesRefused) => {
                    // Isolation first: the same pass again, planned without log rules.
                    return Box::pin(self.apply_snapshot(snapshot, resync, started, event_time))
                        .await;
                }
                Err(ApplyError::Refused(e)) => {
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
        if let Some(old) = self.kernel.retired_table.take() {
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
    pub(super) async fn read_ports(&mut self, snapshot: &Snapshot) {
        let bridges: BTreeSet<String> =
            snapshot.networks.iter().map(|n| n.bridge.clone()).collect();
        match self
            .firewall
            .call(move |fw| fw.bridge_ports(&bridges))
            .await
        {
            Ok(ports) => self.kernel.ports = ports,
            Err(e) => warn!("cannot read the bridges' ports ({e}); keeping those read before"),
        }
    }

    /// Programs each enforced bridge's forwarding database for its bound ports, so that no
    /// container can teach the bridge another's MAC (kernel/links/fdb.rs says how): the bridges and
    /// ports new since the last pass, or all of them when `all` (a resync, which also
    /// repairs a port another program set learning on again). What fails is tried again
    /// at the next pass. An audited network's bridge is left learning: audit mode changes
    /// nothing a container sees.
    pub(super) async fn bind_ports(&mut self, networks: &[plan::ManagedNetwork], all: bool) {
        if all {
            self.kernel.bound.clear();
        }
        let desired: BTreeMap<String, BTreeSet<(String, Mac)>> = networks
            .iter()
            .filter(|n| n.mode == crate::policy::Mode::Enforce)
            .map(|n| {
                let ports = n.ports.iter().map(|p| (p.name.clone(), p.mac)).collect();
                (n.bridge.clone(), ports)
            })
            .collect();
        self.kernel
            .bound
            .retain(|bridge, _| desired.contains_key(bridge));
        for (bridge, ports) in desired {
            let done = self.kernel.bound.get(&bridge);
            let new: Vec<(String, Mac)> = ports
                .iter()
                .filter(|p| done.is_none_or(|d| !d.contains(*p)))
                .cloned()
                .collect();
            if done.is_some() && new.is_empty() {
                // Only ports gone (their entries went with them).
                self.kernel.bound.insert(bridge, ports);
                continue;
            }
            let name = bridge.clone();
            match self
                .firewall
                .call(move |fw| fw.bind_ports(&name, &new))
                .await
            {
                Ok(()) => {
                    self.kernel.bound.insert(bridge, ports);
                }
                Err(e) => {
                    let detail = format!(
                        "cannot program the bridge's forwarding database ({e}): a container \
                         could teach it another container's MAC"
                    );
                    if self.report.warned.insert((bridge.clone(), detail.clone())) {
                        warn!(bridge = %bridge, "{detail}");
                    }
                }
            }
        }
    }

    pub(super) async fn set_bridge_filtering(&mut self, bridges: BTreeSet<String>) {
        self.kernel.bridges = self
            .firewall
            .call(move |fw| Ok(fw.bridge_filtering(&bridges)))
            .await
            .unwrap_or_default();
        for b in self.kernel.bridges.iter().filter(|b| !b.stateful) {
            if self
                .report
                .warned
                .insert((b.bridge.clone(), b.detail.clone()))
            {
                warn!(bridge = %b.bridge, "{}", b.detail);
            }
        }
    }

    pub(super) fn log_apply(
        &mut self,
        report: &ApplyReport,
        snapshot: &Snapshot,
        started: Instant,
        event_time: Option<i64>,
    ) {
        let elapsed_ms = started.elapsed().as_secs_f64() * 1e3;
        self.report
            .apply_stats
            .record(report.kind, elapsed_ms / 1e3);
        self.report.last_apply = Some(ApplyStatus {
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

    /// Applies `desired` over `committed`. A kernel without nfnetlink_log refuses every
    /// rule that logs: that is recorded (`log_group()` is `None` from then on, the status
    /// says why) and [`ApplyError::LogRulesRefused`] asks the caller to plan again without
    /// them, isolation first.
    pub(super) async fn apply_ruleset(
        &mut self,
        committed: Option<Arc<Ruleset>>,
        desired: &Arc<Ruleset>,
    ) -> Result<ApplyReport, ApplyError> {
        let logs = self.log_group().is_some();
        let desired = desired.clone();
        match self
            .firewall
            .call(move |fw| fw.apply(committed.as_deref(), &desired))
            .await
        {
            Ok(report) => Ok(report),
            Err(e) if logs && e.refused_a_log_rule() => {
                error!(
                    "the kernel refused the ruleset with its drop-log rules ({e}); enforcing without them: drops are counted, not logged (is nfnetlink_log available?)"
                );
                self.drop_log.rules_refused = Some(e.to_string());
                Err(ApplyError::LogRulesRefused)
            }
            Err(e) => Err(ApplyError::Refused(e)),
        }
    }
}

/// Why [`Daemon::apply_ruleset`] applied nothing.
#[derive(Debug)]
pub(super) enum ApplyError {
    /// The kernel cannot log: plan again without the log rules.
    LogRulesRefused,
    Refused(KernelError),
}
