//! Docker's container filters: [`Filter`] (one `docker ps --filter KEY=VALUE`), and
//! [`Selector`] (containers chosen by any of several `docker ps` queries).

use std::collections::HashMap;
use std::fmt;

/// The `docker ps --filter` keys Docker knows.
const FILTER_KEYS: &[&str] = &[
    "ancestor",
    "before",
    "expose",
    "exited",
    "health",
    "id",
    "isolation",
    "is-task",
    "label",
    "name",
    "network",
    "publish",
    "since",
    "status",
    "volume",
];

/// One `docker ps --filter KEY=VALUE`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Filter {
    pub key: String,
    pub value: String,
}

/// Why a whitelist entry is not a `docker ps --filter`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    #[error("an empty filter")]
    Empty,
    #[error("{0:?} is not a filter: expected KEY=VALUE, as in `docker ps --filter`")]
    NotKeyValue(String),
    #[error("{entry:?}: unknown filter {key:?} (one of {})", FILTER_KEYS.join(", "))]
    UnknownKey { entry: String, key: String },
    #[error("filter {0:?} has an empty value")]
    EmptyValue(String),
    #[error("filter {entry:?}: Docker accepts only {expected}")]
    BadValue { entry: String, expected: String },
}

impl Filter {
    pub fn parse(text: &str) -> Result<Filter, FilterError> {
        if text.trim().is_empty() {
            return Err(FilterError::Empty);
        }
        let Some((key, value)) = text.split_once('=') else {
            return Err(FilterError::NotKeyValue(text.to_owned()));
        };
        if !FILTER_KEYS.contains(&key) {
            return Err(FilterError::UnknownKey {
                entry: text.to_owned(),
                key: key.to_owned(),
            });
        }
        if value.is_empty() {
            return Err(FilterError::EmptyValue(text.to_owned()));
        }
        // Docker refuses other values of these keys (the query would fail).
        let allowed: &[&str] = match key {
            "status" => &[
                "created",
                "restarting",
                "running",
                "removing",
                "paused",
                "exited",
                "dead",
            ],
            "health" => &["starting", "healthy", "unhealthy", "none"],
            "is-task" => &["true", "false"],
            _ => &[],
        };
        let bad_number = key == "exited" && value.parse::<i64>().is_err();
        if (!allowed.is_empty() && !allowed.contains(&value)) || bad_number {
            return Err(FilterError::BadValue {
                entry: text.to_owned(),
                expected: if bad_number {
                    "an exit code".to_owned()
                } else {
                    allowed.join(", ")
                },
            });
        }
        Ok(Filter {
            key: key.to_owned(),
            value: value.to_owned(),
        })
    }

    /// The filters as Docker's API takes them, exactly like repeated `docker ps --filter`:
    /// different keys AND'ed; a repeated `label` AND'ed too, other repeated keys OR'ed.
    pub fn to_docker(filters: &[Filter]) -> HashMap<String, Vec<String>> {
        let mut map: HashMap<String, Vec<String>> = HashMap::new();
        for f in filters {
            map.entry(f.key.clone()).or_default().push(f.value.clone());
        }
        map
    }
}

impl fmt::Display for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.key, self.value)
    }
}

/// Containers chosen by `docker ps` queries: a container is chosen when any of the queries
/// lists it. Within one query, filters combine exactly as repeated `docker ps --filter`.
#[derive(Debug, Clone, PartialEq, Eq, Default, PartialOrd, Ord)]
pub struct Selector {
    pub queries: Vec<Vec<Filter>>,
}

impl Selector {
    /// One query.
    pub fn query(filters: Vec<Filter>) -> Selector {
        Selector {
            queries: vec![filters],
        }
    }

    pub fn is_empty(&self) -> bool {
        self.queries.iter().all(Vec::is_empty)
    }

    /// The traps users fall into with these filters, as warnings (empty when none).
    pub fn pitfalls(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        for query in &self.queries {
            let labels = query.iter().filter(|f| f.key == "label").count();
            if labels > 1 {
                let list: Vec<String> = query.iter().map(|f| format!("\"{f}\"")).collect();
                warnings.push(format!(
                    "[{}] is one query, and Docker ANDs repeated label filters: only a container with every one of these labels matches. For alternatives write a list of lists: [{}]",
                    list.join(", "),
                    query
                        .iter()
                        .map(|f| format!("[\"{f}\"]"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            for f in query {
                match f.key.as_str() {
                    "ancestor" => warnings.push(format!(
                        "\"{f}\" follows the image tag: once the tag moves to a newer image (a docker pull), the running container no longer matches until it is recreated. Prefer a label, such as \"label=trafficjam.role=proxy\""
                    )),
                    "name" if !(f.value.starts_with('^') && f.value.ends_with('$')) => {
                        warnings.push(format!(
                            "\"{f}\" is a regular expression that matches anywhere in a container's name (name={v} also matches {v}-forward-auth). Anchor it: \"name=^{v}$\", or use a label",
                            v = f.value.trim_start_matches('^').trim_end_matches('$')
                        ))
                    }
                    "label" if f.value.starts_with("traefik.enable") => warnings.push(format!(
                        "\"{f}\" matches every container Traefik routes to, the backends too: they would all be whitelisted. Use a label only the proxy carries"
                    )),
                    _ => {}
                }
            }
        }
        warnings
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let query = |q: &Vec<Filter>| {
            q.iter()
                .map(Filter::to_string)
                .collect::<Vec<_>>()
                .join(" + ")
        };
        let parts: Vec<String> = self.queries.iter().map(query).collect();
        f.write_str(&parts.join(" | "))
    }
}
