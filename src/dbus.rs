//! D-Bus control on the system bus: `org.trafficjam1` at `/org/trafficjam1`, interface
//! `org.trafficjam1.Manager`. The methods are thin shims that send a message to the daemon
//! loop and wait for its answer; mutations are for root only (checked here as well as by
//! the bus policy); Status and Metrics are read-only. The `Dropped` signal carries each drop
//! line (JSON) for `trafficjam watch`, to anyone, as Status would tell.

use tokio::sync::{mpsc, oneshot, watch};
use zbus::message::Header;
use zbus::names::BusName;
use zbus::object_server::SignalEmitter;
use zbus::{Connection, interface};

use crate::daemon::{ControlError, Msg, Reply};
use crate::droplog::Notices;
use crate::status::Status;

pub(crate) const BUS_NAME: &str = "org.trafficjam1";
pub(crate) const OBJECT_PATH: &str = "/org/trafficjam1";

/// Errors returned over D-Bus, named `org.trafficjam1.Error.*`.
#[derive(Debug, zbus::DBusError)]
#[zbus(prefix = "org.trafficjam1.Error")]
pub(crate) enum Error {
    #[zbus(error)]
    ZBus(zbus::Error),
    /// The new configuration was refused; the message is `FILE:LINE:COL: what is wrong`.
    ConfigRejected(String),
    /// Only root may change what trafficjam enforces.
    AccessDenied(String),
    /// The operation failed (the message says why); nothing changed.
    Failed(String),
    /// The daemon is shutting down and takes no more requests.
    Stopping(String),
    /// Too many requests are waiting for the daemon already (a status or the metrics asked
    /// in a flood): try again.
    Busy(String),
}

impl From<ControlError> for Error {
    fn from(e: ControlError) -> Self {
        match e {
            ControlError::ConfigRejected(e) => Error::ConfigRejected(e.to_string()),
            ControlError::Failed(e) => Error::Failed(e.to_string()),
            ControlError::Stopping => Error::Stopping(e.to_string()),
        }
    }
}

impl From<zbus::fdo::Error> for Error {
    fn from(e: zbus::fdo::Error) -> Self {
        Error::ZBus(zbus::Error::FDO(Box::new(e)))
    }
}

/// The object served at `/org/trafficjam1`.
#[derive(Debug)]
pub(crate) struct Manager {
    tx: mpsc::Sender<Msg>,
    status: watch::Receiver<Status>,
}

async fn require_root(conn: &Connection, header: &Header<'_>) -> Result<(), Error> {
    let sender = header
        .sender()
        .ok_or_else(|| Error::AccessDenied("the call has no sender".into()))?;
    let bus = zbus::fdo::DBusProxy::new(conn).await?;
    let uid = bus
        .get_connection_unix_user(BusName::from(sender.to_owned()))
        .await?;
    if uid != 0 {
        return Err(Error::AccessDenied(format!(
            "uid {uid} may not change trafficjam's rules: only root may"
        )));
    }
    Ok(())
}

impl Manager {
    /// Sends a request to the daemon loop and waits for its answer. Open to everyone (a
    /// status, the metrics): refused at once when the loop's request queue is full.
    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Msg) -> Result<T, Error> {
        let (reply, answer) = oneshot::channel();
        let stopping = || Error::from(ControlError::Stopping);
        self.tx.try_send(make(reply)).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => Error::Busy(format!(
                "trafficjam has {} requests waiting already: try again",
                crate::daemon::REQUESTS
            )),
            mpsc::error::TrySendError::Closed(_) => stopping(),
        })?;
        answer.await.map_err(|_| stopping())
    }

    /// A change asked by root (reload, clear): waits for room in the queue.
    async fn control(&self, make: impl FnOnce(Reply) -> Msg) -> Result<(), Error> {
        let (reply, answer) = oneshot::channel();
        let stopping = || Error::from(ControlError::Stopping);
        self.tx.send(make(reply)).await.map_err(|_| stopping())?;
        Ok(answer.await.map_err(|_| stopping())??)
    }
}

#[interface(name = "org.trafficjam1.Manager")]
impl Manager {
    /// Re-reads the configuration and re-applies. A refused configuration changes nothing.
    async fn reload(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<(), Error> {
        require_root(conn, &header).await?;
        self.control(|r| Msg::Reload(Some(r))).await
    }

    /// Removes every rule of ours; enforcement pauses until the next Reload or restart.
    async fn clear(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<(), Error> {
        require_root(conn, &header).await?;
        self.control(|r| Msg::Clear(Some(r))).await
    }

    /// The daemon's state as JSON (see README), with current drop counters: the loop
    /// answers, having read them from the kernel.
    async fn status(&self) -> Result<String, Error> {
        let status = self.ask(Msg::Status).await?;
        serde_json::to_string(&status).map_err(|e| Error::Failed(e.to_string()))
    }

    /// The metrics in Prometheus' text format (see README), with counters read now.
    async fn metrics(&self) -> Result<String, Error> {
        self.ask(Msg::Metrics).await
    }

    /// A drop the kernel logged, named (`{"drop": {...}}`), or a summary of repeats
    /// (`{"summary": {...}}`), as JSON: what `trafficjam watch` prints.
    #[zbus(signal)]
    async fn dropped(emitter: &SignalEmitter<'_>, event: &str) -> zbus::Result<()>;

    /// `active`, `cleared`, `degraded` or `starting`.
    #[zbus(property)]
    async fn state(&self) -> String {
        self.status.borrow().state.as_str().to_owned()
    }

    /// Names of the isolated networks.
    #[zbus(property)]
    async fn networks(&self) -> Vec<String> {
        self.status
            .borrow()
            .networks
            .iter()
            .map(|n| n.name.clone())
            .collect()
    }
}

/// Serves the Manager on the system bus (`DBUS_SYSTEM_BUS_ADDRESS` is honoured) and owns
/// the name; the object is served before the name is taken. Emits PropertiesChanged when
/// the state or the network list changes.
pub(crate) async fn serve(
    tx: mpsc::Sender<Msg>,
    status: watch::Receiver<Status>,
    notices: Notices,
) -> zbus::Result<Connection> {
    let manager = Manager {
        tx,
        status: status.clone(),
    };
    let conn = zbus::connection::Builder::system()
        .serve_at(OBJECT_PATH, manager)
        .name(BUS_NAME)
        .build()
        .await?;
    let iface = conn
        .object_server()
        .interface::<_, Manager>(OBJECT_PATH)
        .await?;
    let mut drops = notices.subscribe();
    let emitter = iface.signal_emitter().clone();
    tokio::spawn(async move {
        loop {
            match drops.recv().await {
                Ok(event) => {
                    let _ = Manager::dropped(&emitter, &event).await;
                }
                // A live view that falls behind misses lines, never the daemon.
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    });
    let mut changes = status;
    tokio::spawn(async move {
        let mut last = {
            let s = changes.borrow();
            (s.state, s.network_names())
        };
        while changes.changed().await.is_ok() {
            let now = {
                let s = changes.borrow();
                (s.state, s.network_names())
            };
            let emitter: &SignalEmitter<'_> = iface.signal_emitter();
            let manager = iface.get().await;
            if now.0 != last.0 {
                let _ = manager.state_changed(emitter).await;
            }
            if now.1 != last.1 {
                let _ = manager.networks_changed(emitter).await;
            }
            last = now;
        }
    });
    Ok(conn)
}

/// The client side, for the CLI.
#[zbus::proxy(
    interface = "org.trafficjam1.Manager",
    default_service = "org.trafficjam1",
    default_path = "/org/trafficjam1"
)]
pub trait ManagerClient {
    fn reload(&self) -> zbus::Result<()>;
    fn clear(&self) -> zbus::Result<()>;
    fn status(&self) -> zbus::Result<String>;
    fn metrics(&self) -> zbus::Result<String>;
    #[zbus(signal)]
    fn dropped(&self, event: String) -> zbus::Result<()>;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A flood of `Status()` calls from any user holds at most `REQUESTS` messages: the
    /// next call is refused at once, and the loop's own events are not in that queue.
    #[tokio::test]
    async fn a_flood_of_status_calls_is_bounded_and_refused_beyond() {
        let (tx, mut rx) = mpsc::channel(crate::daemon::REQUESTS);
        let manager = std::sync::Arc::new(Manager {
            tx,
            status: watch::channel(Status::default()).1,
        });
        let mut waiting = Vec::new();
        for _ in 0..crate::daemon::REQUESTS {
            let m = manager.clone();
            waiting.push(tokio::spawn(
                async move { m.ask(Msg::Status).await.map(|_| ()) },
            ));
        }
        while manager.tx.capacity() > 0 {
            tokio::task::yield_now().await;
        }
        let refused = manager.ask(Msg::Status).await;
        assert!(matches!(refused, Err(Error::Busy(_))), "{refused:?}");
        // The queued ones are answered as the loop takes them.
        for _ in 0..crate::daemon::REQUESTS {
            match rx.recv().await {
                Some(Msg::Status(reply)) => {
                    let _ = reply.send(Status::default());
                }
                other => panic!("{other:?}"),
            }
        }
        for w in waiting {
            assert!(w.await.unwrap().is_ok());
        }
    }
}
