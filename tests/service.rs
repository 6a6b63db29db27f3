//! Service tier: what systemd and D-Bus see of the daemon, short of booting systemd.
//!
//! - D-Bus: a private `dbus-daemon` with the shipped policy (`packaging/org.trafficjam1.conf`),
//!   the daemon owning `org.trafficjam1`, calls as root and as an unprivileged user;
//! - sd_notify: a test NOTIFY_SOCKET receives READY/STATUS/RELOADING/WATCHDOG/STOPPING;
//! - capabilities: the daemon started as root keeps CAP_NET_ADMIN only;
//! - the unit: `systemd-analyze verify` and `systemd-analyze security`.
//!
//! Needs root and a Docker engine, like the docker tier.

mod common;

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::docker::*;
use common::text;

const NOBODY: &str = "65534";

/// A private system-like bus on a socket in a temporary directory.
struct Bus {
    dir: PathBuf,
    child: Child,
}

impl Bus {
    /// `enforce_policy`: include the shipped policy (else a bus that lets anyone call
    /// anything, to test the daemon's own uid check).
    fn start(enforce_policy: bool) -> Bus {
        // One bus per test: tests run side by side, each with a daemon owning the name.
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "tj-bus-{}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            if enforce_policy { "policy" } else { "open" }
        ));
        std::fs::create_dir_all(&dir).unwrap();
        // Readable by the unprivileged test user.
        Command::new("chmod").arg("755").arg(&dir).status().unwrap();
        let policy = Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/org.trafficjam1.conf");
        let extra = if enforce_policy {
            format!("<include>{}</include>", policy.display())
        } else {
            r#"<policy context="default"><allow own="*"/><allow send_destination="*"/></policy>"#
                .to_owned()
        };
        // The default policy of Debian's system bus, in short.
        let config = format!(
            r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={dir}/bus</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Introspectable"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Properties"/>
  </policy>
  {extra}
</busconfig>
"#,
            dir = dir.display()
        );
        let config_path = dir.join("bus.conf");
        std::fs::write(&config_path, config).unwrap();
        let child = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", config_path.display()))
            .args(["--nofork", "--nopidfile"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("dbus-daemon (apt-get install dbus)");
        let bus = Bus { dir, child };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !bus.dir.join("bus").exists() {
            assert!(Instant::now() < deadline, "dbus-daemon did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        bus
    }

    fn address(&self) -> String {
        format!("unix:path={}/bus", self.dir.display())
    }

    /// busctl against this bus, as root or as `nobody`.
    fn busctl(&self, as_nobody: bool, args: &[&str]) -> Output {
        let address = format!("--address={}", self.address());
        let mut cmd = if as_nobody {
            let mut c = Command::new("setpriv");
            c.args([
                "--reuid",
                NOBODY,
                "--regid",
                NOBODY,
                "--clear-groups",
                "busctl",
            ]);
            c
        } else {
            Command::new("busctl")
        };
        cmd.arg(address).args(args).output().expect("busctl")
    }

    fn call(&self, as_nobody: bool, method: &str) -> Output {
        self.busctl(
            as_nobody,
            &[
                "call",
                "org.trafficjam1",
                "/org/trafficjam1",
                "org.trafficjam1.Manager",
                method,
            ],
        )
    }
}

impl Drop for Bus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `trafficjam ARGS…` talking to `bus`.
fn cli(bus: &Bus, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_trafficjam"))
        .args(args)
        .env("DBUS_SYSTEM_BUS_ADDRESS", bus.address())
        .output()
        .unwrap()
}

fn ruleset(lab: &DockerLab) -> String {
    let out = Command::new("nft")
        .args(["-s", "list", "table", "inet", &lab.table])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Reload and Clear called by `nobody` fail, with `why` in the error.
fn assert_mutations_refused(bus: &Bus, why: &str) {
    for method in ["Reload", "Clear"] {
        let out = bus.call(true, method);
        assert!(
            !out.status.success(),
            "nobody called {method}: {}",
            text(&out)
        );
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(why),
            "{}",
            text(&out)
        );
    }
}

/// A lab with one isolated network (`proxy` whitelisted, backends `a` and `b`) and the
/// daemon on `bus`.
fn isolated_lab(bus: &Bus) -> (DockerLab, String, String, String) {
    let mut lab = DockerLab::new();
    let Trio { net, a, b, .. } = lab.trio();
    lab.daemon_env = vec![("DBUS_SYSTEM_BUS_ADDRESS".into(), bus.address())];
    lab.start_daemon();
    lab.wait_for_log("owned on the system bus", 1, Duration::from_secs(10));
    lab.wait_for_log("isolated:", 1, Duration::from_secs(10));
    let ip_b = lab.ip4(&b, &net);
    (lab, net, a, ip_b)
}

#[test]
fn dbus_control_under_the_shipped_policy() {
    if !docker_tier_available() {
        return;
    }
    let _engine = engine_shared();
    let bus = Bus::start(true);
    let (mut lab, net, a, ip_b) = isolated_lab(&bus);

    // Introspectable, by anyone.
    let out = bus.busctl(true, &["introspect", "org.trafficjam1", "/org/trafficjam1"]);
    let intro = String::from_utf8_lossy(&out.stdout);
    for member in [
        "org.trafficjam1.Manager",
        ".Reload",
        ".Clear",
        ".Status",
        ".State",
        ".Networks",
    ] {
        assert!(intro.contains(member), "{member} missing:\n{}", text(&out));
    }

    // Status: root through the CLI, nobody through busctl.
    let out = cli(&bus, &["status", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["state"], "active", "{status}");
    assert_eq!(status["networks"][0]["name"], net.as_str(), "{status}");
    assert_eq!(
        status["networks"][0]["whitelisted"][0]["name"],
        lab.name("proxy"),
        "{status}"
    );
    let out = cli(&bus, &["status"]);
    let human = String::from_utf8_lossy(&out.stdout);
    assert!(human.contains(&format!("network: {net}")), "{human}");
    let out = bus.call(true, "Status");
    assert!(
        out.status.success(),
        "nobody may read Status: {}",
        text(&out)
    );

    // A blocked connection shows in the drop counters Status reads from the kernel.
    let before = status["networks"][0]["dropped_packets"].as_u64();
    assert!(before.is_some(), "{status}");
    assert_probes("blocked", &[Probe::tcp(&a, &ip_b, false)], &lab);
    let out = cli(&bus, &["status", "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        status["networks"][0]["dropped_packets"].as_u64() > before,
        "the blocked connection was not counted: {status}"
    );

    // nobody may neither change anything nor own the name.
    assert_mutations_refused(&bus, "ccess denied");
    let out = bus.busctl(
        true,
        &[
            "call",
            "org.freedesktop.DBus",
            "/org/freedesktop/DBus",
            "org.freedesktop.DBus",
            "RequestName",
            "su",
            "org.trafficjam1",
            "0",
        ],
    );
    assert!(
        !out.status.success(),
        "nobody could own the name: {}",
        text(&out)
    );
    assert!(lab.table_present());

    // A broken config: reload refused with FILE:LINE:COL, the rules in the kernel unchanged.
    let before = ruleset(&lab);
    std::fs::write(
        lab.config_dir.join("trafficjam.toml"),
        "[network.x]\nwhitelist = []\n",
    )
    .unwrap();
    let out = cli(&bus, &["reload"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let file = lab.config_dir.join("trafficjam.toml");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&format!("{}:2:13:", file.display())),
        "{}",
        text(&out)
    );
    assert_eq!(ruleset(&lab), before, "a refused reload changed the rules");

    // Clear: the rules go, the state says so, and PropertiesChanged is emitted.
    lab.write_config(&whitelist_section(
        &net,
        &format!("name={}", lab.name("proxy")),
    ));
    let changed = watch_state_changes(&bus);
    let out = cli(&bus, &["clear"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(!lab.table_present(), "clear left our table");
    let out = cli(&bus, &["status", "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["state"], "cleared", "{status}");
    assert_probes("cleared", &[Probe::tcp(&a, &ip_b, true)], &lab);
    let seen = changed.join().unwrap();
    assert!(
        seen.contains(&"cleared".to_owned()),
        "PropertiesChanged State: {seen:?}"
    );

    // Reload: back.
    let out = cli(&bus, &["reload"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(lab.table_present());
    assert_probes("reloaded", &[Probe::tcp(&a, &ip_b, false)], &lab);
    lab.stop_daemon();
}

/// Collects the values of the State property announced by PropertiesChanged for a few
/// seconds.
fn watch_state_changes(bus: &Bus) -> std::thread::JoinHandle<Vec<String>> {
    let address = bus.address();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let handle = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            use futures_util::StreamExt;
            let conn = zbus::connection::Builder::address(address.as_str())
                .build()
                .await
                .unwrap();
            let props = zbus::fdo::PropertiesProxy::builder(&conn)
                .destination("org.trafficjam1")
                .path("/org/trafficjam1")
                .build()
                .await
                .unwrap();
            let mut stream = props.receive_properties_changed().await.unwrap();
            ready_tx.send(()).unwrap();
            let mut seen = Vec::new();
            let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
            while let Ok(Some(signal)) = tokio::time::timeout_at(deadline, stream.next()).await {
                if let Ok(args) = signal.args()
                    && let Some(v) = args.changed_properties().get("State")
                    && let Ok(s) = String::try_from(v.try_clone().unwrap())
                {
                    seen.push(s);
                }
            }
            seen
        })
    });
    ready_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("signal watcher ready");
    handle
}

/// With a bus that lets anyone call anything, the daemon itself still refuses non-root
/// callers.
#[test]
fn daemon_refuses_non_root_mutations_even_on_an_open_bus() {
    if !docker_tier_available() {
        return;
    }
    let _engine = engine_shared();
    let bus = Bus::start(false);
    let (mut lab, _net, _a, _ip_b) = isolated_lab(&bus);
    assert_mutations_refused(&bus, "only root may");
    assert!(lab.table_present(), "a refused Clear removed the rules");
    assert!(
        bus.call(false, "Reload").status.success(),
        "root may reload"
    );
    lab.stop_daemon();
}

#[test]
fn sd_notify_messages_in_order_and_watchdog_pings() {
    if !docker_tier_available() {
        return;
    }
    let _engine = engine_shared();
    let mut lab = DockerLab::new();
    let net = lab.network("net", &[]);
    lab.write_config(&whitelist_section(&net, "name=nobody-at-all"));
    let socket_path = std::env::temp_dir().join(format!("{}-notify", lab.prefix));
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    lab.daemon_env
        .push(("NOTIFY_SOCKET".into(), socket_path.display().to_string()));
    lab.daemon_env
        .push(("WATCHDOG_USEC".into(), "200000".into()));

    // Every message, with whether our table existed when it arrived.
    let table = lab.table.clone();
    let receive = move |until: &str, within: Duration| -> Vec<(String, bool)> {
        let deadline = Instant::now() + within;
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline {
            if let Ok(n) = socket.recv(&mut buf) {
                let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                let present = Command::new("nft")
                    .args(["list", "table", "inet", &table])
                    .output()
                    .is_ok_and(|o| o.status.success());
                let done = msg.contains(until);
                got.push((msg, present));
                if done {
                    break;
                }
            }
        }
        got
    };
    // A first start: READY=1 does not wait for Docker (ordered after us at boot), the
    // status follows once the network is isolated.
    lab.start_daemon();
    let start = receive(
        "STATUS=1 network isolated, 0 whitelisted containers",
        Duration::from_secs(10),
    );
    assert!(
        start.iter().any(|(m, _)| m.contains("READY=1")),
        "no READY=1: {start:?}"
    );
    let (_, isolated) = start.last().expect("messages").clone();
    assert!(isolated, "isolated, yet no table: {start:?}");
    // A start after a reboot (our tables gone): READY=1 only once the networks of the
    // last run are isolated again.
    assert!(lab.stop_daemon().success());
    let _ = receive("STOPPING=1", Duration::from_secs(2));
    let clear = Command::new(env!("CARGO_BIN_EXE_trafficjam"))
        .args(["clear", "--table", &lab.table])
        .output()
        .unwrap();
    assert!(clear.status.success(), "{}", text(&clear));
    lab.start_daemon();
    let start = receive("READY=1", Duration::from_secs(10));
    let (ready, table_then) = start.last().expect("messages").clone();
    assert!(ready.contains("READY=1"), "no READY=1: {start:?}");
    assert!(
        table_then,
        "READY=1 before the saved networks were isolated: {start:?}"
    );

    // Watchdog: WATCHDOG_USEC=200ms asks for a ping every 100 ms.
    let pings = receive("never", Duration::from_secs(1))
        .iter()
        .filter(|(m, _)| m.contains("WATCHDOG=1"))
        .count();
    assert!((5..=15).contains(&pings), "{pings} watchdog pings in 1 s");

    // Reload: RELOADING=1, then READY=1.
    lab.signal("HUP");
    let reload: Vec<String> = receive("READY=1", Duration::from_secs(10))
        .into_iter()
        .map(|(m, _)| m)
        .filter(|m| !m.contains("WATCHDOG=1"))
        .collect();
    let reloading = reload.iter().position(|m| m.contains("RELOADING=1"));
    let ready = reload.iter().position(|m| m.contains("READY=1"));
    assert!(
        matches!((reloading, ready), (Some(r), Some(d)) if r < d),
        "{reload:?}"
    );
    assert!(
        reload[reloading.unwrap()].contains("MONOTONIC_USEC="),
        "{reload:?}"
    );

    // Stop: STOPPING=1.
    lab.signal("TERM");
    let stop = receive("STOPPING=1", Duration::from_secs(10));
    assert!(
        stop.iter().any(|(m, _)| m.contains("STOPPING=1")),
        "{stop:?}"
    );
    let _ = std::fs::remove_file(&socket_path);
}

#[test]
fn started_as_root_it_keeps_cap_net_admin_only() {
    if !docker_tier_available() {
        return;
    }
    let _engine = engine_shared();
    let mut lab = DockerLab::new();
    lab.write_config("");
    lab.start_daemon();
    let status = std::fs::read_to_string(format!("/proc/{}/status", lab.daemon_pid())).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| u64::from_str_radix(v.trim(), 16).unwrap())
            .unwrap()
    };
    const NET_ADMIN: u64 = 1 << 12;
    assert_eq!(field("CapEff:"), NET_ADMIN, "{status}");
    assert_eq!(field("CapPrm:"), NET_ADMIN, "{status}");
    assert_eq!(field("CapBnd:"), NET_ADMIN, "{status}");
    assert_eq!(field("CapInh:") & !NET_ADMIN, 0, "{status}");
    assert_eq!(field("CapAmb:") & !NET_ADMIN, 0, "{status}");
    // And it still works with that alone: the first pass applied nothing (no network) but
    // talked to Docker and the kernel.
    lab.wait_for_log("connected to Docker", 1, Duration::from_secs(10));
}

#[test]
fn the_unit_verifies_and_is_hardened() {
    if !docker_tier_available() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("tj-unit-{}", std::process::id()));
    let dropins = dir.join("trafficjam.service.d");
    std::fs::create_dir_all(&dropins).unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    // The binary under test stands in for /usr/bin/trafficjam (verify checks it exists).
    let unit = std::fs::read_to_string(root.join("systemd/trafficjam.service"))
        .unwrap()
        .replace("/usr/bin/trafficjam", env!("CARGO_BIN_EXE_trafficjam"));
    let unit_path = dir.join("trafficjam.service");
    std::fs::write(&unit_path, unit).unwrap();

    let verify = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&unit_path)
        .output()
        .expect("systemd-analyze (apt-get install systemd)");
    assert!(verify.status.success(), "{}", text(&verify));
    assert!(
        verify.stderr.is_empty(),
        "verify warnings: {}",
        text(&verify)
    );

    let security = Command::new("systemd-analyze")
        .args(["security", "--offline=yes"])
        .arg(&unit_path)
        .output()
        .unwrap();
    let exposure = common::assert_exposure(&security);
    eprintln!("systemd-analyze security exposure: {exposure}");

    // The socket-proxy drop-in example applies cleanly.
    std::fs::copy(
        root.join("packaging/socket-proxy.conf"),
        dropins.join("socket-proxy.conf"),
    )
    .unwrap();
    let verify = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&unit_path)
        .output()
        .unwrap();
    assert!(
        verify.status.success() && verify.stderr.is_empty(),
        "{}",
        text(&verify)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `trafficjam ARGS…` talking to `bus`, started in the background (as `nobody` if asked),
/// its stdout piped.
fn cli_spawn(bus: &Bus, as_nobody: bool, args: &[&str]) -> Child {
    let exe = env!("CARGO_BIN_EXE_trafficjam");
    let mut cmd = if as_nobody {
        let mut c = Command::new("setpriv");
        c.args(["--reuid", NOBODY, "--regid", NOBODY, "--clear-groups", exe]);
        c
    } else {
        Command::new(exe)
    };
    cmd.args(args)
        .env("DBUS_SYSTEM_BUS_ADDRESS", bus.address())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Kills a background CLI and returns what it printed.
fn finish(mut child: Child) -> (String, String) {
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Parses Prometheus text with the reference client's parser (python3-prometheus-client);
/// returns every sample as (name, labels, value).
fn prometheus_samples(metrics: &str) -> Vec<(String, serde_json::Value, f64)> {
    let script = r#"
import sys, json
from prometheus_client.parser import text_string_to_metric_families
out = []
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        out.append([s.name, s.labels, s.value])
print(json.dumps(out))
"#;
    let mut child = Command::new("/usr/bin/python3")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 (apt-get install python3-prometheus-client)");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(metrics.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the metrics do not parse: {}\n{metrics}",
        text(&out)
    );
    serde_json::from_slice::<Vec<(String, serde_json::Value, f64)>>(&out.stdout).unwrap()
}

/// `trafficjam watch` prints a drop as it happens, by name, for root and for `nobody` alike
/// (the Dropped signal is readable like Status; its JSON names both ends); the metrics,
/// readable by anyone, parse with Prometheus' own parser and count the drops per network
/// and reason.
#[test]
fn watch_and_metrics_under_the_shipped_policy() {
    if !docker_tier_available() {
        return;
    }
    let _engine = engine_shared();
    let bus = Bus::start(true);
    let (mut lab, net, a, ip_b) = isolated_lab(&bus);
    lab.wait_for_log("drop log: reading NFLOG group", 1, Duration::from_secs(10));
    let root_watch = cli_spawn(&bus, false, &["watch"]);
    let nobody_watch = cli_spawn(&bus, true, &["watch", "--json"]);
    // Both are subscribed once they said so (or failed).
    std::thread::sleep(Duration::from_secs(1));
    assert_probes("blocked", &[Probe::tcp(&a, &ip_b, false)], &lab);
    let b = lab.name("b");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !lab
        .log_text()
        .contains(&format!("dropped tcp/8080 from {a} ("))
    {
        assert!(Instant::now() < deadline, "{}", lab.log_text());
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    let (root_out, root_err) = finish(root_watch);
    let (nobody_out, nobody_err) = finish(nobody_watch);
    assert!(
        root_out
            .lines()
            .any(|l| l.contains(&format!("dropped tcp/8080 from {a} ("))
                && l.contains(&format!("to {b} ("))),
        "root's watch: {root_out}\n{root_err}"
    );
    let line = nobody_out
        .lines()
        .find(|l| l.contains("\"drop\""))
        .unwrap_or_else(|| panic!("nobody's watch: {nobody_out}\n{nobody_err}"));
    let notice: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(notice["drop"]["network"], net.as_str(), "{notice}");
    assert_eq!(notice["drop"]["reason"], "isolation", "{notice}");
    assert_eq!(notice["drop"]["source"]["name"], a.as_str(), "{notice}");
    assert_eq!(
        notice["drop"]["destination"]["name"],
        b.as_str(),
        "{notice}"
    );
    assert_eq!(notice["drop"]["port"], 8080, "{notice}");

    // Metrics: root through the CLI, nobody through busctl; both parse, and count.
    let out = cli(&bus, &["metrics"]);
    assert!(out.status.success(), "{}", text(&out));
    let metrics = String::from_utf8_lossy(&out.stdout).into_owned();
    let samples = prometheus_samples(&metrics);
    let value = |name: &str, labels: &[(&str, &str)]| {
        samples
            .iter()
            .find(|(n, l, _)| n == name && labels.iter().all(|(k, v)| l[*k] == *v))
            .map(|(_, _, v)| *v)
            .unwrap_or_else(|| panic!("no {name} {labels:?} in:\n{metrics}"))
    };
    assert!(
        value(
            "trafficjam_dropped_packets_total",
            &[("network", &net), ("reason", "isolation")]
        ) >= 1.0,
        "{metrics}"
    );
    assert_eq!(
        value("trafficjam_whitelisted_containers", &[("network", &net)]),
        1.0
    );
    assert_eq!(value("trafficjam_state", &[("state", "active")]), 1.0);
    assert_eq!(
        value(
            "trafficjam_network_info",
            &[("network", &net), ("mode", "enforce")]
        ),
        1.0
    );
    assert_eq!(value("trafficjam_drop_log_enabled", &[]), 1.0);
    assert!(
        value("trafficjam_drop_log_lines_total", &[]) >= 1.0,
        "{metrics}"
    );
    assert!(
        value("trafficjam_applies_total", &[("kind", "full")]) >= 1.0,
        "{metrics}"
    );
    let out = bus.call(true, "Metrics");
    assert!(
        out.status.success(),
        "nobody may read Metrics: {}",
        text(&out)
    );
    lab.stop_daemon();
}
