//! The bridges' links over rtnetlink: each bridge's ports and the container MAC behind
//! each ([`ports`]), whether br_netfilter hands a bridge to the `inet` hooks ([`bridge`]),
//! and the forwarding database that binds each container's MAC to its port ([`fdb`]).

pub mod bridge;
pub mod fdb;
pub mod ports;
