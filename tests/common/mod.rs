//! Test support for the kernel tier: private network namespaces playing a Docker host (a
//! bridge, our tables) and its containers (veth ports), and probes that send real packets.
//!
//! Every namespace is deleted when its guard drops, also when a test fails. Nothing here
//! touches the namespace the tests run in.
#![allow(dead_code)]

pub mod docker;

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

pub const TCP_PORT: u16 = 8080;
pub const UDP_PORT: u16 = 5353;
/// How long a probe that should be blocked waits before it calls the path blocked.
/// Namespaces on one machine answer in microseconds (or never, when a packet is dropped);
/// this only bounds the cost of a blocked probe.
pub const BLOCKED_TIMEOUT: Duration = Duration::from_millis(700);
/// How long a probe that should pass may take: generous, so that a loaded CI machine is
/// never mistaken for a drop. Passing probes return as soon as the answer arrives.
pub const PASS_TIMEOUT: Duration = Duration::from_secs(3);

/// Fails (or, outside CI with TRAFFICJAM_ALLOW_SKIP=1, skips) when this tier cannot run.
/// Returns false when the test should return early as skipped.
pub fn kernel_tier_available() -> bool {
    let root = nix::unistd::geteuid().is_root();
    let why = if !root {
        Some("the kernel tier needs root (network namespaces, nftables)")
    } else if Command::new("ip").arg("-V").output().is_err() {
        Some("the kernel tier needs iproute2 (`ip`)")
    } else if Command::new("ping").arg("-V").output().is_err() {
        Some("the kernel tier needs iputils-ping (`ping`)")
    } else {
        None
    };
    tier_runs(why.map(String::from))
}

/// True when a tier can run (`why_not` is None). Otherwise it fails the test, unless
/// TRAFFICJAM_ALLOW_SKIP=1 outside CI, where it prints why and returns false (skip).
pub fn tier_runs(why_not: Option<String>) -> bool {
    let Some(why) = why_not else {
        return true;
    };
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    let allow = std::env::var("TRAFFICJAM_ALLOW_SKIP").is_ok_and(|v| v == "1");
    if allow && !ci {
        eprintln!("SKIPPED (TRAFFICJAM_ALLOW_SKIP=1): {why}");
        false
    } else {
        panic!(
            "{why}; run the tests as root through tests/run-all (see README), or set TRAFFICJAM_ALLOW_SKIP=1 outside CI to skip"
        );
    }
}

pub fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A command's outcome, for assertion messages.
pub fn text(o: &std::process::Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Asserts that `systemd-analyze security` rates trafficjam.service at most 1.5, and
/// returns the rating.
pub fn assert_exposure(security: &std::process::Output) -> f64 {
    let report = String::from_utf8_lossy(&security.stdout);
    let exposure: f64 = report
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for trafficjam.service: ")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level: {}", text(security)));
    assert!(exposure <= 1.5, "exposure {exposure} > 1.5:\n{report}");
    exposure
}

fn unique() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// A named network namespace (`ip netns add`), deleted on drop.
#[derive(Debug)]
pub struct Netns {
    pub name: String,
    /// Whether dropping this value deletes the namespace (false for extra handles).
    owned: bool,
}

impl Netns {
    pub fn new(role: &str) -> Netns {
        let name = format!("tj{}-{}-{role}", std::process::id(), unique());
        run("ip", &["netns", "add", &name]);
        let ns = Netns { name, owned: true };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// Another handle on the same namespace, which does not delete it when dropped.
    pub fn handle(&self) -> Netns {
        Netns {
            name: self.name.clone(),
            owned: false,
        }
    }

    /// `ip -n NS ARGS…`
    pub fn ip(&self, args: &[&str]) -> String {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    /// Runs a command inside the namespace (`ip netns exec`).
    pub fn exec(&self, cmd: &str, args: &[&str]) -> std::process::Output {
        Command::new("ip")
            .args(["netns", "exec", &self.name, cmd])
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {cmd} in {}: {e}", self.name))
    }

    pub fn exec_ok(&self, cmd: &str, args: &[&str]) -> String {
        let out = self.exec(cmd, args);
        assert!(
            out.status.success(),
            "{cmd} {} in {} failed: {}",
            args.join(" "),
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn sysctl(&self, key: &str, value: &str) {
        self.exec_ok("sysctl", &["-q", "-w", &format!("{key}={value}")]);
    }

    /// Runs `f` on a thread that has entered this namespace: sockets it opens, and netlink
    /// messages it sends, belong to the namespace.
    pub fn enter<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        self.spawn(f).join().expect("thread in namespace panicked")
    }

    pub fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> JoinHandle<T> {
        let path = format!("/run/netns/{}", self.name);
        let file = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
        std::thread::spawn(move || {
            nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET)
                .unwrap_or_else(|e| panic!("setns: {e}"));
            f()
        })
    }

    /// `nft …` inside the namespace.
    pub fn nft(&self, args: &[&str]) -> String {
        self.exec_ok("nft", args)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if self.owned {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.name])
                .status();
        }
    }
}

/// A veth "container" plugged into a bridge of the lab's host.
#[derive(Debug)]
pub struct Container {
    pub name: String,
    pub ns: Netns,
    pub addrs: Vec<IpAddr>,
}

impl Container {
    pub fn v4(&self) -> IpAddr {
        *self
            .addrs
            .iter()
            .find(|a| a.is_ipv4())
            .expect("an IPv4 address")
    }
    pub fn v6(&self) -> IpAddr {
        *self
            .addrs
            .iter()
            .find(|a| a.is_ipv6())
            .expect("an IPv6 address")
    }
}

/// Echo listeners (TCP and UDP, IPv4 and IPv6) in one namespace, until dropped. UDP
/// datagrams are counted per source address, to detect leaks.
#[derive(Debug)]
pub struct Listeners {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    pub udp_from: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl Listeners {
    pub fn start(ns: &Netns) -> Listeners {
        let stop = Arc::new(AtomicBool::new(false));
        let udp_from = Arc::new(Mutex::new(HashMap::new()));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let mut threads = Vec::new();
        {
            let stop = stop.clone();
            let ready = ready_tx.clone();
            threads.push(ns.spawn(move || {
                // [::] is dual-stack (bindv6only is 0 in a fresh namespace).
                let listener = TcpListener::bind(("::", TCP_PORT)).expect("bind tcp");
                listener.set_nonblocking(true).expect("nonblocking");
                ready.send(()).expect("ready");
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((mut conn, _)) => {
                            let stop = stop.clone();
                            std::thread::spawn(move || {
                                conn.set_nonblocking(false).ok();
                                conn.set_read_timeout(Some(Duration::from_millis(100))).ok();
                                let mut buf = [0u8; 4096];
                                while !stop.load(Ordering::Relaxed) {
                                    match conn.read(&mut buf) {
                                        Ok(0) => break,
                                        Ok(n) => {
                                            if conn.write_all(&buf[..n]).is_err() {
                                                break;
                                            }
                                        }
                                        Err(e)
                                            if e.kind() == std::io::ErrorKind::WouldBlock
                                                || e.kind() == std::io::ErrorKind::TimedOut => {}
                                        Err(_) => break,
                                    }
                                }
                            });
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            }));
        }
        {
            let stop = stop.clone();
            let udp_from = udp_from.clone();
            threads.push(ns.spawn(move || {
                let sock = UdpSocket::bind(("::", UDP_PORT)).expect("bind udp");
                sock.set_read_timeout(Some(Duration::from_millis(50))).ok();
                ready_tx.send(()).expect("ready");
                let mut buf = [0u8; 2048];
                while !stop.load(Ordering::Relaxed) {
                    if let Ok((n, from)) = sock.recv_from(&mut buf) {
                        let ip = canonical(from.ip());
                        *udp_from.lock().expect("lock").entry(ip).or_default() += 1;
                        let _ = sock.send_to(&buf[..n], from);
                    }
                }
            }));
        }
        ready_rx.recv().expect("tcp listener");
        ready_rx.recv().expect("udp listener");
        Listeners {
            stop,
            threads,
            udp_from,
        }
    }

    pub fn udp_count_from(&self, ip: IpAddr) -> usize {
        *self.udp_from.lock().expect("lock").get(&ip).unwrap_or(&0)
    }
}

impl Drop for Listeners {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// IPv4-mapped IPv6 (from the dual-stack listener) back to IPv4.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

/// A protocol a probe uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Proto {
    Tcp,
    Udp,
    Icmp,
}

pub const ALL_PROTOS: [Proto; 3] = [Proto::Tcp, Proto::Udp, Proto::Icmp];

/// Opens a connection (or sends a datagram, or a ping) from inside `from` to `to` and
/// waits for the answer: true when the answer came back.
pub fn probe(from: &Netns, to: IpAddr, proto: Proto, timeout: Duration) -> bool {
    match proto {
        Proto::Tcp => from.enter(move || tcp_echo(to, timeout)),
        Proto::Udp => from.enter(move || udp_echo(to, timeout)),
        Proto::Icmp => ping(from, to, timeout),
    }
}

/// TCP connect and one echoed byte, from the calling thread's namespace.
pub fn tcp_echo(to: IpAddr, timeout: Duration) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&SocketAddr::new(to, TCP_PORT), timeout) else {
        return false;
    };
    stream.set_read_timeout(Some(timeout)).ok();
    let mut answer = [0u8; 2];
    stream.write_all(b"tj").is_ok() && stream.read_exact(&mut answer).is_ok() && &answer == b"tj"
}

/// One UDP datagram and its echo, from the calling thread's namespace.
pub fn udp_echo(to: IpAddr, timeout: Duration) -> bool {
    let bind: SocketAddr = if to.is_ipv4() {
        "0.0.0.0:0".parse().expect("addr")
    } else {
        "[::]:0".parse().expect("addr")
    };
    let Ok(sock) = UdpSocket::bind(bind) else {
        return false;
    };
    sock.set_read_timeout(Some(timeout)).ok();
    if sock.send_to(b"tj", SocketAddr::new(to, UDP_PORT)).is_err() {
        return false;
    }
    let mut buf = [0u8; 16];
    matches!(sock.recv_from(&mut buf), Ok((2, _)))
}

pub fn ping(from: &Netns, to: IpAddr, timeout: Duration) -> bool {
    let timeout = format!("{:.1}", timeout.as_secs_f64());
    from.exec(
        "ping",
        &["-n", "-q", "-c", "1", "-W", &timeout, &to.to_string()],
    )
    .status
    .success()
}

/// A network namespace playing the Docker host, with bridges and veth containers.
#[derive(Debug)]
pub struct Lab {
    // Containers first: they are dropped (deleted) before the host.
    pub containers: Vec<Container>,
    pub host: Netns,
}

impl Lab {
    pub fn new() -> Lab {
        let host = Netns::new("host");
        host.sysctl("net.ipv4.ip_forward", "1");
        host.sysctl("net.ipv6.conf.all.forwarding", "1");
        Lab {
            containers: Vec::new(),
            host,
        }
    }

    /// A bridge in the host with gateway addresses (`10.1.0.1/24`, `fd00:1::1/64`, …).
    pub fn bridge(&self, name: &str, gateways: &[&str]) {
        self.host.ip(&["link", "add", name, "type", "bridge"]);
        if let Some(v4) = gateways
            .iter()
            .find_map(|g| g.split('/').next()?.parse::<std::net::Ipv4Addr>().ok())
        {
            let [a, b, c, d] = v4.octets();
            let mac = format!("02:43:{a:02x}:{b:02x}:{c:02x}:{d:02x}");
            self.host.ip(&["link", "set", name, "address", &mac]);
        }
        for gw in gateways {
            let mut args = vec!["addr", "add", gw, "dev", name];
            if gw.contains(':') {
                args.push("nodad");
            }
            self.host.ip(&args);
        }
        self.host.ip(&["link", "set", name, "up"]);
    }

    /// A container on `bridge` with the given addresses (`10.1.0.2/24`, …); its default
    /// routes point to `gateways` (plain addresses).
    pub fn container(
        &mut self,
        name: &str,
        bridge: &str,
        addrs: &[&str],
        gateways: &[&str],
    ) -> usize {
        let ns = Netns::new(name);
        let port = format!("v{}", unique());
        self.host.ip(&[
            "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &ns.name,
        ]);
        self.host
            .ip(&["link", "set", &port, "master", bridge, "up"]);
        for addr in addrs {
            let mut args = vec!["addr", "add", addr, "dev", "eth0"];
            if addr.contains(':') {
                args.push("nodad");
            }
            ns.ip(&args);
        }
        // A MAC of its IPv4 address (as Docker's): the same network gets the same MACs
        // every run, so that a seeded frame fuzzer replays exactly.
        if let Some(v4) = addrs
            .iter()
            .find_map(|a| a.split('/').next()?.parse::<std::net::Ipv4Addr>().ok())
        {
            let [a, b, c, d] = v4.octets();
            let mac = format!("02:42:{a:02x}:{b:02x}:{c:02x}:{d:02x}");
            ns.ip(&["link", "set", "eth0", "address", &mac]);
        }
        ns.ip(&["link", "set", "eth0", "up"]);
        for gw in gateways {
            let family = if gw.contains(':') { "-6" } else { "-4" };
            ns.ip(&[family, "route", "add", "default", "via", gw]);
        }
        let addrs = addrs
            .iter()
            .map(|a| a.split('/').next().expect("addr").parse().expect("ip"))
            .collect();
        self.containers.push(Container {
            name: name.to_owned(),
            ns,
            addrs,
        });
        self.containers.len() - 1
    }

    pub fn get(&self, name: &str) -> &Container {
        self.containers
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("no container {name}"))
    }
}

/// The kernel of `host` holds exactly `ruleset` (tables, fingerprint, rule counts, set
/// elements), read back as the daemon reads it.
pub fn assert_no_drift(host: &Netns, ruleset: &trafficjam::plan::Ruleset) {
    let want = ruleset.clone();
    let problems =
        host.enter(move || trafficjam::kernel::nftables::drift(&want).expect("read back"));
    assert!(problems.is_empty(), "drift: {problems:?}\n{ruleset}");
}

/// `nft -f` of `text` (the ruleset as `trafficjam check` prints it), in a namespace of its
/// own, lists exactly what `host` holds: the printed text is the truth.
pub fn assert_text_installs_the_same(host: &Netns, text: &str) {
    let ours = host.nft(&["-s", "list", "ruleset"]);
    let other = Netns::new("text");
    let path = std::env::temp_dir().join(format!("{}.nft", other.name));
    std::fs::write(&path, text).expect("write the text");
    let loaded = other.exec("nft", &["-f", path.to_str().expect("a path")]);
    std::fs::remove_file(&path).ok();
    assert!(
        loaded.status.success(),
        "nft -f refused our text: {}\n{text}",
        String::from_utf8_lossy(&loaded.stderr)
    );
    let theirs = other.nft(&["-s", "list", "ruleset"]);
    assert_eq!(ours, theirs, "netlink batch and nft text differ");
}

/// A probe expectation: from a namespace to an address, with a protocol.
#[derive(Debug, Clone)]
pub struct Expect {
    pub what: String,
    pub from: String,
    pub to: IpAddr,
    pub proto: Proto,
    pub pass: bool,
}

/// Runs every probe concurrently and returns the ones whose outcome was not the expected
/// one, as readable lines.
pub fn check_all(lab: &Lab, expectations: &[Expect]) -> Vec<String> {
    let ns_of = |name: &str| -> Netns {
        if name == "host" {
            lab.host.handle()
        } else {
            lab.get(name).ns.handle()
        }
    };
    let handles: Vec<_> = expectations
        .iter()
        .map(|e| {
            let ns = ns_of(&e.from);
            let e = e.clone();
            std::thread::spawn(move || {
                let timeout = if e.pass {
                    PASS_TIMEOUT
                } else {
                    BLOCKED_TIMEOUT
                };
                let got = probe(&ns, e.to, e.proto, timeout);
                (e, got)
            })
        })
        .collect();
    handles
        .into_iter()
        .filter_map(|h| {
            let (e, got) = h.join().expect("probe thread");
            (got != e.pass).then(|| {
                format!(
                    "{}: {} -> {} {:?} {} but should {}",
                    e.what,
                    e.from,
                    e.to,
                    e.proto,
                    if got { "passed" } else { "was blocked" },
                    if e.pass { "pass" } else { "be blocked" }
                )
            })
        })
        .collect()
}

/// Expectations for every protocol from `from` to each address of `to`.
pub fn expect(what: &str, from: &str, to: &[IpAddr], pass: bool) -> Vec<Expect> {
    let mut out = Vec::new();
    for addr in to {
        for proto in ALL_PROTOS {
            out.push(Expect {
                what: what.to_owned(),
                from: from.to_owned(),
                to: *addr,
                proto,
                pass,
            });
        }
    }
    out
}

/// attack.py's arguments for `count` UDP datagrams from `(src_mac, src)` to `(dst,
/// dst_mac)`, port `dport`, then `extra` (`--vlan`, say).
pub fn udp_attack_args<'a>(
    (src_mac, src): (&'a str, &'a str),
    (dst, dst_mac): (&'a str, &'a str),
    dport: &'a str,
    count: &'a str,
    extra: &[&'a str],
) -> Vec<&'a str> {
    let mut args = vec![
        "udp",
        "--src-mac",
        src_mac,
        "--src-ip",
        src,
        "--dst-ip",
        dst,
        "--dst-mac",
        dst_mac,
        "--dport",
        dport,
        "--count",
        count,
    ];
    args.extend_from_slice(extra);
    args
}
