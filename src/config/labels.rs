//! The policy read from Docker labels: a network's `trafficjam.*` labels
//! ([`Config::policy_for`]) and its containers' `trafficjam.allow.*` labels
//! ([`container_allow_rules`]).

use std::collections::{BTreeMap, HashMap};

use super::network::{AllowRule, NetworkPolicy, host_access, parse_destinations};
use super::selector::{Filter, Selector};
use super::{
    Config, LABEL_ALLOW_HOST_PORTS, LABEL_ALLOW_HOST_TRAFFIC, LABEL_ALLOW_PREFIX,
    LABEL_DENY_OUTBOUND, LABEL_MODE, LABEL_WHITELIST, PolicySource,
};
use crate::policy::{HostAccess, Mode, PortRange};

/// The allow rules a container's labels declare towards the container itself, and the
/// problems of those that cannot be read (such a rule opens nothing: fail closed). The
/// rules' `to` is left empty: it is the container.
pub fn container_allow_rules(
    container: &str,
    labels: &HashMap<String, String>,
) -> (Vec<AllowRule>, Vec<String>) {
    // rule name -> (from, ports), from the label keys.
    let mut rules: BTreeMap<String, (Option<&String>, Option<&String>)> = BTreeMap::new();
    let mut broken = std::collections::BTreeSet::new();
    let mut problems = Vec::new();
    for (key, value) in labels {
        let Some(rest) = key.strip_prefix(LABEL_ALLOW_PREFIX) else {
            continue;
        };
        let (name, field) = match rest.rsplit_once('.') {
            Some((name, field)) => (name, field),
            None => ("", rest),
        };
        let entry = rules.entry(name.to_owned()).or_default();
        match field {
            "from" => entry.0 = Some(value),
            "ports" => entry.1 = Some(value),
            _ => {
                // A typo (`.port`) must not leave the rule open on every port.
                broken.insert(name.to_owned());
                problems.push(format!(
                    "container {container}: label {key}: unknown (trafficjam.allow.from, trafficjam.allow.ports, or trafficjam.allow.<rule>.from and .ports): that rule opens nothing"
                ));
            }
        }
    }
    rules.retain(|name, _| !broken.contains(name));
    let mut out = Vec::new();
    for (name, (from, ports)) in rules {
        let label = |field: &str| {
            if name.is_empty() {
                format!("{LABEL_ALLOW_PREFIX}{field}")
            } else {
                format!("{LABEL_ALLOW_PREFIX}{name}.{field}")
            }
        };
        let origin = format!("label {} on {container}", label("from"));
        let Some(from) = from else {
            problems.push(format!(
                "container {container}: {} without {}: it opens nothing",
                label("ports"),
                label("from")
            ));
            continue;
        };
        let from = match Filter::parse(from) {
            Ok(f) => Selector::query(vec![f]),
            Err(e) => {
                problems.push(format!(
                    "container {container}: label {}: {e}: it opens nothing",
                    label("from")
                ));
                continue;
            }
        };
        let ports = match ports {
            None => None,
            Some(list) => match list
                .split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(PortRange::parse)
                .collect::<Result<Vec<_>, _>>()
            {
                Ok(p) if !p.is_empty() => Some(p),
                Ok(_) => {
                    problems.push(format!(
                        "container {container}: label {} is empty: it opens nothing",
                        label("ports")
                    ));
                    continue;
                }
                Err(e) => {
                    problems.push(format!(
                        "container {container}: label {}: {e}: it opens nothing",
                        label("ports")
                    ));
                    continue;
                }
            },
        };
        for p in from.pitfalls() {
            problems.push(format!(
                "container {container}: label {}: {p}",
                label("from")
            ));
        }
        out.push(AllowRule {
            from,
            to: Selector::default(),
            ports,
            origin,
        });
    }
    (out, problems)
}

impl Config {
    /// The policy of a Docker network: its `[network.NAME]` section if there is one (it
    /// overrides the labels), else its labels if it opted in, else `None` (not managed).
    /// A label that cannot be read isolates the network with an empty whitelist: the
    /// network asked for isolation, so it fails closed; the error says why.
    pub fn policy_for(
        &self,
        name: &str,
        labels: &HashMap<String, String>,
    ) -> Option<(NetworkPolicy, PolicySource, Vec<String>)> {
        if let Some((policy, source)) = self.networks.get(name) {
            return Some((policy.clone(), source.clone(), Vec::new()));
        }
        if !self.daemon.label_opt_in {
            return None;
        }
        let mut keys: Vec<&String> = labels
            .keys()
            .filter(|k| {
                k.as_str() == LABEL_WHITELIST
                    || k.strip_prefix(LABEL_WHITELIST)
                        .is_some_and(|rest| rest.starts_with('.'))
            })
            .collect();
        if keys.is_empty() {
            return None;
        }
        keys.sort();
        let mut errors = Vec::new();
        // Each whitelist label is one alternative: a container matching any is whitelisted.
        let mut whitelist = Selector::default();
        for key in keys {
            match Filter::parse(&labels[key]) {
                Ok(f) => whitelist.queries.push(vec![f]),
                Err(e) => errors.push(format!("label {key}: {e}")),
            }
        }
        if !errors.is_empty() {
            whitelist = Selector::default();
            errors.push("isolating the network with no container whitelisted".into());
        }
        let host_access = match labels.get(LABEL_ALLOW_HOST_TRAFFIC) {
            None => HostAccess::Closed,
            Some(value) => host_access(value).unwrap_or_else(|| {
                errors.push(format!(
                    "label {LABEL_ALLOW_HOST_TRAFFIC}={value:?} is not true, false or whitelisted: host traffic stays blocked"
                ));
                HostAccess::Closed
            }),
        };
        let list = |value: &str| -> Vec<String> {
            value
                .split(',')
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
                .collect()
        };
        let mut host_ports = Vec::new();
        if let Some(value) = labels.get(LABEL_ALLOW_HOST_PORTS) {
            match list(value)
                .iter()
                .map(|p| PortRange::parse(p))
                .collect::<Result<Vec<_>, _>>()
            {
                Ok(ports) => host_ports = ports,
                Err(e) => errors.push(format!(
                    "label {LABEL_ALLOW_HOST_PORTS}: {e}: no host port is opened"
                )),
            }
        }
        let mut deny_outbound = Vec::new();
        if let Some(value) = labels.get(LABEL_DENY_OUTBOUND) {
            match list(value)
                .iter()
                .map(|d| parse_destinations(d))
                .collect::<Result<Vec<_>, _>>()
            {
                Ok(d) => deny_outbound = d.into_iter().flatten().collect(),
                Err(e) => {
                    errors.push(format!(
                        "label {LABEL_DENY_OUTBOUND}: {e}: denying every destination outside the network"
                    ));
                    deny_outbound = vec![
                        "0.0.0.0/0".parse().expect("valid"),
                        "::/0".parse().expect("valid"),
                    ];
                }
            }
        }
        let mode = match labels.get(LABEL_MODE) {
            None => Mode::Enforce,
            Some(value) => Mode::parse(value).unwrap_or_else(|| {
                errors.push(format!(
                    "label {LABEL_MODE}={value:?} is not enforce or audit: enforcing"
                ));
                Mode::Enforce
            }),
        };
        Some((
            NetworkPolicy {
                whitelist,
                host_access,
                host_ports,
                deny_outbound,
                allow: Vec::new(),
                mode,
            },
            PolicySource::Labels,
            errors,
        ))
    }
}
