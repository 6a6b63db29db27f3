//! Docker tier support: networks and containers of a real Docker engine, the real
//! `trafficjam run` daemon against it, and probes from inside the containers.
//!
//! Every name a test creates starts with its own prefix, every test uses its own nftables
//! table, and everything is removed when the lab drops, pass or fail.

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Once, RwLock};
use std::time::{Duration, Instant};

/// The local image the tier uses (built from busybox-static, no registry needed).
pub const IMAGE: &str = "trafficjam-test/busybox:latest";
/// Every test container runs this echo server on TCP 8080.
pub const SERVER: &[&str] = &["nc", "-ll", "-p", "8080", "-e", "/bin/echo", "pong"];

/// Tests that restart the Docker engine take this lock for writing; all others for
/// reading, so they never run while the engine is down.
pub static ENGINE: RwLock<()> = RwLock::new(());

/// Shared access to the engine (a test that panicked holding it does not matter here).
pub fn engine_shared() -> std::sync::RwLockReadGuard<'static, ()> {
    ENGINE.read().unwrap_or_else(|e| e.into_inner())
}

/// Exclusive access to the engine, for tests that stop it.
pub fn engine_exclusive() -> std::sync::RwLockWriteGuard<'static, ()> {
    ENGINE.write().unwrap_or_else(|e| e.into_inner())
}

pub fn docker(args: &[&str]) -> Output {
    Command::new("docker")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run docker: {e}"))
}

pub fn docker_ok(args: &[&str]) -> String {
    let out = docker(args);
    assert!(
        out.status.success(),
        "docker {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Fails (or, outside CI with TRAFFICJAM_ALLOW_SKIP=1, skips) when this tier cannot run.
pub fn docker_tier_available() -> bool {
    let root = nix::unistd::geteuid().is_root();
    let why = if !root {
        Some("the docker tier needs root (the daemon under test changes nftables)".to_owned())
    } else {
        match Command::new("docker")
            .args(["version", "--format", "{{.Server.Version}}"])
            .output()
        {
            Err(e) => Some(format!("the docker tier needs the docker CLI: {e}")),
            Ok(o) if !o.status.success() => Some(format!(
                "no Docker engine answers at {} ({}); tests/run-all starts a private one",
                std::env::var("DOCKER_HOST").unwrap_or_else(|_| "the default socket".into()),
                String::from_utf8_lossy(&o.stderr).trim()
            )),
            Ok(_) => None,
        }
    };
    let runs = super::tier_runs(why);
    if runs {
        ensure_image();
    }
    runs
}

/// Builds the test image from the host's busybox-static when it is missing.
fn ensure_image() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if docker(&["image", "inspect", IMAGE]).status.success() {
            return;
        }
        let busybox = "/bin/busybox";
        assert!(
            std::path::Path::new(busybox).exists(),
            "the docker tier builds its image from {busybox} (apt-get install busybox-static)"
        );
        let script = format!(
            "set -e; d=$(mktemp -d); mkdir -p $d/bin $d/tmp; cp {busybox} $d/bin/busybox; \
             for c in sh nc ping ping6 sleep cat echo ip true; do ln -s busybox $d/bin/$c; done; \
             tar -C $d -c . | docker import - {IMAGE} >/dev/null; rm -rf $d"
        );
        let status = Command::new("sh")
            .args(["-c", &script])
            .status()
            .expect("sh");
        assert!(status.success(), "building {IMAGE} failed");
    });
}

fn unique() -> usize {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// A test's Docker objects, its configuration directory and its daemon.
#[derive(Debug)]
pub struct DockerLab {
    pub prefix: String,
    pub table: String,
    pub config_dir: PathBuf,
    /// The daemon's state directory (saved networks, last good configuration).
    pub state_dir: PathBuf,
    pub log: PathBuf,
    networks: Vec<String>,
    containers: Vec<String>,
    daemon: Option<Child>,
    /// Environment for the daemon, on top of the test's (set before start_daemon).
    pub daemon_env: Vec<(String, String)>,
    /// Whether the daemon isolates label-opted networks: off by default, so that daemons
    /// of tests running side by side never pick up each other's labelled networks.
    pub label_opt_in: bool,
    /// The NFLOG group of the lab's daemon: one per lab, since only one socket may read a
    /// group and the daemons of tests running side by side share the engine's namespace.
    pub log_group: u16,
}

impl DockerLab {
    pub fn new() -> DockerLab {
        let n = unique();
        let prefix = format!("tj{}x{n}", std::process::id());
        let config_dir = std::env::temp_dir().join(format!("{prefix}-conf"));
        std::fs::create_dir_all(&config_dir).expect("config dir");
        DockerLab {
            state_dir: std::env::temp_dir().join(format!("{prefix}-state")),
            table: format!("tjtest_{}_{n}", std::process::id()),
            log: std::env::temp_dir().join(format!("{prefix}-daemon.log")),
            prefix,
            config_dir,
            networks: Vec::new(),
            containers: Vec::new(),
            daemon: None,
            // Never a real system bus unless a test brings its own.
            label_opt_in: false,
            log_group: (10_000 + (std::process::id() % 500) * 100 + (n as u32 % 100)) as u16,
            daemon_env: vec![(
                "DBUS_SYSTEM_BUS_ADDRESS".into(),
                "unix:path=/nonexistent/trafficjam-test-bus".into(),
            )],
        }
    }

    /// The full name of a test object (`proxy` → `tj123x0-proxy`).
    pub fn name(&self, short: &str) -> String {
        format!("{}-{short}", self.prefix)
    }

    /// `docker network create ARGS… NAME`; returns the full name.
    pub fn network(&mut self, short: &str, args: &[&str]) -> String {
        let name = self.name(short);
        let mut all = vec!["network", "create"];
        all.extend_from_slice(args);
        all.push(&name);
        docker_ok(&all);
        self.networks.push(name.clone());
        name
    }

    pub fn remove_network(&mut self, name: &str) {
        docker_ok(&["network", "rm", name]);
        self.networks.retain(|n| n != name);
    }

    /// Starts a container running the echo server on `network`; returns the full name.
    pub fn container(&mut self, short: &str, network: &str, args: &[&str]) -> String {
        self.container_of(IMAGE, short, network, args)
    }

    /// A container of `image` (the test image under another tag) running the echo server.
    pub fn container_of(
        &mut self,
        image: &str,
        short: &str,
        network: &str,
        args: &[&str],
    ) -> String {
        let name = self.name(short);
        let mut all = vec!["run", "-d", "--name", &name, "--network", network];
        all.extend_from_slice(args);
        all.push(image);
        all.extend_from_slice(SERVER);
        self.containers.push(name.clone());
        docker_ok(&all);
        name
    }

    pub fn remove_container(&mut self, name: &str) {
        docker_ok(&["rm", "-f", name]);
        self.containers.retain(|c| c != name);
    }

    pub fn connect(&self, container: &str, network: &str) {
        docker_ok(&["network", "connect", network, container]);
    }

    fn inspect(&self, container: &str, network: &str, field: &str) -> String {
        let format = format!("{{{{(index .NetworkSettings.Networks \"{network}\").{field}}}}}");
        docker_ok(&["inspect", "-f", &format, container])
    }

    pub fn mac(&self, container: &str, network: &str) -> String {
        self.inspect(container, network, "MacAddress")
    }

    /// Runs `tests/attack.py ARGS…` in `container`'s network namespace with no power a
    /// default container lacks (CAP_NET_RAW alone); returns its JSON result.
    pub fn attack_from(&self, container: &str, args: &[&str]) -> serde_json::Value {
        let pid = docker_ok(&["inspect", "-f", "{{.State.Pid}}", container]);
        let netns = format!("--net=/proc/{pid}/ns/net");
        let tool = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/attack.py");
        let mut all = vec![
            netns.as_str(),
            "setpriv",
            "--bounding-set=-all,+net_raw",
            "--inh-caps=-all",
            "/usr/bin/python3",
            tool,
        ];
        all.extend_from_slice(args);
        let out = Command::new("nsenter")
            .args(&all)
            .output()
            .expect("nsenter");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let last = stdout.lines().last().unwrap_or_default();
        serde_json::from_str(last).unwrap_or_else(|e| {
            panic!(
                "attack {args:?} from {container}: no JSON result ({e}): {stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
    }

    /// Three datagrams from `container` with CAP_NET_RAW alone (`attack.py udp`): from
    /// `src_mac` and `src`, to `dst` in frames to `dst_mac`, on port `dport`; `extra` adds
    /// options (`--vlan`). Asserts they were all sent.
    pub fn attack_udp(
        &self,
        container: &str,
        (src_mac, src): (&str, &str),
        (dst, dst_mac): (&str, &str),
        dport: &str,
        extra: &[&str],
    ) {
        let args = super::udp_attack_args((src_mac, src), (dst, dst_mac), dport, "3", extra);
        let got = self.attack_from(container, &args);
        assert_eq!(got["sent"], 3, "{got}");
    }

    /// Waits (10 s at most) until `count` ports of network `net` are bound (in its set
    /// `ports_NET`).
    pub fn wait_ports_bound(&self, net: &str, count: usize) {
        let set = format!("ports_{net}");
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.set_listing(&set).matches("\"veth").count() < count {
            assert!(
                Instant::now() < deadline,
                "{count} ports of {net} were not bound: {}\n{}",
                self.set_listing(&set),
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The elements of one of the lab's sets (`nft list set bridge TABLE NAME`), or
    /// nothing when the set does not exist.
    pub fn set_listing(&self, set: &str) -> String {
        let out = Command::new("nft")
            .args(["list", "set", "bridge", &self.table, set])
            .output()
            .expect("nft");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn ip4(&self, container: &str, network: &str) -> String {
        self.inspect(container, network, "IPAddress")
    }

    pub fn ip6(&self, container: &str, network: &str) -> String {
        self.inspect(container, network, "GlobalIPv6Address")
    }

    pub fn gateway4(&self, network: &str) -> String {
        docker_ok(&[
            "network",
            "inspect",
            "-f",
            "{{(index .IPAM.Config 0).Gateway}}",
            network,
        ])
    }

    /// The IPv4 host port Docker published for the container's 8080, if any (none on a
    /// `gateway_mode_ipv4=routed` network, where `docker port` says `0.0.0.0:`).
    pub fn published_port(&self, container: &str) -> Option<String> {
        let out = docker_ok(&["port", container, "8080/tcp"]);
        // `0.0.0.0:32768`, `[::]:32768` (older CLIs: `8080/tcp -> 0.0.0.0:32768`).
        out.lines()
            .filter_map(|l| l.rsplit(" -> ").next())
            .filter(|addr| !addr.starts_with('['))
            .filter_map(|addr| addr.rsplit(':').next())
            .find(|port| !port.is_empty())
            .map(String::from)
    }

    /// Writes the test's configuration: `00-daemon.toml` (its table, the engine) and
    /// `trafficjam.toml` = `body`, so that line numbers in `body` are the file's own.
    pub fn write_config(&self, body: &str) {
        let mut daemon = format!(
            "[daemon]\ntable = \"{}\"\nlabel_opt_in = {}\nlog_group = {}\n",
            self.table, self.label_opt_in, self.log_group
        );
        if let Ok(host) = std::env::var("DOCKER_HOST")
            && !host.is_empty()
        {
            daemon.push_str(&format!("docker_host = \"{host}\"\n"));
        }
        std::fs::write(self.config_dir.join("00-daemon.toml"), daemon).expect("write config");
        std::fs::write(self.config_dir.join("trafficjam.toml"), body).expect("write config");
    }

    /// Starts `trafficjam run` on the lab's configuration and waits for its first pass.
    pub fn start_daemon(&mut self) {
        self.start_daemon_until("connected to Docker");
    }

    /// Starts `trafficjam run` on the lab's configuration and waits for `needle` in its log.
    pub fn start_daemon_until(&mut self, needle: &str) {
        let log = std::fs::File::create(&self.log).expect("log file");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_trafficjam"));
        // The daemon dies with the test process, even when that one is killed.
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd
            .args(["run", "--config-dir"])
            .arg(&self.config_dir)
            .arg("--state-dir")
            .arg(&self.state_dir)
            .env("RUST_LOG", "debug")
            .envs(self.daemon_env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start trafficjam run");
        self.daemon = Some(child);
        self.wait_for_log(needle, 1, Duration::from_secs(20));
    }

    pub fn daemon_pid(&self) -> u32 {
        self.daemon.as_ref().expect("daemon running").id()
    }

    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([&format!("-{sig}"), &self.daemon_pid().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Stops the daemon with SIGTERM and waits for its exit status.
    pub fn stop_daemon(&mut self) -> std::process::ExitStatus {
        self.signal("TERM");
        let mut child = self.daemon.take().expect("daemon running");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the daemon did not stop on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The daemon's log lines that contain every one of `needles`.
    pub fn log_lines(&self, needles: &[&str]) -> Vec<String> {
        self.log_text()
            .lines()
            .filter(|l| needles.iter().all(|n| l.contains(n)))
            .map(str::to_owned)
            .collect()
    }

    /// CPU time (user + system) the daemon has used so far, in seconds.
    pub fn daemon_cpu_seconds(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.daemon_pid()))
            .expect("the daemon's /proc stat");
        // Fields after the command name (which ends with ')'): utime is the 14th field
        // of the line, stime the 15th, in clock ticks.
        let rest = &stat[stat.rfind(')').expect("comm") + 2..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
        ticks / 100.0
    }

    /// Sends `count` UDP datagrams from `container`'s namespace to `to`:`port` as fast as
    /// a plain socket can (no capability needed); returns how long it took.
    pub fn udp_flood(&self, container: &str, to: &str, port: u16, count: usize) -> Duration {
        let pid = docker_ok(&["inspect", "-f", "{{.State.Pid}}", container]);
        let script = format!(
            "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\nfor _ in range({count}):\n    s.sendto(b'flood', ('{to}', {port}))\n"
        );
        let started = Instant::now();
        let out = Command::new("nsenter")
            .args([
                &format!("--net=/proc/{pid}/ns/net"),
                "setpriv",
                "--bounding-set=-all",
                "--inh-caps=-all",
                "/usr/bin/python3",
                "-c",
                &script,
            ])
            .output()
            .expect("nsenter");
        assert!(
            out.status.success(),
            "the flood failed: {}",
            crate::common::text(&out)
        );
        started.elapsed()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until `needle` appears at least `count` times in the daemon's log.
    pub fn wait_for_log(&mut self, needle: &str, count: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.log_text().matches(needle).count() < count {
            if let Some(child) = self.daemon.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!("the daemon exited ({status}):\n{}", self.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "{needle:?} did not appear {count} time(s) in the daemon's log within {timeout:?}:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `nft list table inet TABLE` succeeds.
    pub fn table_present(&self) -> bool {
        Command::new("nft")
            .args(["list", "table", "inet", &self.table])
            .output()
            .is_ok_and(|o| o.status.success())
    }
}

impl Drop for DockerLab {
    fn drop(&mut self) {
        if let Some(mut child) = self.daemon.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = Command::new(env!("CARGO_BIN_EXE_trafficjam"))
            .args(["clear", "--table", &self.table])
            .output();
        for c in &self.containers {
            let _ = docker(&["rm", "-f", c]);
        }
        for n in &self.networks {
            let _ = docker(&["network", "rm", n]);
        }
        let _ = std::fs::remove_dir_all(&self.config_dir);
        let _ = std::fs::remove_dir_all(&self.state_dir);
        if !std::thread::panicking() {
            let _ = std::fs::remove_file(&self.log);
        }
    }
}

/// The engine's major version (20 for Debian 12's docker.io, 26 for trixie's, 28 for sid's).
pub fn engine_major() -> u32 {
    let version = docker_ok(&["version", "--format", "{{.Server.Version}}"]);
    version
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or_else(|| panic!("engine version {version:?}"))
}

impl DockerLab {
    /// Packets counted so far by the drop rules of the lab's tables (inet and bridge).
    pub fn dropped(&self) -> u64 {
        let installed = trafficjam::kernel::nftables::dump::read_installed(&self.table)
            .expect("read our tables");
        installed
            .tables
            .values()
            .flat_map(|t| t.dropped_per_chain.values())
            .sum()
    }
}

impl DockerLab {
    /// The lab's tables as `nft -s` lists them (rules and set elements, no counter
    /// values): what a repair must bring back exactly.
    pub fn tables_listing(&self) -> String {
        ["inet", "bridge"]
            .iter()
            .map(|family| {
                let out = Command::new("nft")
                    .args(["-s", "list", "table", family, &self.table])
                    .output()
                    .expect("nft");
                String::from_utf8_lossy(&out.stdout).into_owned()
            })
            .collect()
    }
}

/// Runs `busybox time -f %e nc …` (one TCP connection, no retry) as the first and only
/// action of `docker ARGS…`; returns whether the answer came and how long it took (s).
pub fn first_connection(args: &[&str], to: &str) -> (bool, f64) {
    let mut all = args.to_vec();
    all.extend(["busybox", "time", "-f", "%e", "nc", "-w", "3", to, "8080"]);
    let out = docker(&all);
    let answered = String::from_utf8_lossy(&out.stdout).contains("pong");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let seconds = stderr
        .lines()
        .filter_map(|l| l.trim().parse::<f64>().ok())
        .next_back()
        .unwrap_or_else(|| panic!("no time in {stderr:?}"));
    (answered, seconds)
}

/// `[network.NET]` whitelisting `filter`, as a config body.
pub fn whitelist_section(net: &str, filter: &str) -> String {
    format!("[network.{net}]\nwhitelist = \"{filter}\"\n")
}

/// The usual scene: network `net` with a whitelisted `proxy` and backends `a` and `b`.
#[derive(Debug)]
pub struct Trio {
    pub net: String,
    pub proxy: String,
    pub a: String,
    pub b: String,
}

impl DockerLab {
    /// Creates the usual scene and configures it (the daemon is not started).
    pub fn trio(&mut self) -> Trio {
        self.trio_on(&[])
    }

    /// The usual scene on a network created with `network_args`.
    pub fn trio_on(&mut self, network_args: &[&str]) -> Trio {
        let net = self.network("net", network_args);
        let proxy = self.container("proxy", &net, &[]);
        let a = self.container("a", &net, &[]);
        let b = self.container("b", &net, &[]);
        self.write_config(&whitelist_section(&net, &format!("name={proxy}")));
        Trio { net, proxy, a, b }
    }
}

/// A probe from inside a container (docker exec): TCP to the echo server, or a ping.
#[derive(Debug, Clone)]
pub struct Probe {
    pub from: String,
    pub to: String,
    pub port: String,
    pub tcp: bool,
    pub pass: bool,
}

impl Probe {
    pub fn tcp(from: &str, to: &str, pass: bool) -> Probe {
        Probe::tcp_port(from, to, "8080", pass)
    }
    pub fn tcp_port(from: &str, to: &str, port: &str, pass: bool) -> Probe {
        Probe {
            from: from.into(),
            to: to.into(),
            port: port.into(),
            tcp: true,
            pass,
        }
    }
    pub fn ping(from: &str, to: &str, pass: bool) -> Probe {
        Probe {
            from: from.into(),
            to: to.into(),
            port: String::new(),
            tcp: false,
            pass,
        }
    }

    /// True when the answer came back. Passing probes get 3 s, blocked ones 1 s. A probe
    /// that could not even run (the container is gone) panics rather than count as
    /// "blocked".
    pub fn run(&self) -> bool {
        let wait = if self.pass { "3" } else { "1" };
        let out = if self.tcp {
            docker(&["exec", &self.from, "nc", "-w", wait, &self.to, &self.port])
        } else {
            docker(&["exec", &self.from, "ping", "-c", "1", "-W", wait, &self.to])
        };
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !stderr.contains("Error response from daemon") && out.status.code() != Some(126),
            "the probe could not run in {}: {stderr}",
            self.from
        );
        if self.tcp {
            String::from_utf8_lossy(&out.stdout).contains("pong")
        } else {
            out.status.success()
        }
    }
}

/// Opens a TCP connection to `to`:`port` from inside `container`'s network namespace, on
/// a thread of the test's that enters it (no process to start, so the attempt's time is
/// known to the millisecond). Returns when the attempt started and whether it connected.
pub fn connect_from(container: &str, to: &str, port: u16, timeout: Duration) -> (Instant, bool) {
    let pid = docker_ok(&["inspect", "-f", "{{.State.Pid}}", container]);
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/net")).expect("the container's netns");
    let to: std::net::SocketAddr =
        (to.parse::<std::net::IpAddr>().expect("an address"), port).into();
    std::thread::spawn(move || {
        nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        let started = Instant::now();
        let connected = std::net::TcpStream::connect_timeout(&to, timeout).is_ok();
        (started, connected)
    })
    .join()
    .expect("the connecting thread")
}

/// Runs the probes concurrently; panics listing every one whose outcome was wrong.
pub fn assert_probes(what: &str, probes: &[Probe], lab: &DockerLab) {
    let handles: Vec<_> = probes
        .iter()
        .cloned()
        .map(|p| std::thread::spawn(move || (p.run(), p)))
        .collect();
    let wrong: Vec<String> = handles
        .into_iter()
        .map(|h| h.join().expect("probe"))
        .filter(|(got, p)| *got != p.pass)
        .map(|(got, p)| {
            format!(
                "{} {} -> {}{} {}",
                if p.tcp { "tcp" } else { "ping" },
                p.from,
                p.to,
                if p.port.is_empty() {
                    String::new()
                } else {
                    format!(":{}", p.port)
                },
                if got {
                    "passed, should be blocked"
                } else {
                    "was blocked, should pass"
                }
            )
        })
        .collect();
    if !wrong.is_empty() {
        // What else in this namespace could have dropped them (another test's tables,
        // port security's counters).
        let tables = Command::new("nft")
            .args(["list", "tables"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        let listing = |args: &[&str]| {
            Command::new("nft")
                .args(args)
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default()
        };
        let ours = listing(&["list", "table", "bridge", &lab.table]);
        // Docker 28 drops packets to a container's address that arrive on another bridge
        // (raw PREROUTING): a rule left behind would catch a reused address.
        let raw = listing(&["list", "table", "ip", "raw"]);
        panic!(
            "{what}: {} of {} probes wrong:\n{}\ntables:\n{tables}\nour bridge table:\n{ours}\nip raw:\n{raw}\ndaemon log:\n{}",
            wrong.len(),
            probes.len(),
            wrong.join("\n"),
            lab.log_text()
        );
    }
}
