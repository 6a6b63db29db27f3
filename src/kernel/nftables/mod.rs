//! Our nftables tables: a [`Ruleset`] written in one batch, read back, compared, cleared.
//!
//! A thin translation: every [`Match`] becomes a few rustables expressions, and every
//! change is ONE netlink batch, so the kernel never holds half a ruleset and a refused
//! batch leaves the previous ruleset in force. Only tables named `Ruleset::table_name` in
//! the `inet` and `bridge` families are ever touched.
//!
//! Two kinds of batch:
//! - full: `add table; delete table; add table; …contents`, for both families (the
//!   add-then-delete makes "delete" valid whether or not the table existed);
//! - elements: when only set elements differ from what we last committed (whitelists,
//!   grants, bound ports), the batch adds and deletes set elements, so its size follows
//!   the change, not the size of the sets.

pub mod dump;
mod encode;
mod expr;
pub(crate) mod monitor;
pub(crate) mod raw;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use rustables::expr::{Counter, Immediate, VerdictKind};
use rustables::set::{SetBuilder, SetElementList};
use rustables::{ChainPolicy, ChainType, HookClass, ProtocolFamily};

use super::KernelError;
use crate::kernel::netlink::{Label, Transaction};
use crate::plan::{
    Dir, Element, EtherType, Family, Field, Hook, IpVersion, Match, Ruleset, Set, Verdict,
};
use dump::{read_installed, table_owners};
use expr::*;

/// Set elements per netlink message: the element list is one attribute, and an attribute
/// length is 16 bits (an IPv6 element takes 28 bytes).
const ELEMENTS_PER_MESSAGE: usize = 1024;

fn protocol_family(family: Family) -> ProtocolFamily {
    match family {
        Family::Inet => ProtocolFamily::Inet,
        Family::Bridge => ProtocolFamily::Bridge,
    }
}

fn build_err(what: impl Into<String>, e: impl std::fmt::Debug) -> KernelError {
    KernelError::Build {
        what: what.into(),
        reason: format!("{e:?}"),
    }
}

fn table_object(family: Family, name: &str) -> rustables::Table {
    rustables::Table::new(protocol_family(family)).with_name(name)
}

/// Builds the batch that replaces our tables with `desired`; returns its message count.
/// Refuses when a table of that name exists without our mark: it is someone else's.
pub(crate) fn full_replace(desired: &Ruleset) -> Result<usize, KernelError> {
    for (family, ours) in table_owners(&desired.table_name)? {
        if !ours {
            return Err(KernelError::NotOurs {
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
                let label = Label {
                    what: format!("rule \"{rule}\" in chain {}", chain.name),
                    log_rule: rule.log.is_some(),
                };
                if raw::is_raw_rule(rule) {
                    let message =
                        raw::new_rule(family, nfproto, &table.name, &chain.name, rule, |s| {
                            set_ids.get(s).copied()
                        })
                        .map_err(|e| build_err(&label.what, e))?;
                    tx.add_raw(message, label);
                    continue;
                }
                let mut nft_rule =
                    rustables::Rule::new(nft_chain).map_err(|e| build_err(&label.what, e))?;
                let mut loaded = Dependencies::default();
                for m in &rule.matches {
                    add_match(&mut nft_rule, family, m, &sets, &mut loaded)
                        .map_err(|e| build_err(&label.what, e))?;
                }
                if rule.counter {
                    nft_rule.add_expr(Counter::default().with_nb_bytes(0u64).with_nb_packets(0u64));
                }
                nft_rule.add_expr(Immediate::new_verdict(match &rule.verdict {
                    Verdict::Continue => {
                        return Err(build_err(&label.what, "a rule without a verdict only logs"));
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

/// A set key as raw bytes: the set's declared type and length come from [`crate::plan::SetKey`].
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
) -> Result<(rustables::Set, Vec<SetElementList>), KernelError> {
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
pub(crate) fn element_transaction(
    current: &Ruleset,
    desired: &Ruleset,
) -> Result<(Transaction, usize, usize), KernelError> {
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

/// Compares what the kernel holds with `desired`; returns the differences, empty when the
/// kernel holds exactly `desired` (tables, fingerprint, chains, rule counts, set elements).
pub fn drift(desired: &Ruleset) -> Result<Vec<String>, KernelError> {
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
