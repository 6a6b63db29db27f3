//! Benchmark of the isolation engine (`cargo bench --bench engine`, as root).
//!
//! 1. Time to plan and apply a ruleset with 1 to 10 000 whitelisted addresses per network
//!    over 1, 10 and 50 networks, and the time of a one-address whitelist change at each
//!    size (it must not grow with the whitelist: sets, not rules).
//! 2. Per-packet cost: iperf3 TCP throughput between two namespaces through a bridge
//!    managed with 10 000 whitelisted addresses, and through one where the traffic is let
//!    through by one of 1 000 allowed tuples (allow rules), as ratios to the same bridge
//!    unmanaged.
//! 3. Policy: 100 allow rules over 200 containers, plan and apply, and one container's
//!    start as an element update (time, messages, elements).
//! 4. Drop log: the CPU the drop log costs (the NFLOG reader and the naming, in this
//!    process, as in the daemon) per 10 000 packets a backend floods, and iperf3 throughput
//!    of the proxy's traffic with the log on, alone and under such a flood.
//!
//! Everything runs in private network namespaces that are removed at the end.
//! `BENCH_QUICK=1` runs smaller sizes and shorter streams (a smoke run).

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use trafficjam::firewall::Netlink;
use trafficjam::firewall::{BatchKind, Firewall};
use trafficjam::kernel::links::bridge::BridgeNetfilter;
use trafficjam::plan::{ManagedNetwork, Port, plan};
use trafficjam::policy::{Grant, PortRange};

const TABLE: &str = "tjbench";

fn quick() -> bool {
    std::env::var("BENCH_QUICK").is_ok_and(|v| v == "1")
}

/// `n` distinct addresses for network `k`, half IPv4, half IPv6.
fn addresses(k: usize, n: usize) -> BTreeSet<IpAddr> {
    (0..n)
        .map(|i| {
            if i % 2 == 0 {
                let i = i / 2;
                IpAddr::V4(Ipv4Addr::new(10, k as u8, (i >> 8) as u8, i as u8))
            } else {
                IpAddr::V6(Ipv6Addr::new(0xfd00, k as u16, 0, 0, 0, 0, 0, i as u16))
            }
        })
        .collect()
}

fn networks(count: usize, whitelisted: usize) -> Vec<ManagedNetwork> {
    (0..count)
        .map(|k| ManagedNetwork {
            name: format!("net{k}"),
            bridge: format!("br-bench{k}"),
            subnets: vec![
                format!("10.{k}.0.0/16").parse().expect("subnet"),
                format!("fd00:{k:x}::/64").parse().expect("subnet"),
            ],
            whitelist: addresses(k, whitelisted),
            ..ManagedNetwork::default()
        })
        .collect()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

fn apply_benchmark() {
    // A private network namespace for this thread: our tables never reach the host's.
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
        .unwrap_or_else(|e| panic!("unshare(CLONE_NEWNET): {e} (run as root)"));
    let sizes: &[usize] = if quick() {
        &[1, 100, 1000]
    } else {
        &[1, 10, 100, 1000, 10_000]
    };
    let counts: &[usize] = if quick() { &[1, 10] } else { &[1, 10, 50] };
    println!("## plan + apply (median of runs, milliseconds)");
    println!(
        "| networks | whitelisted per network | elements in kernel | plan | first apply (full batch) | re-apply (full batch) | one-address change: plan + apply | of which apply (element batch) | messages (full / change) |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for &count in counts {
        for &size in sizes {
            let nets = networks(count, size);
            let full_runs = if count * size >= 100_000 { 3 } else { 7 };
            let mut plan_t = Vec::new();
            let mut first_t = Vec::new();
            let mut reapply_t = Vec::new();
            let mut change_t = Vec::new();
            let mut change_apply_t = Vec::new();
            let mut messages = (0, 0);
            for _ in 0..full_runs {
                Netlink::default().clear(TABLE).expect("clear");
                let t = Instant::now();
                let rs = plan(TABLE, &nets).expect("plan");
                plan_t.push(t.elapsed());

                let mut nft = Netlink::new(BridgeNetfilter::Leave);
                let t = Instant::now();
                let report = nft.apply(None, &rs).expect("apply");
                first_t.push(t.elapsed());
                messages.0 = report.messages;

                // A full replace over an existing ruleset (nothing committed is known).
                let t = Instant::now();
                nft.apply(None, &rs).expect("re-apply");
                reapply_t.push(t.elapsed());
                let mut committed = rs;

                // One address in, one out, alternately, on the first network.
                let mut changed = nets.clone();
                let extra: IpAddr = "10.200.200.200".parse().expect("ip");
                for round in 0..10 {
                    if round % 2 == 0 {
                        changed[0].whitelist.insert(extra);
                    } else {
                        changed[0].whitelist.remove(&extra);
                    }
                    // The change as the daemon makes it: plan the new state, apply it.
                    let t = Instant::now();
                    let rs = plan(TABLE, &changed).expect("plan");
                    let t_apply = Instant::now();
                    let report = nft.apply(Some(&committed), &rs).expect("change");
                    change_t.push(t.elapsed());
                    change_apply_t.push(t_apply.elapsed());
                    assert_eq!(report.kind, BatchKind::Elements);
                    committed = rs;
                    messages.1 = report.messages;
                }
            }
            println!(
                "| {count} | {size} | {} | {} | {} | {} | {} | {} | {} / {} |",
                2 * count * size,
                ms(median(plan_t)),
                ms(median(first_t)),
                ms(median(reapply_t)),
                ms(median(change_t)),
                ms(median(change_apply_t)),
                messages.0,
                messages.1,
            );
        }
    }
    Netlink::default().clear(TABLE).expect("clear");
}

// ---- throughput -----------------------------------------------------------------------

struct Ns(String);

impl Ns {
    fn new(role: &str) -> Ns {
        let name = format!("tjbench{}-{role}", std::process::id());
        run("ip", &["netns", "add", &name]);
        run("ip", &["-n", &name, "link", "set", "lo", "up"]);
        Ns(name)
    }
    fn ip(&self, args: &[&str]) {
        let mut all = vec!["-n", &self.0];
        all.extend_from_slice(args);
        run("ip", &all);
    }
    fn exec(&self, cmd: &str, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.0, cmd]).args(args);
        c
    }
    fn sysctl(&self, key: &str, value: &str) {
        let status = self
            .exec("sysctl", &["-q", "-w", &format!("{key}={value}")])
            .status()
            .expect("sysctl");
        assert!(status.success());
    }
    /// Runs `f` on a thread inside the namespace.
    fn enter<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let file = std::fs::File::open(format!("/run/netns/{}", self.0)).expect("netns");
        std::thread::spawn(move || {
            nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            f()
        })
        .join()
        .expect("thread")
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn run(cmd: &str, args: &[&str]) {
    let status = Command::new(cmd).args(args).status().expect(cmd);
    assert!(status.success(), "{cmd} {args:?}");
}

/// Bits per second received, from iperf3's JSON.
fn received_bps(json: &str) -> f64 {
    let at = json
        .find("\"sum_received\"")
        .expect("sum_received in iperf3 output");
    let rest = &json[at..];
    let key = "\"bits_per_second\":";
    let start = rest.find(key).expect("bits_per_second") + key.len();
    let number: String = rest[start..]
        .trim_start()
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == 'e' || *c == '+')
        .collect();
    number.parse().expect("a number")
}

fn throughput_benchmark() {
    if Command::new("iperf3").arg("--version").output().is_err() {
        panic!("iperf3 is needed for the throughput benchmark: apt-get install iperf3");
    }
    let seconds = if quick() { "2" } else { "5" };
    let rounds = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(if quick() { 1 } else { 3 });
    let host = Ns::new("host");
    let proxy = Ns::new("proxy");
    let backend = Ns::new("backend");
    host.ip(&["link", "add", "br0", "type", "bridge"]);
    host.ip(&["addr", "add", "10.77.0.1/16", "dev", "br0"]);
    host.ip(&["link", "set", "br0", "up"]);
    for (port, ns, addr) in [
        ("p-proxy", &proxy, "10.77.0.2/16"),
        ("p-backend", &backend, "10.77.0.3/16"),
    ] {
        host.ip(&[
            "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", &ns.0,
        ]);
        host.ip(&["link", "set", port, "master", "br0", "up"]);
        ns.ip(&["addr", "add", addr, "dev", "eth0"]);
        ns.ip(&["link", "set", "eth0", "up"]);
    }
    let mut server: Child = backend
        .exec("iperf3", &["-s", "-B", "10.77.0.3"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("iperf3 -s");
    std::thread::sleep(Duration::from_millis(500));

    // 10 000 whitelisted addresses, the proxy among them; both ports bound (port
    // security checks every frame).
    let mut whitelist = addresses(77, 9_999);
    whitelist.insert("10.77.0.2".parse().expect("ip"));
    let found = host.enter(|| {
        trafficjam::kernel::links::ports::bridge_ports(&BTreeSet::from(["br0".to_owned()]))
            .expect("ports")
    });
    let ports = found["br0"]
        .ports
        .iter()
        .map(|link| Port {
            name: link.name.clone(),
            mac: link.peer_mac,
            addrs: vec![
                if link.name == "p-proxy" {
                    "10.77.0.2"
                } else {
                    "10.77.0.3"
                }
                .parse()
                .expect("ip"),
            ],
        })
        .collect::<Vec<_>>();
    assert_eq!(ports.len(), 2, "both ports bound");
    // The forwarding database as the daemon programs it for bound ports (static entries,
    // no learning, no unknown-unicast flooding), undone for the unmanaged measurement.
    let bound: Vec<(String, trafficjam::plan::Mac)> =
        ports.iter().map(|p| (p.name.clone(), p.mac)).collect();
    let program = |on: bool| {
        let bound = bound.clone();
        if on {
            host.enter(move || {
                trafficjam::kernel::links::fdb::bind_ports("br0", &bound).expect("bind ports")
            });
        } else {
            for (port, mac) in &bound {
                let mac = trafficjam::plan::mac_text(mac);
                let _ = host
                    .exec("bridge", &["fdb", "del", &mac, "dev", port, "master"])
                    .status();
                host.exec(
                    "bridge",
                    &["link", "set", "dev", port, "learning", "on", "flood", "on"],
                )
                .status()
                .expect("bridge link set");
            }
        }
    };
    let managed_net = ManagedNetwork {
        name: "bench".into(),
        bridge: "br0".into(),
        subnets: vec!["10.77.0.0/16".parse().expect("subnet")],
        whitelist,
        ports,
        gateway_mac: found["br0"].mac,
        gateways: vec!["10.77.0.1".parse().expect("ip")],
        ..ManagedNetwork::default()
    };

    // The same bridge, nobody whitelisted: the proxy's traffic passes by one of 1 000
    // allowed tuples (the proxy to the backend on iperf3's port, and 999 others).
    let mut grants: BTreeSet<Grant> = addresses(77, 4_100)
        .into_iter()
        .filter(|a| a.is_ipv4())
        .skip(4)
        .collect::<Vec<_>>()
        .chunks(2)
        .filter(|pair| pair.len() == 2)
        .take(999)
        .map(|pair| Grant {
            from: pair[0],
            to: pair[1],
            ports: Some(PortRange::parse("5201/tcp").expect("ports")),
        })
        .collect();
    grants.insert(Grant {
        from: "10.77.0.2".parse().expect("ip"),
        to: "10.77.0.3".parse().expect("ip"),
        ports: Some(PortRange::parse("5201/tcp").expect("ports")),
    });
    assert_eq!(grants.len(), 1_000);
    let mut allowed_net = managed_net.clone();
    allowed_net.whitelist = BTreeSet::new();
    allowed_net.allow_rules = true;
    allowed_net.grants = grants;
    let allowed = plan(TABLE, &[allowed_net]).expect("plan");
    let managed = plan(TABLE, &[managed_net]).expect("plan");

    let measure = |label: &str| -> f64 {
        let out = proxy
            .exec("iperf3", &["-c", "10.77.0.3", "-t", seconds, "-J"])
            .output()
            .expect("iperf3 -c");
        assert!(out.status.success(), "iperf3 {label} failed");
        received_bps(&String::from_utf8_lossy(&out.stdout))
    };
    // A Docker host always runs connection tracking (Docker's own forward and NAT rules):
    // this stand-in for Docker's rules is in place for both measurements, so the ratio is
    // the cost trafficjam adds to such a host.
    let docker_like = "table ip dockerlike {\n\tchain forward {\n\t\ttype filter hook forward priority 0; policy accept;\n\t\tct state related,established counter accept\n\t\tiifname \"br0\" oifname \"br0\" counter accept\n\t}\n}\n";
    let mut nft = host
        .exec("nft", &["-f", "-"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("nft");
    std::io::Write::write_all(nft.stdin.as_mut().expect("stdin"), docker_like.as_bytes())
        .expect("write");
    drop(nft.stdin.take());
    assert!(
        nft.wait().expect("nft").success(),
        "nft -f docker-like table"
    );

    println!("\n## TCP throughput through the bridge (iperf3, {seconds} s streams, Gbit/s)");
    println!(
        "| br_netfilter | unmanaged (median) | managed, 10 000 whitelisted, ports bound, database programmed (median) | ratio | allowed by 1 of 1 000 tuples (median) | ratio |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for switch in ["1", "0"] {
        host.sysctl("net.bridge.bridge-nf-call-iptables", switch);
        host.sysctl("net.bridge.bridge-nf-call-ip6tables", switch);
        let (mut plain, mut ours, mut by_tuple) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..rounds {
            host.enter(|| Netlink::default().clear(TABLE).expect("clear"));
            program(false);
            plain.push(measure("unmanaged"));
            for (rs, out) in [(&managed, &mut ours), (&allowed, &mut by_tuple)] {
                let rs = rs.clone();
                host.enter(move || {
                    Netlink::new(BridgeNetfilter::Leave)
                        .apply(None, &rs)
                        .expect("apply");
                });
                program(true);
                out.push(measure("managed"));
            }
        }
        host.enter(|| Netlink::default().clear(TABLE).expect("clear"));
        let med = |mut v: Vec<f64>| {
            v.sort_by(|a, b| a.total_cmp(b));
            v[v.len() / 2]
        };
        let (p, o, t) = (med(plain), med(ours), med(by_tuple));
        println!(
            "| {} | {:.2} | {:.2} | {:.3} | {:.2} | {:.3} |",
            if switch == "1" {
                "on (stateful)"
            } else {
                "off (backstop only)"
            },
            p / 1e9,
            o / 1e9,
            o / p,
            t / 1e9,
            t / p
        );
    }
    let _ = server.kill();
    let _ = server.wait();
}

/// 100 allow rules over 200 containers of one dual-stack network: rule k lets containers
/// 2k and 2k+1 open containers 2k+100 and 2k+101 on one port. Container 199's start (it is
/// rule 49's second destination) is the element update measured.
fn policy_benchmark() {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
        .unwrap_or_else(|e| panic!("unshare(CLONE_NEWNET): {e} (run as root)"));
    let addrs = |c: usize| -> [IpAddr; 2] {
        [
            IpAddr::V4(Ipv4Addr::new(10, 80, (c >> 8) as u8, c as u8 + 2)),
            IpAddr::V6(Ipv6Addr::new(0xfd00, 0x80, 0, 0, 0, 0, 0, c as u16 + 2)),
        ]
    };
    let grants = |running: usize| -> BTreeSet<Grant> {
        let mut g = BTreeSet::new();
        for k in 0..100 {
            let ports = PortRange::parse(&format!("{}/tcp", 5000 + k)).expect("ports");
            for from in [2 * k % 100, (2 * k + 1) % 100] {
                for to in [100 + (2 * k) % 100, 100 + (2 * k + 1) % 100] {
                    if to >= running {
                        continue;
                    }
                    for (f, t) in addrs(from).into_iter().zip(addrs(to)) {
                        g.insert(Grant {
                            from: f,
                            to: t,
                            ports: Some(ports),
                        });
                    }
                }
            }
        }
        g
    };
    let network = |running: usize| ManagedNetwork {
        name: "cloud".into(),
        bridge: "br-cloud".into(),
        subnets: vec![
            "10.80.0.0/16".parse().expect("subnet"),
            "fd00:80::/64".parse().expect("subnet"),
        ],
        whitelist: addrs(0).into_iter().collect(),
        allow_rules: true,
        grants: grants(running),
        ..ManagedNetwork::default()
    };
    let (before, after) = (network(199), network(200));
    let runs = if quick() { 3 } else { 11 };
    let (mut plan_t, mut full_t, mut start_t, mut start_apply_t) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut messages = (0, 0);
    let mut elements = 0;
    for _ in 0..runs {
        Netlink::default().clear(TABLE).expect("clear");
        let t = Instant::now();
        let rs = plan(TABLE, std::slice::from_ref(&before)).expect("plan");
        plan_t.push(t.elapsed());
        let mut nft = Netlink::new(BridgeNetfilter::Leave);
        let t = Instant::now();
        let report = nft.apply(None, &rs).expect("apply");
        full_t.push(t.elapsed());
        messages.0 = report.messages;
        let t = Instant::now();
        let started = plan(TABLE, std::slice::from_ref(&after)).expect("plan");
        let t_apply = Instant::now();
        let report = nft.apply(Some(&rs), &started).expect("start");
        start_t.push(t.elapsed());
        start_apply_t.push(t_apply.elapsed());
        assert_eq!(report.kind, BatchKind::Elements);
        messages.1 = report.messages;
        elements = report.added;
    }
    Netlink::default().clear(TABLE).expect("clear");
    println!("\n## policy: 100 allow rules over 200 containers (median of {runs}, milliseconds)");
    println!(
        "| grants (address pairs) | plan | apply (full batch) | one container starts: plan + apply | of which apply (element batch) | messages (full / start) | elements added |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    println!(
        "| {} | {} | {} | {} | {} | {} / {} | {elements} |",
        before.grants.len(),
        ms(median(plan_t)),
        ms(median(full_t)),
        ms(median(start_t)),
        ms(median(start_apply_t)),
        messages.0,
        messages.1,
    );
}

fn main() {
    // `cargo bench` passes --bench; a plain run of the binary does the same work.
    let only = std::env::args().skip(1).find(|a| !a.starts_with("--"));
    let want = |part: &str| only.as_deref().is_none_or(|o| part.contains(o));
    if want("throughput") {
        // Before the unshare below: the throughput part uses named namespaces.
        throughput_benchmark();
    }
    if want("droplog") {
        drop_log_benchmark();
    }
    if want("policy") || want("apply") {
        // Both unshare the calling thread's namespace: each runs on a thread of its own.
        let mut parts: Vec<fn()> = Vec::new();
        if want("apply") {
            parts.push(apply_benchmark);
        }
        if want("policy") {
            parts.push(policy_benchmark);
        }
        for part in parts {
            std::thread::spawn(part).join().expect("benchmark");
        }
    }
}

// ---- drop log -------------------------------------------------------------------------

/// CPU time (user + system) this process has used, in seconds.
fn process_cpu() -> f64 {
    // getrusage counts to the microsecond (/proc's clock ticks are 10 ms).
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the struct it is given, which is zeroed and large enough.
    let usage = unsafe {
        assert_eq!(libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()), 0);
        usage.assume_init()
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// `count` UDP datagrams from `ns` to `to` as fast as python sends them, or for `seconds`.
fn flood(ns: &Ns, to: &str, count: Option<usize>, seconds: f64) -> Child {
    let script = format!(
        "import socket, time\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\nend = time.time() + {seconds}\nn = 0\nwhile time.time() < end and n < {}:\n    s.sendto(b'flood', ('{to}', 9999))\n    n += 1\n",
        count.unwrap_or(usize::MAX)
    );
    ns.exec("/usr/bin/python3", &["-c", &script])
        .spawn()
        .expect("python3")
}

fn drop_log_benchmark() {
    use std::collections::HashMap;
    use std::sync::Arc;
    use std::sync::atomic::Ordering;
    use trafficjam::droplog::{Directory, DropLog, Named, NetworkNames};

    const GROUP: u16 = 4299;
    let host = Ns::new("dlhost");
    let proxy = Ns::new("dlproxy");
    let backend = Ns::new("dlbackend");
    let attacker = Ns::new("dlattacker");
    host.ip(&["link", "add", "br0", "type", "bridge"]);
    host.ip(&["addr", "add", "10.78.0.1/16", "dev", "br0"]);
    host.ip(&["link", "set", "br0", "up"]);
    host.sysctl("net.bridge.bridge-nf-call-iptables", "1");
    let members = [
        ("p-proxy", &proxy, "10.78.0.2"),
        ("p-backend", &backend, "10.78.0.3"),
        ("p-attacker", &attacker, "10.78.0.4"),
    ];
    for (port, ns, addr) in members {
        host.ip(&[
            "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", &ns.0,
        ]);
        host.ip(&["link", "set", port, "master", "br0", "up"]);
        ns.ip(&["addr", "add", &format!("{addr}/16"), "dev", "eth0"]);
        ns.ip(&["link", "set", "eth0", "up"]);
    }
    let mut server: Child = backend
        .exec("iperf3", &["-s", "-B", "10.78.0.3"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("iperf3 -s");
    let net = |log: bool| ManagedNetwork {
        name: "bench".into(),
        bridge: "br0".into(),
        subnets: vec!["10.78.0.0/16".parse().expect("subnet")],
        whitelist: BTreeSet::from(["10.78.0.2".parse().expect("ip")]),
        log_group: log.then_some(GROUP),
        ..ManagedNetwork::default()
    };
    let (logged, silent) = (
        plan(TABLE, &[net(true)]).expect("plan"),
        plan(TABLE, &[net(false)]).expect("plan"),
    );
    let apply = |rs: &trafficjam::plan::Ruleset| {
        let rs = rs.clone();
        host.enter(move || {
            Netlink::new(BridgeNetfilter::Leave)
                .apply(None, &rs)
                .expect("apply");
        });
    };

    // The daemon's drop log, in this process: the reader thread and the naming task, with
    // lines formatted as the daemon formats them (to nowhere).
    // BENCH_LOG=1 shows them on stderr.
    if std::env::var_os("BENCH_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .try_init();
    } else {
        let _ = tracing_subscriber::fmt()
            .with_writer(std::io::sink)
            .try_init();
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let mut drop_log = DropLog::default();
    let named = |name: &str| Named {
        name: name.into(),
        id: "0123456789ab".into(),
    };
    drop_log.directory.send_replace(Arc::new(Directory {
        networks: HashMap::from([(
            "bench".to_owned(),
            NetworkNames {
                by_address: HashMap::from([
                    ("10.78.0.2".parse().expect("ip"), named("proxy")),
                    ("10.78.0.3".parse().expect("ip"), named("backend")),
                    ("10.78.0.4".parse().expect("ip"), named("attacker")),
                ]),
                ..NetworkNames::default()
            },
        )]),
        bridges: HashMap::from([("br0".to_owned(), "bench".to_owned())]),
    }));
    let report = {
        let _guard = rt.enter();
        drop_log.report(GROUP)
    };
    host.enter(move || {
        Netlink::default()
            .watch_drops(GROUP, report)
            .expect("NFLOG group")
    });
    let stats = drop_log.stats.clone();

    const FLOOD: usize = 100_000;
    println!("\n## Drop log: CPU per 10 000 dropped packets (a backend floods UDP at full speed)");
    println!(
        "| log | packets | sent in | reports | lines | CPU of the log | per 10 000 packets | per report |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for (label, rs) in [("on", &logged), ("off", &silent)] {
        apply(rs);
        std::thread::sleep(Duration::from_millis(300));
        let (reports, lines) = (
            stats.reported.load(Ordering::Relaxed),
            stats.lines.load(Ordering::Relaxed),
        );
        let cpu = process_cpu();
        let started = Instant::now();
        let status = flood(&attacker, "10.78.0.3", Some(FLOOD), 60.0)
            .wait()
            .expect("flood");
        assert!(status.success());
        let sent = started.elapsed();
        std::thread::sleep(Duration::from_secs(2));
        let cpu = process_cpu() - cpu;
        let reported = stats.reported.load(Ordering::Relaxed) - reports;
        println!(
            "| {label} | {FLOOD} | {:.2} s | {reported} | {} | {:.2} ms | {:.3} ms | {} |",
            sent.as_secs_f64(),
            stats.lines.load(Ordering::Relaxed) - lines,
            cpu * 1e3,
            cpu * 1e3 / (FLOOD as f64 / 10_000.0),
            if reported > 0 {
                format!("{:.1} µs", cpu * 1e6 / reported as f64)
            } else {
                "-".into()
            }
        );
    }

    let seconds = if quick() { 2.0 } else { 5.0 };
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(if quick() { 1 } else { 3 });
    let measure = || -> f64 {
        let out = proxy
            .exec(
                "iperf3",
                &["-c", "10.78.0.3", "-t", &format!("{seconds}"), "-J"],
            )
            .output()
            .expect("iperf3 -c");
        assert!(out.status.success(), "iperf3 failed");
        received_bps(&String::from_utf8_lossy(&out.stdout))
    };
    let under_flood = || -> f64 {
        let mut f = flood(&attacker, "10.78.0.3", None, seconds + 1.0);
        let bps = measure();
        let _ = f.wait();
        bps
    };
    let med = |mut v: Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    let (mut plain, mut quiet_on, mut flood_off, mut flood_on) = (vec![], vec![], vec![], vec![]);
    for _ in 0..rounds {
        host.enter(|| Netlink::default().clear(TABLE).expect("clear"));
        plain.push(measure());
        apply(&logged);
        quiet_on.push(measure());
        flood_on.push(under_flood());
        apply(&silent);
        flood_off.push(under_flood());
    }
    host.enter(|| Netlink::default().clear(TABLE).expect("clear"));
    let (p, q, off, on) = (med(plain), med(quiet_on), med(flood_off), med(flood_on));
    println!(
        "\n## The proxy's TCP throughput with the drop log on (iperf3, {seconds} s streams, median of {rounds}, Gbit/s)"
    );
    println!(
        "| unmanaged | log on | ratio | under a flood, log off | under a flood, log on | ratio |"
    );
    println!("|---:|---:|---:|---:|---:|---:|");
    println!(
        "| {:.2} | {:.2} | {:.3} | {:.2} | {:.2} | {:.3} |",
        p / 1e9,
        q / 1e9,
        q / p,
        off / 1e9,
        on / 1e9,
        on / off
    );
    let _ = server.kill();
    let _ = server.wait();
    drop(rt);
}
