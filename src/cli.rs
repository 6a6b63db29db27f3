//! The `trafficjam` command line.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::config::{Config, ConfigError, DEFAULT_CONFIG_DIR};
use crate::daemon::reconcile::reconcile;
use crate::daemon::{self, Daemon};
use crate::dbus::{self, ManagerClientProxy};
use crate::docker::DockerClient;
use crate::firewall::Netlink;
use crate::firewall::{Firewall, Worker};
use crate::persist::{self, StateDir};
use crate::plan::{DEFAULT_TABLE, validate_table_name};
use crate::status::Status;
use crate::{caps, logging};

const EXAMPLES: &str = "\
Examples:
  trafficjam run                         run the daemon on /etc/trafficjam/*.toml
  trafficjam check --config-dir ./conf   validate a configuration, print its ruleset
  trafficjam reload                      make the running daemon re-read its configuration
  trafficjam status                      what is isolated, whitelisted and dropped
  trafficjam clear                       remove trafficjam's rules (enforcement pauses)

Exit codes:
  0  success
  1  invalid configuration, or the operation failed (the message says why)
  2  wrong usage of the command line";

#[derive(Debug, Parser)]
#[command(
    name = "trafficjam",
    version,
    about = "Keeps the containers on a Docker network apart, except the whitelisted ones",
    after_help = EXAMPLES
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the daemon in the foreground (what systemd starts).
    Run {
        /// Directory whose *.toml files are the configuration.
        #[arg(long, value_name = "DIR", default_value = DEFAULT_CONFIG_DIR)]
        config_dir: PathBuf,
        /// Where the isolated networks and the last good configuration are kept across
        /// reboots [default: $STATE_DIRECTORY, else /var/lib/trafficjam].
        #[arg(long, value_name = "DIR")]
        state_dir: Option<PathBuf>,
    },
    /// Validate the configuration; print the ruleset it gives when Docker is reachable.
    ///
    /// Exits 1 with FILE:LINE:COL: message when the configuration is invalid.
    Check {
        #[arg(long, value_name = "DIR", default_value = DEFAULT_CONFIG_DIR)]
        config_dir: PathBuf,
    },
    /// Ask the running daemon (over D-Bus) to re-read its configuration.
    ///
    /// Exits 1 with the daemon's error (FILE:LINE:COL: message) when the new configuration
    /// is refused; the running rules then stay as they are.
    Reload,
    /// Show the daemon's state: one block per isolated network.
    Status {
        /// The daemon's JSON, as Status() returns it.
        #[arg(long)]
        json: bool,
    },
    /// Print drops as the daemon logs them, by name, until interrupted.
    Watch {
        /// One JSON object per line, as the D-Bus `Dropped` signal carries it.
        #[arg(long)]
        json: bool,
    },
    /// Print the daemon's metrics in Prometheus' text format.
    Metrics,
    /// Remove trafficjam's rules: through the daemon when it runs (enforcement pauses until
    /// the next reload), directly from the kernel when it does not.
    Clear {
        #[arg(long, value_name = "DIR", default_value = DEFAULT_CONFIG_DIR)]
        config_dir: PathBuf,
        /// Table name to remove directly from the kernel, instead of asking the daemon
        /// or using the configured one.
        #[arg(long, value_name = "NAME")]
        table: Option<String>,
    },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run {
            config_dir,
            state_dir,
        } => run(&config_dir, StateDir::new(persist::state_dir(state_dir))),
        Command::Check { config_dir } => check(&config_dir),
        Command::Reload => reload(),
        Command::Status { json } => status(json),
        Command::Watch { json } => watch(json),
        Command::Metrics => metrics(),
        Command::Clear { config_dir, table } => clear(&config_dir, table),
    }
}

/// A failed call to the daemon.
#[derive(Debug)]
enum CallError {
    /// No system bus, or nobody owns `org.trafficjam1`: the daemon is not running.
    Unreachable(String),
    /// The daemon answered with an error.
    Refused(String),
}

fn call_error(e: zbus::Error) -> CallError {
    match e {
        // zbus reports the bus's own standard errors as FDO errors.
        zbus::Error::FDO(fdo) => match *fdo {
            zbus::fdo::Error::ServiceUnknown(m) | zbus::fdo::Error::NameHasNoOwner(m) => {
                CallError::Unreachable(m)
            }
            other => CallError::Refused(other.to_string()),
        },
        zbus::Error::MethodError(name, message, _) => {
            let name = name.as_str();
            if matches!(
                name,
                "org.freedesktop.DBus.Error.ServiceUnknown"
                    | "org.freedesktop.DBus.Error.NameHasNoOwner"
            ) {
                return CallError::Unreachable(message.unwrap_or_default());
            }
            let short = name.trim_start_matches("org.trafficjam1.Error.");
            CallError::Refused(format!("{} ({short})", message.unwrap_or_default()))
        }
        other => CallError::Refused(other.to_string()),
    }
}

/// Runs `f` against the daemon's D-Bus object on the system bus.
fn with_daemon<T>(
    f: impl AsyncFnOnce(ManagerClientProxy<'static>) -> zbus::Result<T>,
) -> Result<T, CallError> {
    runtime().block_on(async {
        let conn = zbus::Connection::system()
            .await
            .map_err(|e| CallError::Unreachable(e.to_string()))?;
        let proxy = ManagerClientProxy::new(&conn).await.map_err(call_error)?;
        f(proxy).await.map_err(call_error)
    })
}

const NOT_RUNNING: &str =
    "the trafficjam daemon is not reachable on the system bus (is trafficjam.service running?)";

fn reload() -> ExitCode {
    match with_daemon(async |p| p.reload().await) {
        Ok(()) => {
            eprintln!("configuration reloaded");
            ExitCode::SUCCESS
        }
        Err(CallError::Unreachable(e)) => {
            eprintln!("{NOT_RUNNING}: {e}");
            ExitCode::FAILURE
        }
        Err(CallError::Refused(e)) => {
            eprintln!("reload refused: {e}");
            ExitCode::FAILURE
        }
    }
}

fn status(json: bool) -> ExitCode {
    match with_daemon(async |p| p.status().await) {
        Ok(text) if json => {
            println!("{text}");
            ExitCode::SUCCESS
        }
        Ok(text) => match serde_json::from_str::<Status>(&text) {
            Ok(status) => {
                print!("{}", status.render());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("cannot read the daemon's status: {e}");
                ExitCode::FAILURE
            }
        },
        Err(e) => call_failed(e),
    }
}

fn metrics() -> ExitCode {
    match with_daemon(async |p| p.metrics().await) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => call_failed(e),
    }
}

/// Says why a call to the daemon failed.
fn call_failed(e: CallError) -> ExitCode {
    match e {
        CallError::Unreachable(e) => eprintln!("{NOT_RUNNING}: {e}"),
        CallError::Refused(e) => eprintln!("{e}"),
    }
    ExitCode::FAILURE
}

/// `HH:MM:SS` (UTC) of now, for lines printed at a terminal.
fn clock() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format!(
        "{:02}:{:02}:{:02}Z",
        secs / 3600 % 24,
        secs / 60 % 60,
        secs % 60
    )
}

fn watch(json: bool) -> ExitCode {
    use futures_util::StreamExt;
    use std::io::Write;
    let result = with_daemon(async |p| {
        // Subscribed first, then the daemon asked: no drop between the two goes unseen,
        // and a daemon that is not running is an error, not silence.
        let mut drops = p.receive_dropped().await?;
        p.status().await?;
        eprintln!("watching drops (Ctrl-C to stop)");
        while let Some(signal) = drops.next().await {
            let Ok(args) = signal.args() else { continue };
            let line = if json {
                args.event.clone()
            } else {
                match serde_json::from_str::<crate::droplog::Notice>(&args.event) {
                    Ok(notice) => format!("{} {}", clock(), notice.text()),
                    Err(_) => args.event.clone(),
                }
            };
            let mut out = std::io::stdout().lock();
            if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
                break;
            }
        }
        Ok(())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => call_failed(e),
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// The configuration to run on: the one in `config_dir`, else (with its error) the last
/// good one kept in the state directory.
fn run_config(
    config_dir: &Path,
    state: &StateDir,
) -> Result<(Config, Option<ConfigError>), ConfigError> {
    let error = match Config::load_dir(config_dir) {
        Ok(c) => return Ok((c, None)),
        Err(e) => e,
    };
    let saved = match state.load() {
        Ok(Some(saved)) if !saved.config.is_empty() => saved,
        _ => return Err(error),
    };
    let sources: Vec<(PathBuf, String)> =
        saved.config.into_iter().map(|f| (f.path, f.text)).collect();
    match Config::from_sources(&sources) {
        Ok(c) => Ok((c, Some(error))),
        Err(_) => Err(error),
    }
}

fn run(config_dir: &Path, state: StateDir) -> ExitCode {
    let (config, config_error) = match run_config(config_dir, &state) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    logging::init(config.daemon.log_level.as_deref());
    // Before any thread exists: capabilities are per thread, and threads inherit them.
    let kept = match caps::keep_needed_only() {
        Ok(kept) => kept,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let swarm = caps::SWARM.iter().all(|c| kept.contains(c));
    tracing::info!(
        "capabilities: CAP_NET_ADMIN{}",
        if swarm {
            ", CAP_SYS_ADMIN and CAP_DAC_READ_SEARCH (overlay networks' namespaces)"
        } else {
            " only (Swarm overlay networks need the swarm drop-in's two more)"
        }
    );
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        config_dir = %config_dir.display(),
        "trafficjam starting: {} configured networks, table {}",
        config.networks.len(),
        config.daemon.table
    );
    if let Some(e) = &config_error {
        tracing::error!(
            "the configuration does not load ({e}); running the last good one, kept in {}",
            state.path().display()
        );
    }
    runtime().block_on(async {
        let firewall = Worker::spawn(Netlink::default());
        let daemon = Daemon::new(config_dir.to_owned(), config, firewall)
            .with_state(state, config_error);
        if let Err(e) = daemon::forward_signals(daemon.sender()) {
            eprintln!("cannot handle signals: {e}");
            return ExitCode::FAILURE;
        }
        // Without a system bus the daemon still isolates; only D-Bus control is missing.
        let _bus = match dbus::serve(daemon.sender(), daemon.status(), daemon.drop_notices()).await
        {
            Ok(conn) => {
                tracing::info!("D-Bus: {} owned on the system bus", dbus::BUS_NAME);
                Some(conn)
            }
            Err(e) => {
                tracing::warn!(
                    "D-Bus control unavailable ({e}): isolating anyway; reload with SIGHUP, clear with SIGUSR1"
                );
                None
            }
        };
        daemon.run().await;
        ExitCode::SUCCESS
    })
}

fn check(config_dir: &Path) -> ExitCode {
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

fn clear(config_dir: &Path, table: Option<String>) -> ExitCode {
    if table.is_none() {
        match with_daemon(async |p| p.clear().await) {
            Ok(()) => {
                eprintln!(
                    "the daemon removed its rules: no isolation until `trafficjam reload` (or systemctl reload trafficjam)"
                );
                return ExitCode::SUCCESS;
            }
            Err(CallError::Unreachable(_)) => {} // no daemon: straight to the kernel
            Err(CallError::Refused(e)) => {
                eprintln!("clear refused: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    let table = match table {
        Some(t) => t,
        // Clearing must work even with a broken configuration: fall back to the default.
        None => match Config::load_dir(config_dir) {
            Ok(c) => c.daemon.table,
            Err(e) => {
                eprintln!("{e}\nclearing the default table {DEFAULT_TABLE}");
                DEFAULT_TABLE.to_owned()
            }
        },
    };
    if let Err(e) = validate_table_name(&table) {
        eprintln!("{e}");
        return ExitCode::FAILURE;
    }
    match Netlink::default().clear(&table) {
        Ok(()) => {
            eprintln!("removed the {table} tables (inet and bridge): no isolation is in force");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("cannot clear: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_daemon_is_unreachable_not_a_refusal() {
        let missing = zbus::Error::FDO(Box::new(zbus::fdo::Error::ServiceUnknown(
            "The name org.trafficjam1 was not provided by any .service files".into(),
        )));
        assert!(matches!(call_error(missing), CallError::Unreachable(_)));
        let denied = zbus::Error::FDO(Box::new(zbus::fdo::Error::AccessDenied("no".into())));
        assert!(matches!(call_error(denied), CallError::Refused(_)));
    }
}
