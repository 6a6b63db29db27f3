//! Applies a [`Ruleset`] to the kernel, reads back what is installed, and clears our tables.
//!
//! A thin translation: every [`Match`] becomes a few rustables expressions, and every
//! change is ONE netlink batch, so the kernel never holds half a ruleset and a refused
//! batch leaves the previous ruleset in force. Only tables named `Ruleset::table_name` in
//! the `inet` and `bridge` families are ever touched.
//!
//! Two kinds of batch:
//! - full: `add table; delete table; add table; …contents`, for both families (the
//!   add-then-delete makes "delete" valid whether or not the table existed);
//! - elements: when only whitelist sets differ from what we last committed, the batch
//!   adds and deletes set elements, so its size follows the change, not the whitelist.

mod bridge;
mod dump;
mod encode;
mod fdb;
mod monitor;
mod netlink;
mod netns;
mod nflog;
mod ports;
mod raw;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io;
use std::net::IpAddr;

use rustables::expr::ct::{ConnTrackState, Conntrack, ConntrackKey};
use rustables::expr::{
    Bitwise, Cmp, CmpOp, Counter, Immediate, Lookup, Meta, MetaType, Payload, Register, VerdictKind,
};
use rustables::set::{SetBuilder, SetElementList};
use rustables::sys::{
    NFT_PAYLOAD_LL_HEADER, NFT_PAYLOAD_NETWORK_HEADER, NFT_PAYLOAD_TRANSPORT_HEADER,
};
use rustables::{ChainPolicy, ChainType, HookClass, ProtocolFamily};

pub use bridge::{BridgeNetfilter, bridge_filtering, set_nf_call};
pub use dump::{
    InstalledRuleset, InstalledTable, OWNER_MARK, read_counters, read_installed, table_owners,
};
pub use fdb::bind_ports;
pub use netns::{
    Home, NetnsError, is_overlay_name, mounted, nsfs_mounts, overlay_epoch, overlay_namespace,
};
pub use nflog::{
    ETHERTYPE_ARP, ETHERTYPE_IPV4, ETHERTYPE_IPV6, LogEvent, LoggedPacket, PacketHeaders,
};
pub use ports::{
    BridgePorts, PortLink, bridge_ports, overlay_bridge, subscribe_links, watch_links,
};
use tracing::warn;

use crate::firewall::{
    ApplyReport, BatchKind, BridgeFiltering, ChangeReport, DropReport, Firewall, PortsReport,
    TableChange,
};
use crate::plan::{
    Change, Counters, Dir, Element, EtherType, Family, Field, Hook, IpVersion, Match, Ruleset, Set,
    Verdict,
};
use netlink::Transaction;

/// Set elements per netlink message: the element list is one attribute, and an attribute
/// length is 16 bits (an IPv6 element takes 28 bytes).
const ELEMENTS_PER_MESSAGE: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("cannot open a netlink socket: {0}")]
    Socket(#[source] io::Error),
    #[error("cannot send to the kernel: {0}")]
    Send(#[source] io::Error),
    #[error("cannot read the kernel's answer: {0}")]
    Receive(#[source] io::Error),
    #[error("the kernel refused {what}: {source}")]
    Refused {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("no bridge named {0:?}")]
    NoSuchBridge(String),
    #[error("cannot build {what}: {reason}")]
    Build { what: String, reason: String },
    #[error(
        "table {family} {name} exists and was not created by trafficjam: refusing to replace or \
         delete it (choose another `table` name)"
    )]
    NotOurs { family: &'static str, name: String },
    #[error("the firewall worker has stopped")]
    WorkerStopped,
    #[error(transparent)]
    Netns(#[from] NetnsError),
    /// Another process committed a change while a dump was being read.
    #[error("the ruleset kept changing while it was read")]
    DumpInterrupted,
}

impl NftError {
    /// Whether the kernel refused a rule that logs (NFLOG): a kernel without
    /// nfnetlink_log refuses every one, and nothing else.
    pub fn refused_a_log_rule(&self) -> bool {
        matches!(self, NftError::Refused { what, .. } if what.starts_with("rule ") && what.contains(" log prefix "))
    }
}

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
    fn enter(&mut self, netns: &std::path::Path) -> Result<(), NftError> {
        if self.home.is_none() {
            self.home = Some(Home::here().map_err(NftError::Socket)?);
        }
        let home = self.home.as_ref().expect("opened above");
        Ok(home.enter(netns)?)
    }

    fn leave(&mut self) {
        if let Some(home) = &self.home {
            home.leave();
        }
    }

    fn overlay_bridge(&mut self) -> Result<Option<(String, String)>, NftError> {
        overlay_bridge()
    }

    fn apply(
        &mut self,
        committed: Option<&Ruleset>,
        desired: &Ruleset,
    ) -> Result<ApplyReport, NftError> {
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

    fn drift(&mut self, desired: &Ruleset) -> Result<Vec<String>, NftError> {
        drift(desired)
    }

    fn clear(&mut self, table: &str) -> Result<(), NftError> {
        full_replace(&Ruleset::empty(table)).map(|_| ())
    }

    fn present(&mut self, table: &str) -> Result<bool, NftError> {
        // Both families, both ours: one alone (the other deleted) is restored whole.
        let owners = table_owners(table)?;
        Ok(owners.len() == Family::ALL.len() && owners.values().all(|ours| *ours))
    }

    fn counters(&mut self, table: &str) -> Result<Counters, NftError> {
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
    ) -> Result<BTreeMap<String, BridgePorts>, NftError> {
        bridge_ports(bridges)
    }

    fn bind_ports(
        &mut self,
        bridge: &str,
        ports: &[(String, crate::plan::Mac)],
    ) -> Result<(), NftError> {
        bind_ports(bridge, ports)
    }

    fn watch_ports(&mut self, mut report: PortsReport) -> Result<(), NftError> {
        // Subscribed before this returns, in the caller's namespace (the thread inherits it).
        let mut sock = subscribe_links()?;
        std::thread::Builder::new()
            .name("link-monitor".into())
            .spawn(move || {
                loop {
                    match watch_links(&sock, &mut report) {
                        Ok(()) => return,
                        Err(e) => warn!("watching the links failed ({e}); subscribing again"),
                    }
                    std::thread::sleep(std::time::Duration::from_secs(1));
                    match subscribe_links() {
                        Ok(s) => sock = s,
                        Err(e) => warn!("cannot subscribe to link changes ({e})"),
                    }
                    if !report() {
                        return;
                    }
                }
            })
            .map_err(NftError::Socket)?;
        Ok(())
    }

    fn watch_drops(&mut self, group: u16, mut report: DropReport) -> Result<(), NftError> {
        // Bound here, in the caller's namespace, so that a group taken by another program
        // is an error the caller sees.
        let mut sock = Some(nflog::subscribe(group)?);
        std::thread::Builder::new()
            .name("nflog".into())
            .spawn(move || {
                loop {
                    if let Some(s) = &sock {
                        match nflog::watch(s, &mut report) {
                            Ok(()) => return,
                            Err(e) => warn!("reading the drop log failed ({e}); binding again"),
                        }
                    }
                    // The group is bound to the old socket until it is closed.
                    sock = None;
                    std::thread::sleep(std::time::Duration::from_secs(1));
                    match nflog::subscribe(group) {
                        Ok(s) => sock = Some(s),
                        Err(e) => warn!("cannot read NFLOG group {group} ({e})"),
                    }
                    if !report(LogEvent::Lost) {
                        return;
                    }
                }
            })
            .map_err(NftError::Socket)?;
        Ok(())
    }

    fn watch(&mut self, mut report: ChangeReport) -> Result<(), NftError> {
        // Called on the worker thread, which makes every commit of ours: the kernel names
        // it as the committer of our generations.
        let committer = nix::unistd::gettid().as_raw() as u32;
        // Subscribed here, in the caller's namespace, before this returns: no change made
        // after it goes unseen. The thread inherits the namespace too.
        let mut sock = monitor::subscribe()?;
        std::thread::Builder::new()
            .name("nft-monitor".into())
            .spawn(move || {
                loop {
                    match monitor::watch(&sock, committer, &mut report) {
                        Ok(()) => return,
                        Err(e) => warn!("watching the ruleset failed ({e}); subscribing again"),
                    }
                    std::thread::sleep(std::time::Duration::from_secs(1));
                    match monitor::subscribe() {
                        Ok(s) => sock = s,
                        Err(e) => warn!("cannot subscribe to ruleset changes ({e})"),
                    }
                    // Changes may have been missed meanwhile.
                    if !report(TableChange::Overrun) {
                        return;
                    }
                }
            })
            .map_err(NftError::Socket)?;
        Ok(())
    }
}

fn protocol_family(family: Family) -> ProtocolFamily {
    match family {
        Family::Inet => ProtocolFamily::Inet,
        Family::Bridge => ProtocolFamily::Bridge,
    }
}

fn build_err(what: impl Into<String>, e: impl std::fmt::Debug) -> NftError {
    NftError::Build {
        what: what.into(),
        reason: format!("{e:?}"),
    }
}

fn table_object(family: Family, name: &str) -> rustables::Table {
    rustables::Table::new(protocol_family(family)).with_name(name)
}

/// Builds the batch that replaces our tables with `desired`; returns its message count.
/// Refuses when a table of that name exists without our mark: it is someone else's.
fn full_replace(desired: &Ruleset) -> Result<usize, NftError> {
    for (family, ours) in table_owners(&desired.table_name)? {
        if !ours {
            return Err(NftError::NotOurs {
                family: family.keyword(),
                name: desired.table_name.clone(),
            });
        }
    }
    let mut tx = Transaction::new();
    let userdata = dump::table_userdata(desired.fingerprint());
    let mut set_id = 0u32;
    for family in Family::ALL {
        let label = format!("table {} {}", family.keyword(), desired.table_name);
        let bare = table_object(family, &desired.table_name);
        tx.add(&bare, label.clone());
        tx.delete(&bare, label.clone());
        let Some(table) = desired.table(family) else {
            continue;
        };
        let nft_table = table_object(family, &table.name).with_userdata(userdata.clone());
        tx.add(&nft_table, label);

        let mut sets = HashMap::new();
        let mut set_ids = HashMap::new();
        let nfproto = dump::nfproto(family);
        for set in &table.sets {
            set_id += 1;
            set_ids.insert(set.name.clone(), set_id);
            if raw::is_range_set(set) {
                tx.add_raw(
                    raw::new_set(nfproto, &table.name, set, set_id),
                    format!("set {}", set.name),
                );
                add_range_elements(
                    &mut tx,
                    nfproto,
                    &table.name,
                    set,
                    set.elements.iter(),
                    true,
                );
                continue;
            }
            let (mut nft_set, chunks) = set_messages(&nft_table, set, set.elements.iter())?;
            nft_set = nft_set.with_id(set_id);
            nft_set.family = protocol_family(family);
            tx.add(&nft_set, format!("set {}", set.name));
            for chunk in chunks {
                tx.add(&chunk, format!("elements of set {}", set.name));
            }
            sets.insert(set.name.clone(), nft_set);
        }
        let mut chains = HashMap::new();
        for chain in &table.chains {
            let mut nft_chain = rustables::Chain::new(&nft_table).with_name(&chain.name);
            if let Some(base) = chain.base {
                let hook = match base.hook {
                    // NF_BR_PRE_ROUTING is NF_INET_PRE_ROUTING's number.
                    Hook::Prerouting => HookClass::PreRouting,
                    Hook::Forward => HookClass::Forward,
                    Hook::Input => HookClass::In,
                };
                nft_chain = nft_chain
                    .with_hook(rustables::Hook::new(hook, base.priority))
                    .with_type(ChainType::Filter)
                    .with_policy(ChainPolicy::Accept);
            }
            tx.add(&nft_chain, format!("chain {}", chain.name));
            chains.insert(chain.name.clone(), nft_chain);
        }
        for chain in &table.chains {
            let nft_chain = &chains[&chain.name];
            for rule in &chain.rules {
                let label = format!("rule \"{rule}\" in chain {}", chain.name);
                if raw::is_raw_rule(rule) {
                    let message =
                        raw::new_rule(family, nfproto, &table.name, &chain.name, rule, |s| {
                            set_ids.get(s).copied()
                        })
                        .map_err(|e| build_err(&label, e))?;
                    tx.add_raw(message, label);
                    continue;
                }
                let mut nft_rule =
                    rustables::Rule::new(nft_chain).map_err(|e| build_err(&label, e))?;
                let mut loaded = Dependencies::default();
                for m in &rule.matches {
                    add_match(&mut nft_rule, family, m, &sets, &mut loaded)
                        .map_err(|e| build_err(&label, e))?;
                }
                if rule.counter {
                    nft_rule.add_expr(Counter::default().with_nb_bytes(0u64).with_nb_packets(0u64));
                }
                nft_rule.add_expr(Immediate::new_verdict(match &rule.verdict {
                    Verdict::Continue => {
                        return Err(build_err(&label, "a rule without a verdict only logs"));
                    }
                    Verdict::Return => VerdictKind::Return,
                    Verdict::Drop => VerdictKind::Drop,
                    Verdict::Accept => VerdictKind::Accept,
                    Verdict::Jump(target) => VerdictKind::Jump {
                        chain: target.clone(),
                    },
                    Verdict::Goto(target) => VerdictKind::Goto {
                        chain: target.clone(),
                    },
                }));
                tx.add(&nft_rule, label);
            }
        }
    }
    let messages = tx.len();
    tx.commit()?;
    Ok(messages)
}

/// A set key as raw bytes: the set's declared type and length come from [`SetKey`].
struct RawKey(Vec<u8>);

impl rustables::data_type::DataType for RawKey {
    const TYPE: u32 = 0;
    const LEN: u32 = 0;

    fn data(&self) -> Vec<u8> {
        self.0.clone()
    }
}

/// The set itself and its elements, chunked to fit in netlink attributes.
fn set_messages<'a>(
    table: &rustables::Table,
    set: &Set,
    elements: impl Iterator<Item = &'a Element>,
) -> Result<(rustables::Set, Vec<SetElementList>), NftError> {
    let elements: Vec<&Element> = elements.collect();
    let what = || format!("set {}", set.name);
    let mut lists = Vec::new();
    let mut nft_set = None;
    // At least one builder runs, so the set exists even when empty.
    let chunks: Vec<&[&Element]> = if elements.is_empty() {
        vec![&[]]
    } else {
        elements.chunks(ELEMENTS_PER_MESSAGE).collect()
    };
    for chunk in chunks {
        let mut builder =
            SetBuilder::<RawKey>::new(&set.name, table).map_err(|e| build_err(what(), e))?;
        for element in chunk {
            builder.add(&RawKey(element.key_bytes()));
        }
        let (s, list) = builder.finish();
        if !chunk.is_empty() {
            lists.push(list);
        }
        nft_set.get_or_insert(s);
    }
    let mut nft_set = nft_set
        .expect("at least one chunk")
        .with_key_type(set.key.type_id())
        .with_key_len(set.key.key_len());
    if let Some(userdata) = set.key.userdata() {
        nft_set = nft_set.with_userdata(userdata.to_vec());
    }
    Ok((nft_set, lists))
}

/// Adds (or deletes) elements of a set of ranges, in messages of at most
/// `ELEMENTS_PER_MESSAGE / 4` elements (each carries both ends of its range).
fn add_range_elements<'a>(
    tx: &mut Transaction,
    nfproto: u8,
    table: &str,
    set: &Set,
    elements: impl Iterator<Item = &'a Element>,
    add: bool,
) {
    let elements: Vec<&Element> = elements.collect();
    for chunk in elements.chunks(ELEMENTS_PER_MESSAGE / 4) {
        let what = if add { "addition to" } else { "removal from" };
        tx.add_raw(
            raw::set_elements(nfproto, table, &set.name, chunk, add),
            format!("{what} set {}", set.name),
        );
    }
}

/// The batch that turns `current`'s set elements into `desired`'s (same skeleton).
fn element_transaction(
    current: &Ruleset,
    desired: &Ruleset,
) -> Result<(Transaction, usize, usize), NftError> {
    let mut tx = Transaction::new();
    let (mut added, mut removed) = (0, 0);
    for (cur_table, new_table) in current.tables.iter().zip(&desired.tables) {
        let nft_table = table_object(new_table.family, &new_table.name);
        for (cur, new) in cur_table.sets.iter().zip(&new_table.sets) {
            let gone: BTreeSet<&Element> = cur.elements.difference(&new.elements).collect();
            let fresh: BTreeSet<&Element> = new.elements.difference(&cur.elements).collect();
            removed += gone.len();
            added += fresh.len();
            if raw::is_range_set(new) {
                let nfproto = dump::nfproto(new_table.family);
                add_range_elements(
                    &mut tx,
                    nfproto,
                    &new_table.name,
                    new,
                    gone.into_iter(),
                    false,
                );
                add_range_elements(
                    &mut tx,
                    nfproto,
                    &new_table.name,
                    new,
                    fresh.into_iter(),
                    true,
                );
                continue;
            }
            for list in set_messages(&nft_table, new, gone.into_iter())?.1 {
                tx.delete(&list, format!("removal from set {}", new.name));
            }
            for list in set_messages(&nft_table, new, fresh.into_iter())?.1 {
                tx.add(&list, format!("addition to set {}", new.name));
            }
        }
    }
    Ok((tx, added, removed))
}

/// Network-layer protocol check a payload match depends on. In `inet`, `meta nfproto`; in
/// `bridge`, the ethertype (`meta protocol`), as nft itself does.
fn add_l3_dependency(rule: &mut rustables::Rule, family: Family, version: IpVersion) {
    match family {
        Family::Inet => {
            rule.add_expr(Meta::new(MetaType::NfProto));
            let proto = match version {
                IpVersion::V4 => libc::NFPROTO_IPV4,
                IpVersion::V6 => libc::NFPROTO_IPV6,
            };
            rule.add_expr(Cmp::new(CmpOp::Eq, [proto as u8]));
        }
        Family::Bridge => {
            rule.add_expr(Meta::new(MetaType::Protocol));
            let ethertype: u16 = match version {
                IpVersion::V4 => libc::ETH_P_IP as u16,
                IpVersion::V6 => libc::ETH_P_IPV6 as u16,
            };
            rule.add_expr(Cmp::new(CmpOp::Eq, ethertype.to_be_bytes()));
        }
    }
}

/// `ether type arp`, as nft checks it for an ARP field.
fn add_arp_dependency(rule: &mut rustables::Rule, loaded: &mut Dependencies) {
    if !loaded.arp {
        rule.add_expr(payload(NFT_PAYLOAD_LL_HEADER, 12, 2));
        rule.add_expr(Cmp::new(CmpOp::Eq, (libc::ETH_P_ARP as u16).to_be_bytes()));
        loaded.arp = true;
    }
}

fn payload(base: u32, offset: u32, len: u32) -> Payload {
    Payload::default()
        .with_base(base)
        .with_offset(offset)
        .with_len(len)
        .with_dreg(Register::Reg1)
}

fn address_payload(dir: Dir, version: IpVersion) -> Payload {
    let (offset, len) = match (version, dir) {
        (IpVersion::V4, Dir::Src) => (12, 4),
        (IpVersion::V4, Dir::Dst) => (16, 4),
        (IpVersion::V6, Dir::Src) => (8, 16),
        (IpVersion::V6, Dir::Dst) => (24, 16),
    };
    payload(NFT_PAYLOAD_NETWORK_HEADER, offset, len)
}

fn add_l4proto(rule: &mut rustables::Rule, proto: libc::c_int) {
    rule.add_expr(Meta::new(MetaType::L4Proto));
    rule.add_expr(Cmp::new(CmpOp::Eq, [proto as u8]));
}

fn interface_name(name: &str) -> Vec<u8> {
    // As nft does: the name NUL-padded to IFNAMSIZ, an exact match.
    let mut bytes = name.as_bytes().to_vec();
    bytes.resize(libc::IFNAMSIZ, 0);
    bytes
}

/// The protocol checks a rule already made, so that each is made once, as nft does.
#[derive(Debug, Default)]
struct Dependencies {
    network: Option<IpVersion>,
    arp: bool,
}

/// Where a lookup field is loaded from, and how long it is.
fn field_payload(field: Field, dreg: Register) -> Payload {
    let (base, offset, len) = match field {
        Field::IifName => unreachable!("a meta field"),
        Field::EtherSource => (NFT_PAYLOAD_LL_HEADER, 6, 6),
        Field::IpSource(version) => {
            let p = address_payload(Dir::Src, version);
            return p.with_dreg(dreg);
        }
        // ARP for Ethernet and IPv4: sender MAC at 8, sender IP at 14.
        Field::ArpSenderMac => (NFT_PAYLOAD_NETWORK_HEADER, 8, 6),
        Field::ArpSenderIp => (NFT_PAYLOAD_NETWORK_HEADER, 14, 4),
        Field::AdvertTarget => (NFT_PAYLOAD_TRANSPORT_HEADER, 8, 16),
        Field::NdOptionMac(offset) => (NFT_PAYLOAD_TRANSPORT_HEADER, u32::from(offset) + 2, 6),
        flow => unreachable!("{flow:?} is looked up by raw::new_rule"),
    };
    payload(base, offset, len).with_dreg(dreg)
}

fn add_match(
    rule: &mut rustables::Rule,
    family: Family,
    m: &Match,
    sets: &HashMap<String, rustables::Set>,
    loaded: &mut Dependencies,
) -> Result<(), String> {
    match m {
        Match::IifName(name) => {
            rule.add_expr(Meta::new(MetaType::IifName));
            rule.add_expr(Cmp::new(CmpOp::Eq, interface_name(name)));
        }
        Match::OifName(name) => {
            rule.add_expr(Meta::new(MetaType::OifName));
            rule.add_expr(Cmp::new(CmpOp::Eq, interface_name(name)));
        }
        Match::Ipv6Fragment => return Err("exthdr is encoded by raw::new_rule".into()),
        Match::OifNameNot(name) => {
            rule.add_expr(Meta::new(MetaType::OifName));
            rule.add_expr(Cmp::new(CmpOp::Neq, interface_name(name)));
        }
        Match::IifNameNot(name) => {
            rule.add_expr(Meta::new(MetaType::IifName));
            rule.add_expr(Cmp::new(CmpOp::Neq, interface_name(name)));
        }
        Match::DestPort(ports) => {
            add_l4proto(rule, libc::c_int::from(ports.protocol.number()));
            rule.add_expr(payload(NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2));
            if ports.first == ports.last {
                rule.add_expr(Cmp::new(CmpOp::Eq, ports.first.to_be_bytes()));
            } else {
                rule.add_expr(Cmp::new(CmpOp::Gte, ports.first.to_be_bytes()));
                rule.add_expr(Cmp::new(CmpOp::Lte, ports.last.to_be_bytes()));
            }
        }
        Match::CtEstablishedRelated => {
            let states = (ConnTrackState::ESTABLISHED | ConnTrackState::RELATED).bits();
            rule.add_expr(Conntrack::new(ConntrackKey::State));
            rule.add_expr(
                Bitwise::new(states.to_ne_bytes(), 0u32.to_ne_bytes())
                    .map_err(|e| e.to_string())?,
            );
            rule.add_expr(Cmp::new(CmpOp::Neq, 0u32.to_ne_bytes()));
        }
        Match::Subnet(dir, net) => {
            let version = IpVersion::of(&net.ip());
            if loaded.network != Some(version) {
                add_l3_dependency(rule, family, version);
                loaded.network = Some(version);
            }
            rule.add_expr(address_payload(*dir, version));
            let (mask, addr) = match (net.mask(), net.network()) {
                (IpAddr::V4(m), IpAddr::V4(a)) => (m.octets().to_vec(), a.octets().to_vec()),
                (IpAddr::V6(m), IpAddr::V6(a)) => (m.octets().to_vec(), a.octets().to_vec()),
                _ => return Err("mask and address of different families".into()),
            };
            if net.prefix() as usize != mask.len() * 8 {
                let zero = vec![0u8; mask.len()];
                rule.add_expr(Bitwise::new(mask, zero).map_err(|e| e.to_string())?);
            }
            rule.add_expr(Cmp::new(CmpOp::Eq, addr));
        }
        Match::InSet(dir, version, name) => {
            let set = sets.get(name).ok_or_else(|| format!("no set {name}"))?;
            add_l3_dependency(rule, family, *version);
            loaded.network = Some(*version);
            rule.add_expr(address_payload(*dir, *version));
            rule.add_expr(Lookup::new(set).map_err(|e| e.to_string())?);
        }
        Match::Icmpv6Types(from, to) => {
            add_l4proto(rule, libc::IPPROTO_ICMPV6);
            rule.add_expr(payload(NFT_PAYLOAD_TRANSPORT_HEADER, 0, 1));
            if from == to {
                rule.add_expr(Cmp::new(CmpOp::Eq, [*from]));
            } else {
                rule.add_expr(Cmp::new(CmpOp::Gte, [*from]));
                rule.add_expr(Cmp::new(CmpOp::Lte, [*to]));
            }
        }
        Match::TcpSyn => {
            // tcp flags & (fin | syn | rst | ack) == syn
            add_l4proto(rule, libc::IPPROTO_TCP);
            rule.add_expr(payload(NFT_PAYLOAD_TRANSPORT_HEADER, 13, 1));
            rule.add_expr(Bitwise::new([0x17u8], [0u8]).map_err(|e| e.to_string())?);
            rule.add_expr(Cmp::new(CmpOp::Eq, [0x02u8]));
        }
        Match::Ipv4Fragment => {
            add_l3_dependency(rule, family, IpVersion::V4);
            rule.add_expr(payload(NFT_PAYLOAD_NETWORK_HEADER, 6, 2));
            rule.add_expr(Bitwise::new([0x3fu8, 0xff], [0u8, 0]).map_err(|e| e.to_string())?);
            rule.add_expr(Cmp::new(CmpOp::Neq, [0u8, 0]));
        }
        Match::EtherType(ethertype) => {
            let value: u16 = match ethertype {
                EtherType::Ipv4 => libc::ETH_P_IP as u16,
                EtherType::Ipv6 => libc::ETH_P_IPV6 as u16,
                EtherType::Arp => libc::ETH_P_ARP as u16,
            };
            // The link-layer header as the frame carries it: the kernel rebuilds a moved-out
            // VLAN tag for this read (nft_payload_copy_vlan), so a tagged frame reads 0x8100.
            rule.add_expr(payload(NFT_PAYLOAD_LL_HEADER, 12, 2));
            rule.add_expr(Cmp::new(CmpOp::Eq, value.to_be_bytes()));
            if *ethertype == EtherType::Arp {
                loaded.arp = true;
            }
        }
        Match::UdpSourcePort(port) => {
            add_l4proto(rule, libc::IPPROTO_UDP);
            rule.add_expr(payload(NFT_PAYLOAD_TRANSPORT_HEADER, 0, 2));
            rule.add_expr(Cmp::new(CmpOp::Eq, port.to_be_bytes()));
        }
        Match::Ipv4Unspecified => {
            add_l3_dependency(rule, family, IpVersion::V4);
            loaded.network = Some(IpVersion::V4);
            rule.add_expr(address_payload(Dir::Src, IpVersion::V4));
            rule.add_expr(Cmp::new(CmpOp::Eq, [0u8; 4]));
        }
        Match::Ipv6Unspecified => {
            add_l3_dependency(rule, family, IpVersion::V6);
            loaded.network = Some(IpVersion::V6);
            rule.add_expr(address_payload(Dir::Src, IpVersion::V6));
            rule.add_expr(Cmp::new(CmpOp::Eq, [0u8; 16]));
        }
        Match::NdLinkLayerOption { offset, kind } => {
            rule.add_expr(payload(NFT_PAYLOAD_TRANSPORT_HEADER, u32::from(*offset), 2));
            rule.add_expr(Cmp::new(CmpOp::Eq, [*kind, 1]));
        }
        Match::Ipv6Length(length) => {
            if loaded.network != Some(IpVersion::V6) {
                add_l3_dependency(rule, family, IpVersion::V6);
                loaded.network = Some(IpVersion::V6);
            }
            rule.add_expr(payload(NFT_PAYLOAD_NETWORK_HEADER, 4, 2));
            rule.add_expr(Cmp::new(CmpOp::Eq, length.to_be_bytes()));
        }
        Match::Ipv6NextHeader(next) => {
            if loaded.network != Some(IpVersion::V6) {
                add_l3_dependency(rule, family, IpVersion::V6);
                loaded.network = Some(IpVersion::V6);
            }
            rule.add_expr(payload(NFT_PAYLOAD_NETWORK_HEADER, 6, 1));
            rule.add_expr(Cmp::new(CmpOp::Eq, [*next]));
        }
        Match::LinkLocalGroup => {
            rule.add_expr(payload(NFT_PAYLOAD_LL_HEADER, 0, 6));
            rule.add_expr(
                Bitwise::new([0xffu8, 0xff, 0xff, 0xff, 0xff, 0xf0], [0u8; 6])
                    .map_err(|e| e.to_string())?,
            );
            rule.add_expr(Cmp::new(CmpOp::Eq, [0x01u8, 0x80, 0xc2, 0, 0, 0]));
        }
        Match::ArpProbe => {
            add_arp_dependency(rule, loaded);
            rule.add_expr(field_payload(Field::ArpSenderIp, Register::Reg1));
            rule.add_expr(Cmp::new(CmpOp::Eq, [0u8; 4]));
        }
        Match::Lookup(fields, name) => {
            let set = sets.get(name).ok_or_else(|| format!("no set {name}"))?;
            for field in fields {
                match field {
                    Field::IpSource(version) if loaded.network != Some(*version) => {
                        add_l3_dependency(rule, family, *version);
                        loaded.network = Some(*version);
                    }
                    Field::ArpSenderMac | Field::ArpSenderIp => add_arp_dependency(rule, loaded),
                    _ => {}
                }
            }
            // A concatenation fills consecutive registers: the interface name takes
            // 16 bytes, exactly one 128-bit register.
            for (field, dreg) in fields.iter().zip([Register::Reg1, Register::Reg2]) {
                match field {
                    Field::IifName => {
                        rule.add_expr(Meta::new(MetaType::IifName).with_dreg(dreg));
                    }
                    other => {
                        rule.add_expr(field_payload(*other, dreg));
                    }
                }
            }
            if fields.len() > 2 || (fields.len() == 2 && fields[0] != Field::IifName) {
                return Err(format!("cannot concatenate {fields:?}"));
            }
            rule.add_expr(Lookup::new(set).map_err(|e| e.to_string())?);
        }
        Match::EchoRequest(version) => {
            let (proto, echo) = match version {
                IpVersion::V4 => (libc::IPPROTO_ICMP, 8u8),
                IpVersion::V6 => (libc::IPPROTO_ICMPV6, 128u8),
            };
            add_l4proto(rule, proto);
            rule.add_expr(payload(NFT_PAYLOAD_TRANSPORT_HEADER, 0, 1));
            rule.add_expr(Cmp::new(CmpOp::Eq, [echo]));
        }
    }
    Ok(())
}

/// Compares what the kernel holds with `desired`; returns the differences, empty when the
/// kernel holds exactly `desired` (tables, fingerprint, chains, rule counts, set elements).
pub fn drift(desired: &Ruleset) -> Result<Vec<String>, NftError> {
    let installed = read_installed(&desired.table_name)?;
    let mut problems = Vec::new();
    for family in Family::ALL {
        let want = desired.table(family);
        let have = installed.tables.get(&family);
        let name = format!("table {} {}", family.keyword(), desired.table_name);
        match (want, have) {
            (None, None) => {}
            (None, Some(_)) => problems.push(format!("{name} should not exist")),
            (Some(_), None) => problems.push(format!("{name} is missing")),
            (Some(want), Some(have)) => {
                match have.fingerprint {
                    None => problems.push(format!("{name} is not ours (no trafficjam mark)")),
                    Some(f) if f != desired.fingerprint() => {
                        problems.push(format!("{name} was not written by this ruleset"))
                    }
                    Some(_) => {}
                }
                let want_chains: BTreeMap<&str, usize> = want
                    .chains
                    .iter()
                    .map(|c| (c.name.as_str(), c.rules.len()))
                    .collect();
                let have_chains: BTreeMap<&str, usize> = have
                    .rules_per_chain
                    .iter()
                    .map(|(c, n)| (c.as_str(), *n))
                    .collect();
                if want_chains != have_chains {
                    problems.push(format!(
                        "{name}: chains and rule counts differ: want {want_chains:?}, have {have_chains:?}"
                    ));
                }
                for set in &want.sets {
                    match have.sets.get(&set.name) {
                        None => problems.push(format!("{name}: set {} is missing", set.name)),
                        Some(elements)
                            if *elements
                                != set.elements.iter().map(Element::stored_bytes).collect() =>
                        {
                            problems.push(format!(
                                "{name}: set {} holds {} elements, want {}",
                                set.name,
                                elements.len(),
                                set.elements.len()
                            ))
                        }
                        Some(_) => {}
                    }
                }
            }
        }
    }
    Ok(problems)
}
