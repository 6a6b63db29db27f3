//! `cargo bench --bench daemon -- scale`: the daemon at the number of networks users run.
//!
//! For each size N in `BENCH_SCALE` (default `1,10,100,250`): N label-managed networks,
//! each with a proxy (whitelisted by a label query of its own) and two backends; then one
//! network with `BENCH_SCALE_WIDE` containers (default 500). The daemon reaches Docker
//! through a counting proxy on a socket of the bench's own, so every figure below is
//! measured the same way whatever the daemon's design:
//! - start → every network isolated;
//! - Docker API requests per resync (over the idle window) and per new container;
//! - idle CPU per minute, with the default resync interval;
//! - a new proxy's first connection, one attempt, `BENCH_RUNS` times (default 20): median,
//!   p99 and how many got no answer;
//! - Docker event → rules committed (the daemon's own figure), median and p99;
//! - peak RSS.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::common::docker::*;
use super::{cpu_seconds, percentile, proc_field};

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A proxy between the daemon and Docker's socket that counts the HTTP requests.
struct CountingProxy {
    path: PathBuf,
    requests: Arc<AtomicU64>,
}

impl CountingProxy {
    fn start(docker_socket: PathBuf) -> CountingProxy {
        let path =
            std::env::temp_dir().join(format!("tj-bench-docker-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).expect("bind the counting proxy");
        let requests = Arc::new(AtomicU64::new(0));
        let count = requests.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().map_while(Result::ok) {
                let Ok(server) = UnixStream::connect(&docker_socket) else {
                    continue;
                };
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let count = count.clone();
                std::thread::spawn(move || forward(client, server, Some(count)));
                std::thread::spawn(move || forward(s2, c2, None));
            }
        });
        CountingProxy { path, requests }
    }

    fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for CountingProxy {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Copies `from` to `to`; with `count`, counts the request lines that pass (each ends in
/// ` HTTP/1.1\r\n`: the daemon's requests carry no body that could hold one).
fn forward(mut from: UnixStream, mut to: UnixStream, count: Option<Arc<AtomicU64>>) {
    const MARK: &[u8] = b" HTTP/1.1\r\n";
    let mut buf = vec![0u8; 1 << 16];
    let mut tail: Vec<u8> = Vec::new();
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Some(count) = &count {
            tail.extend_from_slice(&buf[..n]);
            let found = tail.windows(MARK.len()).filter(|w| *w == MARK).count();
            count.fetch_add(found as u64, Ordering::SeqCst);
            let keep = tail.len().min(MARK.len() - 1);
            tail.drain(..tail.len() - keep);
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Write);
}

/// Docker's socket, from DOCKER_HOST (`unix://…`) or the default.
fn docker_socket() -> PathBuf {
    let host = std::env::var("DOCKER_HOST").unwrap_or_default();
    PathBuf::from(
        host.strip_prefix("unix://")
            .unwrap_or("/var/run/docker.sock"),
    )
}

/// Points the lab's configuration at the proxy instead of Docker.
fn use_proxy(config_dir: &Path, proxy: &Path) {
    let file = config_dir.join("00-daemon.toml");
    let text = std::fs::read_to_string(&file).expect("daemon config");
    let mut lines: Vec<String> = text
        .lines()
        .filter(|l| !l.starts_with("docker_host"))
        .map(str::to_owned)
        .collect();
    lines.push(format!("docker_host = \"unix://{}\"", proxy.display()));
    std::fs::write(&file, lines.join("\n") + "\n").expect("write config");
}

/// The daemon's "N ms after the event" figures in its log.
fn event_latencies(log: &str) -> Vec<f64> {
    log.lines()
        .filter_map(|l| {
            let (before, _) = l.split_once(" ms after the event")?;
            before.rsplit(' ').next()?.parse().ok()
        })
        .collect()
}

fn row(label: &str, cells: &[String]) {
    println!("| {label} | {} |", cells.join(" | "));
}

/// One scene: `networks` networks with a proxy and `backends` backends each.
fn scene(networks: usize, backends: usize) {
    let runs: usize = env_or("BENCH_RUNS", 20);
    let idle: u64 = env_or("BENCH_IDLE_SECS", 60);
    let mut lab = DockerLab::new();
    lab.label_opt_in = true;
    let built = Instant::now();
    let mut nets = Vec::new();
    for i in 0..networks {
        let query = format!(
            "trafficjam.whitelist=label=bench.proxy={}-{i}",
            lab.name("p")
        );
        let net = lab.network(&format!("n{i}"), &["--label", &query]);
        let proxy_label = format!("bench.proxy={}-{i}", lab.name("p"));
        lab.container(&format!("p{i}"), &net, &["--label", &proxy_label]);
        let mut first_backend = None;
        for b in 0..backends {
            let c = lab.container(&format!("b{i}-{b}"), &net, &[]);
            first_backend.get_or_insert(c);
        }
        nets.push((net, first_backend.expect("a backend"), proxy_label));
    }
    eprintln!(
        "scene: {networks} networks, {} containers, built in {:.0} s",
        networks * (backends + 1),
        built.elapsed().as_secs_f64()
    );
    lab.write_config("");
    let proxy = CountingProxy::start(docker_socket());
    use_proxy(&lab.config_dir, &proxy.path);

    let started = Instant::now();
    lab.start_daemon_until("connected to Docker");
    lab.wait_for_log("isolated:", networks, Duration::from_secs(600));
    let to_isolated = started.elapsed().as_secs_f64();
    let pid = lab.daemon_pid();

    // Idle: the default resync runs every 30 s.
    let (cpu0, req0) = (cpu_seconds(pid), proxy.requests());
    std::thread::sleep(Duration::from_secs(idle));
    let idle_cpu = (cpu_seconds(pid) - cpu0) * 60.0 / idle as f64;
    let resyncs = (idle / 30).max(1);
    let per_resync = (proxy.requests() - req0) as f64 / resyncs as f64;

    // A new proxy on the first network: one attempt, timed inside the container.
    let (net, backend, proxy_label) = &nets[0];
    let backend_ip = lab.ip4(backend, net);
    let log_before = lab.log_text().len();
    let mut first = Vec::new();
    let mut lost = 0;
    let mut per_start = Vec::new();
    for i in 0..runs {
        let name = lab.name(&format!("new-{i}"));
        let before = proxy.requests();
        let (answered, seconds) = first_connection(
            &[
                "run",
                "--rm",
                "--name",
                &name,
                "--network",
                net,
                "--label",
                proxy_label,
                IMAGE,
            ],
            &backend_ip,
        );
        if answered {
            first.push(seconds * 1e3);
        } else {
            lost += 1;
        }
        // The container's whole life (create, connect, start, die, destroy) is answered.
        std::thread::sleep(Duration::from_millis(500));
        per_start.push((proxy.requests() - before) as f64);
    }
    let mut latencies = event_latencies(&lab.log_text()[log_before..]);
    latencies.sort_by(|a, b| a.total_cmp(b));
    first.sort_by(|a, b| a.total_cmp(b));
    per_start.sort_by(|a, b| a.total_cmp(b));
    let rss = proc_field(pid, "status", "VmHWM:");
    let med = |v: &[f64]| {
        if v.is_empty() {
            "–".to_owned()
        } else {
            format!("{:.0}", percentile(v, 0.5))
        }
    };
    let p99 = |v: &[f64]| {
        if v.is_empty() {
            "–".to_owned()
        } else {
            format!("{:.0}", percentile(v, 0.99))
        }
    };
    row(
        &format!("{networks} × {}", backends + 1),
        &[
            format!("{to_isolated:.1}"),
            med(&latencies),
            p99(&latencies),
            med(&first),
            format!("{lost}/{runs}"),
            format!("{idle_cpu:.2}"),
            format!("{per_resync:.0}"),
            med(&per_start),
            rss,
        ],
    );
}

pub(super) fn main() {
    if !docker_tier_available() {
        return;
    }
    let sizes: Vec<usize> = std::env::var("BENCH_SCALE")
        .unwrap_or_else(|_| "1,10,100,250".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let wide: usize = env_or("BENCH_SCALE_WIDE", 500);
    println!(
        "| networks × containers | start → all isolated (s) | event → committed, median (ms) | p99 (ms) | new proxy's first connection, median (ms) | lost | idle CPU (s/min) | Docker requests per resync | per new container | peak RSS |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for n in sizes {
        scene(n, 2);
    }
    if wide > 1 {
        scene(1, wide - 1);
    }
}
