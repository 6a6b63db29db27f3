//! The Docker client: the bollard queries that fill a [`Snapshot`] (networks, their
//! endpoints, the containers each selector chooses, the directory of Docker's sandbox
//! namespaces), the event stream, and the engine's version and ping.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use bollard::Docker;
use bollard::models::EventMessage;
use bollard::query_parameters::{
    EventsOptions, InspectContainerOptions, InspectNetworkOptions, ListContainersOptions,
    ListNetworksOptions,
};
use futures_util::Stream;
use ipnetwork::IpNetwork;

use super::resolve::{
    bridge_name, chosen_of, container_name, endpoint_address, parse_mac, short_id,
};
use super::{AllowedEndpoints, DockerError, Endpoint, NetworkSnapshot, Snapshot, swarm};
use crate::config::{self, Config, Filter, LABEL_ALLOW_PREFIX, PolicySource, Selector};

/// Requests (not event streams) must answer within this time.
const REQUEST_TIMEOUT_SECS: u64 = 10;

/// Each distinct query's answer in one pass (id -> name), or Docker's refusal.
type QueryCache = HashMap<Vec<Filter>, Result<HashMap<String, String>, String>>;

/// A connected Docker client (API version negotiated).
#[derive(Debug, Clone)]
pub struct DockerClient {
    docker: Docker,
    pub host: String,
}

/// Where each Docker (by host) keeps its sandboxes' namespaces, once learned: kept across
/// reconnections, because after a restart of Docker the containers it starts again bring
/// their overlay namespaces back at once, before any of them runs to be asked.
static SANDBOXES: Mutex<BTreeMap<String, PathBuf>> = Mutex::new(BTreeMap::new());

/// [`SANDBOXES`], whole even if a thread panicked holding it.
fn sandboxes() -> MutexGuard<'static, BTreeMap<String, PathBuf>> {
    SANDBOXES.lock().unwrap_or_else(|e| e.into_inner())
}

/// The directory of the sandbox namespaces of the Docker at `host`, once a pass learned it.
pub fn known_sandbox_directory(host: &str) -> Option<PathBuf> {
    sandboxes().get(host).cloned()
}

/// A filter on one value, as the container list takes it.
fn filter(key: &str, value: &str) -> HashMap<String, Vec<String>> {
    HashMap::from([(key.to_owned(), vec![value.to_owned()])])
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

    /// Reads the managed networks, the containers their whitelists and allow rules choose,
    /// and where each overlay network's namespace is on this node.
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
                            value: short_id(&id).to_owned(),
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
                Some(swarm::find_overlay(sandboxes.as_deref(), &id))
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
            filters: Some(filter("network", network_id)),
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
        if let Some(dir) = known_sandbox_directory(&self.host) {
            return Some(dir);
        }
        let options = ListContainersOptions {
            filters: Some(filter("status", "running")),
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
                sandboxes().insert(self.host.clone(), dir.clone());
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
}
