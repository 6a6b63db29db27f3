//! What trafficjam reads from Docker (bollard; never writes): the managed networks, their
//! bridges and subnets, and the addresses of the containers matching their whitelists.
//!
//! [`DockerClient::snapshot`] gathers plain data ([`Snapshot`]); [`managed_networks`] turns
//! it into the plan's input without I/O.

pub mod swarm;

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bollard::Docker;
use bollard::models::EventMessage;
use bollard::query_parameters::{
    EventsOptions, InspectContainerOptions, InspectNetworkOptions, ListContainersOptions,
    ListNetworksOptions,
};
use futures_util::Stream;
use ipnetwork::IpNetwork;

use crate::config::{
    self, Config, Filter, LABEL_ALLOW_PREFIX, NetworkPolicy, PolicySource, Selector,
};
use crate::plan::{IpVersion, Mac, ManagedNetwork};
use crate::policy::Grant;

/// Requests (not event streams) must answer within this time.
const REQUEST_TIMEOUT_SECS: u64 = 10;
const BRIDGE_NAME_OPTION: &str = "com.docker.network.bridge.name";

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
    /// Its namespace, `<exec-root>/netns/<epoch>-<first 10 of the id>`, in the directory
    /// of a running container's sandbox (Docker's, not a guess), or in the kernel's mount
    /// table; None while it is not mounted (no local container on the network).
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

/// The plan's input: each managed network with the addresses of its whitelisted
/// containers on that network, and its allow rules resolved to pairs of addresses.
pub fn managed_networks(snapshot: &Snapshot) -> Vec<ManagedNetwork> {
    snapshot
        .networks
        .iter()
        .map(|n| ManagedNetwork {
            name: n.name.clone(),
            bridge: n.bridge.clone(),
            subnets: n.subnets.clone(),
            whitelist: n
                .whitelisted
                .iter()
                .flat_map(|e| e.addrs.iter().copied())
                .collect(),
            host_access: n.policy.host_access,
            host_ports: n.policy.host_ports.clone(),
            deny_outbound: n.policy.deny_outbound.clone(),
            allow_rules: !n.policy.allow.is_empty(),
            grants: grants(&n.policy, &n.allowed),
            gateways: n.gateways.clone(),
            mode: n.policy.mode,
            ..ManagedNetwork::default()
        })
        .collect()
}

/// Every (from, to, ports) the allow rules give, address by address, within a family.
fn grants(policy: &NetworkPolicy, allowed: &[AllowedEndpoints]) -> BTreeSet<Grant> {
    let mut grants = BTreeSet::new();
    for (rule, sides) in policy.allow.iter().zip(allowed) {
        let ports: Vec<Option<_>> = match &rule.ports {
            None => vec![None],
            Some(list) => list.iter().copied().map(Some).collect(),
        };
        for from in sides.from.iter().flat_map(|e| &e.addrs) {
            for to in sides.to.iter().flat_map(|e| &e.addrs) {
                if IpVersion::of(from) != IpVersion::of(to) || from == to {
                    continue;
                }
                for p in &ports {
                    grants.insert(Grant {
                        from: *from,
                        to: *to,
                        ports: *p,
                    });
                }
            }
        }
    }
    grants
}

/// The endpoints of the containers in `matching` (id -> name, as `docker ps` listed them).
/// While a container starts, Docker 28 may list its endpoint under `ep-<endpoint id>`
/// instead of the container's id: the endpoint's name (the container's, unique among
/// containers) still tells whose it is.
fn chosen_of(endpoints: &[Endpoint], matching: &HashMap<String, String>) -> Vec<Endpoint> {
    endpoints
        .iter()
        .filter_map(|e| {
            let (id, name) = matching.get_key_value(&e.container_id).or_else(|| {
                matching
                    .iter()
                    .find(|(_, name)| !name.is_empty() && **name == e.container_name)
            })?;
            Some(Endpoint {
                container_id: id.clone(),
                container_name: name.clone(),
                ..e.clone()
            })
        })
        .collect()
}

/// Each distinct query's answer in one pass (id -> name), or Docker's refusal.
type QueryCache = HashMap<Vec<Filter>, Result<HashMap<String, String>, String>>;

/// A container's name as `docker ps` shows it (the list gives `/name`).
fn container_name(names: Option<Vec<String>>) -> String {
    names
        .and_then(|n| n.into_iter().next())
        .map(|n| n.trim_start_matches('/').to_owned())
        .unwrap_or_default()
}

/// Parses Docker's `02:42:ac:11:00:02`.
pub fn parse_mac(text: &str) -> Option<Mac> {
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for byte in &mut mac {
        *byte = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// An endpoint's address as network inspection shows it (`172.20.0.2/16`; empty when none).
fn endpoint_address(text: &str) -> Option<IpAddr> {
    text.split('/').next()?.parse().ok()
}

/// The Linux bridge behind a Docker bridge network.
pub fn bridge_name(id: &str, options: &HashMap<String, String>) -> String {
    match options.get(BRIDGE_NAME_OPTION) {
        Some(name) if !name.is_empty() => name.clone(),
        _ => format!("br-{}", &id[..id.len().min(12)]),
    }
}

/// A connected Docker client (API version negotiated).
#[derive(Debug, Clone)]
pub struct DockerClient {
    docker: Docker,
    pub host: String,
}

/// Where each Docker (by host) keeps its sandboxes' namespaces, once learned: kept across
/// reconnections, because after a restart of Docker the containers it starts again bring
/// their overlay namespaces back at once, before any of them runs to be asked.
static SANDBOXES: std::sync::Mutex<std::collections::BTreeMap<String, PathBuf>> =
    std::sync::Mutex::new(std::collections::BTreeMap::new());

/// The directory of the sandbox namespaces of the Docker at `host`, once a pass learned it.
pub fn known_sandbox_directory(host: &str) -> Option<PathBuf> {
    SANDBOXES
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(host)
        .cloned()
}

impl DockerClient {
    /// Connects to `host` (`unix://…` or `tcp://…`) and negotiates the API version, so that
    /// both Debian 12's Docker 20.10 (API 1.41) and current engines answer.
    pub async fn connect(host: &str) -> Result<DockerClient, DockerError> {
        let err = |source| DockerError::Connect {
            host: host.to_owned(),
            source,
        };
        let docker = if host.starts_with("unix://") {
            Docker::connect_with_unix(host, REQUEST_TIMEOUT_SECS, bollard::API_DEFAULT_VERSION)
        } else {
            Docker::connect_with_http(host, REQUEST_TIMEOUT_SECS, bollard::API_DEFAULT_VERSION)
        }
        .map_err(err)?;
        let docker = docker.negotiate_version().await.map_err(err)?;
        Ok(DockerClient {
            docker,
            host: host.to_owned(),
        })
    }

    fn request_err(what: &str) -> impl FnOnce(bollard::errors::Error) -> DockerError + '_ {
        move |source| DockerError::Request {
            what: what.to_owned(),
            source,
        }
    }

    /// Reads the managed networks and their whitelisted containers.
    pub async fn snapshot(&self, config: &Config) -> Result<Snapshot, DockerError> {
        let mut snapshot = Snapshot::default();
        // Each distinct query is asked once per pass, whichever networks and rules share it.
        let mut queries = HashMap::new();
        let networks = self
            .docker
            .list_networks(None::<ListNetworksOptions>)
            .await
            .map_err(Self::request_err("list networks"))?;
        let mut seen = BTreeSet::new();
        // Where this Docker keeps its sandboxes' namespaces (found once per pass).
        let mut sandboxes: Option<PathBuf> = None;
        for net in networks {
            let (Some(name), Some(id)) = (net.name.clone(), net.id.clone()) else {
                continue;
            };
            let labels = net.labels.clone().unwrap_or_default();
            let Some((policy, source, problems)) = config.policy_for(&name, &labels) else {
                continue;
            };
            seen.insert(name.clone());
            for p in problems {
                snapshot.warnings.push((name.clone(), p));
            }
            if source == PolicySource::Labels {
                for p in policy.whitelist.pitfalls() {
                    snapshot
                        .warnings
                        .push((name.clone(), format!("whitelist: {p}")));
                }
            }
            let overlay = match net.driver.as_deref() {
                Some("bridge") => false,
                Some("overlay") => true,
                other => {
                    snapshot.warnings.push((
                        name.clone(),
                        format!(
                            "driver {:?} is not supported (bridge and overlay networks only): \
                             not isolated",
                            other.unwrap_or_default()
                        ),
                    ));
                    continue;
                }
            };
            // The list carries IPAM and options: no inspect needed.
            let ipam = net.ipam.and_then(|i| i.config).unwrap_or_default();
            let gateways = ipam
                .iter()
                .filter_map(|c| c.gateway.as_deref())
                .filter_map(endpoint_address)
                .collect();
            let subnets = ipam
                .into_iter()
                .filter_map(|c| c.subnet)
                .filter_map(|s| match s.parse::<IpNetwork>() {
                    Ok(n) => Some(n),
                    Err(_) => {
                        snapshot
                            .warnings
                            .push((name.clone(), format!("cannot read subnet {s:?}")));
                        None
                    }
                })
                .collect();
            let endpoints = self.endpoints_on(&id).await?;
            let mut refused = Vec::new();
            let whitelisted = chosen_of(
                &endpoints,
                &self
                    .matching(&policy.whitelist, &mut queries, &mut refused)
                    .await?,
            );
            let mut allowed = Vec::new();
            for rule in &policy.allow {
                let from = self
                    .matching(&rule.from, &mut queries, &mut refused)
                    .await?;
                let to = self.matching(&rule.to, &mut queries, &mut refused).await?;
                allowed.push(AllowedEndpoints {
                    from: chosen_of(&endpoints, &from),
                    to: chosen_of(&endpoints, &to),
                });
            }
            let mut policy = policy;
            if config.daemon.label_opt_in {
                // Allow rules carried by the containers on the network, towards themselves.
                for (id, container, labels) in self.labelled_containers(&id).await? {
                    let (rules, problems) = config::container_allow_rules(&container, &labels);
                    for p in problems {
                        snapshot.warnings.push((name.clone(), p));
                    }
                    for mut rule in rules {
                        let from = self
                            .matching(&rule.from, &mut queries, &mut refused)
                            .await?;
                        allowed.push(AllowedEndpoints {
                            from: chosen_of(&endpoints, &from),
                            to: endpoints
                                .iter()
                                .filter(|e| e.container_id == id)
                                .cloned()
                                .collect(),
                        });
                        rule.to = Selector::query(vec![Filter {
                            key: "id".into(),
                            value: id[..id.len().min(12)].to_owned(),
                        }]);
                        policy.allow.push(rule);
                    }
                }
            }
            for p in refused {
                snapshot.warnings.push((name.clone(), p));
            }
            let options = net.options.clone().unwrap_or_default();
            let overlay = if overlay {
                if sandboxes.is_none() {
                    sandboxes = self.sandbox_directory().await;
                }
                match crate::docker::swarm::overlay_namespace(sandboxes.as_deref(), &id) {
                    Ok(netns) => Some(Overlay {
                        netns,
                        problem: None,
                    }),
                    Err(e) => Some(Overlay {
                        netns: None,
                        problem: Some(format!(
                            "cannot read Docker's namespaces in {}: {e} (only root may search \
                             Docker's exec-root: a Swarm node needs the swarm drop-in, see \
                             trafficjam(8))",
                            sandboxes.as_deref().map_or_else(
                                || "/proc/self/mountinfo".into(),
                                |d| d.display().to_string()
                            )
                        )),
                    }),
                }
            } else {
                None
            };
            snapshot.networks.push(NetworkSnapshot {
                bridge: if overlay.is_some() {
                    String::new()
                } else {
                    bridge_name(&id, &options)
                },
                overlay,
                name,
                id,
                subnets,
                whitelisted,
                allowed,
                endpoints,
                gateways,
                policy,
                source,
            });
        }
        snapshot.waiting = config
            .networks
            .keys()
            .filter(|n| !seen.contains(*n))
            .cloned()
            .collect();
        Ok(snapshot)
    }

    /// The containers `selector` chooses (id -> name): the union of its queries, each
    /// `docker ps --all --filter …` exactly as Docker filters. Answers are kept in `cache`
    /// for the rest of the pass. A query Docker refuses (a filter value it does not
    /// accept, as a container label may carry) chooses nobody and is reported in
    /// `problems`: one bad filter never stops the pass for every network.
    async fn matching(
        &self,
        selector: &Selector,
        cache: &mut QueryCache,
        problems: &mut Vec<String>,
    ) -> Result<HashMap<String, String>, DockerError> {
        let mut matching = HashMap::new();
        for query in &selector.queries {
            if query.is_empty() {
                continue;
            }
            if !cache.contains_key(query) {
                let options = ListContainersOptions {
                    all: true,
                    filters: Some(Filter::to_docker(query)),
                    ..Default::default()
                };
                let listed = match self.docker.list_containers(Some(options)).await {
                    Ok(list) => Ok(list
                        .into_iter()
                        .filter_map(|c| Some((c.id?, container_name(c.names))))
                        .collect()),
                    // Docker answered, and refused this query: 400 for a bad value, and
                    // 500 for `before=` a container that is gone (20.10). Reachable, so
                    // the query alone fails closed; an unreachable Docker stops the pass.
                    Err(bollard::errors::Error::DockerResponseServerError {
                        status_code,
                        message,
                    }) => Err(format!("{message} (status {status_code})")),
                    Err(e) => return Err(Self::request_err("list containers")(e)),
                };
                cache.insert(query.clone(), listed);
            }
            match &cache[query] {
                Ok(listed) => matching.extend(listed.iter().map(|(k, v)| (k.clone(), v.clone()))),
                Err(message) => {
                    let filters: Vec<String> = query.iter().map(Filter::to_string).collect();
                    problems.push(format!(
                        "Docker refuses the filters {}: {message}: they choose no container",
                        filters.join(" + ")
                    ));
                }
            }
        }
        Ok(matching)
    }

    /// The containers attached to the network `network_id` that carry allow labels: id,
    /// name, labels.
    async fn labelled_containers(
        &self,
        network_id: &str,
    ) -> Result<Vec<(String, String, HashMap<String, String>)>, DockerError> {
        let options = ListContainersOptions {
            all: true,
            filters: Some(HashMap::from([(
                "network".to_owned(),
                vec![network_id.to_owned()],
            )])),
            ..Default::default()
        };
        Ok(self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(Self::request_err("list containers"))?
            .into_iter()
            .filter_map(|c| {
                let labels = c.labels.unwrap_or_default();
                if !labels.keys().any(|k| k.starts_with(LABEL_ALLOW_PREFIX)) {
                    return None;
                }
                Some((c.id?, container_name(c.names), labels))
            })
            .collect())
    }

    /// The containers with an endpoint on the network `network_id`, with their addresses
    /// and MACs there.
    ///
    /// The addresses come from the network's endpoints, not from the container list: Docker
    /// creates the endpoint (and sends the network `connect` event) before the container's
    /// process runs, while the list shows the address only once it runs. So a whitelisted
    /// container is whitelisted before its first packet. A container that is not running
    /// has no endpoint, and stays out.
    async fn endpoints_on(&self, network_id: &str) -> Result<Vec<Endpoint>, DockerError> {
        let network = self
            .docker
            .inspect_network(network_id, None::<InspectNetworkOptions>)
            .await
            .map_err(Self::request_err("inspect network"))?;
        let mut endpoints: Vec<Endpoint> = network
            .containers
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(container_id, endpoint)| {
                let addrs: Vec<IpAddr> = [endpoint.ipv4_address, endpoint.ipv6_address]
                    .into_iter()
                    .flatten()
                    .filter_map(|a| endpoint_address(&a))
                    .collect();
                (!addrs.is_empty()).then(|| Endpoint {
                    container_name: endpoint.name.clone().unwrap_or_default(),
                    container_id,
                    addrs,
                    mac: endpoint.mac_address.as_deref().and_then(parse_mac),
                })
            })
            .collect();
        endpoints.sort_by(|a, b| a.container_name.cmp(&b.container_name));
        Ok(endpoints)
    }

    /// The directory of Docker's sandbox namespaces (`<exec-root>/netns`: the exec-root is
    /// Docker's to choose), read once from the sandbox of a running container. Never from
    /// a starting one: Docker answers its inspect only once it runs, half a second later,
    /// while the overlay namespace that container brings waits for our rules.
    async fn sandbox_directory(&self) -> Option<PathBuf> {
        if let Some(dir) = SANDBOXES
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&self.host)
        {
            return Some(dir.clone());
        }
        let options = ListContainersOptions {
            filters: Some(HashMap::from([(
                "status".to_owned(),
                vec!["running".to_owned()],
            )])),
            limit: Some(5),
            ..Default::default()
        };
        for c in self.docker.list_containers(Some(options)).await.ok()? {
            let Some(id) = c.id else { continue };
            let inspect = self
                .docker
                .inspect_container(&id, None::<InspectContainerOptions>);
            let Ok(Ok(container)) = tokio::time::timeout(Duration::from_millis(200), inspect).await
            else {
                continue;
            };
            if let Some(dir) = container
                .network_settings
                .and_then(|n| n.sandbox_key)
                .filter(|key| !key.is_empty())
                .and_then(|key| Path::new(&key).parent().map(Path::to_owned))
                // /var/run is a link to /run: the mount table and the watch name the target.
                .map(|dir| std::fs::canonicalize(&dir).unwrap_or(dir))
            {
                SANDBOXES
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(self.host.clone(), dir.clone());
                return Some(dir);
            }
        }
        None
    }

    pub fn events_since(
        &self,
        since: &str,
    ) -> impl Stream<Item = Result<EventMessage, bollard::errors::Error>> + use<> {
        let filters = HashMap::from([
            (
                "type".to_owned(),
                // Images: a tag that moves changes what `ancestor=` matches.
                vec![
                    "container".to_owned(),
                    "network".to_owned(),
                    "image".to_owned(),
                ],
            ),
            (
                "event".to_owned(),
                [
                    "start",
                    "die",
                    "destroy",
                    "rename",
                    "pause",
                    "unpause",
                    "health_status",
                    "connect",
                    "disconnect",
                    "create",
                    "tag",
                    "untag",
                ]
                .map(String::from)
                .to_vec(),
            ),
        ]);
        self.docker.events(Some(EventsOptions {
            filters: Some(filters),
            since: Some(since.to_owned()),
            ..Default::default()
        }))
    }

    /// The engine's version string, for logs.
    pub async fn version(&self) -> Option<String> {
        let v = self.docker.version().await.ok()?;
        Some(format!(
            "{} (API {})",
            v.version.unwrap_or_default(),
            v.api_version.unwrap_or_default()
        ))
    }

    /// Waits up to `timeout` for an answer to a ping.
    pub async fn ping(&self, timeout: Duration) -> bool {
        matches!(
            tokio::time::timeout(timeout, self.docker.ping()).await,
            Ok(Ok(_))
        )
    }
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

    use super::*;
    use crate::config::Filter;
    use crate::policy::HostAccess;

    fn endpoint(id: &str, addrs: &[&str]) -> Endpoint {
        Endpoint {
            container_id: id.into(),
            container_name: format!("name-{id}"),
            addrs: addrs.iter().map(|a| a.parse().unwrap()).collect(),
            mac: None,
        }
    }

    #[test]
    fn a_starting_container_is_known_by_its_endpoint_name() {
        let mut starting = endpoint("ep-0a1b2c", &["172.20.0.9"]);
        starting.container_name = "proxy".into();
        let mut other = endpoint("ep-ffff", &["172.20.0.8"]);
        other.container_name = "backend".into();
        let running = endpoint("c2", &["172.20.0.3"]);
        let matching = HashMap::from([
            ("c1".to_owned(), "proxy".to_owned()),
            ("c2".to_owned(), "name-c2".to_owned()),
        ]);
        let got = chosen_of(&[starting, other, running], &matching);
        let ids: Vec<(&str, &str)> = got
            .iter()
            .map(|e| (e.container_id.as_str(), e.container_name.as_str()))
            .collect();
        assert_eq!(ids, [("c1", "proxy"), ("c2", "name-c2")]);
    }

    #[test]
    fn macs_parse_as_docker_writes_them() {
        assert_eq!(
            parse_mac("02:42:ac:11:00:0f"),
            Some([2, 0x42, 0xac, 0x11, 0, 0x0f])
        );
        assert_eq!(parse_mac("02:42:ac:11:00"), None);
        assert_eq!(parse_mac("02:42:ac:11:00:0f:01"), None);
        assert_eq!(parse_mac(""), None);
    }

    #[test]
    fn endpoint_addresses_lose_their_prefix() {
        assert_eq!(
            endpoint_address("172.20.0.2/16"),
            Some("172.20.0.2".parse().unwrap())
        );
        assert_eq!(
            endpoint_address("fd00::2/64"),
            Some("fd00::2".parse().unwrap())
        );
        assert_eq!(endpoint_address(""), None);
    }

    #[test]
    fn bridge_names_follow_docker() {
        let id = "0123456789abcdef0123";
        assert_eq!(bridge_name(id, &HashMap::new()), "br-0123456789ab");
        let opts = HashMap::from([(BRIDGE_NAME_OPTION.to_owned(), "docker0".to_owned())]);
        assert_eq!(bridge_name(id, &opts), "docker0");
    }

    #[test]
    fn allow_rules_become_grants_between_the_chosen_containers_addresses() {
        use crate::config::AllowRule;
        use crate::policy::PortRange;
        let rule = |ports: Option<Vec<PortRange>>| AllowRule {
            from: Selector::query(vec![Filter::parse("name=^app$").unwrap()]),
            to: Selector::query(vec![Filter::parse("name=^db$").unwrap()]),
            ports,
            origin: "test".into(),
        };
        let policy = NetworkPolicy {
            allow: vec![
                rule(Some(vec![PortRange::parse("5432/tcp").unwrap()])),
                rule(None),
            ],
            ..NetworkPolicy::whitelisting(Selector::default())
        };
        let app = endpoint("app", &["172.20.0.5", "fd00::5"]);
        let db = endpoint("db", &["172.20.0.6", "fd00::6"]);
        let sides = AllowedEndpoints {
            from: vec![app.clone()],
            to: vec![db, app],
        };
        let g = grants(&policy, &[sides.clone(), sides]);
        // Per family, never a container with itself, once with the port and once open.
        let text: Vec<String> = g
            .iter()
            .map(|g| format!("{} > {} {:?}", g.from, g.to, g.ports.map(|p| p.to_string())))
            .collect();
        assert_eq!(
            text,
            [
                "172.20.0.5 > 172.20.0.6 None",
                "172.20.0.5 > 172.20.0.6 Some(\"5432/tcp\")",
                "fd00::5 > fd00::6 None",
                "fd00::5 > fd00::6 Some(\"5432/tcp\")",
            ]
        );
    }

    #[test]
    fn whitelisted_endpoints_give_the_network_whitelist() {
        let snapshot = Snapshot {
            networks: vec![NetworkSnapshot {
                name: "public".into(),
                id: "abc".into(),
                bridge: "br-abc".into(),
                subnets: vec!["172.20.0.0/16".parse().unwrap()],
                whitelisted: vec![
                    endpoint("proxy", &["172.20.0.2", "fd00::2"]),
                    endpoint("proxy2", &["172.20.0.3"]),
                ],
                allowed: Vec::new(),
                endpoints: Vec::new(),
                gateways: vec!["172.20.0.1".parse().unwrap()],
                policy: NetworkPolicy {
                    host_access: HostAccess::Open,
                    ..NetworkPolicy::whitelisting(Selector::query(vec![
                        Filter::parse("name=proxy").unwrap(),
                    ]))
                },
                source: PolicySource::Labels,
                overlay: None,
            }],
            ..Snapshot::default()
        };
        let nets = managed_networks(&snapshot);
        assert_eq!(nets.len(), 1);
        assert_eq!(nets[0].bridge, "br-abc");
        assert_eq!(nets[0].host_access, HostAccess::Open);
        assert!(!nets[0].allow_rules);
        assert_eq!(
            nets[0].whitelist,
            BTreeSet::from([
                "172.20.0.2".parse().unwrap(),
                "172.20.0.3".parse().unwrap(),
                "fd00::2".parse().unwrap(),
            ])
        );
    }
}
