//! The commands that talk to a running daemon over D-Bus: reload, status, metrics, watch,
//! and clear (which, with no daemon, clears the kernel directly).

use super::*;

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

pub(super) fn reload() -> ExitCode {
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

pub(super) fn status(json: bool) -> ExitCode {
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

pub(super) fn metrics() -> ExitCode {
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

pub(super) fn watch(json: bool) -> ExitCode {
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

pub(super) fn clear(config_dir: &Path, table: Option<String>) -> ExitCode {
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
