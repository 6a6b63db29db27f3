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
            .env("RUST_LOG", "info")
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

/// The overlay network's namespace on node `n`.
fn netns(n: u8, id: &str) -> PathBuf {
    run_dir().join(format!("n{n}/exec/netns/1-{}", &id[..10]))
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

/// Watches for the overlay namespace `path` to be mounted, then for our table in it:
/// returns both instants (the window is the time between).
fn watch_window(path: PathBuf) -> std::thread::JoinHandle<Option<(Instant, Instant)>> {
    std::thread::spawn(move || {
        let limit = Instant::now() + Duration::from_secs(20);
        let mounted = loop {
            if trafficjam::nft::mounted(&path) {
                break Instant::now();
            }
            if Instant::now() > limit {
                return None;
            }
            std::thread::sleep(Duration::from_micros(500));
        };
        let file = std::fs::File::open(&path).ok()?;
        nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).ok()?;
        loop {
            if trafficjam::nft::table_owners(TABLE).is_ok_and(|t| t.len() == 2) {
                return Some((mounted, Instant::now()));
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

    // Node 1: the proxy and two backends; node 2 gets its first backend later.
    listener(&lab, 1, "proxy");
    listener(&lab, 1, "b1");
    listener(&lab, 1, "b3");
    lab.daemons[0].wait_for(
        "overlay network isolated in namespace",
        1,
        Duration::from_secs(20),
    );
    let b1 = address(1, "b1");

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
    match window.join().unwrap() {
        Some((mounted, rules)) => eprintln!(
            "WINDOW node 2, new namespace: our tables {:.1} ms after the namespace was mounted",
            (rules - mounted).as_secs_f64() * 1e3
        ),
        None => panic!("node 2: the namespace or our tables in it never appeared"),
    }
    let (proxy, b2, b3) = (address(1, "proxy"), address(2, "b2"), address(1, "b3"));
    expect_all(&[
        (1, "proxy", &b1, true),  // proxy -> backend, same node
        (1, "proxy", &b2, true),  // proxy -> backend, across
        (1, "b1", &b3, false),    // backend -> backend, same node
        (1, "b3", &b1, false),    //   and back
        (1, "b1", &b2, false),    // backend -> backend, across
        (2, "b2", &b1, false),    //   and back
        (1, "b1", &proxy, false), // backend -> proxy, same node
        (2, "b2", &proxy, false), // backend -> proxy, across
    ]);

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
    std::thread::sleep(Duration::from_secs(1)); // the tasks' addresses reach the rules
    let task1_addr = address(1, &task1);
    expect_all(&[
        (2, &task2, &b2, true), // task -> backend, same node
        (2, &task2, &b1, true), // task -> backend, across
        (1, &task1, &b1, true),
        (2, "b2", &task1_addr, false), // backend -> the task, across
    ]);

    // Node 2's Docker restarts: its containers stop with it and come back (restart
    // policy), their namespace with them; the daemon follows again.
    let before = lab.daemons[1].isolations();
    let out = self::lab(&["restart-docker", "2"]);
    assert!(
        out.status.success(),
        "restart-docker: {}",
        common::text(&out)
    );
    lab.daemons[1].wait_for_any(&ISOLATED, before + 1, Duration::from_secs(60));
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
    let window = watch_window(netns(2, &id));
    first_packet_backend(&lab, 2, "b2", &b1);
    assert_eq!(
        first_packet_verdicts(2, "b2"),
        (1, 0),
        "recreated: b2's first packet"
    );
    let (mounted, rules) = window
        .join()
        .unwrap()
        .expect("node 2: namespace and tables");
    eprintln!(
        "WINDOW node 2, recreated network: our tables {:.1} ms after the namespace was mounted",
        (rules - mounted).as_secs_f64() * 1e3
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
