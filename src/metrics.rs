//! Metrics in Prometheus' text exposition format (version 0.0.4), for `trafficjam metrics`
//! (D-Bus `Metrics()`): the daemon opens no TCP port (its unit denies IP), so a scraper
//! reads them through node_exporter's textfile collector or any command runner.
//!
//! Names follow Prometheus' conventions: `trafficjam_` prefix, `_total` for counters,
//! base units (seconds).

use std::fmt::Write;
use std::sync::atomic::Ordering;

use crate::droplog::DropLogStats;
use crate::firewall::BatchKind;
use crate::plan::{Counters, Reason, Ruleset};
use crate::status::{State, Status};

/// Applies and errors so far.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct ApplyStats {
    pub full: (u64, f64),
    pub elements: (u64, f64),
    pub errors: u64,
    /// Seconds since the epoch.
    pub last_error_at: Option<u64>,
}

impl ApplyStats {
    pub(crate) fn record(&mut self, kind: BatchKind, seconds: f64) {
        let entry = match kind {
            BatchKind::Full => &mut self.full,
            BatchKind::Elements => &mut self.elements,
        };
        entry.0 += 1;
        entry.1 += seconds;
    }
}

/// A label value, escaped as the format wants (backslash, double quote, newline).
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

struct Family<'a> {
    out: &'a mut String,
}

impl Family<'_> {
    fn header(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        let labels: Vec<String> = labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", label(v)))
            .collect();
        if labels.is_empty() {
            let _ = writeln!(self.out, "{name} {value}");
        } else {
            let _ = writeln!(self.out, "{name}{{{}}} {value}", labels.join(","));
        }
    }
}

/// The metrics text. `counters`: the ruleset in force and its counters as just read
/// (absent when nothing is enforced, or they could not be read).
pub(crate) fn render(
    status: &Status,
    counters: Option<(&Ruleset, &Counters)>,
    drop_log: &DropLogStats,
    applies: &ApplyStats,
) -> String {
    let mut out = String::new();
    let mut f = Family { out: &mut out };

    f.header(
        "trafficjam_state",
        "gauge",
        "1 for the daemon's current state (starting, active, cleared, degraded).",
    );
    for state in [
        State::Starting,
        State::Active,
        State::Cleared,
        State::Degraded,
    ] {
        f.sample(
            "trafficjam_state",
            &[("state", state.as_str())],
            u8::from(status.state == state),
        );
    }

    f.header(
        "trafficjam_network_info",
        "gauge",
        "1 per isolated network, with its bridge and mode (enforce, or audit: nothing dropped).",
    );
    for n in &status.networks {
        f.sample(
            "trafficjam_network_info",
            &[
                ("network", &n.name),
                ("bridge", &n.bridge),
                ("mode", &n.mode),
            ],
            1,
        );
    }

    f.header(
        "trafficjam_whitelisted_containers",
        "gauge",
        "Containers whitelisted on each network.",
    );
    for n in &status.networks {
        f.sample(
            "trafficjam_whitelisted_containers",
            &[("network", &n.name)],
            n.whitelisted.len(),
        );
    }

    f.header(
        "trafficjam_bound_ports",
        "gauge",
        "Container ports bound to their own identity (port security) on each network.",
    );
    for n in &status.networks {
        f.sample(
            "trafficjam_bound_ports",
            &[("network", &n.name)],
            n.bound_ports,
        );
    }

    f.header(
        "trafficjam_dropped_packets_total",
        "counter",
        "Packets dropped (in audit mode: that would have been, see trafficjam_network_info) per network and reason; reason=\"spoofed\" counts forged frames.",
    );
    if let Some((ruleset, counters)) = counters {
        for n in &ruleset.networks {
            for reason in Reason::ALL {
                if n.deny_chains.iter().any(|(r, _)| *r == reason) {
                    f.sample(
                        "trafficjam_dropped_packets_total",
                        &[("network", &n.name), ("reason", reason.name())],
                        ruleset.dropped_for(&n.name, reason, counters),
                    );
                }
            }
        }
    }

    f.header(
        "trafficjam_applies_total",
        "counter",
        "Rulesets applied, by batch kind (full: tables replaced; elements: set elements only).",
    );
    let kinds = [("full", applies.full), ("elements", applies.elements)];
    for (kind, (count, _)) in kinds {
        f.sample("trafficjam_applies_total", &[("kind", kind)], count);
    }
    f.header(
        "trafficjam_apply_duration_seconds",
        "summary",
        "Time from the start of a pass to the kernel's acknowledgement of its batch.",
    );
    for (kind, (count, seconds)) in kinds {
        f.sample(
            "trafficjam_apply_duration_seconds_sum",
            &[("kind", kind)],
            seconds,
        );
        f.sample(
            "trafficjam_apply_duration_seconds_count",
            &[("kind", kind)],
            count,
        );
    }

    f.header(
        "trafficjam_last_apply_timestamp_seconds",
        "gauge",
        "When the last ruleset was applied (0: never since start).",
    );
    f.sample(
        "trafficjam_last_apply_timestamp_seconds",
        &[],
        status.last_apply.as_ref().map_or(0, |a| a.at),
    );
    f.header(
        "trafficjam_errors_total",
        "counter",
        "Passes, applies and repairs that failed (Docker unreadable, batch refused, ...).",
    );
    f.sample("trafficjam_errors_total", &[], applies.errors);
    f.header(
        "trafficjam_last_error_timestamp_seconds",
        "gauge",
        "When the last error happened (0: none since start).",
    );
    f.sample(
        "trafficjam_last_error_timestamp_seconds",
        &[],
        applies.last_error_at.unwrap_or(0),
    );

    f.header(
        "trafficjam_drop_log_enabled",
        "gauge",
        "1 when drops are logged by name (log_drops) and the NFLOG group is read.",
    );
    f.sample(
        "trafficjam_drop_log_enabled",
        &[],
        u8::from(status.drop_log.enabled && status.drop_log.error.is_none()),
    );
    for (name, help, value) in [
        (
            "trafficjam_drop_log_reports_total",
            "Dropped packets the kernel reported (rate-limited per network and reason).",
            &drop_log.reported,
        ),
        (
            "trafficjam_drop_log_lines_total",
            "Lines logged: one per connection attempt.",
            &drop_log.lines,
        ),
        (
            "trafficjam_drop_log_summarised_total",
            "Reports counted into per-source summaries instead of lines (repeats, floods).",
            &drop_log.summarised,
        ),
        (
            "trafficjam_drop_log_lost_total",
            "Reports lost because a queue overflowed.",
            &drop_log.lost,
        ),
    ] {
        f.header(name, "counter", help);
        f.sample(name, &[], value.load(Ordering::Relaxed));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{DEFAULT_TABLE, Family as NftFamily, ManagedNetwork, names, plan};
    use crate::policy::Mode;
    use crate::status::NetworkStatus;

    #[test]
    fn every_sample_has_its_family_and_drops_are_per_network_and_reason() {
        let net = ManagedNetwork {
            name: "web".into(),
            bridge: "br-web".into(),
            subnets: vec!["10.1.0.0/24".parse().unwrap()],
            mode: Mode::Audit,
            ..ManagedNetwork::default()
        };
        let rs = plan(DEFAULT_TABLE, &[net]).unwrap();
        let counters: Counters = [
            (
                (NftFamily::Inet, names::deny_chain(Reason::Isolation, "web")),
                3,
            ),
            (
                (
                    NftFamily::Bridge,
                    names::deny_chain(Reason::Isolation, "web"),
                ),
                4,
            ),
            (
                (NftFamily::Bridge, names::deny_chain(Reason::Spoofed, "web")),
                2,
            ),
        ]
        .into();
        let status = Status {
            state: State::Active,
            networks: vec![NetworkStatus {
                name: "web\"x".into(),
                mode: "audit".into(),
                ..NetworkStatus::default()
            }],
            ..Status::default()
        };
        let mut applies = ApplyStats::default();
        applies.record(BatchKind::Full, 0.25);
        let text = render(
            &status,
            Some((&rs, &counters)),
            &DropLogStats::default(),
            &applies,
        );
        assert!(text.contains(
            "trafficjam_dropped_packets_total{network=\"web\",reason=\"isolation\"} 7\n"
        ));
        assert!(
            text.contains(
                "trafficjam_dropped_packets_total{network=\"web\",reason=\"spoofed\"} 2\n"
            )
        );
        assert!(text.contains("trafficjam_state{state=\"active\"} 1\n"));
        assert!(text.contains("network=\"web\\\"x\""));
        assert!(text.contains("trafficjam_apply_duration_seconds_sum{kind=\"full\"} 0.25\n"));
        // Each family's samples are contiguous, right after its HELP and TYPE.
        let mut families: Vec<&str> = Vec::new();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap();
            let family = name
                .strip_suffix("_sum")
                .or_else(|| name.strip_suffix("_count"))
                .unwrap_or(name);
            if families.last() != Some(&family) {
                assert!(!families.contains(&family), "{family} is split:\n{text}");
                families.push(family);
            }
        }
        // Every sample's name belongs to a family declared above it.
        let mut declared = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                declared.push(rest.split(' ').next().unwrap().to_owned());
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().unwrap();
                assert!(
                    declared.iter().any(|d| name == d
                        || name
                            .strip_prefix(d.as_str())
                            .is_some_and(|s| s == "_sum" || s == "_count")),
                    "{line}"
                );
            }
        }
    }
}
