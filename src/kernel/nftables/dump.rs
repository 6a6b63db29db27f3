//! Reading our tables back from the kernel (netlink dumps), to detect drift and to report
//! counters. Only our table name is looked at; other tables are skipped unread.

use std::collections::{BTreeMap, BTreeSet};
use std::io;

use rustables::sys::{
    NFNL_SUBSYS_NFTABLES, NFT_MSG_GETCHAIN, NFT_MSG_GETRULE, NFT_MSG_GETSET, NFT_MSG_GETSETELEM,
    NFT_MSG_GETTABLE, NFTA_CHAIN_NAME, NFTA_CHAIN_TABLE, NFTA_COUNTER_PACKETS, NFTA_DATA_VALUE,
    NFTA_EXPR_DATA, NFTA_EXPR_NAME, NFTA_LIST_ELEM, NFTA_RULE_CHAIN, NFTA_RULE_EXPRESSIONS,
    NFTA_RULE_TABLE, NFTA_SET_ELEM_KEY, NFTA_SET_ELEM_KEY_END, NFTA_SET_ELEM_LIST_ELEMENTS,
    NFTA_SET_ELEM_LIST_SET, NFTA_SET_ELEM_LIST_TABLE, NFTA_SET_NAME, NFTA_SET_TABLE,
    NFTA_TABLE_NAME, NFTA_TABLE_USERDATA,
};

use crate::kernel::KernelError;
use nix::sys::socket::SockProtocol;

use crate::kernel::netlink::{
    Answer, netlink_socket, push_attr, read_answers, send_all, set_receive_timeout,
};
use crate::plan::{Counters, Family};

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
    /// Every set, with its elements' keys as the kernel holds them.
    pub sets: BTreeMap<String, BTreeSet<Vec<u8>>>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InstalledRuleset {
    pub tables: BTreeMap<Family, InstalledTable>,
}

pub(crate) fn nfproto(family: Family) -> u8 {
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

pub(crate) fn attribute(buf: &[u8], kind: u16) -> Option<&[u8]> {
    attributes(buf).find(|(k, _)| *k == kind).map(|(_, p)| p)
}

pub(crate) fn string(payload: &[u8]) -> String {
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
fn dump(msg: u32, family: Family, attrs: &[u8]) -> Result<Vec<Vec<u8>>, KernelError> {
    const HDR: usize = std::mem::size_of::<libc::nlmsghdr>();
    let len = HDR + NFGENMSG + attrs.len();
    let mut req = Vec::with_capacity(len);
    req.extend_from_slice(&(len as u32).to_ne_bytes());
    req.extend_from_slice(&(((NFNL_SUBSYS_NFTABLES << 8) | msg) as u16).to_ne_bytes());
    req.extend_from_slice(&((libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16).to_ne_bytes());
    req.extend_from_slice(&1u32.to_ne_bytes());
    req.extend_from_slice(&0u32.to_ne_bytes());
    req.extend_from_slice(&[nfproto(family), 0, 0, 0]); // family, NFNETLINK_V0, res_id
    req.extend_from_slice(attrs);

    // A dump another process's commit interrupted is read again, as nft does.
    for _ in 0..DUMP_TRIES {
        let sock = netlink_socket(SockProtocol::NetlinkNetFilter)?;
        set_receive_timeout(&sock)?;
        send_all(&sock, &req)?;
        let mut answers = Vec::new();
        match read_answers(&sock, |answer| collect_dump(&answer, &mut answers)) {
            Err(KernelError::DumpInterrupted) => continue,
            result => return result.map(|()| answers),
        }
    }
    Err(KernelError::DumpInterrupted)
}

/// How many times a dump is read before giving up on a ruleset that keeps changing.
const DUMP_TRIES: usize = 10;

const NFGENMSG: usize = 4;

/// Takes one message of a dump: its attributes go to `answers`; the end of the dump, or
/// an error, is the result.
fn collect_dump(
    answer: &Answer<'_>,
    answers: &mut Vec<Vec<u8>>,
) -> Option<Result<(), KernelError>> {
    match answer.kind as libc::c_int {
        _ if answer.flags & libc::NLM_F_DUMP_INTR as u16 != 0 => {
            Some(Err(KernelError::DumpInterrupted))
        }
        libc::NLMSG_DONE => Some(Ok(())),
        libc::NLMSG_ERROR => Some(match answer.errno() {
            Ok(0) => Ok(()),
            Ok(errno) => Err(KernelError::Refused {
                what: "a dump of our tables".into(),
                source: io::Error::from_raw_os_error(errno),
                log_rule: false,
            }),
            Err(e) => Err(e),
        }),
        _ => {
            if let Some(attrs) = answer.body.get(NFGENMSG..) {
                answers.push(attrs.to_vec());
            }
            None
        }
    }
}

/// The addresses in one answer of a set-element dump.
fn set_elements(answer: &[u8]) -> impl Iterator<Item = Vec<u8>> + '_ {
    attribute(answer, NFTA_SET_ELEM_LIST_ELEMENTS)
        .into_iter()
        .flat_map(attributes)
        .filter_map(|(_, element)| {
            let key = attribute(element, NFTA_SET_ELEM_KEY)
                .and_then(|k| attribute(k, NFTA_DATA_VALUE))?;
            let mut stored = key.to_vec();
            // A range's end follows its start (as `Element::stored_bytes` puts them).
            if let Some(end) = attribute(element, NFTA_SET_ELEM_KEY_END)
                .and_then(|k| attribute(k, NFTA_DATA_VALUE))
            {
                stored.extend_from_slice(end);
            }
            Some(stored)
        })
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

/// Every rule of our table `table` in `family`: its chain, and the packets its counters
/// counted.
fn rules(family: Family, table: &str) -> Result<Vec<(String, u64)>, KernelError> {
    let mut filter = Vec::new();
    push_attr(&mut filter, NFTA_RULE_TABLE, &cstr(table));
    Ok(dump(NFT_MSG_GETRULE, family, &filter)?
        .iter()
        .filter(|rule| attribute(rule, NFTA_RULE_TABLE).map(string).as_deref() == Some(table))
        .filter_map(|rule| {
            let chain = attribute(rule, NFTA_RULE_CHAIN).map(string)?;
            Some((chain, counted_packets(rule)))
        })
        .collect())
}

fn read_table(
    family: Family,
    table: &str,
    userdata: Option<&[u8]>,
) -> Result<InstalledTable, KernelError> {
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
    for (chain, packets) in rules(family, table)? {
        *installed.rules_per_chain.entry(chain.clone()).or_default() += 1;
        *installed.dropped_per_chain.entry(chain).or_default() += packets;
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
        let elements = dump(NFT_MSG_GETSETELEM, family, &filter)?
            .iter()
            .flat_map(|answer| set_elements(answer).collect::<Vec<_>>())
            .collect();
        installed.sets.insert(name, elements);
    }
    Ok(installed)
}

/// For each family where a table named `table` exists: whether it carries our mark.
/// Cheap (table dumps only): checked before every batch that deletes or replaces tables.
pub fn table_owners(table: &str) -> Result<BTreeMap<Family, bool>, KernelError> {
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

/// The drop counters of our tables named `table`, per chain: rule dumps only, so the cost
/// does not grow with the whitelists.
pub fn read_counters(table: &str) -> Result<Counters, KernelError> {
    let mut counters = Counters::new();
    let ours = table_owners(table)?
        .into_iter()
        .filter_map(|(family, ours)| ours.then_some(family));
    for family in ours {
        for (chain, packets) in rules(family, table)? {
            *counters.entry((family, chain)).or_default() += packets;
        }
    }
    Ok(counters)
}

/// Reads our tables (named `table`, `inet` and `bridge` families) back from the kernel.
pub fn read_installed(table: &str) -> Result<InstalledRuleset, KernelError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::netlink::parse_answers;

    // Captured from the kernel with `strace -e read=3 nft list set inet tjcap wl4_web` and
    // `nft list chain inet tjcap fwd_web`, on a table holding wl4_web = { 10.1.0.2,
    // 10.1.0.3 } and `chain fwd_web { counter packets 7 bytes 420 drop }`.
    const SET_ELEMENTS: &[u8] = b"\x50\x00\x00\x00\x0c\x0a\x02\x00\x00\x00\x00\x00\xc2\x26\x00\x00\x01\x00\x00\x02\x0a\x00\x01\x00\x74\x6a\x63\x61\x70\x00\x00\x00\x0c\x00\x02\x00\x77\x6c\x34\x5f\x77\x65\x62\x00\x24\x00\x03\x00\x10\x00\x01\x00\x0c\x00\x01\x00\x08\x00\x01\x00\x0a\x01\x00\x02\x10\x00\x01\x00\x0c\x00\x01\x00\x08\x00\x01\x00\x0a\x01\x00\x03";
    const SET_ELEMENTS_END: &[u8] = b"\x30\x00\x00\x00\x0c\x0a\x02\x00\x00\x00\x00\x00\xc2\x26\x00\x00\x01\x00\x00\x02\x0a\x00\x01\x00\x74\x6a\x63\x61\x70\x00\x00\x00\x0c\x00\x02\x00\x77\x6c\x34\x5f\x77\x65\x62\x00\x04\x00\x03\x00\x14\x00\x00\x00\x03\x00\x02\x00\x00\x00\x00\x00\xc2\x26\x00\x00\x00\x00\x00\x00";
    const COUNTED_RULE: &[u8] = b"\x98\x00\x00\x00\x06\x0a\x02\x08\x00\x00\x00\x00\xc2\x26\x00\x00\x01\x00\x00\x02\x0a\x00\x01\x00\x74\x6a\x63\x61\x70\x00\x00\x00\x0c\x00\x02\x00\x66\x77\x64\x5f\x77\x65\x62\x00\x0c\x00\x03\x00\x00\x00\x00\x00\x00\x00\x00\x03\x60\x00\x04\x00\x2c\x00\x01\x00\x0c\x00\x01\x00\x63\x6f\x75\x6e\x74\x65\x72\x00\x1c\x00\x02\x00\x0c\x00\x01\x00\x00\x00\x00\x00\x00\x00\x01\xa4\x0c\x00\x02\x00\x00\x00\x00\x00\x00\x00\x00\x07\x30\x00\x01\x00\x0e\x00\x01\x00\x69\x6d\x6d\x65\x64\x69\x61\x74\x65\x00\x00\x00\x1c\x00\x02\x00\x08\x00\x01\x00\x00\x00\x00\x00\x10\x00\x02\x00\x0c\x00\x02\x00\x08\x00\x01\x00\x00\x00\x00\x00";

    /// Feeds captured datagrams to the dump collector, as `dump` does with the socket's.
    fn collect(datagrams: &[&[u8]]) -> (Option<Result<(), KernelError>>, Vec<Vec<u8>>) {
        let mut answers = Vec::new();
        for datagram in datagrams {
            if let Some(end) = parse_answers(datagram, &mut |a| collect_dump(&a, &mut answers)) {
                return (Some(end), answers);
            }
        }
        (None, answers)
    }

    #[test]
    fn a_captured_set_dump_gives_its_elements() {
        let (end, answers) = collect(&[SET_ELEMENTS, SET_ELEMENTS_END]);
        assert!(matches!(end, Some(Ok(()))), "the dump did not end");
        assert_eq!(answers.len(), 2);
        assert_eq!(
            attribute(&answers[0], NFTA_SET_ELEM_LIST_SET).map(string),
            Some("wl4_web".to_owned())
        );
        let elements: BTreeSet<Vec<u8>> = answers.iter().flat_map(|a| set_elements(a)).collect();
        assert_eq!(
            elements,
            BTreeSet::from([vec![10, 1, 0, 2], vec![10, 1, 0, 3]])
        );
    }

    #[test]
    fn a_captured_rule_gives_its_chain_and_counter() {
        let (end, answers) = collect(&[COUNTED_RULE]);
        assert!(end.is_none(), "a rule alone does not end the dump");
        let rule = &answers[0];
        assert_eq!(
            attribute(rule, NFTA_RULE_TABLE).map(string).as_deref(),
            Some("tjcap")
        );
        assert_eq!(
            attribute(rule, NFTA_RULE_CHAIN).map(string).as_deref(),
            Some("fwd_web")
        );
        assert_eq!(counted_packets(rule), 7);
    }

    #[test]
    fn an_interrupted_dump_is_an_error() {
        let mut interrupted = SET_ELEMENTS.to_vec();
        let flags =
            u16::from_ne_bytes([interrupted[6], interrupted[7]]) | libc::NLM_F_DUMP_INTR as u16;
        interrupted[6..8].copy_from_slice(&flags.to_ne_bytes());
        let (end, _) = collect(&[&interrupted]);
        // Told apart, so that `dump` reads it again.
        assert!(matches!(end, Some(Err(KernelError::DumpInterrupted))));
    }

    #[test]
    fn user_data_tells_our_tables_from_others() {
        let ours = table_userdata(0x0123_4567_89ab_cdef);
        assert_eq!(owned_fingerprint(Some(&ours)), Some(0x0123_4567_89ab_cdef));
        assert_eq!(owned_fingerprint(Some(b"someone else")), None);
        assert_eq!(owned_fingerprint(None), None);
    }
}
