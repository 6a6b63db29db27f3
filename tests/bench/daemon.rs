//! Benchmark of the daemon against a real Docker engine (`cargo bench --bench daemon`, as
//! root, with DOCKER_HOST pointing at an engine; `tests/private-dockerd start` gives one).
//!
//! - reaction latency: from the Docker event that announces a whitelisted container to the
//!   committed rules (the daemon logs it per apply), and end to end from `docker run -d`
//!   returning to the first successful connection from that container to a backend;
//! - first connection of a new proxy: one TCP connection (no retry) as the container's
//!   first action, timed inside the container (`busybox time`, 10 ms resolution);
//! - port binding: from the moment a new container's port joins the bridge (polled in the
//!   kernel) to the moment port security holds it in the network's `ports_` set;
//! - tampering: another process deletes a whitelist element or the whole table; the time
//!   until our tables are back (seen from outside, polling `nft`), and the daemon's own
//!   figure from the notification to the committed repair;
//! - idle CPU time of the daemon over 60 s with nothing changing, and its peak RSS.
//!
//! `BENCH_RUNS` sets the number of runs (default 25); `BENCH_IDLE_SECS` the idle window.
//! `cargo bench --bench daemon -- scale` measures at many networks instead (see `scale`).

#[path = "../common/mod.rs"]
mod common;
#[path = "daemon/scale.rs"]
mod scale;

use std::time::{Duration, Instant};

use common::docker::*;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn summary(label: &str, mut v: Vec<f64>) {
    if v.is_empty() {
        println!("| {label} | 0 | – | – | – | – |");
        return;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    println!(
        "| {label} | {} | {:.1} | {:.1} | {:.1} | {:.1} |",
        v.len(),
        percentile(&v, 0.5),
        percentile(&v, 0.99),
        v[0],
        v[v.len() - 1]
    );
}

fn proc_field(pid: u32, file: &str, key: &str) -> String {
    let text = std::fs::read_to_string(format!("/proc/{pid}/{file}")).expect("proc");
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .expect("field")
        .trim()
        .to_owned()
}

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let after = &stat[stat.rfind(')').expect(")") + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 of stat(5), counted from the state field (3).
    let ticks: f64 =
        fields[11].parse::<f64>().expect("utime") + fields[12].parse::<f64>().expect("stime");
    let per_second = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .expect("CLK_TCK");
    ticks / per_second as f64
}

fn main() {
    if std::env::args().any(|a| a == "scale") {
        scale::main();
        return;
    }
    if !docker_tier_available() {
        return;
    }
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(25);
    let idle: u64 = std::env::var("BENCH_IDLE_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    let mut lab = DockerLab::new();
    lab.label_opt_in = true;
    let proxy_prefix = lab.name("proxy");
    let label = format!("trafficjam.whitelist=name={proxy_prefix}");
    let net = lab.network("bench", &["--label", &label]);
    let backend = lab.container("backend", &net, &[]);
    let backend_ip = lab.ip4(&backend, &net);
    lab.write_config("");
    lab.start_daemon();
    lab.wait_for_log("isolated:", 1, Duration::from_secs(10));

    let mut end_to_end = Vec::new();
    for i in 0..runs {
        let name = format!("{proxy_prefix}-{i}");
        // The container tries to connect until it succeeds, then exits.
        let script =
            format!("until nc -w 3 {backend_ip} 8080 </dev/null | grep -q pong; do :; done");
        let out = docker(&[
            "run",
            "-d",
            "--name",
            &name,
            "--network",
            &net,
            IMAGE,
            "sh",
            "-c",
            &script,
        ]);
        let returned = Instant::now();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let waited = docker_ok(&["wait", &name]);
        end_to_end.push(returned.elapsed().as_secs_f64() * 1e3);
        assert_eq!(waited, "0");
        docker_ok(&["rm", "-f", &name]);
        // Let the removal's apply finish before the next run.
        std::thread::sleep(Duration::from_millis(200));
    }
    // A new proxy's very first action is one connection: how long until the answer.
    let mut first_connections = Vec::new();
    for i in 0..runs {
        let name = format!("{proxy_prefix}-first-{i}");
        let (answered, seconds) = first_connection(
            &["run", "--rm", "--name", &name, "--network", &net, IMAGE],
            &backend_ip,
        );
        assert!(answered, "run {i}: no answer");
        first_connections.push(seconds * 1e3);
        std::thread::sleep(Duration::from_millis(200));
    }

    // Port security: a new container's port joins the bridge, then is bound.
    let network_id = docker_ok(&["network", "inspect", "-f", "{{.Id}}", &net]);
    let bridge = format!("br-{}", &network_id[..12]);
    let bridges = std::collections::BTreeSet::from([bridge.clone()]);
    let ports_set = format!("ports_{net}");
    let port_names = || -> Vec<String> {
        trafficjam::kernel::links::ports::bridge_ports(&bridges)
            .expect("bridge ports")
            .get(&bridge)
            .map(|b| b.ports.iter().map(|p| p.name.clone()).collect())
            .unwrap_or_default()
    };
    let bound = |port: &str| -> bool {
        let key = trafficjam::plan::Element::Port(port.to_owned()).key_bytes();
        // A dump interrupted by a commit is simply read again.
        trafficjam::kernel::nftables::dump::read_installed(&lab.table).is_ok_and(|installed| {
            installed
                .tables
                .get(&trafficjam::plan::Family::Bridge)
                .and_then(|t| t.sets.get(&ports_set))
                .is_some_and(|elements| elements.contains(&key))
        })
    };
    let mut binding = Vec::new();
    for i in 0..runs {
        let before = port_names();
        let name = lab.name(&format!("bound{i}"));
        let mut run = std::process::Command::new("docker")
            .args(["run", "-d", "--name", &name, "--network", &net, IMAGE])
            .args(SERVER)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("docker run");
        let started = Instant::now();
        let (port, appeared) = loop {
            if let Some(p) = port_names().into_iter().find(|p| !before.contains(p)) {
                break (p, Instant::now());
            }
            assert!(started.elapsed() < Duration::from_secs(20), "no new port");
        };
        while !bound(&port) {
            assert!(
                appeared.elapsed() < Duration::from_secs(10),
                "{port} never bound"
            );
        }
        binding.push(appeared.elapsed().as_secs_f64() * 1e3);
        assert!(run.wait().expect("docker run").success());
        docker_ok(&["rm", "-f", &name]);
        std::thread::sleep(Duration::from_millis(200));
    }

    // Tampering by another process, repaired from the kernel's notification.
    let intact = lab.tables_listing();
    let mut repaired = Vec::new();
    for i in 0..runs {
        let args: Vec<&str> = if i % 2 == 0 {
            vec!["delete", "table", "inet", &lab.table]
        } else {
            vec!["flush", "table", "bridge", &lab.table]
        };
        let status = std::process::Command::new("nft")
            .args(&args)
            .status()
            .expect("nft");
        let tampered = Instant::now();
        assert!(status.success());
        while lab.tables_listing() != intact {
            assert!(tampered.elapsed() < Duration::from_secs(10), "not repaired");
        }
        repaired.push(tampered.elapsed().as_secs_f64() * 1e3);
        std::thread::sleep(Duration::from_millis(100));
    }

    let log = lab.log_text();
    let after_event: Vec<f64> = log
        .lines()
        .filter(|l| l.contains("ruleset applied (Elements") && !l.contains(", +0 -"))
        .filter_map(|l| {
            let head = l.split(" ms after the event").next()?;
            head.rsplit(", ").next()?.parse().ok()
        })
        .collect();
    let repair_in_daemon: Vec<f64> = log
        .lines()
        .filter_map(|l| {
            let head = l.split(" ms (").next()?;
            head.rsplit("restored in ").next()?.parse().ok()
        })
        .collect();

    println!("## reaction latency (milliseconds)");
    println!("| measure | runs | median | p99 | min | max |");
    println!("|---|---:|---:|---:|---:|---:|");
    // Most whitelistings are committed on the kernel's notice of the new port, before
    // Docker's event: only those that waited for the event are timed from it.
    summary(
        "connect/start event → rules committed (passes the event started)",
        after_event,
    );
    summary(
        "`docker run -d` returned → first connection made (includes container start)",
        end_to_end,
    );
    summary(
        "new proxy's first connection (no retry), inside the container",
        first_connections,
    );
    summary(
        "a container's port joins the bridge → bound (port security)",
        binding,
    );
    summary(
        "tampering (nft delete/flush table) → our tables back, seen from outside",
        repaired,
    );
    summary(
        "notification → repair committed (daemon's log)",
        repair_in_daemon,
    );

    let pid = lab.daemon_pid();
    let before = cpu_seconds(pid);
    std::thread::sleep(Duration::from_secs(idle));
    let used = cpu_seconds(pid) - before;
    println!("\n## idle daemon");
    println!(
        "- CPU time over {idle} s with nothing changing: {:.3} s ({:.3} %)",
        used,
        used / idle as f64 * 100.0
    );
    println!(
        "- peak RSS (VmHWM): {}",
        proc_field(pid, "status", "VmHWM:")
    );
}
