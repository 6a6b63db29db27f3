//! What the daemon reports: the `Status()` JSON of D-Bus (and `trafficjam status --json`),
//! its human rendering (`trafficjam status`) and the one line systemd shows (STATUS=).
//!
//! The JSON is a contract with scripts: field names and the lowercase state and batch names
//! stay as they are.

use serde::{Deserialize, Serialize};

use crate::config::PolicySource;
use crate::docker::NetworkSnapshot;
use crate::firewall::BatchKind;
use crate::policy::HostAccess;

/// Where the daemon stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum State {
    /// No reconcile attempted yet.
    #[default]
    Starting,
    /// The managed networks are isolated as configured.
    Active,
    /// Rules removed on request; no enforcement until the next reload.
    Cleared,
    /// Rules kept as they were; something is wrong (see `reason`).
    Degraded,
}

impl State {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            State::Starting => "starting",
            State::Active => "active",
            State::Cleared => "cleared",
            State::Degraded => "degraded",
        }
    }
}

/// What `Status()` answers (JSON), published by the loop after every change.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Status {
    pub state: State,
    /// Why the state is not `active`.
    pub reason: Option<String>,
    pub docker_host: String,
    pub table: String,
    pub networks: Vec<NetworkStatus>,
    /// Configured networks that do not exist (yet).
    pub waiting: Vec<String>,
    pub last_apply: Option<ApplyStatus>,
    pub last_error: Option<String>,
    /// The drop log: whether drops are logged, to which NFLOG group, and why not.
    #[serde(default)]
    pub drop_log: DropLogStatus,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct DropLogStatus {
    /// Drops are reported by the kernel and logged by name.
    pub enabled: bool,
    pub group: u16,
    /// Why the daemon cannot read the group (drops are still counted and dropped).
    pub error: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct NetworkStatus {
    pub name: String,
    /// `enforce`, or `audit`: nothing is dropped, would-be drops are logged and counted.
    #[serde(default)]
    pub mode: String,
    /// The bridge (for an overlay network, its bridge in its namespace on this node).
    pub bridge: String,
    /// A Swarm overlay network's namespace on this node (empty while it has none here);
    /// absent for bridge networks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Why an overlay network is not isolated on this node now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_isolated: Option<String>,
    pub subnets: Vec<String>,
    /// Whether every container may open connections to the host.
    pub allow_host_traffic: bool,
    /// `closed`, `whitelisted` (the whitelisted containers only) or `open`.
    #[serde(default)]
    pub host_access: String,
    /// Host ports every container may open.
    #[serde(default)]
    pub host_ports: Vec<String>,
    /// Destinations the containers may not open connections to through the host.
    #[serde(default)]
    pub deny_outbound: Vec<String>,
    /// Who else may open connections to whom: one row per allow rule.
    #[serde(default)]
    pub allowed: Vec<AllowStatus>,
    /// `labels`, or the file of its `[network.NAME]` section.
    pub source: String,
    /// Whether br_netfilter gives the bridge stateful filtering (None before an apply).
    pub stateful: Option<bool>,
    pub whitelisted: Vec<ContainerStatus>,
    /// Packets dropped by this network's rules (read from the kernel's counters).
    pub dropped_packets: u64,
    /// Container ports bound to their own identity (port security).
    #[serde(default)]
    pub bound_ports: usize,
    /// Forged frames dropped by port security (read from the kernel's counters).
    #[serde(default)]
    pub spoofed_frames: u64,
}

/// One allow rule and the containers it chooses now.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct AllowStatus {
    /// Where the rule was written: `FILE:LINE`, or the label.
    pub rule: String,
    /// The rule's filters, as written (`|` between alternatives).
    pub from_filter: String,
    pub to_filter: String,
    /// The containers on the network that match each side.
    pub from: Vec<String>,
    pub to: Vec<String>,
    /// `every port`, or the port ranges (`5432/tcp`).
    pub ports: String,
}

impl AllowStatus {
    /// The allow rules of a network as the last snapshot resolved them.
    pub(crate) fn of_network(n: &NetworkSnapshot) -> Vec<AllowStatus> {
        let names = |list: &[crate::docker::Endpoint]| -> Vec<String> {
            list.iter().map(|e| e.container_name.clone()).collect()
        };
        n.policy
            .allow
            .iter()
            .zip(&n.allowed)
            .map(|(rule, sides)| AllowStatus {
                rule: rule.origin.clone(),
                from_filter: rule.from.to_string(),
                to_filter: rule.to.to_string(),
                from: names(&sides.from),
                to: names(&sides.to),
                ports: match &rule.ports {
                    None => "every port".into(),
                    Some(list) => list
                        .iter()
                        .map(|p| p.to_string())
                        .collect::<Vec<_>>()
                        .join(", "),
                },
            })
            .collect()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct ContainerStatus {
    pub id: String,
    pub name: String,
    pub addresses: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct ApplyStatus {
    /// Seconds since the Unix epoch.
    pub at: u64,
    pub kind: BatchKind,
    pub messages: usize,
    pub duration_ms: f64,
}

impl Status {
    pub(crate) fn network_names(&self) -> Vec<String> {
        self.networks.iter().map(|n| n.name.clone()).collect()
    }

    /// The networks in audit mode: isolated on paper only.
    pub(crate) fn audited(&self) -> Vec<&str> {
        self.networks
            .iter()
            .filter(|n| n.mode == "audit")
            .map(|n| n.name.as_str())
            .collect()
    }

    /// The one-line summary systemd shows (STATUS=).
    pub(crate) fn summary(&self) -> String {
        match self.state {
            State::Active => {
                let containers: usize = self.networks.iter().map(|n| n.whitelisted.len()).sum();
                let stateless: Vec<&str> = self
                    .networks
                    .iter()
                    .filter(|n| n.stateful == Some(false))
                    .map(|n| n.bridge.as_str())
                    .collect();
                let mut line = format!(
                    "{} network{} isolated, {containers} whitelisted container{}",
                    self.networks.len(),
                    if self.networks.len() == 1 { "" } else { "s" },
                    if containers == 1 { "" } else { "s" },
                );
                if !stateless.is_empty() {
                    line.push_str(&format!(
                        "; stateless only on {} (load br_netfilter)",
                        stateless.join(", ")
                    ));
                }
                let audited = self.audited();
                if !audited.is_empty() {
                    line.push_str(&format!(
                        "; AUDIT ONLY, nothing dropped on {}",
                        audited.join(", ")
                    ));
                }
                line
            }
            State::Cleared => "rules cleared: run systemctl reload trafficjam to re-apply".into(),
            State::Starting => "starting".into(),
            State::Degraded => format!(
                "{}; the rules in force are kept",
                self.reason.as_deref().unwrap_or("degraded")
            ),
        }
    }

    /// Human status, one block per network (in the manner of `wg show`).
    pub(crate) fn render(&self) -> String {
        let mut out = format!("state: {}\n", self.state.as_str());
        if let Some(reason) = &self.reason {
            out.push_str(&format!("  reason: {reason}\n"));
        }
        out.push_str(&format!(
            "  docker: {}\n  table: {}\n",
            self.docker_host, self.table
        ));
        if let Some(a) = &self.last_apply {
            let kind = match a.kind {
                BatchKind::Full => "full",
                BatchKind::Elements => "elements",
            };
            out.push_str(&format!(
                "  last apply: {kind} batch, {} messages, {:.1} ms (unix time {})\n",
                a.messages, a.duration_ms, a.at
            ));
        }
        if let Some(e) = &self.last_error {
            out.push_str(&format!("  last error: {e}\n"));
        }
        let drop_log = match (&self.drop_log.enabled, &self.drop_log.error) {
            (false, _) => "off (log_drops = false)".to_owned(),
            (true, None) => format!("NFLOG group {}", self.drop_log.group),
            (true, Some(e)) => format!("NOT READ: {e}"),
        };
        out.push_str(&format!("  drop log: {drop_log}\n"));
        for n in &self.networks {
            out.push_str(&format!("\nnetwork: {}\n", n.name));
            if n.mode == "audit" {
                out.push_str(
                    "  mode: AUDIT: nothing is dropped; what would be is logged and counted\n",
                );
            }
            let filtering = match n.stateful {
                Some(true) => "stateful",
                Some(false) => "stateless backstop only (load br_netfilter)",
                None => "unknown",
            };
            match &n.namespace {
                None => out.push_str(&format!("  bridge: {} ({filtering})\n", n.bridge)),
                Some(netns) => {
                    out.push_str("  driver: overlay (Docker Swarm)\n");
                    if !netns.is_empty() {
                        out.push_str(&format!("  namespace: {netns}\n"));
                        if !n.bridge.is_empty() {
                            out.push_str(&format!(
                                "  bridge: {} in that namespace ({filtering})\n",
                                n.bridge
                            ));
                        }
                    }
                }
            }
            if let Some(why) = &n.not_isolated {
                out.push_str(&format!("  NOT ISOLATED on this node: {why}\n"));
            }
            out.push_str(&format!("  subnets: {}\n", n.subnets.join(", ")));
            let host = match n.host_access.as_str() {
                "open" => "allowed".to_owned(),
                "whitelisted" => "whitelisted containers only".to_owned(),
                _ if n.allow_host_traffic => "allowed".to_owned(),
                _ => "blocked".to_owned(),
            };
            let host = if n.host_ports.is_empty() {
                host
            } else {
                format!("{host}; every container on {}", n.host_ports.join(", "))
            };
            out.push_str(&format!("  host traffic: {host}\n"));
            if !n.deny_outbound.is_empty() {
                out.push_str(&format!(
                    "  outbound denied: {}\n",
                    n.deny_outbound.join(", ")
                ));
            }
            out.push_str(&format!("  configured by: {}\n", n.source));
            if n.whitelisted.is_empty() {
                out.push_str("  whitelisted: (none)\n");
            }
            for c in &n.whitelisted {
                out.push_str(&format!(
                    "  whitelisted: {} ({}) {}\n",
                    c.name,
                    &c.id[..c.id.len().min(12)],
                    c.addresses.join(", ")
                ));
            }
            out.push_str(&policy_table(n));
            let dropped = if n.mode == "audit" {
                "would have dropped"
            } else {
                "dropped"
            };
            out.push_str(&format!("  {dropped}: {} packets\n", n.dropped_packets));
            out.push_str(&format!(
                "  port security: {} container ports bound, {} forged frames dropped\n",
                n.bound_ports, n.spoofed_frames
            ));
        }
        for w in &self.waiting {
            out.push_str(&format!(
                "\nnetwork: {w}\n  waiting: it does not exist (yet)\n"
            ));
        }
        out
    }
}

impl NetworkStatus {
    /// A network as Docker and its policy describe it: the daemon adds what the kernel
    /// says (drops, bound ports, stateful filtering) and where an overlay sits on this
    /// node; `check` shows it as it is.
    pub(crate) fn of_snapshot(n: &NetworkSnapshot) -> NetworkStatus {
        NetworkStatus {
            name: n.name.clone(),
            mode: n.policy.mode.name().into(),
            bridge: n.bridge.clone(),
            namespace: n.overlay.as_ref().map(|o| {
                o.netns
                    .as_ref()
                    .map_or_else(String::new, |p| p.display().to_string())
            }),
            subnets: n.subnets.iter().map(|s| s.to_string()).collect(),
            allow_host_traffic: n.policy.host_access == HostAccess::Open,
            host_access: n.policy.host_access.name().into(),
            host_ports: n.policy.host_ports.iter().map(|p| p.to_string()).collect(),
            deny_outbound: n
                .policy
                .deny_outbound
                .iter()
                .map(|d| d.to_string())
                .collect(),
            allowed: AllowStatus::of_network(n),
            source: match &n.source {
                PolicySource::Labels => "labels".into(),
                PolicySource::File(f) => f.display().to_string(),
            },
            whitelisted: n
                .whitelisted
                .iter()
                .map(|e| ContainerStatus {
                    id: e.container_id.clone(),
                    name: e.container_name.clone(),
                    addresses: e.addrs.iter().map(|a| a.to_string()).collect(),
                })
                .collect(),
            ..NetworkStatus::default()
        }
    }
}

/// Who may open what to whom on a network, and why, as an aligned table (empty when the
/// network has no allow rule: the whitelist lines say it all).
pub(crate) fn policy_table(n: &NetworkStatus) -> String {
    if n.allowed.is_empty() {
        return String::new();
    }
    let names = |list: &[String], filter: &str| {
        if list.is_empty() {
            format!("(none: {filter})")
        } else {
            list.join(", ")
        }
    };
    let mut rows = vec![[
        "FROM".to_owned(),
        "TO".to_owned(),
        "PORTS".to_owned(),
        "RULE".to_owned(),
    ]];
    if !n.whitelisted.is_empty() {
        let proxies: Vec<String> = n.whitelisted.iter().map(|c| c.name.clone()).collect();
        rows.push([
            proxies.join(", "),
            "every container".into(),
            "every port".into(),
            "whitelist".into(),
        ]);
    }
    for a in &n.allowed {
        rows.push([
            names(&a.from, &a.from_filter),
            names(&a.to, &a.to_filter),
            a.ports.clone(),
            a.rule.clone(),
        ]);
    }
    let widths: Vec<usize> = (0..3)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::from("  may open:\n");
    for r in rows {
        out.push_str(&format!(
            "    {:w0$}  {:w1$}  {:w2$}  {}\n",
            r[0],
            r[1],
            r[2],
            r[3],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2],
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Status {
        Status {
            state: State::Active,
            reason: None,
            docker_host: "unix:///var/run/docker.sock".into(),
            table: "trafficjam".into(),
            networks: vec![NetworkStatus {
                name: "web".into(),
                mode: "enforce".into(),
                bridge: "br-0123456789ab".into(),
                namespace: None,
                not_isolated: None,
                subnets: vec!["172.20.0.0/16".into(), "fd00::/64".into()],
                allow_host_traffic: false,
                host_access: "closed".into(),
                host_ports: vec!["53/udp".into()],
                deny_outbound: vec!["10.0.0.0/8".into()],
                allowed: vec![AllowStatus {
                    rule: "/etc/trafficjam/web.toml:7".into(),
                    from_filter: "label=app=nextcloud".into(),
                    to_filter: "label=app=db".into(),
                    from: vec!["nextcloud".into()],
                    to: vec![],
                    ports: "5432/tcp".into(),
                }],
                source: "/etc/trafficjam/web.toml".into(),
                stateful: Some(false),
                whitelisted: vec![ContainerStatus {
                    id: "0123456789abcdef0123".into(),
                    name: "traefik".into(),
                    addresses: vec!["172.20.0.2".into(), "fd00::2".into()],
                }],
                dropped_packets: 42,
                bound_ports: 3,
                spoofed_frames: 5,
            }],
            waiting: vec!["later".into()],
            last_apply: Some(ApplyStatus {
                at: 1_800_000_000,
                kind: BatchKind::Full,
                messages: 38,
                duration_ms: 12.5,
            }),
            last_error: None,
            drop_log: DropLogStatus {
                enabled: true,
                group: 4200,
                error: None,
            },
        }
    }

    #[test]
    fn human_status_has_a_block_per_network() {
        let text = sample().render();
        assert_eq!(
            text,
            "state: active
  docker: unix:///var/run/docker.sock
  table: trafficjam
  last apply: full batch, 38 messages, 12.5 ms (unix time 1800000000)
  drop log: NFLOG group 4200

network: web
  bridge: br-0123456789ab (stateless backstop only (load br_netfilter))
  subnets: 172.20.0.0/16, fd00::/64
  host traffic: blocked; every container on 53/udp
  outbound denied: 10.0.0.0/8
  configured by: /etc/trafficjam/web.toml
  whitelisted: traefik (0123456789ab) 172.20.0.2, fd00::2
  may open:
    FROM       TO                    PORTS       RULE
    traefik    every container       every port  whitelist
    nextcloud  (none: label=app=db)  5432/tcp    /etc/trafficjam/web.toml:7
  dropped: 42 packets
  port security: 3 container ports bound, 5 forged frames dropped

network: later
  waiting: it does not exist (yet)
"
        );
    }

    #[test]
    fn an_overlay_network_shows_its_namespace_and_bridge_or_why_not() {
        let mut status = sample();
        let web = status.networks[0].clone();
        status.networks = vec![
            NetworkStatus {
                name: "ovl".into(),
                bridge: "br0".into(),
                namespace: Some("/run/docker/netns/1-b8ynlq5efr".into()),
                stateful: Some(true),
                ..web.clone()
            },
            NetworkStatus {
                name: "far".into(),
                bridge: String::new(),
                namespace: Some(String::new()),
                not_isolated: Some("no container of this node is on it".into()),
                ..web
            },
        ];
        let text = status.render();
        assert!(
            text.contains(
                "network: ovl
  driver: overlay (Docker Swarm)
  namespace: /run/docker/netns/1-b8ynlq5efr
  bridge: br0 in that namespace (stateful)
"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "network: far
  driver: overlay (Docker Swarm)
  NOT ISOLATED on this node: no container of this node is on it
"
            ),
            "{text}"
        );
    }

    #[test]
    fn allow_rules_are_shown_with_the_containers_they_match_now() {
        use crate::config::{AllowRule, Filter, NetworkPolicy, PolicySource, Selector};
        use crate::docker::{AllowedEndpoints, Endpoint};
        use crate::policy::PortRange;
        let endpoint = |name: &str| Endpoint {
            container_id: format!("{name}-id"),
            container_name: name.into(),
            addrs: vec![],
            mac: None,
        };
        let selector = |f: &str| Selector::query(vec![Filter::parse(f).unwrap()]);
        let network = NetworkSnapshot {
            name: "cloud".into(),
            id: "id".into(),
            bridge: "br-cloud".into(),
            subnets: vec![],
            whitelisted: vec![],
            allowed: vec![AllowedEndpoints {
                from: vec![endpoint("nextcloud")],
                to: vec![endpoint("db"), endpoint("redis")],
            }],
            endpoints: vec![],
            gateways: vec![],
            policy: NetworkPolicy {
                allow: vec![AllowRule {
                    from: selector("label=app=nextcloud"),
                    to: Selector {
                        queries: vec![
                            vec![Filter::parse("label=app=db").unwrap()],
                            vec![Filter::parse("label=app=redis").unwrap()],
                        ],
                    },
                    ports: Some(vec![
                        PortRange::parse("5432/tcp").unwrap(),
                        PortRange::parse("6379/tcp").unwrap(),
                    ]),
                    origin: "/etc/trafficjam/cloud.toml:4".into(),
                }],
                ..NetworkPolicy::whitelisting(selector("label=role=proxy"))
            },
            source: PolicySource::Labels,
            overlay: None,
        };
        let rows = AllowStatus::of_network(&network);
        assert_eq!(
            rows,
            [AllowStatus {
                rule: "/etc/trafficjam/cloud.toml:4".into(),
                from_filter: "label=app=nextcloud".into(),
                to_filter: "label=app=db | label=app=redis".into(),
                from: vec!["nextcloud".into()],
                to: vec!["db".into(), "redis".into()],
                ports: "5432/tcp, 6379/tcp".into(),
            }]
        );
        let json = serde_json::to_string(&rows).unwrap();
        assert!(json.contains(r#""to":["db","redis"]"#), "{json}");
    }

    #[test]
    fn audited_networks_are_said_loudly_everywhere() {
        let mut status = sample();
        status.networks[0].mode = "audit".into();
        status.drop_log.error = Some("group 4200 is taken".into());
        let text = status.render();
        assert!(text.contains("  mode: AUDIT: nothing is dropped"), "{text}");
        assert!(text.contains("  would have dropped: 42 packets"), "{text}");
        assert!(
            text.contains("  drop log: NOT READ: group 4200 is taken"),
            "{text}"
        );
        assert!(
            status
                .summary()
                .ends_with("; AUDIT ONLY, nothing dropped on web"),
            "{}",
            status.summary()
        );
    }

    #[test]
    fn status_summaries_for_systemd() {
        let mut s = sample();
        assert_eq!(
            s.summary(),
            "1 network isolated, 1 whitelisted container; stateless only on br-0123456789ab (load br_netfilter)"
        );
        s.networks[0].stateful = Some(true);
        s.networks.push(s.networks[0].clone());
        assert_eq!(s.summary(), "2 networks isolated, 2 whitelisted containers");
        s.state = State::Cleared;
        assert_eq!(
            s.summary(),
            "rules cleared: run systemctl reload trafficjam to re-apply"
        );
        s.state = State::Degraded;
        s.reason = Some("waiting for Docker at unix:///run/docker.sock".into());
        assert_eq!(
            s.summary(),
            "waiting for Docker at unix:///run/docker.sock; the rules in force are kept"
        );
    }

    #[test]
    fn status_json_round_trips_with_the_contract_names() {
        let s = sample();
        let json = serde_json::to_string(&s).unwrap();
        assert!(json.contains(r#""state":"active""#), "{json}");
        assert!(json.contains(r#""kind":"full""#), "{json}");
        assert_eq!(serde_json::from_str::<Status>(&json).unwrap(), s);
        let mut degraded = s;
        degraded.state = State::Degraded;
        degraded.last_apply.as_mut().unwrap().kind = BatchKind::Elements;
        let json = serde_json::to_string(&degraded).unwrap();
        assert!(json.contains(r#""state":"degraded""#), "{json}");
        assert!(json.contains(r#""kind":"elements""#), "{json}");
    }
}
