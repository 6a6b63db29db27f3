//! The configuration's tests: the TOML files, the labels, the filters.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use super::toml::{DurationError, parse_duration};
use super::*;
use crate::plan::DEFAULT_TABLE;
use crate::policy::{HostAccess, Mode};

fn parse(files: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let sources: Vec<(PathBuf, String)> = files
        .iter()
        .map(|(n, t)| (PathBuf::from(format!("/etc/trafficjam/{n}")), t.to_string()))
        .collect();
    Config::from_sources(&sources)
}

fn error(files: &[(&str, &str)]) -> String {
    parse(files).expect_err("should be refused").to_string()
}

/// The warnings of a file that parses.
fn warnings(text: &str) -> Vec<String> {
    let c = parse(&[("a.toml", text)]).unwrap();
    c.warnings.iter().map(ToString::to_string).collect()
}

#[test]
fn full_example_parses() {
    let c = parse(&[(
        "a.toml",
        r#"
[daemon]
docker_host = "tcp://127.0.0.1:2375"
resync_interval = "1m30s"
table = "tj_test"
log_level = "debug"

[network.traefik_public]
whitelist = ["ancestor=traefik:latest", "label=role=proxy"]
allow_host_traffic = true

[network.other]
whitelist = "name=proxy"
"#,
    )])
    .unwrap();
    assert_eq!(
        c.daemon.docker_host.as_deref(),
        Some("tcp://127.0.0.1:2375")
    );
    assert_eq!(c.daemon.resync_interval, Duration::from_secs(90));
    assert_eq!(c.daemon.table, "tj_test");
    assert_eq!(c.daemon.log_level.as_deref(), Some("debug"));
    let (p, _) = &c.networks["traefik_public"];
    assert_eq!(p.host_access, HostAccess::Open);
    assert_eq!(
        p.whitelist,
        Selector::query(vec![
            Filter {
                key: "ancestor".into(),
                value: "traefik:latest".into()
            },
            Filter {
                key: "label".into(),
                value: "role=proxy".into()
            },
        ])
    );
    let (p, _) = &c.networks["other"];
    assert_eq!(p.host_access, HostAccess::Closed);
    assert_eq!(p.whitelist.to_string(), "name=proxy");
    // ancestor= and an unanchored name= are warned about, where they are written.
    let warnings: Vec<String> = c.warnings.iter().map(|w| w.to_string()).collect();
    assert_eq!(warnings.len(), 2, "{warnings:#?}");
    assert!(warnings[0].starts_with("/etc/trafficjam/a.toml:9:13: network \"traefik_public\": whitelist: \"ancestor=traefik:latest\" follows the image tag"), "{warnings:#?}");
    assert!(
        warnings[1].contains(
            "a.toml:13:13: network \"other\": whitelist: \"name=proxy\" is a regular expression"
        ),
        "{warnings:#?}"
    );
}

#[test]
fn empty_and_default() {
    let c = parse(&[("a.toml", "# nothing\n")]).unwrap();
    assert_eq!(c.daemon, DaemonConfig::default());
    assert!(c.networks.is_empty());
}

#[test]
fn errors_name_file_line_and_column() {
    // The whole message.
    for (body, want) in [
        (
            "[daemon]\ntable = \"x\"\nbogus = 1\n",
            "3:1: unknown field `bogus`, expected one of `docker_host`, `resync_interval`, `table`, `log_level`, `label_opt_in`, `log_drops`, `log_group`",
        ),
        (
            "[network.n]\nwhitelist = [\"name=a\", \"\"]\n",
            "2:24: network \"n\": whitelist: an empty filter",
        ),
    ] {
        let e = error(&[("a.toml", body)]);
        assert_eq!(e, format!("/etc/trafficjam/a.toml:{want}"), "{body:?}");
    }
    // How the message starts.
    for (body, want) in [
        (
            "[network.n]\nwhitelist = 5\n",
            "2:13: invalid type: integer `5`",
        ),
        (
            "[network.n]\nwhitelist = [\"name=a\", \"nope\"]\n",
            "2:24: network \"n\": whitelist: \"nope\" is not a filter",
        ),
        (
            "[network.n]\nwhitelist = \"colour=red\"\n",
            "2:13: network \"n\": whitelist: \"colour=red\": unknown filter \"colour\"",
        ),
        (
            "[network.n]\nwhitelist = []\n",
            "2:13: network \"n\": whitelist: an empty query",
        ),
        (
            "[network.n]\nallow_host_traffic = true\n",
            "1:10: network \"n\": no whitelist",
        ),
        (
            "[daemon]\nresync_interval = \"soon\"\n",
            "2:19: \"soon\" is not a duration",
        ),
        (
            "[daemon]\nresync_interval = \"10ms\"\n",
            "2:19: resync_interval must be at least 1s",
        ),
        (
            "[daemon]\ndocker_host = \"http://x\"\n",
            "2:15: docker_host",
        ),
        ("[daemon]\ntable = \"bad name\"\n", "2:9: table name"),
        (
            "[daemon]\nlog_level = \"loud\"\n",
            "2:13: log_level must be one of",
        ),
        (
            "[network.\"-x\"]\nwhitelist = \"name=a\"\n",
            "1:10: \"-x\" is not a valid Docker network name",
        ),
        ("[network.n]\nwhitelist = \"name=a\"\n[network\n", "3:"),
    ] {
        let e = error(&[("a.toml", body)]);
        let want = format!("/etc/trafficjam/a.toml:{want}");
        assert!(e.starts_with(&want), "{body:?}: {e}");
    }
}

#[test]
fn the_same_network_or_daemon_key_in_two_files_is_refused() {
    let net = "[network.web]\nwhitelist = \"name=proxy\"\n";
    assert_eq!(
        error(&[("a.toml", net), ("b.toml", &format!("\n{net}"))]),
        "/etc/trafficjam/b.toml:2:10: network \"web\" is already configured in /etc/trafficjam/a.toml"
    );
    let e = error(&[
        ("a.toml", "[daemon]\ntable = \"one\"\n"),
        ("b.toml", "[daemon]\ntable = \"two\"\n"),
    ]);
    assert_eq!(
        e,
        "/etc/trafficjam/b.toml:2:9: daemon.table is already set in /etc/trafficjam/a.toml"
    );
    // Different keys in different files are fine.
    let c = parse(&[
        ("a.toml", "[daemon]\ntable = \"one\"\n"),
        ("b.toml", "[daemon]\nresync_interval = \"5s\"\n"),
    ])
    .unwrap();
    assert_eq!(c.daemon.table, "one");
    assert_eq!(c.daemon.resync_interval, Duration::from_secs(5));
}

#[test]
fn load_dir_reads_toml_files_in_name_order() {
    let dir = std::env::temp_dir().join(format!("tj-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("20-b.toml"), "[daemon]\ntable = \"late\"\n").unwrap();
    std::fs::write(
        dir.join("10-a.toml"),
        "[network.x]\nwhitelist = \"name=p\"\n",
    )
    .unwrap();
    std::fs::write(dir.join("ignored.conf"), "not toml at all [").unwrap();
    let c = Config::load_dir(&dir).unwrap();
    assert_eq!(c.files, [dir.join("10-a.toml"), dir.join("20-b.toml")]);
    assert_eq!(c.daemon.table, "late");
    std::fs::remove_dir_all(&dir).unwrap();
    let e = Config::load_dir(&dir).unwrap_err();
    assert!(
        e.to_string().contains("cannot read the config directory"),
        "{e}"
    );
}

/// The shipped default parses, and so does every example in it once uncommented.
#[test]
fn shipped_default_and_its_examples_parse() {
    let shipped = include_str!("../../etc/trafficjam/trafficjam.toml");
    let c = parse(&[("trafficjam.toml", shipped)]).unwrap();
    assert_eq!(c.daemon, DaemonConfig::default());
    assert!(c.networks.is_empty());
    let uncommented: String = shipped
        .lines()
        .map(|l| match l.strip_prefix('#') {
            Some(rest) if rest.starts_with(|c: char| c.is_ascii_alphabetic() || c == '[') => rest,
            _ => l,
        })
        .map(|l| format!("{l}\n"))
        .collect();
    let c = parse(&[("trafficjam.toml", &uncommented)]).unwrap();
    assert_eq!(c.daemon.docker_host.as_deref(), Some(DEFAULT_DOCKER_HOST));
    assert_eq!(c.daemon.resync_interval, DEFAULT_RESYNC_INTERVAL);
    assert_eq!(c.daemon.table, DEFAULT_TABLE);
    let (p, _) = &c.networks["traefik_public"];
    assert_eq!(p.whitelist.to_string(), "label=trafficjam.role=proxy");
    assert_eq!(p.host_access, HostAccess::Closed);
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
}

#[test]
fn durations() {
    assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
    assert_eq!(
        parse_duration("99999999h"),
        Err(DurationError::TooLong("99999999h".into()))
    );
    assert_eq!(
        parse_duration("5d"),
        Err(DurationError::Invalid("5d".into()))
    );
    assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
    assert_eq!(parse_duration("1h2m3s"), Ok(Duration::from_secs(3723)));
    assert!(parse_duration("").is_err());
    assert!(parse_duration("5").is_err());
    assert!(parse_duration("5d").is_err());
    assert!(parse_duration("s").is_err());
    assert!(parse_duration("1s18446744073709551615s").is_err());
    assert!(parse_duration("99999999h").is_err());
}

fn labels(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The policy of a network "api" with no section, from its labels, and the warnings.
fn labelled(pairs: &[(&str, &str)]) -> (NetworkPolicy, Vec<String>) {
    let (policy, source, warnings) = Config::default().policy_for("api", &labels(pairs)).unwrap();
    assert_eq!(source, PolicySource::Labels);
    (policy, warnings)
}

#[test]
fn labels_opt_a_network_in_and_a_section_overrides_them() {
    let c = parse(&[("a.toml", "[network.web]\nwhitelist = \"name=proxy\"\n")]).unwrap();
    let l = labels(&[
        ("trafficjam.whitelist", "ancestor=traefik"),
        ("trafficjam.whitelist.second", "label=proxy=yes"),
        ("trafficjam.allow_host_traffic", "true"),
        ("trafficjam.whitelistx", "name=ignored"),
    ]);
    let (p, source, errors) = c.policy_for("api", &l).unwrap();
    assert_eq!(source, PolicySource::Labels);
    assert!(errors.is_empty());
    assert_eq!(p.host_access, HostAccess::Open);
    // Each whitelist label is an alternative.
    assert_eq!(
        p.whitelist.to_string(),
        "ancestor=traefik | label=proxy=yes"
    );
    let (p, source, _) = c.policy_for("web", &l).unwrap();
    assert!(matches!(source, PolicySource::File(_)));
    assert_eq!(p.whitelist.to_string(), "name=proxy");
    assert_eq!(p.host_access, HostAccess::Closed);
    assert!(
        c.policy_for("plain", &labels(&[("com.example", "x")]))
            .is_none()
    );

    // With label_opt_in = false only sections count.
    let c = parse(&[(
        "a.toml",
        "[daemon]\nlabel_opt_in = false\n[network.web]\nwhitelist = \"name=proxy\"\n",
    )])
    .unwrap();
    assert!(c.policy_for("api", &l).is_none());
    assert!(c.policy_for("web", &l).is_some());
}

#[test]
fn a_broken_label_fails_closed() {
    let (p, errors) = labelled(&[("trafficjam.whitelist", "nonsense")]);
    assert!(p.whitelist.is_empty());
    assert_eq!(errors.len(), 2, "{errors:?}");
    let (p, errors) = labelled(&[
        ("trafficjam.whitelist", "name=p"),
        ("trafficjam.allow_host_traffic", "yes"),
    ]);
    assert_eq!(p.host_access, HostAccess::Closed);
    assert_eq!(errors.len(), 1);
    // Broken port and destination labels: no port opened, every destination denied.
    let (p, errors) = labelled(&[
        ("trafficjam.whitelist", "name=p"),
        ("trafficjam.allow_host_ports", "53/udp, dns"),
        ("trafficjam.deny_outbound", "private,10.0.0.0/33"),
    ]);
    assert!(p.host_ports.is_empty());
    assert_eq!(p.deny_outbound.len(), 2);
    assert!(p.deny_outbound.iter().all(|d| d.prefix() == 0));
    assert_eq!(errors.len(), 2, "{errors:?}");
    // A broken mode label enforces.
    let (p, errors) = labelled(&[
        ("trafficjam.whitelist", "name=p"),
        ("trafficjam.mode", "audti"),
    ]);
    assert_eq!(p.mode, Mode::Enforce);
    assert_eq!(errors.len(), 1, "{errors:?}");
}

#[test]
fn audit_mode_and_the_drop_log_settings() {
    let c = parse(&[(
        "a.toml",
        "[daemon]\nlog_drops = false\nlog_group = 7\n[network.web]\nwhitelist = \"name=^p$\"\nmode = \"audit\"\n",
    )])
    .unwrap();
    assert_eq!(c.networks["web"].0.mode, Mode::Audit);
    assert_eq!((c.daemon.log_drops, c.daemon.log_group), (false, 7));
    assert_eq!(c.daemon.drop_log_group(), None);
    let d = Config::default();
    assert_eq!(d.daemon.drop_log_group(), Some(DEFAULT_LOG_GROUP));
    let (p, errors) = labelled(&[
        ("trafficjam.whitelist", "name=p"),
        ("trafficjam.mode", "audit"),
    ]);
    assert_eq!((p.mode, errors.len()), (Mode::Audit, 0));
    let e = error(&[("a.toml", "[daemon]\nlog_group = 70000\n")]);
    assert!(e.starts_with("/etc/trafficjam/a.toml:2:13:"), "{e}");
}

#[test]
fn network_labels_carry_host_access_ports_and_outbound_denials() {
    let (p, errors) = labelled(&[
        ("trafficjam.whitelist", "label=role=proxy"),
        ("trafficjam.allow_host_traffic", "whitelisted"),
        ("trafficjam.allow_host_ports", "53/udp, 8000-8100/tcp"),
        ("trafficjam.deny_outbound", "private, 203.0.113.7"),
    ]);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(p.host_access, HostAccess::Whitelisted);
    let ports: Vec<String> = p.host_ports.iter().map(|p| p.to_string()).collect();
    assert_eq!(ports, ["53/udp", "8000-8100/tcp"]);
    assert_eq!(p.deny_outbound.len(), PRIVATE_DESTINATIONS.len() + 1);
    assert_eq!(
        p.deny_outbound.last().unwrap().to_string(),
        "203.0.113.7/32"
    );
}

/// What labels that cannot be read are warned of, to the letter: the operator reads it.
#[test]
fn label_warnings_are_worded_as_they_were() {
    let (p, errors) = labelled(&[
        ("trafficjam.whitelist", "nonsense"),
        ("trafficjam.whitelist.b", "colour=red"),
        ("trafficjam.allow_host_traffic", "yes"),
        ("trafficjam.allow_host_ports", "53/udp, dns"),
        ("trafficjam.deny_outbound", "lan"),
        ("trafficjam.mode", "audti"),
    ]);
    assert_eq!(
        errors,
        [
            "label trafficjam.whitelist: \"nonsense\" is not a filter: expected KEY=VALUE, as in `docker ps --filter`",
            "label trafficjam.whitelist.b: \"colour=red\": unknown filter \"colour\" (one of ancestor, before, expose, exited, health, id, isolation, is-task, label, name, network, publish, since, status, volume)",
            "isolating the network with no container whitelisted",
            "label trafficjam.allow_host_traffic=\"yes\" is not true, false or whitelisted: host traffic stays blocked",
            "label trafficjam.allow_host_ports: \"dns\": unknown protocol \"dns\" (tcp or udp; examples: \"5432/tcp\", \"53/udp\", \"8000-8100/tcp\", \"tcp\"): no host port is opened",
            "label trafficjam.deny_outbound: \"lan\" is not a destination (a CIDR such as \"192.168.1.0/24\", an address, or \"private\"): invalid address: lan: denying every destination outside the network",
            "label trafficjam.mode=\"audti\" is not enforce or audit: enforcing",
        ]
    );
    assert_eq!(
        (p.whitelist, p.host_access, p.host_ports, p.mode),
        (
            Selector::default(),
            HostAccess::Closed,
            Vec::new(),
            Mode::Enforce
        )
    );
    // A port label that lists nothing opens nothing, and is not warned of.
    let (p, errors) = labelled(&[
        ("trafficjam.whitelist", "name=^p$"),
        ("trafficjam.allow_host_ports", " , "),
        ("trafficjam.deny_outbound", ""),
    ]);
    assert!(errors.is_empty(), "{errors:?}");
    assert!(p.host_ports.is_empty() && p.deny_outbound.is_empty());

    let (rules, problems) = container_allow_rules(
        "db",
        &labels(&[
            ("trafficjam.allow.ports", "5432/tcp"),
            ("trafficjam.allow.a.from", "nonsense"),
            ("trafficjam.allow.a.ports", "5432/udp"),
            ("trafficjam.allow.b.from", "name=^b$"),
            ("trafficjam.allow.b.ports", " , "),
            ("trafficjam.allow.c.from", "name=^c$"),
            ("trafficjam.allow.c.ports", "80/icmp"),
            ("trafficjam.allow.d.from", "name=d"),
            ("trafficjam.allow.e.colour", "red"),
            ("trafficjam.allow.e.from", "name=^e$"),
        ]),
    );
    assert_eq!(
        problems,
        [
            "container db: label trafficjam.allow.e.colour: unknown (trafficjam.allow.from, trafficjam.allow.ports, or trafficjam.allow.<rule>.from and .ports): that rule opens nothing",
            "container db: trafficjam.allow.ports without trafficjam.allow.from: it opens nothing",
            "container db: label trafficjam.allow.a.from: \"nonsense\" is not a filter: expected KEY=VALUE, as in `docker ps --filter`: it opens nothing",
            "container db: label trafficjam.allow.b.ports is empty: it opens nothing",
            "container db: label trafficjam.allow.c.ports: \"80/icmp\": unknown protocol \"icmp\" (tcp or udp; examples: \"5432/tcp\", \"53/udp\", \"8000-8100/tcp\", \"tcp\"): it opens nothing",
            "container db: label trafficjam.allow.d.from: \"name=d\" is a regular expression that matches anywhere in a container's name (name=d also matches d-forward-auth). Anchor it: \"name=^d$\", or use a label",
        ]
    );
    let origins: Vec<&str> = rules.iter().map(|r| r.origin.as_str()).collect();
    assert_eq!(origins, ["label trafficjam.allow.d.from on db"]);
}

#[test]
fn container_labels_open_the_container_to_whom_they_name() {
    let (rules, problems) = container_allow_rules(
        "db",
        &labels(&[
            (
                "trafficjam.allow.from",
                "label=com.docker.compose.service=nextcloud",
            ),
            ("trafficjam.allow.ports", "5432/tcp"),
            ("trafficjam.allow.admin.from", "name=^adminer$"),
            // A typo in a field name: the rule opens nothing (not every port).
            ("trafficjam.allow.bad.from", "nonsense"),
            ("trafficjam.allow.lonely.ports", "80/tcp"),
            ("trafficjam.allow.wrong.ports", "80/icmp"),
            ("trafficjam.allow.wrong.from", "name=^x$"),
            ("trafficjam.allow.admin.color", "red"),
            ("com.example", "x"),
        ]),
    );
    let summary: Vec<String> = rules
        .iter()
        .map(|r| {
            format!(
                "{} {} {:?}",
                r.origin,
                r.from,
                r.ports.as_ref().map(|p| p.len())
            )
        })
        .collect();
    assert_eq!(
        summary,
        ["label trafficjam.allow.from on db label=com.docker.compose.service=nextcloud Some(1)"]
    );
    // The broken ones open nothing, and each says why.
    assert_eq!(problems.len(), 4, "{problems:#?}");
    assert!(problems.iter().all(|p| p.starts_with("container db: ")));
}

#[test]
fn allow_rules_alternatives_and_host_keys_parse() {
    let c = parse(&[(
        "cloud.toml",
        r#"
[network.cloud]
whitelist = [["label=role=proxy"], ["label=role=admin"]]
allow_host_traffic = "whitelisted"
allow_host_ports = ["53/udp", "8000-8100/tcp"]
deny_outbound = ["private", "203.0.113.0/24"]

[[network.cloud.allow]]
from = "label=app=nextcloud"
to = ["label=app=db"]
ports = ["5432/tcp", "tcp"]

[[network.cloud.allow]]
from = [["label=app=sso"], ["name=^auth$"]]
to = "label=role=proxy"
"#,
    )])
    .unwrap();
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    let (p, _) = &c.networks["cloud"];
    assert_eq!(p.whitelist.queries.len(), 2);
    assert_eq!(
        p.whitelist.to_string(),
        "label=role=proxy | label=role=admin"
    );
    assert_eq!(p.host_access, HostAccess::Whitelisted);
    assert_eq!(p.host_ports.len(), 2);
    assert_eq!(p.deny_outbound.len(), PRIVATE_DESTINATIONS.len() + 1);
    assert_eq!(p.allow.len(), 2);
    let a = &p.allow[0];
    assert_eq!(a.from.to_string(), "label=app=nextcloud");
    assert_eq!(a.to.to_string(), "label=app=db");
    let ports: Vec<String> = a
        .ports
        .as_ref()
        .unwrap()
        .iter()
        .map(|p| p.to_string())
        .collect();
    assert_eq!(ports, ["5432/tcp", "tcp"]);
    assert_eq!(a.origin, "/etc/trafficjam/cloud.toml:8");
    let b = &p.allow[1];
    assert_eq!(b.from.queries.len(), 2);
    assert_eq!(b.ports, None);
    assert_eq!(b.origin, "/etc/trafficjam/cloud.toml:13");
}

#[test]
fn filter_values_docker_would_refuse_are_refused_here() {
    for bad in ["status=up", "health=fine", "is-task=yes", "exited=x"] {
        let e = Filter::parse(bad).unwrap_err().to_string();
        assert!(e.contains("Docker accepts only"), "{bad}: {e}");
    }
    for good in [
        "status=running",
        "health=healthy",
        "is-task=false",
        "exited=137",
    ] {
        assert!(Filter::parse(good).is_ok(), "{good}");
    }
    let w = warnings(
        "[network.n]\nwhitelist = \"name=^p$\"\nallow_host_traffic = true\nallow_host_ports = [\"53/udp\"]\n",
    );
    assert!(
        w[0].contains("a.toml:4:20: network \"n\": allow_host_ports changes nothing"),
        "{w:?}"
    );
}

#[test]
fn a_list_repeating_label_is_warned_about() {
    let w = warnings("[network.n]\nwhitelist = [\"label=role=proxy\", \"label=role=admin\"]\n");
    assert_eq!(w.len(), 1);
    assert!(w[0].starts_with("/etc/trafficjam/a.toml:2:13: network \"n\": whitelist: [\"label=role=proxy\", \"label=role=admin\"] is one query, and Docker ANDs repeated label filters"), "{w:?}");
    assert!(
        w[0].contains("[[\"label=role=proxy\"], [\"label=role=admin\"]]"),
        "{w:?}"
    );
    let w = warnings("[network.n]\nwhitelist = \"label=traefik.enable=true\"\n");
    assert!(w[0].contains("every container Traefik routes to"), "{w:?}");
    assert!(warnings("[network.n]\nwhitelist = \"name=^traefik$\"\n").is_empty());
}

#[test]
fn policy_errors_are_located() {
    let net = |body: &str| format!("[network.n]\nwhitelist = \"name=^p$\"\n{body}");
    let cases = [
        (
            "allow_host_ports = [\"53/icmp\"]\n",
            "3:21: network \"n\": allow_host_ports: \"53/icmp\": unknown protocol \"icmp\"",
        ),
        (
            "allow_host_ports = [\"0/tcp\"]\n",
            "3:21: network \"n\": allow_host_ports: \"0/tcp\": \"0\" is not a port",
        ),
        (
            "allow_host_ports = [\"70000/tcp\"]\n",
            "is not a port (1 to 65535)",
        ),
        (
            "allow_host_ports = [\"9-8/tcp\"]\n",
            "the range ends before it starts",
        ),
        (
            "allow_host_ports = []\n",
            "3:20: network \"n\": allow_host_ports is empty",
        ),
        (
            "allow_host_traffic = \"proxy\"\n",
            "3:22: network \"n\": allow_host_traffic = \"proxy\": expected true, false or \"whitelisted\"",
        ),
        (
            "deny_outbound = [\"10.0.0.0/33\"]\n",
            "3:18: network \"n\": deny_outbound: \"10.0.0.0/33\" is not a destination",
        ),
        ("deny_outbound = [\"lan\"]\n", "is not a destination"),
        (
            "mode = \"warn\"\n",
            "3:8: network \"n\": mode = \"warn\": expected \"enforce\" or \"audit\"",
        ),
        (
            "[[network.n.allow]]\nto = \"name=^db$\"\n",
            "network \"n\": an allow rule needs `from`",
        ),
        (
            "[[network.n.allow]]\nfrom = \"nope\"\n",
            "4:8: network \"n\": allow.from: \"nope\" is not a filter",
        ),
        (
            "[[network.n.allow]]\nfrom = \"name=^a$\"\nto = \"\"\n",
            "5:6: network \"n\": allow.to: an empty filter",
        ),
        (
            "[[network.n.allow]]\nfrom = []\nto = \"name=^db$\"\n",
            "4:8: network \"n\": allow.from: an empty query",
        ),
        (
            "[[network.n.allow]]\nfrom = [\"name=^a$\", [\"name=^b$\"]]\nto = \"name=^db$\"\n",
            "4:21: network \"n\": allow.from: mixes filters and lists",
        ),
        (
            "[[network.n.allow]]\nfrom = \"name=^a$\"\nto = \"name=^db$\"\nports = [\"5432\"]\n",
            "6:10: network \"n\": allow.ports: \"5432\": the protocol is missing: \"5432/tcp\" or \"5432/udp\"",
        ),
        (
            "[[network.n.allow]]\nfrom = \"name=^a$\"\nto = \"name=^db$\"\nport = [\"5432/tcp\"]\n",
            "unknown field `port`",
        ),
    ];
    for (body, want) in cases {
        let e = error(&[("a.toml", &net(body))]);
        assert!(e.contains(want), "{body:?}: {e}");
    }
    // Allow rules for a network with no section (no whitelist) of their own.
    let e = error(&[(
        "a.toml",
        "[[network.cloud.allow]]\nfrom = \"name=^a$\"\nto = \"name=^b$\"\n",
    )]);
    assert!(
        e.starts_with("/etc/trafficjam/a.toml:1:11: network \"cloud\": no whitelist"),
        "{e}"
    );
}

#[test]
fn filters_become_docker_query_filters() {
    let filters = [
        Filter::parse("label=a").unwrap(),
        Filter::parse("name=b").unwrap(),
        Filter::parse("label=c=d").unwrap(),
    ];
    let map = Filter::to_docker(&filters);
    assert_eq!(map["label"], ["a", "c=d"]);
    assert_eq!(map["name"], ["b"]);
}
