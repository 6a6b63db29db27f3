//! Logging: to the journal, with structured fields (`NETWORK`, `BRIDGE`, `CONTAINER_ID`,
//! `CONTAINER_NAME`, …), when stderr is the journal (systemd sets JOURNAL_STREAM);
//! readable text on stderr otherwise. The level comes from `RUST_LOG` when set, else from
//! the config's `log_level`, else `info`.

use std::io::IsTerminal;
use std::os::fd::AsFd;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Whether stderr is the stream systemd connected to the journal: JOURNAL_STREAM holds
/// its `device:inode`.
fn stderr_is_journal() -> bool {
    let Ok(stream) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = stream.split_once(':') else {
        return false;
    };
    let Ok(stat) = nix::sys::stat::fstat(std::io::stderr().as_fd()) else {
        return false;
    };
    dev.parse() == Ok(stat.st_dev) && ino.parse() == Ok(stat.st_ino)
}

pub(crate) fn init(config_level: Option<&str>) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(config_level.unwrap_or("info")));
    if stderr_is_journal()
        && let Ok(journald) = tracing_journald::layer()
    {
        // Field names as they are (NETWORK, not F_NETWORK), so that
        // `journalctl -u trafficjam NETWORK=web` works.
        let journald = journald
            .with_field_prefix(None)
            .with_syslog_identifier("trafficjam".into());
        let _ = tracing_subscriber::registry()
            .with(filter)
            .with(journald)
            .try_init();
        return;
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}
