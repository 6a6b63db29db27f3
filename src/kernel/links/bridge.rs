//! br_netfilter, per bridge: whether the stateful `inet` rules see bridged traffic at all.
//!
//! Traffic between two containers on one bridge is bridged, not routed; the `inet` forward
//! chain only sees it through br_netfilter, either globally
//! (`net.bridge.bridge-nf-call-iptables`) or per bridge (the `nf_call_iptables` bridge
//! attribute). A CAP_NET_ADMIN process may set the attribute over rtnetlink (sysfs is
//! read-only under the service's hardening). Without br_netfilter the stateless bridge
//! backstop still keeps non-whitelisted containers apart.

use std::io;
use std::path::Path;

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::link::{
    InfoBridge, InfoData, InfoKind, LinkAttribute, LinkInfo, LinkMessage,
};
use nix::sys::socket::SockProtocol;

use crate::kernel::BridgeFiltering;
use crate::kernel::KernelError;
use crate::kernel::netlink::{netlink_socket, read_acks, send_all, set_receive_timeout};

/// What to do about br_netfilter on managed bridges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BridgeNetfilter {
    /// Turn on `nf_call_iptables`/`nf_call_ip6tables` on every managed bridge.
    Enable,
    /// Leave the bridges as they are (tests of the stateless backstop).
    Leave,
}

fn sysctl_on(name: &str) -> Option<bool> {
    let path = Path::new("/proc/sys/net/bridge").join(name);
    std::fs::read_to_string(path).ok().map(|v| v.trim() == "1")
}

/// Reports (and, with [`BridgeNetfilter::Enable`], turns on) br_netfilter for one bridge
/// in the calling thread's network namespace.
pub fn bridge_filtering(bridge: &str, policy: BridgeNetfilter) -> BridgeFiltering {
    let report = |stateful: bool, detail: String| BridgeFiltering {
        bridge: bridge.to_owned(),
        stateful,
        detail,
    };
    // The sysctls exist exactly when the br_netfilter module is loaded (or built in).
    let (Some(global4), Some(global6)) = (
        sysctl_on("bridge-nf-call-iptables"),
        sysctl_on("bridge-nf-call-ip6tables"),
    ) else {
        return report(
            false,
            "br_netfilter is not loaded (modprobe br_netfilter): stateless backstop only".into(),
        );
    };
    let attribute = match policy {
        BridgeNetfilter::Enable => Some(set_nf_call(bridge, true)),
        BridgeNetfilter::Leave => None,
    };
    match attribute {
        Some(Ok(())) => report(true, "nf_call_iptables set on the bridge".into()),
        _ if global4 && global6 => report(true, "bridge-nf-call-ip(6)tables = 1".into()),
        Some(Err(e)) => report(
            false,
            format!("could not set nf_call_iptables on the bridge ({e}): stateless backstop only"),
        ),
        None => report(
            false,
            "bridge-nf-call-ip(6)tables is off: stateless backstop only".into(),
        ),
    }
}

/// The RTM_NEWLINK message that sets `nf_call_iptables` and `nf_call_ip6tables` on the
/// bridge with interface index `index` (a change of an existing link, like `ip link set BR
/// type bridge nf_call_iptables 1 nf_call_ip6tables 1`).
fn nf_call_message(index: u32, on: bool) -> Vec<u8> {
    let mut link = LinkMessage::default();
    link.header.index = index;
    link.attributes.push(LinkAttribute::LinkInfo(vec![
        LinkInfo::Kind(InfoKind::Bridge),
        LinkInfo::Data(InfoData::Bridge(vec![
            InfoBridge::NfCallIpTables(on),
            InfoBridge::NfCallIp6Tables(on),
        ])),
    ]));
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_ACK;
    header.sequence_number = 1;
    let mut message = NetlinkMessage::new(
        header,
        NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(link)),
    );
    message.finalize();
    let mut bytes = vec![0; message.buffer_len()];
    message.serialize(&mut bytes);
    bytes
}

/// Sets `nf_call_iptables` and `nf_call_ip6tables` on a bridge, in the calling thread's
/// network namespace.
pub fn set_nf_call(bridge: &str, on: bool) -> Result<(), KernelError> {
    let index = nix::net::if_::if_nametoindex(bridge)
        .map_err(|_| KernelError::NoSuchBridge(bridge.to_owned()))?;
    let sock = netlink_socket(SockProtocol::NetlinkRoute)?;
    set_receive_timeout(&sock)?;
    send_all(&sock, &nf_call_message(index, on))?;
    let mut result = Ok(());
    read_acks(&sock, |_, errno| {
        if errno != 0 {
            result = Err(KernelError::Refused {
                what: format!("nf_call_iptables on bridge {bridge}"),
                source: io::Error::from_raw_os_error(errno),
                log_rule: false,
            });
        }
        true
    })?;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The message trafficjam sent before netlink-packet-route built it (hand-assembled:
    /// ifinfomsg for index 7, IFLA_LINKINFO { kind "bridge", data { NF_CALL_IPTABLES 1,
    /// NF_CALL_IP6TABLES 1 } }), which the kernel tier showed the kernel accepts.
    const HAND_BUILT: &[u8] = &[
        0x44, 0, 0, 0, 0x10, 0, 0x05, 0, 1, 0, 0, 0, 0, 0, 0, 0, // nlmsghdr
        0, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // ifinfomsg
        0x24, 0, 0x12, 0x80, // IFLA_LINKINFO (nested)
        0x0b, 0, 1, 0, b'b', b'r', b'i', b'd', b'g', b'e', 0, 0, // IFLA_INFO_KIND
        0x14, 0, 2, 0x80, // IFLA_INFO_DATA (nested)
        5, 0, 36, 0, 1, 0, 0, 0, // IFLA_BR_NF_CALL_IPTABLES
        5, 0, 37, 0, 1, 0, 0, 0, // IFLA_BR_NF_CALL_IP6TABLES
    ];

    #[test]
    fn the_message_matches_the_hand_built_one_but_for_the_nested_flags() {
        let built = nf_call_message(7, true);
        assert_eq!(built.len(), HAND_BUILT.len());
        // NLA_F_NESTED (bit 15 of an attribute type) is optional for these attributes.
        let without_nested_flag = |bytes: &[u8]| {
            let mut bytes = bytes.to_vec();
            for at in [35, 51] {
                bytes[at] &= 0x7f;
            }
            bytes
        };
        assert_eq!(without_nested_flag(&built), without_nested_flag(HAND_BUILT));
        assert_eq!(nf_call_message(7, false)[56], 0);
    }
}
