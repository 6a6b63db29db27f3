//! What trafficjam reads from Docker (bollard; never writes): the managed networks, their
//! bridges and subnets, and the addresses of the containers matching their whitelists.
//!
//! [`DockerClient::snapshot`] (in `client`) gathers plain data ([`Snapshot`], defined
//! here); [`managed_networks`] (in `resolve`) turns it into the plan's input without I/O;
//! [`swarm`] holds Docker's naming conventions for Swarm overlay networks.

mod client;
mod resolve;
pub mod swarm;

use std::net::IpAddr;
use std::path::PathBuf;

use ipnetwork::IpNetwork;

use crate::config::{NetworkPolicy, PolicySource};
use crate::plan::Mac;

pub use client::{DockerClient, known_sandbox_directory};
pub use resolve::{managed_networks, parse_mac};

/// Why Docker could not be asked: it cannot be reached, or it refused a request.
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    #[error("cannot use Docker at {host}: {}", error_chain(.source))]
    Connect {
        host: String,
        #[source]
        source: bollard::errors::Error,
    },
    #[error("Docker request failed ({what}): {}", error_chain(.source))]
    Request {
        what: String,
        #[source]
        source: bollard::errors::Error,
    },
}

/// An error and its causes, "a: b: c": bollard's own message hides the cause that tells
/// an operator what to do ("client error (Connect)" for a refused socket permission).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        let part = e.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        cause = e.source();
    }
    text
}

/// A container attached to a managed network, with its addresses there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub container_id: String,
    pub container_name: String,
    pub addrs: Vec<IpAddr>,
    /// The endpoint's MAC, as Docker assigned it (port security finds the container's
    /// port by it).
    pub mac: Option<Mac>,
}

/// One managed network as Docker describes it, with its policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkSnapshot {
    pub name: String,
    pub id: String,
    pub bridge: String,
    pub subnets: Vec<IpNetwork>,
    /// The containers matching the whitelist that have an address on this network.
    pub whitelisted: Vec<Endpoint>,
    /// For each of the policy's allow rules (same order), the containers on this network
    /// its `from` and its `to` choose.
    pub allowed: Vec<AllowedEndpoints>,
    /// Every container on the network (whitelisted or not).
    pub endpoints: Vec<Endpoint>,
    /// The gateway addresses of the network's subnets.
    pub gateways: Vec<IpAddr>,
    pub policy: NetworkPolicy,
    pub source: PolicySource,
    /// A Swarm overlay network: isolated in its own namespace on this node, not on a
    /// bridge of the host (`bridge` is then empty).
    pub overlay: Option<Overlay>,
}

/// Where a Swarm overlay network is on this node.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Overlay {
    /// Its namespace, `<exec-root>/netns/<epoch>-<id>` cut to 12 bytes (see
    /// [`swarm::overlay_epoch`]), in the directory of a running container's sandbox
    /// (Docker's, not a guess), or in the kernel's mount table; None while it is not
    /// mounted (no local container on the network).
    pub netns: Option<PathBuf>,
    /// Why its namespace cannot be looked for (not that it does not exist).
    pub problem: Option<String>,
}

/// The containers an allow rule chooses on one network.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AllowedEndpoints {
    pub from: Vec<Endpoint>,
    pub to: Vec<Endpoint>,
}

/// Everything one pass needs from Docker.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Snapshot {
    pub networks: Vec<NetworkSnapshot>,
    /// Configured networks that do not exist (yet): waited for.
    pub waiting: Vec<String>,
    /// Problems to log, as (network, message).
    pub warnings: Vec<(String, String)>,
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_error_shows_its_causes_once() {
        let io = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        let text = super::error_chain(&bollard::errors::Error::from(io));
        assert!(text.contains("permission denied"), "{text}");
        assert_eq!(text.matches("permission denied").count(), 1, "{text}");
    }

    /// Through hyper's client, as the daemon meets it: the OS's reason is in the message.
    #[tokio::test]
    async fn a_socket_that_cannot_be_opened_is_named_with_the_reason() {
        // A file that is not a socket: connect(2) refuses it.
        let path = std::env::temp_dir().join(format!("tj-not-a-socket-{}", std::process::id()));
        std::fs::write(&path, b"").unwrap();
        let docker = bollard::Docker::connect_with_unix(
            path.to_str().unwrap(),
            5,
            bollard::API_DEFAULT_VERSION,
        )
        .unwrap();
        let error = docker.version().await.unwrap_err();
        std::fs::remove_file(&path).unwrap();
        let text = super::error_chain(&error);
        assert!(text.contains("Connection refused"), "{text}");
    }
}
