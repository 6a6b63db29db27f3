//! The `trafficjam` command line: its arguments, and the runtime the commands share.

mod check;
mod client;
mod run;

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
use crate::sys::{caps, logging};

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
        } => run::run(&config_dir, StateDir::new(persist::state_dir(state_dir))),
        Command::Check { config_dir } => check::check(&config_dir),
        Command::Reload => client::reload(),
        Command::Status { json } => client::status(json),
        Command::Watch { json } => client::watch(json),
        Command::Metrics => client::metrics(),
        Command::Clear { config_dir, table } => client::clear(&config_dir, table),
    }
}

pub(super) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}
