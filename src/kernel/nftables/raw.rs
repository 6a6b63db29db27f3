//! nftables messages rustables cannot express, encoded as nft 1.0.6 encodes them (captured
//! with `nft --debug=netlink` and `strace -e write=all`): sets of ranges over a
//! concatenation (the kernel's pipapo set, which needs the fields' lengths and both ends
//! of every element), rules that look up a concatenation of connection fields, which
//! lie in 32-bit registers (`ip saddr . ip daddr` fills registers 1 and 9), and the IPv6
//! fragment header's presence (`exthdr`).

use crate::plan::names::{LOG_BURST, LOG_RATE};
use crate::plan::{Dir, Element, Family, Field, Match, Rule, Set, Verdict};

use super::encode::{L3Key, address_field, l3_dependency};
use crate::kernel::netlink::{nft_message, push_attr};

// Message types and flags (linux/netfilter/nf_tables.h, linux/netlink.h).
const NFT_MSG_NEWRULE: u32 = 6;
const NFT_MSG_NEWSET: u32 = 9;
const NFT_MSG_NEWSETELEM: u32 = 12;
const NFT_MSG_DELSETELEM: u32 = 14;
const NLM_F_CREATE: u16 = 0x400;
const NLM_F_APPEND: u16 = 0x800;
const NLA_F_NESTED: u16 = 0x8000;

const NFTA_LIST_ELEM: u16 = 1;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_VERDICT_CODE: u16 = 1;
const NFTA_VERDICT_CHAIN: u16 = 2;

const NFTA_SET_TABLE: u16 = 1;
const NFTA_SET_NAME: u16 = 2;
const NFTA_SET_FLAGS: u16 = 3;
const NFTA_SET_KEY_TYPE: u16 = 4;
const NFTA_SET_KEY_LEN: u16 = 5;
const NFTA_SET_DESC: u16 = 9;
const NFTA_SET_ID: u16 = 10;
const NFTA_SET_DESC_CONCAT: u16 = 2;
const NFTA_SET_FIELD_LEN: u16 = 1;
const NFT_SET_INTERVAL: u32 = 0x4;
const NFT_SET_CONCAT: u32 = 0x80;

const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_KEY_END: u16 = 10;

const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;

// Registers: the four 128-bit ones are 1 to 4, the sixteen 32-bit ones 8 to 23 (alias).
const NFT_REG_VERDICT: u32 = 0;
const NFT_REG_1: u32 = 1;
const NFT_REG32_00: u32 = 8;

const NFT_META_PROTOCOL: u32 = 1;
const NFT_META_NFPROTO: u32 = 15;
const NFT_META_L4PROTO: u32 = 16;
const NFT_PAYLOAD_LL_HEADER: u32 = 0;
const NFT_PAYLOAD_NETWORK_HEADER: u32 = 1;
const NFT_PAYLOAD_TRANSPORT_HEADER: u32 = 2;
const NFT_CMP_EQ: u32 = 0;
const NFT_BYTEORDER_HTON: u32 = 1;
const NEXTHDR_FRAGMENT: u8 = 44;
const NFT_EXTHDR_F_PRESENT: u32 = 1;
const NFT_EXTHDR_OP_IPV6: u32 = 0;

// Verdict codes (NF_DROP, NF_ACCEPT, NFT_JUMP, NFT_GOTO, NFT_RETURN).
const NF_DROP: i32 = 0;
const NF_ACCEPT: i32 = 1;
const NFT_JUMP: i32 = -3;
const NFT_GOTO: i32 = -4;
const NFT_RETURN: i32 = -5;

fn cstr(s: &str) -> Vec<u8> {
    let mut b = s.as_bytes().to_vec();
    b.push(0);
    b
}

fn be32(v: u32) -> [u8; 4] {
    v.to_be_bytes()
}

fn nested(buf: &mut Vec<u8>, kind: u16, fill: impl FnOnce(&mut Vec<u8>)) {
    let mut inner = Vec::new();
    fill(&mut inner);
    push_attr(buf, kind | NLA_F_NESTED, &inner);
}

/// Whether a set is sent by this module (its elements are ranges).
pub(crate) fn is_range_set(set: &Set) -> bool {
    set.key.range_fields().is_some()
}

/// Whether a rule is encoded by this module: it looks up connection fields, or asks for
/// an IPv6 extension header (rustables has no `exthdr`).
pub(crate) fn is_raw_rule(rule: &Rule) -> bool {
    rule.log.is_some()
        || rule.matches.iter().any(|m| match m {
            Match::Lookup(fields, _) => fields.iter().any(|f| f.of_flow()),
            Match::Ipv6Fragment => true,
            _ => false,
        })
}

/// `NEWSET` for a set of ranges over a concatenation.
pub(crate) fn new_set(family: u8, table: &str, set: &Set, id: u32) -> Vec<u8> {
    let fields = set.key.range_fields().unwrap_or_default();
    let mut body = Vec::new();
    push_attr(&mut body, NFTA_SET_TABLE, &cstr(table));
    push_attr(&mut body, NFTA_SET_NAME, &cstr(&set.name));
    push_attr(
        &mut body,
        NFTA_SET_FLAGS,
        &be32(NFT_SET_INTERVAL | NFT_SET_CONCAT),
    );
    push_attr(&mut body, NFTA_SET_KEY_TYPE, &be32(set.key.type_id()));
    push_attr(&mut body, NFTA_SET_KEY_LEN, &be32(set.key.key_len()));
    push_attr(&mut body, NFTA_SET_ID, &be32(id));
    nested(&mut body, NFTA_SET_DESC, |desc| {
        nested(desc, NFTA_SET_DESC_CONCAT, |concat| {
            for len in &fields {
                nested(concat, NFTA_LIST_ELEM, |field| {
                    push_attr(field, NFTA_SET_FIELD_LEN, &be32(*len));
                });
            }
        });
    });
    nft_message(NFT_MSG_NEWSET, NLM_F_CREATE, family, &body)
}

/// `NEWSETELEM` (or `DELSETELEM`) for elements of a set of ranges: each with both ends.
pub(crate) fn set_elements(
    family: u8,
    table: &str,
    set: &str,
    elements: &[&Element],
    add: bool,
) -> Vec<u8> {
    let mut body = Vec::new();
    push_attr(&mut body, NFTA_SET_ELEM_LIST_TABLE, &cstr(table));
    push_attr(&mut body, NFTA_SET_ELEM_LIST_SET, &cstr(set));
    nested(&mut body, NFTA_SET_ELEM_LIST_ELEMENTS, |list| {
        for element in elements {
            nested(list, NFTA_LIST_ELEM, |e| {
                nested(e, NFTA_SET_ELEM_KEY, |k| {
                    push_attr(k, NFTA_DATA_VALUE, &element.key_bytes());
                });
                if let Some(end) = element.key_end_bytes() {
                    nested(e, NFTA_SET_ELEM_KEY_END, |k| {
                        push_attr(k, NFTA_DATA_VALUE, &end);
                    });
                }
            });
        }
    });
    if add {
        nft_message(NFT_MSG_NEWSETELEM, NLM_F_CREATE, family, &body)
    } else {
        nft_message(NFT_MSG_DELSETELEM, 0, family, &body)
    }
}

/// One expression: its name and its attributes.
fn expr(list: &mut Vec<u8>, name: &str, fill: impl FnOnce(&mut Vec<u8>)) {
    nested(list, NFTA_LIST_ELEM, |e| {
        push_attr(e, NFTA_EXPR_NAME, &cstr(name));
        nested(e, NFTA_EXPR_DATA, fill);
    });
}

fn meta(list: &mut Vec<u8>, key: u32, dreg: u32) {
    // NFTA_META_DREG, NFTA_META_KEY
    expr(list, "meta", |d| {
        push_attr(d, 1, &be32(dreg));
        push_attr(d, 2, &be32(key));
    });
}

fn cmp_eq(list: &mut Vec<u8>, sreg: u32, data: &[u8]) {
    // NFTA_CMP_SREG, NFTA_CMP_OP, NFTA_CMP_DATA
    expr(list, "cmp", |d| {
        push_attr(d, 1, &be32(sreg));
        push_attr(d, 2, &be32(NFT_CMP_EQ));
        nested(d, 3, |v| push_attr(v, NFTA_DATA_VALUE, data));
    });
}

fn payload(list: &mut Vec<u8>, base: u32, offset: u32, len: u32, dreg: u32) {
    // NFTA_PAYLOAD_DREG, _BASE, _OFFSET, _LEN
    expr(list, "payload", |d| {
        push_attr(d, 1, &be32(dreg));
        push_attr(d, 2, &be32(base));
        push_attr(d, 3, &be32(offset));
        push_attr(d, 4, &be32(len));
    });
}

/// The register nft picks for a concatenation field at `offset` bytes: a 128-bit one when
/// it starts one, else the 32-bit one.
fn register_at(offset: u32) -> u32 {
    if offset % 16 == 0 {
        NFT_REG_1 + offset / 16
    } else {
        NFT_REG32_00 + offset / 4
    }
}

/// Loads one concatenation field into `dreg`; returns its length in the key (padded).
fn load(list: &mut Vec<u8>, field: Field, dreg: u32) -> Result<u32, String> {
    match field {
        Field::IpSource(v) | Field::IpDest(v) => {
            let dir = if matches!(field, Field::IpSource(_)) {
                Dir::Src
            } else {
                Dir::Dst
            };
            let (offset, len) = address_field(dir, v);
            payload(list, NFT_PAYLOAD_NETWORK_HEADER, offset, len, dreg);
            Ok(len)
        }
        Field::L4Proto => {
            meta(list, NFT_META_L4PROTO, dreg);
            // As nft does for a protocol in a set of ranges (a no-op on one byte).
            expr(list, "byteorder", |d| {
                push_attr(d, 1, &be32(dreg));
                push_attr(d, 2, &be32(dreg));
                push_attr(d, 3, &be32(NFT_BYTEORDER_HTON));
                push_attr(d, 4, &be32(1));
                push_attr(d, 5, &be32(2));
            });
            Ok(4)
        }
        Field::DestPort | Field::SourcePort => {
            let offset = if field == Field::DestPort { 2 } else { 0 };
            payload(list, NFT_PAYLOAD_TRANSPORT_HEADER, offset, 2, dreg);
            Ok(4)
        }
        other => Err(format!("{other:?} is not a connection field")),
    }
}

/// `NEWRULE` for a rule of lookups of connection fields, IPv6 fragment checks, or a
/// rate-limited log (rustables has no `limit`), in `chain`.
/// `set_ids` gives the id each set was created with in this batch.
pub(crate) fn new_rule(
    family: Family,
    nfproto: u8,
    table: &str,
    chain: &str,
    rule: &Rule,
    set_id: impl Fn(&str) -> Option<u32>,
) -> Result<Vec<u8>, String> {
    let mut exprs = Vec::new();
    for m in &rule.matches {
        if *m == Match::Ipv6Fragment {
            // As nft: the ethertype (bridge) or the family (inet), then the header's
            // presence.
            match family {
                Family::Bridge => {
                    payload(&mut exprs, NFT_PAYLOAD_LL_HEADER, 12, 2, NFT_REG_1);
                    cmp_eq(
                        &mut exprs,
                        NFT_REG_1,
                        &(libc::ETH_P_IPV6 as u16).to_be_bytes(),
                    );
                }
                Family::Inet => {
                    meta(&mut exprs, NFT_META_NFPROTO, NFT_REG_1);
                    cmp_eq(&mut exprs, NFT_REG_1, &[libc::NFPROTO_IPV6 as u8]);
                }
            }
            // NFTA_EXTHDR_DREG, _TYPE (u8), _OFFSET, _LEN, _FLAGS, _OP
            expr(&mut exprs, "exthdr", |d| {
                push_attr(d, 1, &be32(NFT_REG_1));
                push_attr(d, 2, &[NEXTHDR_FRAGMENT]);
                push_attr(d, 3, &be32(0));
                push_attr(d, 4, &be32(1));
                push_attr(d, 5, &be32(NFT_EXTHDR_F_PRESENT));
                push_attr(d, 6, &be32(NFT_EXTHDR_OP_IPV6));
            });
            cmp_eq(&mut exprs, NFT_REG_1, &[1]);
            continue;
        }
        let Match::Lookup(fields, set) = m else {
            return Err(format!("{m} cannot be encoded here"));
        };
        let version = fields
            .iter()
            .find_map(|f| match f {
                Field::IpSource(v) | Field::IpDest(v) => Some(*v),
                _ => None,
            })
            .ok_or("a lookup of connection fields without an address")?;
        // The network-layer check the address loads depend on, as nft makes it.
        let (key, value) = l3_dependency(family, version);
        let key = match key {
            L3Key::NfProto => NFT_META_NFPROTO,
            L3Key::Protocol => NFT_META_PROTOCOL,
        };
        meta(&mut exprs, key, NFT_REG_1);
        cmp_eq(&mut exprs, NFT_REG_1, &value);
        let mut offset = 0;
        for field in fields {
            offset += load(&mut exprs, *field, register_at(offset))?;
        }
        let id = set_id(set);
        // NFTA_LOOKUP_SET, _SREG, _SET_ID
        expr(&mut exprs, "lookup", |d| {
            push_attr(d, 1, &cstr(set));
            push_attr(d, 2, &be32(NFT_REG_1));
            if let Some(id) = id {
                push_attr(d, 4, &be32(id));
            }
        });
    }
    if let Some(log) = &rule.log {
        // NFTA_LIMIT_RATE, _UNIT (seconds), _BURST, _TYPE (packets), _FLAGS
        expr(&mut exprs, "limit", |d| {
            push_attr(d, 1, &u64::from(LOG_RATE).to_be_bytes());
            push_attr(d, 2, &1u64.to_be_bytes());
            push_attr(d, 3, &be32(LOG_BURST));
            push_attr(d, 4, &be32(0));
            push_attr(d, 5, &be32(0));
        });
        // NFTA_LOG_GROUP, _PREFIX
        expr(&mut exprs, "log", |d| {
            push_attr(d, 1, &log.group.to_be_bytes());
            push_attr(d, 2, &cstr(&log.prefix));
        });
    }
    if rule.counter {
        // NFTA_COUNTER_BYTES, _PACKETS
        expr(&mut exprs, "counter", |d| {
            push_attr(d, 1, &0u64.to_be_bytes());
            push_attr(d, 2, &0u64.to_be_bytes());
        });
    }
    let (code, target) = match &rule.verdict {
        Verdict::Continue => (0, None),
        Verdict::Return => (NFT_RETURN, None),
        Verdict::Drop => (NF_DROP, None),
        Verdict::Accept => (NF_ACCEPT, None),
        Verdict::Jump(c) => (NFT_JUMP, Some(c)),
        Verdict::Goto(c) => (NFT_GOTO, Some(c)),
    };
    // NFTA_IMMEDIATE_DREG, _DATA
    if rule.verdict != Verdict::Continue {
        expr(&mut exprs, "immediate", |d| {
            push_attr(d, 1, &be32(NFT_REG_VERDICT));
            nested(d, 2, |data| {
                nested(data, NFTA_DATA_VERDICT, |v| {
                    push_attr(v, NFTA_VERDICT_CODE, &code.to_be_bytes());
                    if let Some(chain) = target {
                        push_attr(v, NFTA_VERDICT_CHAIN, &cstr(chain));
                    }
                });
            });
        });
    }
    let mut body = Vec::new();
    push_attr(&mut body, NFTA_RULE_TABLE, &cstr(table));
    push_attr(&mut body, NFTA_RULE_CHAIN, &cstr(chain));
    push_attr(&mut body, NFTA_RULE_EXPRESSIONS | NLA_F_NESTED, &exprs);
    Ok(nft_message(
        NFT_MSG_NEWRULE,
        NLM_F_CREATE | NLM_F_APPEND,
        nfproto,
        &body,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_land_in_the_registers_nft_uses() {
        // ip saddr . ip daddr . meta l4proto . th dport: reg 1, 9, 10, 11 (IPv4);
        // ip6 saddr . ip6 daddr . meta l4proto . th dport: reg 1, 2, 3, 17 (IPv6).
        let offsets = |lens: &[u32]| -> Vec<u32> {
            let mut at = 0;
            lens.iter()
                .map(|l| {
                    let r = register_at(at);
                    at += l;
                    r
                })
                .collect()
        };
        assert_eq!(offsets(&[4, 4, 4, 4]), [1, 9, 10, 11]);
        assert_eq!(offsets(&[16, 16, 4, 4]), [1, 2, 3, 17]);
    }
}
