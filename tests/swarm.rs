//! The swarm tier: a two-node Docker Swarm on this machine (`tests/swarm-lab`: two network
//! namespaces, each with its own containerd and dockerd, joined by a host bridge), one
//! trafficjam daemon per node, run in that node's namespace against that node's Docker, with
//! the capabilities the package's swarm drop-in grants. Every assertion is a real
//! connection from inside a container, on one node or across the VXLAN between them.
//!
//! Debian 12's Docker 20.10 on this kernel: VXLAN works, IPVS does not (service VIPs
//! cannot be load-balanced here: the proxy service is `dnsrr`), and IPv6 overlays give the
//! same address to containers on two nodes, so they are not tested (README, Swarm).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const LAB: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/swarm-lab");
const TABLE: &str = "tjswarmtest";
const NET: &str = "tjs-ovl";
const SUBNET: &str = "10.232.7.0/24";
/// What the daemon logs when a namespace gets our rules.
const ISOLATED: [&str; 2] = [
    "overlay network isolated in namespace",
    "mounted again: our last rules for it restored",
];
const LISTEN: &str = "while true; do nc -l -p 8080 -e echo hi; done";

fn lab(args: &[&str]) -> std::process::Output {
    Command::new(LAB)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {LAB}: {e}"))
}

fn lab_ok(args: &[&str]) -> bool {
    lab(args).status.success()
}

/// `docker ARGS` against node `n`; panics on failure.
fn dk(n: u8, args: &[&str]) -> String {
    let mut all = vec!["dk", if n == 1 { "1" } else { "2" }];
    all.extend_from_slice(args);
    let out = lab(&all);
    assert!(
        out.status.success(),
        "docker {} on node {n}: {}",
        args.join(" "),
        common::text(&out)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn run_dir() -> &'static Path {
    Path::new("/run/tj-swarm-lab")
}

/// The lab, torn down (containers, daemons, namespaces, bridge, rules) when dropped.
struct Lab {
    image: String,
    daemons: Vec<Daemon>,
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.daemons.clear();
        let out = lab(&["down"]);
        if !out.status.success() {
            eprintln!("swarm-lab down: {}", common::text(&out));
        }
    }
}

/// A trafficjam daemon in node `n`'s namespace.
struct Daemon {
    node: u8,
    child: Child,
    log: PathBuf,
    dir: PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Daemon {
    fn start(node: u8) -> Daemon {
        let dir = std::env::temp_dir().join(format!("tj-swarm-daemon-{node}"));
        let _ = std::fs::remove_dir_all(&dir);
        let config = dir.join("config");
        std::fs::create_dir_all(&config).unwrap();
        std::fs::write(
            config.join("swarm.toml"),
            format!(
                r#"[daemon]
docker_host = "unix:///run/tj-swarm-lab/n{node}/docker.sock"
table = "{TABLE}"
log_drops = false
resync_interval = "5s"

[network.{NET}]
# The proxy containers by name, or the tasks of the proxy service (on every node).
whitelist = [["name=^proxy"], ["label=com.docker.swarm.service.name=proxysvc"]]
"#
            ),
        )
        .unwrap();
        let log = dir.join("daemon.log");
        let mut cmd = Command::new("nsenter");
        // The daemon dies with the test process, even when that one is killed.
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let caps = "+net_admin,+sys_admin,+dac_read_search";
        let child = cmd
            .arg(format!("--net=/run/netns/tjswarm-n{node}"))
            .args(["setpriv", "--inh-caps", caps, "--ambient-caps", caps, "--"])
            .arg(env!("CARGO_BIN_EXE_trafficjam"))
            .args(["run", "--config-dir"])
            .arg(&config)
            .arg("--state-dir")
            .arg(dir.join("state"))
            .env(
                "DBUS_SYSTEM_BUS_ADDRESS",
                "unix:path=/nonexistent/tj-swarm-bus",
            )
            .env(
                "RUST_LOG",
                std::env::var("TJ_SWARM_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start trafficjam run");
        let d = Daemon {
            node,
            child,
            log,
            dir,
        };
        d.wait_for("connected to Docker", 1, Duration::from_secs(20));
        d
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until `needle` is in the log `count` times.
    fn wait_for(&self, needle: &str, count: usize, limit: Duration) {
        self.wait_for_any(&[needle], count, limit);
    }

    /// Times the namespace got our rules: placed by a pass, or restored from memory.
    fn isolations(&self) -> usize {
        let log = self.log();
        ISOLATED.iter().map(|n| log.matches(n).count()).sum()
    }

    /// Waits until the needles are in the log `count` times in all.
    fn wait_for_any(&self, needles: &[&str], count: usize, limit: Duration) {
        let start = Instant::now();
        let seen = |log: &str| -> usize { needles.iter().map(|n| log.matches(n).count()).sum() };
        while seen(&self.log()) < count {
            assert!(
                start.elapsed() < limit,
                "node {}: no {count}× {needles:?} in the daemon's log:\n{}",
                self.node,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn signal(&self, signal: &str) {
        common::run("kill", &[signal, &self.child.id().to_string()]);
    }
}

/// The overlay network's namespace on node `n` (`<epoch>-<id>`: the highest epoch there).
fn netns(n: u8, id: &str) -> PathBuf {
    let dir = run_dir().join(format!("n{n}/exec/netns"));
    trafficjam::docker::swarm::overlay_namespace(Some(&dir), id)
        .ok()
        .flatten()
        .unwrap_or_else(|| dir.join(format!("1-{}", &id[..10])))
}

/// Whether our table is in the namespace at `path` (read with nft there).
fn our_tables(path: &Path) -> String {
    let out = Command::new("nsenter")
        .arg(format!("--net={}", path.display()))
        .args(["nft", "list", "tables"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.ends_with(TABLE))
        .collect::<Vec<_>>()
        .join(", ")
}

fn address(n: u8, container: &str) -> String {
    dk(
        n,
        &[
            "inspect",
            container,
            "--format",
            &format!("{{{{(index .NetworkSettings.Networks \"{NET}\").IPAddress}}}}"),
        ],
    )
}

/// Whether `from` (on node `n`) connects to `to`:8080 and reads the listener's answer.
fn connects(n: u8, from: &str, to: &str) -> bool {
    let out = lab(&[
        "dk",
        if n == 1 { "1" } else { "2" },
        "exec",
        from,
        "sh",
        "-c",
        &format!("nc -w 3 {to} 8080 </dev/null"),
    ]);
    String::from_utf8_lossy(&out.stdout).contains("hi")
}

fn inspect(n: u8, container: &str, format: &str) -> String {
    dk(n, &["inspect", container, "--format", format])
}

/// A user-space TCP handshake to `dst`:8080 from `from`'s namespace (node `n`) in frames
/// forged as (`mac`, `ip`): tests/attack.py, with CAP_NET_RAW as a container has it.
/// Whether the SYN-ACK came back.
fn forged_handshake(n: u8, from: &str, (mac, ip): (&str, &str), dst: &str) -> bool {
    let pid = inspect(n, from, "{{.State.Pid}}");
    let own = address(n, from);
    let netns = format!("--net=/proc/{pid}/ns/net");
    let addrs = common::run("nsenter", &[&netns, "ip", "-o", "-4", "addr", "show"]);
    let iface = addrs
        .lines()
        .find(|l| l.contains(&format!(" {own}/")))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or_else(|| panic!("{from}'s interface on {NET} in:\n{addrs}"))
        .to_owned();
    let attack = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/attack.py");
    let out = common::run(
        "nsenter",
        &[
            &netns,
            "/usr/bin/python3",
            attack,
            "handshake",
            "--iface",
            &iface,
            "--src-mac",
            mac,
            "--src-ip",
            ip,
            "--dst-ip",
            dst,
            "--dport",
            "8080",
            "--timeout",
            "3",
        ],
    );
    out.contains("\"synack\": true")
}

/// A UDP socket on port 9091 in `container`'s namespace (node `n`), for 4 s: what it
/// receives, payloads one per line. (Busybox's nc here has no UDP.)
fn udp_listener(n: u8, container: &str) -> Child {
    let pid = inspect(n, container, "{{.State.Pid}}");
    let child = Command::new("nsenter")
        .arg(format!("--net=/proc/{pid}/ns/net"))
        .args([
            "/usr/bin/python3",
            "-c",
            "import socket, sys, time\n\
             s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
             s.bind(('0.0.0.0', 9091)); s.settimeout(0.2); print('ready', flush=True)\n\
             end = time.time() + 4\n\
             while time.time() < end:\n\
             \x20   try: print(s.recv(2048).decode(errors='replace'), flush=True)\n\
             \x20   except socket.timeout: pass\n",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("a UDP listener");
    std::thread::sleep(Duration::from_millis(400));
    child
}

fn udp_received(listener: Child) -> String {
    let out = listener.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A UDP datagram `payload` from `from`'s namespace (node `n`) to `to`:9091.
fn send_udp(n: u8, from: &str, to: &str, payload: &str) {
    let pid = inspect(n, from, "{{.State.Pid}}");
    common::run(
        "nsenter",
        &[
            &format!("--net=/proc/{pid}/ns/net"),
            "/usr/bin/python3",
            "-c",
            &format!(
                "import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'{payload}', ('{to}', 9091))"
            ),
        ],
    );
}

/// Runs the probes (node, from, to, expected) at once; asserts every outcome.
fn expect_all(probes: &[(u8, &str, &str, bool)]) {
    let outcomes: Vec<bool> = std::thread::scope(|s| {
        let handles: Vec<_> = probes
            .iter()
            .map(|(n, from, to, _)| s.spawn(move || connects(*n, from, to)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let wrong: Vec<String> = probes
        .iter()
        .zip(&outcomes)
        .filter(|((.., want), got)| *want != **got)
        .map(|((n, from, to, want), _)| {
            format!(
                "node {n}: {from} -> {to} should {}",
                if *want { "connect" } else { "be blocked" }
            )
        })
        .collect();
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// A backend on node `n` whose very first act is a connection to `target`: its log says
/// whether that first packet got through. Then it listens like the others.
fn first_packet_backend(lab: &Lab, n: u8, name: &str, target: &str) {
    let script = format!(
        "if nc -w 3 {target} 8080 </dev/null | grep -q hi; then echo FIRST-OPEN; else echo FIRST-BLOCKED; fi; {LISTEN}"
    );
    dk(
        n,
        &[
            "run",
            "-d",
            "--name",
            name,
            "--restart",
            "always",
            "--network",
            NET,
            &lab.image,
            "sh",
            "-c",
            &script,
        ],
    );
}

fn first_packet_verdicts(n: u8, name: &str) -> (usize, usize) {
    let start = Instant::now();
    loop {
        let logs = dk(n, &["logs", name]);
        let verdicts = (
            logs.matches("FIRST-BLOCKED").count(),
            logs.matches("FIRST-OPEN").count(),
        );
        if verdicts != (0, 0) || start.elapsed() > Duration::from_secs(10) {
            return verdicts;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// When an overlay namespace got what: mounted, its bridge with the VXLAN port built by
/// Docker (before which nothing can pass), our tables.
struct Window {
    mounted: Instant,
    bridge: Instant,
    rules: Instant,
}

impl Window {
    fn report(&self, what: &str) {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let after_bridge = if self.rules >= self.bridge {
            format!("{:.1} ms after", ms(self.rules - self.bridge))
        } else {
            format!("{:.1} ms before", ms(self.bridge - self.rules))
        };
        eprintln!(
            "WINDOW {what}: the bridge {:.1} ms after the namespace was mounted, our tables {:.1} ms after the mount, {after_bridge} the bridge",
            ms(self.bridge - self.mounted),
            ms(self.rules - self.mounted),
        );
    }
}

/// Watches for the overlay namespace `path` to be mounted, then in it for the bridge and
/// our tables.
fn watch_window(path: PathBuf) -> std::thread::JoinHandle<Option<Window>> {
    std::thread::spawn(move || {
        let limit = Instant::now() + Duration::from_secs(20);
        let mounted = loop {
            if trafficjam::kernel::netns::mounted(&path) {
                break Instant::now();
            }
            if Instant::now() > limit {
                return None;
            }
            std::thread::sleep(Duration::from_micros(500));
        };
        let file = std::fs::File::open(&path).ok()?;
        nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).ok()?;
        let (mut bridge, mut rules) = (None, None);
        loop {
            if bridge.is_none()
                && trafficjam::kernel::links::ports::overlay_bridge().is_ok_and(|b| b.is_some())
            {
                bridge = Some(Instant::now());
            }
            if rules.is_none()
                && trafficjam::kernel::nftables::dump::table_owners(TABLE)
                    .is_ok_and(|t| t.len() == 2)
            {
                rules = Some(Instant::now());
            }
            if let (Some(bridge), Some(rules)) = (bridge, rules) {
                return Some(Window {
                    mounted,
                    bridge,
                    rules,
                });
            }
            if Instant::now() > limit {
                return None;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    })
}

fn create_network() -> String {
    dk(
        1,
        &[
            "network",
            "create",
            "-d",
            "overlay",
            "--attachable",
            "--subnet",
            SUBNET,
            NET,
        ],
    );
    dk(1, &["network", "inspect", NET, "--format", "{{.Id}}"])
}

fn listener(lab: &Lab, n: u8, name: &str) {
    dk(
        n,
        &[
            "run",
            "-d",
            "--name",
            name,
            "--network",
            NET,
            &lab.image,
            "sh",
            "-c",
            LISTEN,
        ],
    );
}

fn swarm_tier_runs() -> bool {
    let why = if !nix::unistd::Uid::effective().is_root() {
        Some("the swarm tier needs root".to_owned())
    } else if Command::new("dockerd").arg("--version").output().is_err() {
        Some("no dockerd (Debian's docker.io): tests/run-all installs it".to_owned())
    } else if Command::new("containerd")
        .arg("--version")
        .output()
        .is_err()
    {
        Some("no containerd".to_owned())
    } else {
        None
    };
    common::tier_runs(why)
}

#[test]
fn overlay_networks_are_isolated_on_every_node() {
    if !swarm_tier_runs() {
        return;
    }
    let _ = lab(&["down"]); // a lab a killed run left behind
    let up = lab(&["up"]);
    assert!(up.status.success(), "swarm-lab up: {}", common::text(&up));
    let mut lab = Lab {
        image: String::new(),
        daemons: Vec::new(),
    };
    lab.image = dk(
        1,
        &[
            "image",
            "inspect",
            "tjswarm/busybox:latest",
            "--format",
            "{{.Id}}",
        ],
    );
    // A container on each node outside the overlay: the daemon learns from it where this
    // Docker keeps its namespaces (two Dockers on one host both have a 1-<id>).
    for n in [1, 2] {
        dk(
            n,
            &[
                "run", "-d", "--name", "keeper", &lab.image, "sleep", "100000",
            ],
        );
    }
    let id = create_network();
    lab.daemons = vec![Daemon::start(1), Daemon::start(2)];

    // Node 1: the proxy and two backends; node 2 gets its first backend later. Node 1 is
    // the manager: it lists the network before its namespace exists.
    lab.daemons[0].wait_for("ruleset applied", 1, Duration::from_secs(20));
    let window1 = watch_window(netns(1, &id));
    listener(&lab, 1, "proxy");
    listener(&lab, 1, "b1");
    listener(&lab, 1, "b3");
    lab.daemons[0].wait_for(
        "overlay network isolated in namespace",
        1,
        Duration::from_secs(20),
    );
    let b1 = address(1, "b1");
    window1
        .join()
        .unwrap()
        .expect("node 1: namespace and tables")
        .report("node 1 (a manager: the network known before), new namespace");

    // Node 2's first container on the network: the namespace appears with it, and its first
    // packet (to b1, on node 1) must meet our rules already.
    let window = watch_window(netns(2, &id));
    first_packet_backend(&lab, 2, "b2", &b1);
    let (blocked, open) = first_packet_verdicts(2, "b2");
    assert_eq!(
        (blocked, open),
        (1, 0),
        "the first packet of node 2's first backend must be blocked"
    );
    window
        .join()
        .unwrap()
        .expect("node 2: the namespace or our tables in it never appeared")
        .report("node 2 (a worker: the network new to it), new namespace");
    if std::env::var("TJ_SWARM_LOG").is_ok() {
        eprintln!("{}", lab.daemons[1].log());
    }
    let (proxy, b2, b3) = (address(1, "proxy"), address(2, "b2"), address(1, "b3"));
    expect_all(&[
        (1, "proxy", &b1, true),  // proxy -> backend, same node
        (1, "proxy", &b3, true),  //   (control for the probes to b3)
        (1, "proxy", &b2, true),  // proxy -> backend, across
        (1, "b1", &b3, false),    // backend -> backend, same node
        (1, "b3", &b1, false),    //   and back
        (1, "b1", &b2, false),    // backend -> backend, across
        (2, "b2", &b1, false),    //   and back
        (1, "b1", &proxy, false), // backend -> proxy, same node
        (2, "b2", &proxy, false), // backend -> proxy, across
    ]);

    // `check` on node 2 shows the overlay, its namespace and bridge there, and the tables
    // it would hold there (as comments: stdout stays the host's ruleset).
    let check = Command::new("nsenter")
        .arg("--net=/run/netns/tjswarm-n2")
        .arg(env!("CARGO_BIN_EXE_trafficjam"))
        .args(["check", "--config-dir"])
        .arg(lab.daemons[1].dir.join("config"))
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&check.stdout);
    let place = format!(
        "# overlay network {NET}: namespace {}, bridge br0 (VXLAN port vxlan0)",
        netns(2, &id).display()
    );
    assert!(
        check.status.success() && shown.contains(&place) && shown.contains("#   table inet"),
        "check on node 2: {}",
        common::text(&check)
    );

    // UDP across nodes (no SYN for the backstop to drop: conntrack judges, in `fwd_N`
    // of b1's node): b1's datagram to b2 is dropped, the proxy's arrives.
    let udp = udp_listener(2, "b2");
    send_udp(1, "b1", &b2, "from-b1");
    send_udp(1, "proxy", &b2, "from-proxy");
    let got = udp_received(udp);
    assert!(
        got.contains("from-proxy") && !got.contains("from-b1"),
        "b2 received over UDP: {got:?}"
    );

    // VXLAN injection: b1 sends a VXLAN datagram to node 2's VXLAN port through its own
    // routes (docker_gwbridge, masqueraded), holding a frame from the proxy to b2. The
    // control: the same datagram sent by node 1 itself (the trusted underlay) arrives.
    let vni = {
        let links = common::run(
            "nsenter",
            &[
                &format!("--net={}", netns(2, &id).display()),
                "ip",
                "-d",
                "-o",
                "link",
                "show",
                "type",
                "vxlan",
            ],
        );
        links
            .split_whitespace()
            .skip_while(|w| *w != "id")
            .nth(1)
            .unwrap_or_else(|| panic!("no vxlan id in {links}"))
            .to_owned()
    };
    let mac = |n: u8, c: &str| {
        inspect(
            n,
            c,
            &format!("{{{{(index .NetworkSettings.Networks \"{NET}\").MacAddress}}}}"),
        )
    };
    let (proxy_mac, b2_mac) = (mac(1, "proxy"), mac(2, "b2"));
    let inject = |netns_arg: String, payload: &str| {
        let attack = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/attack.py");
        common::run(
            "nsenter",
            &[
                &netns_arg,
                "/usr/bin/python3",
                attack,
                "vxlan-inject",
                "--to",
                "10.231.0.12",
                "--vni",
                &vni,
                "--src-mac",
                &proxy_mac,
                "--src-ip",
                &proxy,
                "--dst-mac",
                &b2_mac,
                "--dst-ip",
                &b2,
                "--dport",
                "9091",
                "--payload",
                payload,
            ],
        )
    };
    let udp = udp_listener(2, "b2");
    let b1_pid = inspect(1, "b1", "{{.State.Pid}}");
    inject(format!("--net=/proc/{b1_pid}/ns/net"), "injected-by-b1");
    std::thread::sleep(Duration::from_millis(500));
    inject("--net=/run/netns/tjswarm-n1".into(), "sent-by-node1");
    let got = udp_received(udp);
    assert!(
        got.contains("sent-by-node1") && !got.contains("injected-by-b1"),
        "b2 received through VXLAN: {got:?}"
    );

    // A proxy that is a service task (dnsrr: no IPVS here), one on each node, whitelisted
    // on each node by its service label.
    dk(
        1,
        &[
            "service",
            "create",
            "-d",
            "--name",
            "proxysvc",
            "--endpoint-mode",
            "dnsrr",
            "--mode",
            "global",
            "--network",
            NET,
            &lab.image,
            "sh",
            "-c",
            LISTEN,
        ],
    );
    let task = |n: u8| {
        let start = Instant::now();
        loop {
            let id = dk(
                n,
                &[
                    "ps",
                    "-q",
                    "--filter",
                    "label=com.docker.swarm.service.name=proxysvc",
                ],
            );
            if !id.is_empty() {
                return id;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "no proxysvc task on node {n}"
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    };
    let (task1, task2) = (task(1), task(2));
    let task1_addr = address(1, &task1);
    // The tasks' addresses reach the whitelist with the pass after their start; a new
    // task reaches the other node once Swarm's gossip has told that node its address (a
    // few seconds at times: one `nc -w 3` across right after the same-node one lost that
    // race once in CI).
    let start = Instant::now();
    while !(connects(2, &task2, &b2) && connects(2, &task2, &b1)) {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "node 2's proxy task never reached b2 and b1"
        );
    }
    expect_all(&[
        (2, &task2, &b2, true), // task -> backend, same node
        (2, &task2, &b1, true), // task -> backend, across
        (1, &task1, &b1, true),
        (1, &task1, &proxy, true), // (control for the probes to the proxy)
        (2, "b2", &task1_addr, false), // backend -> the task, across
    ]);

    // The attack: b1 (node 1) forges the proxy task of node 2 (its MAC and address,
    // unknown to node 1) towards b3 (node 1) and b2 (node 2). Control: the same tool in
    // the task's own namespace, as itself.
    let task2_id = (
        inspect(
            2,
            &task2,
            &format!("{{{{(index .NetworkSettings.Networks \"{NET}\").MacAddress}}}}"),
        ),
        address(2, &task2),
    );
    let task2_id = (task2_id.0.as_str(), task2_id.1.as_str());
    assert!(
        forged_handshake(2, &task2, task2_id, &b2),
        "control: the proxy task, as itself, completes a handshake with b2"
    );
    for target in [&b3, &b2] {
        assert!(
            !forged_handshake(1, "b1", task2_id, target),
            "b1 posing as node 2's proxy task completed a handshake with {target}"
        );
    }

    // Node 2's Docker restarts: its containers stop with it and come back (restart
    // policy), their namespace with them; the daemon follows again.
    let before = lab.daemons[1].isolations();
    let log_before = lab.daemons[1].log().len();
    let out = self::lab(&["restart-docker", "2"]);
    assert!(
        out.status.success(),
        "restart-docker: {}",
        common::text(&out)
    );
    lab.daemons[1].wait_for_any(&ISOLATED, before + 1, Duration::from_secs(60));
    eprintln!(
        "after Docker's restart, node 2's namespace got its rules {}",
        {
            let log = lab.daemons[1].log();
            let since = &log[log_before..];
            if since.contains("at its mount") {
                "the moment it was mounted (the mount watch)"
            } else if since.contains(ISOLATED[1]) {
                "from memory when the loop heard of the mount"
            } else {
                "from a pass"
            }
        }
    );
    let start = Instant::now();
    while first_packet_verdicts(2, "b2") == (1, 0) && start.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_eq!(
        first_packet_verdicts(2, "b2"),
        (2, 0),
        "after Docker's restart, b2's first packet must be blocked again"
    );
    let b2 = address(2, "b2");
    expect_all(&[(1, "proxy", &b2, true), (2, "b2", &b1, false)]);

    // The network removed and created again: a new namespace (new id) on each node.
    dk(1, &["service", "rm", "proxysvc"]);
    for (n, c) in [(1, "proxy"), (1, "b1"), (1, "b3"), (2, "b2")] {
        dk(n, &["rm", "-f", c]);
    }
    std::thread::sleep(Duration::from_secs(2)); // the tasks go
    dk(1, &["network", "rm", NET]);
    let start = Instant::now();
    while lab_ok(&["dk", "1", "network", "inspect", NET]) {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{NET} is not removed"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let id = create_network();
    listener(&lab, 1, "proxy");
    listener(&lab, 1, "b1");
    let b1 = address(1, "b1");
    // This time node 2's first container is a proxy: its first packet, to b1 across, goes
    // through (the control of the first-packet checks: the new namespace's data path and
    // our rules let a whitelisted container's first connection be).
    let window = watch_window(netns(2, &id));
    first_packet_backend(&lab, 2, "proxy2", &b1);
    assert_eq!(
        first_packet_verdicts(2, "proxy2"),
        (0, 1),
        "recreated: node 2's first container, a proxy, must connect at once"
    );
    window
        .join()
        .unwrap()
        .expect("node 2: namespace and tables")
        .report("node 2, the network created again");
    first_packet_backend(&lab, 2, "b2", &b1);
    assert_eq!(
        first_packet_verdicts(2, "b2"),
        (1, 0),
        "recreated: b2's first packet"
    );
    let b2 = address(2, "b2");
    expect_all(&[
        (1, "proxy", &b2, true),
        (2, "b2", &b1, false),
        (1, "b1", &b2, false),
    ]);

    // Clear (SIGUSR1, as `trafficjam clear` asks over D-Bus): our tables leave every
    // namespace; traffic flows as without trafficjam.
    for d in &lab.daemons {
        d.signal("-USR1");
    }
    for d in &lab.daemons {
        d.wait_for("rules cleared on request", 1, Duration::from_secs(10));
    }
    for n in [1, 2] {
        let path = netns(n, &id);
        assert_eq!(
            our_tables(&path),
            "",
            "node {n}: our tables left in {}",
            path.display()
        );
    }
    expect_all(&[(2, "b2", &b1, true)]);
}
