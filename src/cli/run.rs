//! `trafficjam run`: the composition root, where the configuration, the firewall worker,
//! the daemon loop, signals and D-Bus are put together.

use super::*;

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

pub(super) fn run(config_dir: &Path, state: StateDir) -> ExitCode {
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
