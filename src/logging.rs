//! Logging: readable text on stderr. The level comes from `RUST_LOG` when set, else from
//! the config's `log_level`, else `info`.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

pub fn init(config_level: Option<&str>) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(config_level.unwrap_or("info")));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}
