//! Reading our tables back from the kernel (netlink dumps), to detect drift and to report
//! counters. Only our table name is looked at; other tables are skipped unread.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use rustables::sys::{
    NFNL_SUBSYS_NFTABLES, NFT_MSG_GETCHAIN, NFT_MSG_GETRULE, NFT_MSG_GETSET, NFT_MSG_GETSETELEM,
    NFT_MSG_GETTABLE, NFTA_CHAIN_NAME, NFTA_CHAIN_TABLE, NFTA_COUNTER_PACKETS, NFTA_DATA_VALUE,
    NFTA_EXPR_DATA, NFTA_EXPR_NAME, NFTA_LIST_ELEM, NFTA_RULE_CHAIN, NFTA_RULE_EXPRESSIONS,
    NFTA_RULE_TABLE, NFTA_SET_ELEM_KEY, NFTA_SET_ELEM_LIST_ELEMENTS, NFTA_SET_ELEM_LIST_SET,
    NFTA_SET_ELEM_LIST_TABLE, NFTA_SET_NAME, NFTA_SET_TABLE, NFTA_TABLE_NAME, NFTA_TABLE_USERDATA,
};

use super::NftError;
use super::netlink::{netlink_socket, push_attr, read_answers, send_all, set_receive_timeout};
use crate::plan::Family;

/// What trafficjam writes at the start of its tables' user data: the mark of a table it
/// created. A table of the configured name without it belongs to someone else.
pub const OWNER_MARK: &[u8] = b"trafficjam1:";

/// Our user data: the owner mark, then the skeleton fingerprint.
pub fn table_userdata(fingerprint: u64) -> Vec<u8> {
    let mut data = OWNER_MARK.to_vec();
    data.extend_from_slice(&fingerprint.to_be_bytes());
    data
}

/// The fingerprint in a table's user data, when the table is ours.
fn owned_fingerprint(userdata: Option<&[u8]>) -> Option<u64> {
    let rest = userdata?.strip_prefix(OWNER_MARK)?;
    Some(u64::from_be_bytes(rest.try_into().ok()?))
}

/// One table with our name as the kernel holds it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InstalledTable {
    /// The skeleton fingerprint we stored in the table's user data; `None` when the table
    /// does not carry our mark (it is not ours).
    pub fingerprint: Option<u64>,
    /// Every chain, with its number of rules.
    pub rules_per_chain: BTreeMap<String, usize>,
    /// Packets counted by the rules of each chain (our counters only count drops).
    pub dropped_per_chain: BTreeMap<String, u64>,
    /// Every set, with its elements.
    pub sets: BTreeMap<String, BTreeSet<IpAddr>>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InstalledRuleset {
    pub tables: BTreeMap<Family, InstalledTable>,
}

fn nfproto(family: Family) -> u8 {
    match family {
        Family::Inet => libc::NFPROTO_INET as u8,
        Family::Bridge => libc::NFPROTO_BRIDGE as u8,
    }
}

/// Iterates over the netlink attributes in `buf` as (type, payload).
fn attributes(buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    let mut rest = buf;
    std::iter::from_fn(move || {
        if rest.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([rest[0], rest[1]]) as usize;
        let kind = u16::from_ne_bytes([rest[2], rest[3]]) & 0x3fff;
        if len < 4 || len > rest.len() {
            return None;
        }
        let payload = &rest[4..len];
        rest = &rest[len.next_multiple_of(4).min(rest.len())..];
        Some((kind, payload))
    })
}

fn attribute(buf: &[u8], kind: u16) -> Option<&[u8]> {
    attributes(buf).find(|(k, _)| *k == kind).map(|(_, p)| p)
}

fn string(payload: &[u8]) -> String {
    let end = payload
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(payload.len());
    String::from_utf8_lossy(&payload[..end]).into_owned()
}

fn cstr(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

/// Runs one dump request and returns the attribute part of every answer.
fn dump(msg: u32, family: Family, attrs: &[u8]) -> Result<Vec<Vec<u8>>, NftError> {
    const HDR: usize = std::mem::size_of::<libc::nlmsghdr>();
    const NFGENMSG: usize = 4;
    let len = HDR + NFGENMSG + attrs.len();
    let mut req = Vec::with_capacity(len);
    req.extend_from_slice(&(len as u32).to_ne_bytes());
    req.extend_from_slice(&(((NFNL_SUBSYS_NFTABLES << 8) | msg) as u16).to_ne_bytes());
    req.extend_from_slice(&((libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16).to_ne_bytes());
    req.extend_from_slice(&1u32.to_ne_bytes());
    req.extend_from_slice(&0u32.to_ne_bytes());
    req.extend_from_slice(&[nfproto(family), 0, 0, 0]); // family, NFNETLINK_V0, res_id
    req.extend_from_slice(attrs);

    let sock = netlink_socket(libc::NETLINK_NETFILTER)?;
    set_receive_timeout(&sock)?;
    send_all(&sock, &req)?;
    let mut answers = Vec::new();
    read_answers(&sock, |answer| match answer.kind as libc::c_int {
        _ if answer.flags & libc::NLM_F_DUMP_INTR as u16 != 0 => Some(Err(NftError::Receive(
            io::Error::other("the ruleset changed during the dump; read again"),
        ))),
        libc::NLMSG_DONE => Some(Ok(())),
        libc::NLMSG_ERROR => Some(match answer.errno() {
            Ok(0) => Ok(()),
            Ok(errno) => Err(NftError::Refused {
                what: "a dump of our tables".into(),
                source: io::Error::from_raw_os_error(errno),
            }),
            Err(e) => Err(e),
        }),
        _ => {
            if let Some(attrs) = answer.body.get(NFGENMSG..) {
                answers.push(attrs.to_vec());
            }
            None
        }
    })?;
    Ok(answers)
}

/// Packets counted by the `counter` expressions of one rule.
fn counted_packets(rule_attrs: &[u8]) -> u64 {
    let Some(exprs) = attribute(rule_attrs, NFTA_RULE_EXPRESSIONS) else {
        return 0;
    };
    attributes(exprs)
        .filter(|(k, _)| *k == NFTA_LIST_ELEM)
        .filter(|(_, e)| attribute(e, NFTA_EXPR_NAME).map(string).as_deref() == Some("counter"))
        .filter_map(|(_, e)| attribute(e, NFTA_EXPR_DATA))
        .filter_map(|d| attribute(d, NFTA_COUNTER_PACKETS))
        .filter_map(|p| p.try_into().ok().map(u64::from_be_bytes))
        .sum()
}

fn read_table(
    family: Family,
    table: &str,
    userdata: Option<&[u8]>,
) -> Result<InstalledTable, NftError> {
    let mut installed = InstalledTable {
        fingerprint: owned_fingerprint(userdata),
        ..InstalledTable::default()
    };
    for chain in dump(NFT_MSG_GETCHAIN, family, &[])? {
        if attribute(&chain, NFTA_CHAIN_TABLE).map(string).as_deref() == Some(table)
            && let Some(name) = attribute(&chain, NFTA_CHAIN_NAME)
        {
            installed.rules_per_chain.insert(string(name), 0);
        }
    }
    let mut filter = Vec::new();
    push_attr(&mut filter, NFTA_RULE_TABLE, &cstr(table));
    for rule in dump(NFT_MSG_GETRULE, family, &filter)? {
        if attribute(&rule, NFTA_RULE_TABLE).map(string).as_deref() != Some(table) {
            continue;
        }
        let Some(chain) = attribute(&rule, NFTA_RULE_CHAIN).map(string) else {
            continue;
        };
        *installed.rules_per_chain.entry(chain.clone()).or_default() += 1;
        *installed.dropped_per_chain.entry(chain).or_default() += counted_packets(&rule);
    }
    for set in dump(NFT_MSG_GETSET, family, &[])? {
        if attribute(&set, NFTA_SET_TABLE).map(string).as_deref() != Some(table) {
            continue;
        }
        let Some(name) = attribute(&set, NFTA_SET_NAME).map(string) else {
            continue;
        };
        let mut filter = Vec::new();
        push_attr(&mut filter, NFTA_SET_ELEM_LIST_TABLE, &cstr(table));
        push_attr(&mut filter, NFTA_SET_ELEM_LIST_SET, &cstr(&name));
        let mut elements = BTreeSet::new();
        for answer in dump(NFT_MSG_GETSETELEM, family, &filter)? {
            let Some(list) = attribute(&answer, NFTA_SET_ELEM_LIST_ELEMENTS) else {
                continue;
            };
            for (_, element) in attributes(list) {
                let key = attribute(element, NFTA_SET_ELEM_KEY)
                    .and_then(|k| attribute(k, NFTA_DATA_VALUE));
                let addr = match key {
                    Some(k) if k.len() == 4 => {
                        IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(k).expect("4")))
                    }
                    Some(k) if k.len() == 16 => {
                        IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(k).expect("16")))
                    }
                    _ => continue,
                };
                elements.insert(addr);
            }
        }
        installed.sets.insert(name, elements);
    }
    Ok(installed)
}

/// For each family where a table named `table` exists: whether it carries our mark.
/// Cheap (table dumps only): checked before every batch that deletes or replaces tables.
pub fn table_owners(table: &str) -> Result<BTreeMap<Family, bool>, NftError> {
    let mut owners = BTreeMap::new();
    for family in Family::ALL {
        if let Some(t) = dump(NFT_MSG_GETTABLE, family, &[])?
            .into_iter()
            .find(|t| attribute(t, NFTA_TABLE_NAME).map(string).as_deref() == Some(table))
        {
            owners.insert(
                family,
                owned_fingerprint(attribute(&t, NFTA_TABLE_USERDATA)).is_some(),
            );
        }
    }
    Ok(owners)
}

/// Reads our tables (named `table`, `inet` and `bridge` families) back from the kernel.
pub fn read_installed(table: &str) -> Result<InstalledRuleset, NftError> {
    let mut ruleset = InstalledRuleset::default();
    for family in Family::ALL {
        let found = dump(NFT_MSG_GETTABLE, family, &[])?
            .into_iter()
            .find(|t| attribute(t, NFTA_TABLE_NAME).map(string).as_deref() == Some(table));
        if let Some(t) = found {
            let installed = read_table(family, table, attribute(&t, NFTA_TABLE_USERDATA))?;
            ruleset.tables.insert(family, installed);
        }
    }
    Ok(ruleset)
}
