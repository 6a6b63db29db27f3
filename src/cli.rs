//! The `trafficjam` command line.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::config::{Config, DEFAULT_CONFIG_DIR};
use crate::daemon::{self, Daemon};
use crate::docker::{self, DockerClient};
use crate::plan::{DEFAULT_TABLE, plan, validate_table_name};
use crate::{logging, nft};

const EXAMPLES: &str = "\
Examples:
  trafficjam run                         run the daemon on /etc/trafficjam/*.toml
  trafficjam check --config-dir ./conf   validate a configuration, print its ruleset
  trafficjam clear                       remove trafficjam's nftables tables

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
    },
    /// Validate the configuration; print the ruleset it gives when Docker is reachable.
    ///
    /// Exits 1 with FILE:LINE:COL: message when the configuration is invalid.
    Check {
        #[arg(long, value_name = "DIR", default_value = DEFAULT_CONFIG_DIR)]
        config_dir: PathBuf,
    },
    /// Remove trafficjam's nftables tables from the kernel (isolation stops).
    Clear {
        #[arg(long, value_name = "DIR", default_value = DEFAULT_CONFIG_DIR)]
        config_dir: PathBuf,
        /// Table name to remove, instead of the configured one.
        #[arg(long, value_name = "NAME")]
        table: Option<String>,
    },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run { config_dir } => run(&config_dir),
        Command::Check { config_dir } => check(&config_dir),
        Command::Clear { config_dir, table } => clear(&config_dir, table),
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

fn run(config_dir: &Path) -> ExitCode {
    let config = match Config::load_dir(config_dir) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    logging::init(config.daemon.log_level.as_deref());
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        config_dir = %config_dir.display(),
        "trafficjam starting: {} configured networks, table {}",
        config.networks.len(),
        config.daemon.table
    );
    runtime().block_on(async {
        let daemon = Daemon::new(config_dir.to_owned(), config);
        if let Err(e) = daemon::forward_signals(daemon.sender()) {
            eprintln!("cannot handle signals: {e}");
            return ExitCode::FAILURE;
        }
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
        match plan(&config.daemon.table, &docker::managed_networks(&snapshot)) {
            Ok(ruleset) if ruleset.tables.is_empty() => {
                println!("# no network to isolate: trafficjam would hold no table");
                ExitCode::SUCCESS
            }
            Ok(ruleset) => {
                print!("{ruleset}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("cannot plan: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

fn clear(config_dir: &Path, table: Option<String>) -> ExitCode {
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
    match nft::clear(&table) {
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
