//! The real firewall: our tables, the bridges' ports and the drop log in the calling
//! thread's network namespace, over netlink.

use std::collections::{BTreeMap, BTreeSet};

use tracing::warn;

use super::{ChangeReport, DropReport, Firewall, PortsReport};
use crate::kernel::links::bridge::{BridgeNetfilter, bridge_filtering};
use crate::kernel::links::fdb::bind_ports;
use crate::kernel::links::ports::{self, BridgePorts, overlay_bridge};
use crate::kernel::netns::Home;
use crate::kernel::nflog::{self, LogEvent};
use crate::kernel::nftables::dump::{read_counters, table_owners};
use crate::kernel::nftables::{drift, element_transaction, full_replace, monitor};
use crate::kernel::{ApplyReport, BatchKind, BridgeFiltering, KernelError, TableChange};
use crate::plan::{Change, Counters, Family, Mac, Ruleset};

/// The real firewall: our tables in the calling thread's network namespace, over netlink.
#[derive(Debug)]
pub struct Netlink {
    bridge_netfilter: BridgeNetfilter,
    /// The namespace the worker started in, opened at the first `enter`.
    home: Option<Home>,
}

impl Default for Netlink {
    fn default() -> Self {
        Netlink::new(BridgeNetfilter::Enable)
    }
}

impl Netlink {
    pub fn new(bridge_netfilter: BridgeNetfilter) -> Self {
        Netlink {
            bridge_netfilter,
            home: None,
        }
    }
}

impl Firewall for Netlink {
    fn enter(&mut self, netns: &std::path::Path) -> Result<(), KernelError> {
        if self.home.is_none() {
            self.home = Some(Home::here().map_err(KernelError::Socket)?);
        }
        let home = self.home.as_ref().expect("opened above");
        Ok(home.enter(netns)?)
    }

    fn leave(&mut self) {
        if let Some(home) = &self.home {
            home.leave();
        }
    }

    fn overlay_bridge(&mut self) -> Result<Option<(String, String)>, KernelError> {
        overlay_bridge()
    }

    fn apply(
        &mut self,
        committed: Option<&Ruleset>,
        desired: &Ruleset,
    ) -> Result<ApplyReport, KernelError> {
        let full = |desired: &Ruleset| {
            full_replace(desired).map(|messages| ApplyReport {
                kind: BatchKind::Full,
                messages,
                added: 0,
                removed: 0,
            })
        };
        match (committed, desired.change_from(committed)) {
            // At most set elements differ: one pass over the sets finds the difference.
            (Some(current), Change::None | Change::Elements) => {
                let (tx, added, removed) = element_transaction(current, desired)?;
                let messages = tx.len();
                match tx.commit() {
                    Ok(()) => Ok(ApplyReport {
                        kind: BatchKind::Elements,
                        messages,
                        added,
                        removed,
                    }),
                    Err(e) => {
                        // The kernel no longer holds what we committed (someone flushed a
                        // set, say): replace everything instead.
                        warn!("element update refused ({e}); replacing our tables whole");
                        full(desired)
                    }
                }
            }
            _ => full(desired),
        }
    }

    fn drift(&mut self, desired: &Ruleset) -> Result<Vec<String>, KernelError> {
        drift(desired)
    }

    fn clear(&mut self, table: &str) -> Result<(), KernelError> {
        full_replace(&Ruleset::empty(table)).map(|_| ())
    }

    fn present(&mut self, table: &str) -> Result<bool, KernelError> {
        // Both families, both ours: one alone (the other deleted) is restored whole.
        let owners = table_owners(table)?;
        Ok(owners.len() == Family::ALL.len() && owners.values().all(|ours| *ours))
    }

    fn counters(&mut self, table: &str) -> Result<Counters, KernelError> {
        read_counters(table)
    }

    fn bridge_filtering(&mut self, bridges: &BTreeSet<String>) -> Vec<BridgeFiltering> {
        bridges
            .iter()
            .map(|b| bridge_filtering(b, self.bridge_netfilter))
            .collect()
    }

    fn bridge_ports(
        &mut self,
        bridges: &BTreeSet<String>,
    ) -> Result<BTreeMap<String, BridgePorts>, KernelError> {
        ports::bridge_ports(bridges)
    }

    fn bind_ports(&mut self, bridge: &str, ports: &[(String, Mac)]) -> Result<(), KernelError> {
        bind_ports(bridge, ports)
    }

    fn watch_ports(&mut self, report: PortsReport) -> Result<(), KernelError> {
        watch_in_thread(
            "link-monitor",
            "the links",
            ports::subscribe_links,
            report,
            |sock, report| ports::watch_links(sock, report),
            |report| report(),
        )
    }

    fn watch_drops(&mut self, group: u16, report: DropReport) -> Result<(), KernelError> {
        // Bound here, in the caller's namespace, so that a group taken by another program
        // is an error the caller sees.
        watch_in_thread(
            "nflog",
            "the drop log",
            move || nflog::subscribe(group),
            report,
            nflog::watch,
            |report| report(LogEvent::Lost),
        )
    }

    fn watch(&mut self, report: ChangeReport) -> Result<(), KernelError> {
        // Called on the worker thread, which makes every commit of ours: the kernel names
        // it as the committer of our generations.
        let committer = nix::unistd::gettid().as_raw() as u32;
        watch_in_thread(
            "nft-monitor",
            "the ruleset",
            monitor::subscribe,
            report,
            move |sock, report| monitor::watch(sock, committer, report),
            |report| report(TableChange::Overrun),
        )
    }
}

/// Subscribes with `subscribe` here, in the caller's namespace, before returning (so that
/// nothing after this call goes unseen, and a subscription refused is the caller's error),
/// then runs `watch` on a thread of its own, which inherits the namespace. When a watch
/// fails, the thread subscribes again a second later, the old socket closed first (an
/// NFLOG group stays bound to it until then), and tells `missed` that events may have been
/// lost meanwhile. It ends when `watch` returns, or `missed` returns false.
fn watch_in_thread<S: Send + 'static, R: Send + 'static>(
    thread: &str,
    what: &'static str,
    subscribe: impl Fn() -> Result<S, KernelError> + Send + 'static,
    mut report: R,
    mut watch: impl FnMut(&S, &mut R) -> Result<(), KernelError> + Send + 'static,
    mut missed: impl FnMut(&mut R) -> bool + Send + 'static,
) -> Result<(), KernelError> {
    let mut sock = Some(subscribe()?);
    std::thread::Builder::new()
        .name(thread.into())
        .spawn(move || {
            loop {
                if let Some(s) = &sock {
                    match watch(s, &mut report) {
                        Ok(()) => return,
                        Err(e) => warn!("watching {what} failed ({e}); subscribing again"),
                    }
                }
                sock = None;
                std::thread::sleep(std::time::Duration::from_secs(1));
                match subscribe() {
                    Ok(s) => sock = Some(s),
                    Err(e) => warn!("cannot subscribe to {what} ({e})"),
                }
                if !missed(&mut report) {
                    return;
                }
            }
        })
        .map_err(KernelError::Socket)?;
    Ok(())
}
