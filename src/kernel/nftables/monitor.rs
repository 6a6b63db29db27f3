//! nftables change notifications (the netlink group `nft monitor` reads): which committed
//! generations of other processes touched tables of ours, so that the daemon restores them
//! at once instead of at the next resync.
//!
//! Every change the kernel commits is announced as its messages (new/deleted table, chain,
//! rule, set, element: each names its table in attribute 1), then a NEWGEN message that
//! names the committing process. A generation committed by one of our own threads is ours
//! and never triggers a repair (no loop).

use std::collections::BTreeSet;
use std::os::fd::{AsRawFd, OwnedFd};

use nix::sys::socket::{NetlinkAddr, SockProtocol, bind};
use rustables::sys::{NFNL_SUBSYS_NFTABLES, NFT_MSG_NEWGEN, NFTA_GEN_PROC_PID};

use crate::kernel::KernelError;
use crate::kernel::TableChange;
use crate::kernel::netlink::{Answer, Notice, netlink_socket, next_notice, parse_answers};
use crate::kernel::nftables::dump::{attribute, string};
use crate::plan::Family;

/// The nfnetlink multicast group of nftables changes (NFNLGRP_NFTABLES).
const NFNLGRP_NFTABLES: u32 = 7;
/// In every nftables object message, attribute 1 is the name of its table.
const NFTA_ANY_TABLE: u16 = 1;

/// Follows the messages of one generation after another.
#[derive(Debug, Default)]
struct Generations {
    /// Our-family tables touched by the generation being announced.
    touched: BTreeSet<String>,
}

impl Generations {
    /// Takes one notification; returns the tables a foreign generation touched when the
    /// message ends one. `ours(pid)` tells whether a process id is one of our threads.
    fn take(&mut self, answer: &Answer<'_>, ours: &impl Fn(u32) -> bool) -> Option<TableChange> {
        if u32::from(answer.kind >> 8) != NFNL_SUBSYS_NFTABLES {
            return None;
        }
        let (header, attrs) = (answer.body.first()?, answer.body.get(4..)?);
        if u32::from(answer.kind & 0xff) == NFT_MSG_NEWGEN {
            let touched = std::mem::take(&mut self.touched);
            let pid = attribute(attrs, NFTA_GEN_PROC_PID)
                .and_then(|p| <[u8; 4]>::try_from(p).ok())
                .map(u32::from_be_bytes);
            let foreign = !pid.is_some_and(ours);
            return (foreign && !touched.is_empty()).then_some(TableChange::Foreign(touched));
        }
        let ours_family = Family::ALL
            .iter()
            .any(|f| super::dump::nfproto(*f) == *header);
        if ours_family && let Some(table) = attribute(attrs, NFTA_ANY_TABLE) {
            self.touched.insert(string(table));
        }
        None
    }
}

/// A socket subscribed to nftables changes in the calling thread's network namespace.
pub(crate) fn subscribe() -> Result<OwnedFd, KernelError> {
    let sock = netlink_socket(SockProtocol::NetlinkNetFilter)?;
    bind(
        sock.as_raw_fd(),
        &NetlinkAddr::new(0, 1 << (NFNLGRP_NFTABLES - 1)),
    )
    .map_err(|e| KernelError::Socket(e.into()))?;
    Ok(sock)
}

/// Reads notifications from `sock` (see [`subscribe`]) until `report` returns false,
/// reporting each generation that touched tables of our families and was not committed
/// by the thread `committer` (ours; a thread id as the kernel gives it, which is ours as
/// long as trafficjam runs in the host's pid namespace: elsewhere our own commits are
/// reported too, and the daemon finds nothing to repair).
pub(crate) fn watch(
    sock: &OwnedFd,
    committer: u32,
    mut report: impl FnMut(TableChange) -> bool,
) -> Result<(), KernelError> {
    let mut generations = Generations::default();
    let mut buf = vec![0u8; 1 << 17];
    loop {
        let n = match next_notice(sock, &mut buf)? {
            Notice::Datagram(n) => n,
            Notice::Lost => {
                generations = Generations::default();
                if !report(TableChange::Overrun) {
                    return Ok(());
                }
                continue;
            }
            Notice::Idle => continue,
        };
        let mut changes = Vec::new();
        let parsed: Option<Result<(), KernelError>> = parse_answers(&buf[..n], &mut |answer| {
            changes.extend(generations.take(&answer, &|pid| pid == committer));
            None
        });
        if let Some(Err(e)) = parsed {
            return Err(e);
        }
        for change in changes {
            if !report(change) {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Captured with `strace -e read=` under `nft monitor` in a namespace holding `table inet
    // tjmon { set wl4_web …; chain fwd_web … }`, while another `nft` process (pid 0x52e9,
    // then 0x52ec) deleted an element, then the whole table.
    const DELETE_ELEMENT: &[u8] = b"\x40\x00\x00\x00\x0e\x0a\x00\x00\x00\x00\x00\x00\xe9\x52\x00\x00\x01\x00\x00\x03\x0a\x00\x01\x00\x74\x6a\x6d\x6f\x6e\x00\x00\x00\x0c\x00\x02\x00\x77\x6c\x34\x5f\x77\x65\x62\x00\x14\x00\x03\x00\x10\x00\x01\x00\x0c\x00\x01\x00\x08\x00\x01\x00\x0a\x01\x00\x02";
    const GENERATION_BY_52E9: &[u8] = b"\x2c\x00\x00\x00\x0f\x0a\x00\x00\x01\x00\x00\x00\xe9\x52\x00\x00\x00\x00\x00\x03\x08\x00\x01\x00\x00\x00\x00\x03\x08\x00\x02\x00\x00\x00\x52\xe9\x08\x00\x03\x00\x6e\x66\x74\x00";
    const DELETE_TABLE: &[u8] = b"\x98\x00\x00\x00\x08\x0a\x00\x00\x01\x00\x00\x00\xec\x52\x00\x00\x01\x00\x00\x04\x0a\x00\x01\x00\x74\x6a\x6d\x6f\x6e\x00\x00\x00\x0c\x00\x02\x00\x66\x77\x64\x5f\x77\x65\x62\x00\x0c\x00\x03\x00\x00\x00\x00\x00\x00\x00\x00\x03\x60\x00\x04\x00\x2c\x00\x01\x00\x0c\x00\x01\x00\x63\x6f\x75\x6e\x74\x65\x72\x00\x1c\x00\x02\x00\x0c\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x0c\x00\x02\x00\x00\x00\x00\x00\x00\x00\x00\x00\x30\x00\x01\x00\x0e\x00\x01\x00\x69\x6d\x6d\x65\x64\x69\x61\x74\x65\x00\x00\x00\x1c\x00\x02\x00\x08\x00\x01\x00\x00\x00\x00\x00\x10\x00\x02\x00\x0c\x00\x02\x00\x08\x00\x01\x00\x00\x00\x00\x00\x38\x00\x00\x00\x0b\x0a\x00\x00\x01\x00\x00\x00\xec\x52\x00\x00\x01\x00\x00\x04\x0a\x00\x01\x00\x74\x6a\x6d\x6f\x6e\x00\x00\x00\x0c\x00\x02\x00\x77\x6c\x34\x5f\x77\x65\x62\x00\x0c\x00\x10\x00\x00\x00\x00\x00\x00\x00\x00\x02\x38\x00\x00\x00\x05\x0a\x00\x00\x01\x00\x00\x00\xec\x52\x00\x00\x01\x00\x00\x04\x0a\x00\x01\x00\x74\x6a\x6d\x6f\x6e\x00\x00\x00\x0c\x00\x03\x00\x66\x77\x64\x5f\x77\x65\x62\x00\x0c\x00\x02\x00\x00\x00\x00\x00\x00\x00\x00\x01\x34\x00\x00\x00\x02\x0a\x00\x00\x01\x00\x00\x00\xec\x52\x00\x00\x01\x00\x00\x04\x0a\x00\x01\x00\x74\x6a\x6d\x6f\x6e\x00\x00\x00\x08\x00\x03\x00\x00\x00\x00\x00\x0c\x00\x04\x00\x00\x00\x00\x00\x00\x00\x00\x01";
    const GENERATION_BY_52EC: &[u8] = b"\x2c\x00\x00\x00\x0f\x0a\x00\x00\x01\x00\x00\x00\xec\x52\x00\x00\x00\x00\x00\x04\x08\x00\x01\x00\x00\x00\x00\x04\x08\x00\x02\x00\x00\x00\x52\xec\x08\x00\x03\x00\x6e\x66\x74\x00";

    fn feed(datagrams: &[&[u8]], ours: impl Fn(u32) -> bool) -> Vec<TableChange> {
        let mut generations = Generations::default();
        let mut changes = Vec::new();
        for datagram in datagrams {
            let end: Option<Result<(), KernelError>> = parse_answers(datagram, &mut |answer| {
                changes.extend(generations.take(&answer, &ours));
                None
            });
            assert!(end.is_none(), "{end:?}");
        }
        changes
    }

    fn tjmon() -> TableChange {
        TableChange::Foreign(BTreeSet::from(["tjmon".to_owned()]))
    }

    #[test]
    fn foreign_generations_name_the_tables_they_touched() {
        let changes = feed(
            &[
                DELETE_ELEMENT,
                GENERATION_BY_52E9,
                DELETE_TABLE,
                GENERATION_BY_52EC,
            ],
            |_| false,
        );
        assert_eq!(changes, [tjmon(), tjmon()]);
    }

    #[test]
    fn our_own_generations_are_not_reported() {
        let changes = feed(
            &[
                DELETE_ELEMENT,
                GENERATION_BY_52E9,
                DELETE_TABLE,
                GENERATION_BY_52EC,
            ],
            |pid| pid == 0x52ec,
        );
        assert_eq!(changes, [tjmon()]);
    }

    #[test]
    fn a_generation_without_our_families_is_not_reported() {
        // The same element deletion as if it were in an `ip` table (family 2).
        let mut ip_family = DELETE_ELEMENT.to_vec();
        ip_family[16] = libc::NFPROTO_IPV4 as u8;
        assert!(feed(&[&ip_family, GENERATION_BY_52E9], |_| false).is_empty());
    }

    #[test]
    fn our_commits_are_named_by_the_committing_thread() {
        // What the kernel puts in NFTA_GEN_PROC_PID for a commit made on a thread of ours
        // (the worker): that thread's id, not the process's.
        let worker = std::thread::spawn(|| nix::unistd::gettid().as_raw() as u32)
            .join()
            .unwrap();
        assert_ne!(worker, std::process::id());
        let mut by_worker = GENERATION_BY_52E9.to_vec();
        by_worker[32..36].copy_from_slice(&worker.to_be_bytes());
        let changes = feed(&[DELETE_ELEMENT, &by_worker], |pid| pid == worker);
        assert!(changes.is_empty(), "{changes:?}");
        let changes = feed(&[DELETE_ELEMENT, &by_worker], |pid| {
            pid == std::process::id()
        });
        assert_eq!(changes, [tjmon()]);
    }
}
