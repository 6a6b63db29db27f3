//! What the daemon reports: the `Status()` JSON of D-Bus (and `trafficjam status --json`),
//! its human rendering (`trafficjam status`) and the one line systemd shows (STATUS=).
//!
//! The JSON is a contract with scripts: field names and the lowercase state and batch names
//! stay as they are.

use serde::{Deserialize, Serialize};

use crate::firewall::BatchKind;

/// Where the daemon stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
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
    pub fn as_str(self) -> &'static str {
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
pub struct Status {
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
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NetworkStatus {
    pub name: String,
    pub bridge: String,
    pub subnets: Vec<String>,
    pub allow_host_traffic: bool,
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

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ContainerStatus {
    pub id: String,
    pub name: String,
    pub addresses: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApplyStatus {
    /// Seconds since the Unix epoch.
    pub at: u64,
    pub kind: BatchKind,
    pub messages: usize,
    pub duration_ms: f64,
}

impl Status {
    pub fn network_names(&self) -> Vec<String> {
        self.networks.iter().map(|n| n.name.clone()).collect()
    }

    /// The one-line summary systemd shows (STATUS=).
    pub fn summary(&self) -> String {
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
    pub fn render(&self) -> String {
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
        for n in &self.networks {
            out.push_str(&format!("\nnetwork: {}\n", n.name));
            let filtering = match n.stateful {
                Some(true) => "stateful",
                Some(false) => "stateless backstop only (load br_netfilter)",
                None => "unknown",
            };
            out.push_str(&format!("  bridge: {} ({filtering})\n", n.bridge));
            out.push_str(&format!("  subnets: {}\n", n.subnets.join(", ")));
            out.push_str(&format!(
                "  host traffic: {}\n",
                if n.allow_host_traffic {
                    "allowed"
                } else {
                    "blocked"
                }
            ));
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
            out.push_str(&format!("  dropped: {} packets\n", n.dropped_packets));
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
                bridge: "br-0123456789ab".into(),
                subnets: vec!["172.20.0.0/16".into(), "fd00::/64".into()],
                allow_host_traffic: false,
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

network: web
  bridge: br-0123456789ab (stateless backstop only (load br_netfilter))
  subnets: 172.20.0.0/16, fd00::/64
  host traffic: blocked
  configured by: /etc/trafficjam/web.toml
  whitelisted: traefik (0123456789ab) 172.20.0.2, fd00::2
  dropped: 42 packets
  port security: 3 container ports bound, 5 forged frames dropped

network: later
  waiting: it does not exist (yet)
"
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
