//! `trafficjam check`: the configuration checked, and the ruleset it would give shown, as
//! the daemon would plan it, without touching the kernel.

use super::*;

pub(super) fn check(config_dir: &Path) -> ExitCode {
    let config = match Config::load_dir(config_dir) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    eprintln!(
        "configuration valid: {} file(s), {} configured network(s), table {}",
        config.files.len(),
        config.networks.len(),
        config.daemon.table
    );
    for w in &config.warnings {
        eprintln!("warning: {w}");
    }
    for (name, (policy, _)) in &config.networks {
        if policy.mode == crate::policy::Mode::Audit {
            eprintln!("{}", audit_warning(name));
        }
    }
    if !config.daemon.log_drops {
        eprintln!("note: log_drops = false: drops are counted, not logged by name");
    }
    let host = config.daemon.docker_host();
    runtime().block_on(async {
        let connected =
            tokio::time::timeout(Duration::from_secs(5), DockerClient::connect(&host)).await;
        let client = match connected {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                eprintln!("{e}: the ruleset is not shown");
                return ExitCode::SUCCESS;
            }
            Err(_) => {
                eprintln!("Docker at {host} did not answer: the ruleset is not shown");
                return ExitCode::SUCCESS;
            }
        };
        let snapshot = match client.snapshot(&config).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("{e}: the ruleset is not shown");
                return ExitCode::SUCCESS;
            }
        };
        for (network, message) in &snapshot.warnings {
            eprintln!("warning: network {network}: {message}");
        }
        for network in &snapshot.waiting {
            eprintln!("note: network {network} does not exist (yet)");
        }
        for n in &snapshot.networks {
            if n.source == crate::config::PolicySource::Labels
                && n.policy.mode == crate::policy::Mode::Audit
            {
                eprintln!("{}", audit_warning(&n.name));
            }
        }
        // As the daemon would: odd networks are set aside, the others isolated, and
        // containers bound to their ports (when the kernel lets us read them).
        let bridges = snapshot.networks.iter().map(|n| n.bridge.clone()).collect();
        let ports = Netlink::default()
            .bridge_ports(&bridges)
            .unwrap_or_else(|e| {
                eprintln!("warning: cannot read the bridges' ports ({e}): none is shown bound");
                Default::default()
            });
        match reconcile(
            &config.daemon.table,
            config.daemon.drop_log_group(),
            &snapshot,
            &ports,
            None,
        ) {
            Ok(reconciled) => {
                for e in &reconciled.rejected {
                    eprintln!("warning: {e}: that network would not be isolated");
                }
                // The effective policy, as comments: stdout stays text nft loads.
                for n in &snapshot.networks {
                    let table =
                        crate::status::policy_table(&crate::status::NetworkStatus::of_snapshot(n));
                    if !table.is_empty() {
                        println!("# network {}:", n.name);
                        for line in table.lines() {
                            println!("#{line}");
                        }
                    }
                }
                if reconciled.ruleset.tables.is_empty() {
                    println!("# no network to isolate: trafficjam would hold no table");
                } else {
                    print!("{}", reconciled.ruleset);
                }
                for n in snapshot.networks.iter().filter(|n| n.overlay.is_some()) {
                    print!("{}", overlay_check(&config.daemon.table, n));
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("cannot plan: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

/// What `check` shows of an overlay network: where it is on this node, and the tables of
/// its namespace, as comments (they go there, not into the host's ruleset on stdout).
fn overlay_check(table: &str, n: &crate::docker::NetworkSnapshot) -> String {
    let Some(path) = n.overlay.as_ref().and_then(|o| o.netns.clone()) else {
        let why = n.overlay.as_ref().and_then(|o| o.problem.clone());
        return format!(
            "# overlay network {}: {}\n",
            n.name,
            why.as_deref().unwrap_or(crate::daemon::unplaced_reason())
        );
    };
    // Read only: no bridge attribute is set, nothing is applied.
    let mut fw = Netlink::default();
    let found = fw.enter(&path).and_then(|()| {
        let read = (|| {
            let bridge = fw
                .overlay_bridge()?
                .ok_or_else(|| crate::firewall::NetnsError::Gone(path.clone()))?;
            let ports = fw
                .bridge_ports(&[bridge.0.clone()].into())?
                .remove(&bridge.0)
                .unwrap_or_default();
            Ok((bridge, ports))
        })();
        fw.leave();
        read
    });
    let (bridge, ports) = match found {
        Ok(found) => found,
        Err(e) => {
            return format!(
                "# overlay network {}: namespace {}: {e}\n",
                n.name,
                path.display()
            );
        }
    };
    let mut out = format!(
        "# overlay network {}: namespace {}, bridge {} (VXLAN port {}); its tables there:\n",
        n.name,
        path.display(),
        bridge.0,
        bridge.1
    );
    match crate::daemon::reconcile::reconcile_overlay(
        table,
        n,
        (&bridge.0, &bridge.1),
        (&ports, true),
        None,
    ) {
        Ok(r) => {
            for line in r.ruleset.to_string().lines() {
                out.push_str(&format!("#   {line}\n"));
            }
        }
        Err(e) => out.push_str(&format!("#   cannot plan: {e}\n")),
    }
    out
}

fn audit_warning(network: &str) -> String {
    format!(
        "warning: network {network} is in AUDIT mode: NOTHING IS DROPPED there; what would be is logged and counted (mode = \"enforce\" to isolate it)"
    )
}
