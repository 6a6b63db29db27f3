//! The policy read from Docker labels: a network's `trafficjam.*` labels
//! ([`Config::policy_for`]) and its containers' `trafficjam.allow.*` labels
//! ([`container_allow_rules`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::network::{
    AllowRule, Choice, HostTraffic, Key, NetworkPolicy, OnFailure, PolicyBuilder, Problem, RuleTo,
    Written, WrittenList, read_allow_rule,
};
use super::{
    Config, LABEL_ALLOW_HOST_PORTS, LABEL_ALLOW_HOST_TRAFFIC, LABEL_ALLOW_PREFIX,
    LABEL_DENY_OUTBOUND, LABEL_MODE, LABEL_WHITELIST, PolicySource,
};

/// A label's value as a list: comma-separated, blanks dropped, each item where the
/// label is.
fn comma_list(at: &str, value: &str) -> WrittenList<String> {
    let items = value
        .split(',')
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(|v| Written::new(at.to_owned(), v.to_owned()))
        .collect();
    Written::new(at.to_owned(), items)
}

/// A label whose value is one filter, as a query of its own.
fn one_filter(at: &str, value: &str) -> WrittenList<String> {
    Written::new(
        at.to_owned(),
        vec![Written::new(at.to_owned(), value.to_owned())],
    )
}

/// A network's labels' way with a value they cannot read: a warning that names the label
/// and what is done instead, and the key set aside.
#[derive(Debug, Default)]
struct NetworkWarnings(Vec<String>);

impl OnFailure for NetworkWarnings {
    /// The label.
    type At = String;
    type Error = std::convert::Infallible;

    fn failed(&mut self, key: Key, label: String, problem: Problem) -> Result<(), Self::Error> {
        let message = match problem {
            Problem::HostTraffic(_) => {
                format!("label {label}={problem}: host traffic stays blocked")
            }
            Problem::Mode(_) => format!("label {label}={problem}: enforcing"),
            // A port label that lists nothing opens nothing, as no label would.
            Problem::Empty if key == Key::AllowHostPorts => return Ok(()),
            problem => {
                let instead = match key {
                    Key::AllowHostPorts => ": no host port is opened",
                    Key::DenyOutbound => ": denying every destination outside the network",
                    // The whitelist: what is done instead is said once, after them all.
                    _ => "",
                };
                format!("label {label}: {problem}{instead}")
            }
        };
        self.0.push(message);
        Ok(())
    }
}

/// A container's labels' way with an allow rule they cannot read: a problem that names the
/// container and the label, and the rule set aside (it opens nothing).
#[derive(Debug)]
struct ContainerProblems<'a> {
    container: &'a str,
    problems: Vec<String>,
}

impl OnFailure for ContainerProblems<'_> {
    /// The rule's name (empty for the unnamed rule).
    type At = String;
    type Error = std::convert::Infallible;

    fn failed(&mut self, key: Key, rule: String, problem: Problem) -> Result<(), Self::Error> {
        let container = self.container;
        let label = allow_label(&rule, key);
        self.problems.push(match problem {
            Problem::Missing => format!(
                "container {container}: {} without {label}: it opens nothing",
                allow_label(&rule, Key::AllowPorts),
            ),
            Problem::Empty => {
                format!("container {container}: label {label} is empty: it opens nothing")
            }
            problem => format!("container {container}: label {label}: {problem}: it opens nothing"),
        });
        Ok(())
    }
}

/// The label of a container's allow rule that carries `key` (`trafficjam.allow.from`, or
/// `trafficjam.allow.<rule>.from` for a named rule).
fn allow_label(rule: &str, key: Key) -> String {
    let field = key.name().trim_start_matches("allow.");
    if rule.is_empty() {
        format!("{LABEL_ALLOW_PREFIX}{field}")
    } else {
        format!("{LABEL_ALLOW_PREFIX}{rule}.{field}")
    }
}

/// The allow rules a container's labels declare towards the container itself, and the
/// problems of those that cannot be read (such a rule opens nothing: fail closed). The
/// rules' `to` is left empty: it is the container.
pub(crate) fn container_allow_rules(
    container: &str,
    labels: &HashMap<String, String>,
) -> (Vec<AllowRule>, Vec<String>) {
    // rule name -> (from, ports), from the label keys.
    let mut rules: BTreeMap<String, (Option<&String>, Option<&String>)> = BTreeMap::new();
    let mut broken = BTreeSet::new();
    let mut problems = ContainerProblems {
        container,
        problems: Vec::new(),
    };
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
                problems.problems.push(format!(
                    "container {container}: label {key}: unknown (trafficjam.allow.from, trafficjam.allow.ports, or trafficjam.allow.<rule>.from and .ports): that rule opens nothing"
                ));
            }
        }
    }
    rules.retain(|name, _| !broken.contains(name));
    let mut out = Vec::new();
    for (name, (from, ports)) in rules {
        let from_label = allow_label(&name, Key::AllowFrom);
        let origin = format!("label {from_label} on {container}");
        let from =
            from.map(|f| Written::new(name.clone(), Choice::Queries(vec![one_filter(&name, f)])));
        let ports = ports.map(|p| comma_list(&name, p));
        let Ok(rule) = read_allow_rule(
            &mut problems,
            name.clone(),
            from,
            RuleTo::Carrier,
            ports,
            origin,
        );
        let Some(rule) = rule else {
            continue;
        };
        for p in rule.from.pitfalls() {
            problems
                .problems
                .push(format!("container {container}: label {from_label}: {p}"));
        }
        out.push(rule);
    }
    (out, problems.problems)
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
        let mut warnings = NetworkWarnings::default();
        let mut policy = PolicyBuilder::new();
        // Each whitelist label is one alternative: a container matching any is whitelisted.
        let alternatives = keys.iter().map(|k| one_filter(k, &labels[*k])).collect();
        let whitelist = Written::new(LABEL_WHITELIST.to_owned(), Choice::Queries(alternatives));
        let Ok(read) = policy.whitelist(&mut warnings, whitelist);
        if !read {
            warnings
                .0
                .push("isolating the network with no container whitelisted".into());
        }
        if let Some(value) = labels.get(LABEL_ALLOW_HOST_TRAFFIC) {
            let value = Written::new(
                LABEL_ALLOW_HOST_TRAFFIC.to_owned(),
                HostTraffic::Text(value.clone()),
            );
            let Ok(()) = policy.host_traffic(&mut warnings, value);
        }
        if let Some(value) = labels.get(LABEL_ALLOW_HOST_PORTS) {
            let list = comma_list(LABEL_ALLOW_HOST_PORTS, value);
            let Ok(()) = policy.host_ports(&mut warnings, list);
        }
        if let Some(value) = labels.get(LABEL_DENY_OUTBOUND) {
            let list = comma_list(LABEL_DENY_OUTBOUND, value);
            let Ok(()) = policy.deny_outbound(&mut warnings, list);
        }
        if let Some(value) = labels.get(LABEL_MODE) {
            let value = Written::new(LABEL_MODE.to_owned(), value.clone());
            let Ok(()) = policy.mode(&mut warnings, value);
        }
        Some((policy.build(), PolicySource::Labels, warnings.0))
    }
}
