//! br_netfilter, per bridge: whether the stateful `inet` rules see bridged traffic at all.
//!
//! Traffic between two containers on one bridge is bridged, not routed; the `inet` forward
//! chain only sees it through br_netfilter, either globally
//! (`net.bridge.bridge-nf-call-iptables`) or per bridge (the `nf_call_iptables` bridge
//! attribute). A CAP_NET_ADMIN process may set the attribute over rtnetlink (sysfs is
//! read-only under the service's hardening). Without br_netfilter the stateless bridge
//! backstop still keeps non-whitelisted containers apart.

use std::ffi::CString;
use std::io;
use std::path::Path;

use super::NftError;
use super::netlink::{netlink_socket, push_attr, read_acks, send_all, set_receive_timeout};

// From <linux/if_link.h>; not all of them are in the libc crate.
const IFLA_LINKINFO: u16 = 18;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_DATA: u16 = 2;
const IFLA_BR_NF_CALL_IPTABLES: u16 = 36;
const IFLA_BR_NF_CALL_IP6TABLES: u16 = 37;
const NLA_F_NESTED: u16 = 1 << 15;

/// Whether stateful filtering is active on one managed bridge, and why (not).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeFiltering {
    pub bridge: String,
    /// True when br_netfilter hands this bridge's IPv4 and IPv6 traffic to the `inet`
    /// chains, so connection tracking applies; false means the stateless backstop alone.
    pub stateful: bool,
    pub detail: String,
}

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

/// Sets `nf_call_iptables` and `nf_call_ip6tables` on a bridge (RTM_NEWLINK on an
/// existing link is a change, like `ip link set BR type bridge nf_call_iptables 1`).
pub fn set_nf_call(bridge: &str, on: bool) -> Result<(), NftError> {
    let name = CString::new(bridge).map_err(|_| NftError::NoSuchBridge(bridge.to_owned()))?;
    // SAFETY: name is a valid NUL-terminated string.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if index == 0 {
        return Err(NftError::NoSuchBridge(bridge.to_owned()));
    }

    let mut data = Vec::new();
    push_attr(&mut data, IFLA_BR_NF_CALL_IPTABLES, &[u8::from(on)]);
    push_attr(&mut data, IFLA_BR_NF_CALL_IP6TABLES, &[u8::from(on)]);
    let mut linkinfo = Vec::new();
    push_attr(&mut linkinfo, IFLA_INFO_KIND, b"bridge\0");
    push_attr(&mut linkinfo, IFLA_INFO_DATA | NLA_F_NESTED, &data);
    let mut attrs = Vec::new();
    push_attr(&mut attrs, IFLA_LINKINFO | NLA_F_NESTED, &linkinfo);

    // struct ifinfomsg: family, pad, type, index, flags, change.
    let mut ifinfo = vec![libc::AF_UNSPEC as u8, 0, 0, 0];
    ifinfo.extend_from_slice(&(index as i32).to_ne_bytes());
    ifinfo.extend_from_slice(&[0; 8]);

    let len = std::mem::size_of::<libc::nlmsghdr>() + ifinfo.len() + attrs.len();
    let mut msg = Vec::with_capacity(len);
    msg.extend_from_slice(&(len as u32).to_ne_bytes());
    msg.extend_from_slice(&libc::RTM_NEWLINK.to_ne_bytes());
    msg.extend_from_slice(&((libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16).to_ne_bytes());
    msg.extend_from_slice(&1u32.to_ne_bytes()); // seq
    msg.extend_from_slice(&0u32.to_ne_bytes()); // pid
    msg.extend_from_slice(&ifinfo);
    msg.extend_from_slice(&attrs);

    let sock = netlink_socket(libc::NETLINK_ROUTE)?;
    set_receive_timeout(&sock)?;
    send_all(&sock, &msg)?;
    let mut result = Ok(());
    read_acks(&sock, |_, errno| {
        if errno != 0 {
            result = Err(NftError::Refused {
                what: format!("nf_call_iptables on bridge {bridge}"),
                source: io::Error::from_raw_os_error(errno),
            });
        }
        true
    })?;
    result
}
