//! System tier: the built .deb installed in a Debian 12 rootfs booted by a real systemd
//! (`debootstrap` + `systemd-nspawn --boot --keep-unit --register=no`, the network namespace
//! of the test, i.e. of the private engine under tests/run-all, the Docker socket bound in),
//! and the .rpm built and linted.
//!
//! The README's set-up commands are the ones used here: `packaging/build-deb` builds the
//! package and `apt install ./trafficjam_*.deb` installs it. Needs root, Docker, the rootfs
//! caches of tests/cache (tests/run-all builds them first; else the first test to need one
//! builds it, from the host's apt mirror in the host's namespace), and a few minutes.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::docker::*;
use common::text;

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

fn ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(out.status.success(), "{cmd:?} failed: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A copy of cache `name` (tests/cache: built once per machine under a lock, from the
/// host's apt mirror) at `dest`. The script runs in the host's network namespace
/// ($TRAFFICJAM_HOST_NETNS, set by tests/run-all; else PID 1's): the tier itself runs in
/// the namespace of a private Docker engine, which has no route out. Under run-all every
/// cache is built before the tiers start, and this only copies.
fn cached(name: &str, dest: &Path) -> PathBuf {
    let host = std::env::var("TRAFFICJAM_HOST_NETNS").unwrap_or_else(|_| "/proc/1/ns/net".into());
    ok(Command::new("nsenter")
        .arg(format!("--net={host}"))
        .arg(repo().join("tests/cache"))
        .args(["copy", name])
        .arg(dest));
    dest.to_owned()
}

/// A Debian 12 rootfs holding everything the .deb depends on, so that `apt install ./….deb`
/// needs no download.
fn rootfs(work: &Path) -> PathBuf {
    cached("rootfs", &work.join("rootfs"))
}

/// A booted container; its init's PID is the door in (`nsenter -t PID -a`).
struct Machine {
    nspawn: Child,
    leader: String,
}

impl Machine {
    /// Boots `root` in the test's network namespace, with the Docker socket bound in and
    /// CAP_NET_ADMIN for trafficjam's nftables and bridges.
    fn boot(root: &Path, docker_socket: &str) -> Machine {
        Machine::boot_with(
            root,
            "tjsys",
            &[
                "--capability=CAP_NET_ADMIN".into(),
                format!("--bind={docker_socket}:/run/docker.sock"),
            ],
            &[],
        )
    }

    /// Boots `root` with `args` added to systemd-nspawn's and `env` in its environment.
    fn boot_with(root: &Path, role: &str, args: &[String], env: &[(&str, &str)]) -> Machine {
        let name = format!("{role}{}", std::process::id());
        let nspawn = Command::new("systemd-nspawn")
            .args(["--boot", "--keep-unit", "--register=no", "--quiet"])
            .arg(format!("--machine={name}"))
            .arg("-D")
            .arg(root)
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("systemd-nspawn (apt-get install systemd-container)");
        let deadline = Instant::now() + Duration::from_secs(60);
        let leader = loop {
            let child = run(Command::new("pgrep").args(["-P", &nspawn.id().to_string()]));
            let pid = String::from_utf8_lossy(&child.stdout).trim().to_owned();
            if !pid.is_empty() {
                break pid;
            }
            assert!(Instant::now() < deadline, "the container did not start");
            std::thread::sleep(Duration::from_millis(100));
        };
        let machine = Machine { nspawn, leader };
        // Wait for boot to finish (running, or degraded when some unit fails).
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let state = machine.sh("systemctl is-system-running 2>/dev/null || true");
            let state = String::from_utf8_lossy(&state.stdout).trim().to_owned();
            if state == "running" || state == "degraded" {
                break;
            }
            assert!(Instant::now() < deadline, "boot did not finish: {state}");
            std::thread::sleep(Duration::from_millis(200));
        }
        machine
    }

    /// Runs `script` in the machine, with none of the test's environment (DOCKER_HOST
    /// names the engine outside).
    fn sh(&self, script: &str) -> Output {
        run(Command::new("nsenter")
            .args(["-t", &self.leader, "-a", "/bin/sh", "-c", script])
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"))
    }

    fn sh_ok(&self, script: &str) -> String {
        let out = self.sh(script);
        // The daemon's own account is what explains a failed systemctl.
        assert!(
            out.status.success(),
            "{script}: {}\njournal of trafficjam (last lines):\n{}",
            text(&out),
            String::from_utf8_lossy(
                &self
                    .sh("journalctl -u trafficjam --no-pager -o short-monotonic -n 60")
                    .stdout
            )
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    fn journal(&self) -> String {
        String::from_utf8_lossy(&self.sh("journalctl -u trafficjam --no-pager -o cat").stdout)
            .into_owned()
    }

    /// Waits until `script` succeeds.
    fn wait_for(&self, what: &str, script: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let out = self.sh(script);
            if out.status.success() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not within {timeout:?}\nlast try: {}\njournal:\n{}",
                text(&out),
                self.journal()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        // SIGTERM asks nspawn to shut the container down cleanly.
        let _ = Command::new("kill")
            .arg(self.nspawn.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.nspawn.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.nspawn.kill();
        let _ = self.nspawn.wait();
    }
}

/// `packaging/build-deb` (the README's command), once for every test of the tier.
fn built_deb() -> PathBuf {
    static DEB: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DEB.get_or_init(|| {
        // nocheck: the unit tests ran in the unit tier, from the same tree (the package's
        // build runs them in release mode, a build of their own).
        let deb =
            ok(Command::new(repo().join("packaging/build-deb"))
                .env("DEB_BUILD_OPTIONS", "nocheck"));
        let deb = PathBuf::from(deb.lines().last().unwrap());
        // Kept apart: the next version's build (next_deb) starts afresh in target/deb.
        let kept = repo().join("target/system-tier");
        std::fs::create_dir_all(&kept).unwrap();
        let copy = kept.join(deb.file_name().unwrap());
        std::fs::copy(&deb, &copy).unwrap();
        copy
    })
    .clone()
}

/// Runs `action` while a thread checks, every 10 ms for `watch`, that our table is there,
/// and `from` tries to open connections to `to`:8080 (a backend to another): neither may
/// ever succeed in finding a window.
fn without_a_window(what: &str, from: &str, to: &str, watch: Duration, action: impl FnOnce()) {
    let watcher = {
        let what = what.to_owned();
        std::thread::spawn(move || {
            let deadline = Instant::now() + watch;
            let mut checks = 0;
            while Instant::now() < deadline {
                assert!(table_present(), "no table during {what}");
                checks += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            checks
        })
    };
    let prober = {
        let script = format!("for i in 1 2 3 4 5 6; do nc -w 1 {to} 8080 </dev/null; done");
        let from = from.to_owned();
        std::thread::spawn(move || {
            let out = docker(&["exec", &from, "sh", "-c", &script]);
            String::from_utf8_lossy(&out.stdout).matches("pong").count()
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    action();
    let checks = watcher
        .join()
        .unwrap_or_else(|_| panic!("the table vanished during {what}"));
    assert_eq!(
        prober.join().unwrap(),
        0,
        "a backend reached another during {what}"
    );
    eprintln!("{what}: table present in all {checks} checks");
}

/// The version `next_deb` bumps to: the tree's, its patch level plus one.
fn next_version() -> String {
    let version: Vec<u32> = env!("CARGO_PKG_VERSION")
        .split('.')
        .map(|n| n.parse().unwrap())
        .collect();
    format!("{}.{}.{}", version[0], version[1], version[2] + 1)
}

/// The next version's .deb: the tree's files in a copy, `packaging/version --set` there,
/// built with the README's command (the crates and the build directory shared, the unit
/// tests skipped: the tree is the one built and tested already).
fn next_deb(work: &Path) -> PathBuf {
    let copy = work.join("next");
    std::fs::create_dir_all(&copy).unwrap();
    ok(Command::new("sh")
        .arg("-c")
        .arg(
            "git ls-files -z --cached --others --exclude-standard | \
             xargs -0 sh -c 'for f; do if [ -e \"$f\" ] || [ -L \"$f\" ]; then cp -P --parents \"$f\" \"$0\"; fi; done' \"$1\"",
        )
        .arg("sh")
        .arg(&copy)
        .current_dir(repo()));
    ok(Command::new("sh")
        .arg("-c")
        .arg("git init -q && git add -A")
        .current_dir(&copy));
    ok(Command::new(copy.join("packaging/version")).args([
        "--set",
        &next_version(),
        "Upgrade test.",
    ]));
    let deb = ok(Command::new(copy.join("packaging/build-deb"))
        .env("CARGO_TARGET_DIR", repo().join("target"))
        .env("DEB_BUILD_OPTIONS", "nocheck"));
    PathBuf::from(deb.lines().last().unwrap())
}

/// The system tier's tools, or why it cannot run (naming the packages to install).
fn system_tier_available() -> bool {
    let missing: Vec<String> = [
        ("debootstrap", "debootstrap"),
        ("systemd-nspawn", "systemd-container"),
        ("dpkg-buildpackage", "dpkg-dev"),
        ("dh", "debhelper"),
        ("lintian", "lintian"),
        ("rpmbuild", "rpm"),
        ("rpmlint", "rpmlint"),
        ("debugedit", "debugedit"),
        ("eu-strip", "elfutils"),
    ]
    .into_iter()
    .filter(|(tool, _)| {
        !run(Command::new("sh").args(["-c", &format!("command -v {tool}")]))
            .status
            .success()
    })
    .map(|(tool, package)| format!("{tool} (package {package})"))
    .collect();
    common::tier_runs((!missing.is_empty()).then(|| {
        format!(
            "the system tier needs {} (tests/run-all installs tests/packages)",
            missing.join(", ")
        )
    }))
}

fn table_present() -> bool {
    run(Command::new("nft").args(["list", "table", "inet", "trafficjam"]))
        .status
        .success()
}

#[test]
fn deb_installed_and_run_under_a_booted_systemd() {
    if !docker_tier_available() {
        return;
    }
    let _engine = engine_shared();
    if !system_tier_available() {
        return;
    }
    assert!(
        !table_present(),
        "a table named trafficjam already exists on this host: the system tier uses the default name"
    );
    let work = std::env::temp_dir().join(format!("tj-system-{}", std::process::id()));
    std::fs::create_dir_all(&work).unwrap();
    struct Cleanup(PathBuf);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = Command::new(env!("CARGO_BIN_EXE_trafficjam"))
                .args(["clear", "--table", "trafficjam"])
                .env("DBUS_SYSTEM_BUS_ADDRESS", "unix:path=/nonexistent")
                .output();
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _cleanup = Cleanup(work.clone());

    // The packages, with the README's command; lintian and rpmlint on them.
    let deb = built_deb();
    let lint = run(Command::new("lintian")
        .args(["--fail-on", "error,warning"])
        .arg(&deb));
    assert!(lint.status.success(), "lintian: {}", text(&lint));
    // The .rpm builds meanwhile, while the machine below mostly waits; linted at the end.
    // --release-profile: cargo's release profile rather than Fedora's `rpm` one (one codegen
    // unit and full debuginfo take twice as long); --nocheck: the unit tests ran in the unit
    // tier and in the .deb's build of this tree.
    let rpm_build = std::thread::spawn(|| {
        let rpm = ok(Command::new(repo().join("packaging/build-rpm"))
            .args(["--release-profile", "--nocheck"]));
        rpm.lines().last().unwrap().to_owned()
    });

    // A Debian 12 machine with a Docker engine that did not come from docker.io (the
    // engine's socket is bound in, as docker-ce's would be), and no docker group yet.
    let root = rootfs(&work);
    let socket = std::env::var("DOCKER_HOST")
        .ok()
        .and_then(|h| h.strip_prefix("unix://").map(String::from))
        .unwrap_or_else(|| "/var/run/docker.sock".into());
    let gid = ok(Command::new("stat").args(["-c", "%g", &socket]));
    std::fs::copy(&deb, root.join("root").join(deb.file_name().unwrap())).unwrap();
    let machine = Machine::boot(&root, &socket);
    machine.sh_ok("! getent group docker || groupdel docker");

    // apt install ./trafficjam_*.deb before Docker's group exists: the package creates no
    // docker group of its own, and the service cannot start (216/GROUP) rather than run
    // without the socket. Without the Recommends (docker.io): the machine uses the engine
    // bound in, and it has no route to a mirror; the Depends are all in the
    // rootfs (tests/cache's INCLUDE).
    let deb_name = deb.file_name().unwrap().to_string_lossy().into_owned();
    machine.sh_ok(&format!(
        "cd /root && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ./{deb_name}"
    ));
    assert!(
        !machine.sh("getent group docker").status.success(),
        "the package created a docker group"
    );
    machine.wait_for(
        "trafficjam failed for want of the docker group",
        "systemctl show -p ExecMainStatus --value trafficjam | grep -qx 216",
        Duration::from_secs(30),
    );

    // Docker's package creates the group (docker-ce's postinst: groupadd --system docker);
    // then a restart is all the service needs.
    machine.sh_ok(&format!("groupadd -g {gid} docker"));
    machine.sh_ok("systemctl reset-failed trafficjam; systemctl restart trafficjam");
    machine.wait_for(
        "trafficjam active",
        "systemctl is-active trafficjam",
        Duration::from_secs(30),
    );
    // The group is the unit's (SupplementaryGroups=docker), not /etc/group's.
    let groups = machine.sh_ok("id -Gn trafficjam");
    assert!(
        !groups.split_whitespace().any(|g| g == "docker"),
        "trafficjam is in group docker in /etc/group: {groups}"
    );
    let pid = machine.sh_ok("systemctl show -p MainPID --value trafficjam");
    let status = machine.sh_ok(&format!("cat /proc/{pid}/status"));
    let uid = machine.sh_ok("id -u trafficjam");
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some(uid.as_str())),
        "not running as trafficjam: {status}"
    );
    for field in ["CapEff:", "CapPrm:"] {
        let line = status.lines().find(|l| l.starts_with(field)).unwrap();
        assert!(line.ends_with("0000000000001000"), "{line}");
    }
    let security = machine.sh("systemd-analyze security trafficjam --no-pager");
    let exposure = common::assert_exposure(&security);
    eprintln!("systemd-analyze security trafficjam (booted): {exposure}");

    // A network labelled for isolation is isolated, on the default configuration.
    let mut lab = DockerLab::new();
    let proxy_name = lab.name("proxy");
    let labelled = lab.network(
        "labelled",
        &[
            "--label",
            &format!("trafficjam.whitelist=name={proxy_name}"),
        ],
    );
    let proxy = lab.container("proxy", &labelled, &[]);
    let a = lab.container("a", &labelled, &[]);
    let b = lab.container("b", &labelled, &[]);
    let ip_b = lab.ip4(&b, &labelled);
    machine.wait_for(
        "labelled network isolated",
        &format!("trafficjam status | tee /dev/stderr | grep -q 'network: {labelled}' && trafficjam status | grep -q 'whitelisted: {proxy}'"),
        Duration::from_secs(20),
    );
    assert_probes(
        "labelled",
        &[
            Probe::tcp(&a, &ip_b, false),
            Probe::tcp(&proxy, &ip_b, true),
        ],
        &lab,
    );

    // A TOML section + systemctl reload: applied.
    let web = lab.network("web", &[]);
    let web1 = lab.container("web1", &web, &[]);
    let web2 = lab.container("web2", &web, &[]);
    let ip_web2 = lab.ip4(&web2, &web);
    let section = root.join("etc/trafficjam/50-web.toml");
    std::fs::write(&section, whitelist_section(&web, "name=nobody-at-all")).unwrap();
    machine.sh_ok("systemctl reload trafficjam");
    machine.wait_for(
        "web isolated",
        &format!("trafficjam status | grep -q 'network: {web}'"),
        Duration::from_secs(10),
    );
    assert_probes("toml section", &[Probe::tcp(&web1, &ip_web2, false)], &lab);

    // A broken TOML: the reload fails, the journal says where, the rules hold.
    std::fs::write(&section, format!("[network.{web}]\nwhitelist = []\n")).unwrap();
    let reload = machine.sh("systemctl reload trafficjam");
    assert!(!reload.status.success(), "a broken reload succeeded");
    machine.wait_for(
        "FILE:LINE:COL in the journal",
        "journalctl -u trafficjam --no-pager -o cat | grep -q '/etc/trafficjam/50-web.toml:2:13:'",
        Duration::from_secs(10),
    );
    assert!(table_present());
    assert_probes(
        "after a refused reload",
        &[Probe::tcp(&web1, &ip_web2, false)],
        &lab,
    );

    // busctl Clear: rules gone, systemctl status says so; reload: back.
    std::fs::write(&section, whitelist_section(&web, "name=nobody-at-all")).unwrap();
    machine.sh_ok("busctl call org.trafficjam1 /org/trafficjam1 org.trafficjam1.Manager Clear");
    assert!(!table_present(), "Clear left our table");
    machine.wait_for(
        "cleared status",
        "systemctl status trafficjam --no-pager | grep -q 'rules cleared'",
        Duration::from_secs(10),
    );
    assert_probes("cleared", &[Probe::tcp(&web1, &ip_web2, true)], &lab);
    machine.sh_ok("systemctl reload trafficjam");
    assert!(table_present(), "reload did not restore the rules");
    assert_probes("restored", &[Probe::tcp(&web1, &ip_web2, false)], &lab);

    // That blocked attempt is in the journal by name, under the hardened unit (which
    // reads the kernel's NFLOG group with CAP_NET_ADMIN alone): found by its fields.
    machine.wait_for(
        "the blocked attempt in the journal",
        &format!(
            "journalctl -u trafficjam --no-pager -o cat SRC_CONTAINER={web1} DST_CONTAINER={web2} \
             REASON=isolation PROTO=tcp DPORT=8080 NETWORK={web} | grep -q 'dropped tcp/8080 from {web1} ('"
        ),
        Duration::from_secs(2),
    );
    machine.sh_ok("trafficjam status | grep -q 'drop log: NFLOG group 4200'");

    // The journal has the structured NETWORK field.
    let by_network = machine.sh_ok(&format!(
        "journalctl -u trafficjam --no-pager -o cat NETWORK={web}"
    ));
    assert!(
        by_network.contains("isolated:"),
        "journalctl NETWORK={web}: {by_network:?}"
    );

    // systemctl restart: the table never disappears, backends never meet.
    without_a_window("the restart", &a, &ip_b, Duration::from_secs(6), || {
        machine.sh_ok("systemctl restart trafficjam");
        machine.sh_ok("systemctl is-active trafficjam");
    });

    // The socket-proxy drop-in takes the Docker socket away for real: the daemon runs
    // without the docker group and cannot open the socket (it keeps the rules in force
    // and says Docker is unreachable); without the drop-in it has both again.
    let docker_groups = |pid: &str| {
        let status = machine.sh_ok(&format!("cat /proc/{pid}/status"));
        let groups = status
            .lines()
            .find(|l| l.starts_with("Groups:"))
            .unwrap()
            .to_owned();
        groups.split_whitespace().any(|g| g == gid)
    };
    let pid = machine.sh_ok("systemctl show -p MainPID --value trafficjam");
    assert!(
        docker_groups(&pid),
        "the daemon runs without the docker group"
    );
    machine.sh_ok(
        "mkdir -p /etc/systemd/system/trafficjam.service.d && \
         cp /usr/share/doc/trafficjam/examples/socket-proxy.conf /etc/systemd/system/trafficjam.service.d/ && \
         systemctl daemon-reload && systemctl restart trafficjam",
    );
    let pid = machine.sh_ok("systemctl show -p MainPID --value trafficjam");
    assert!(
        !docker_groups(&pid),
        "the socket-proxy drop-in left the docker group"
    );
    machine.wait_for(
        "the daemon cannot open the Docker socket",
        "journalctl -u trafficjam --no-pager -o cat -n 20 | grep 'Docker is unreachable' | grep -qi 'permission denied'",
        Duration::from_secs(20),
    );
    assert!(table_present(), "rules dropped while Docker is unreachable");
    assert_probes(
        "Docker out of reach",
        &[Probe::tcp(&web1, &ip_web2, false)],
        &lab,
    );
    machine.sh_ok(
        "rm -r /etc/systemd/system/trafficjam.service.d && systemctl daemon-reload && \
         systemctl restart trafficjam",
    );
    machine.wait_for(
        "Docker reachable again",
        "trafficjam status | grep -q 'state: active'",
        Duration::from_secs(20),
    );

    // The swarm drop-in: the daemon runs with CAP_SYS_ADMIN and CAP_DAC_READ_SEARCH
    // besides CAP_NET_ADMIN (and says so), and nothing else; without it, CAP_NET_ADMIN.
    let effective = |pid: &str| -> u64 {
        let status = machine.sh_ok(&format!("cat /proc/{pid}/status"));
        let hex = status
            .lines()
            .find_map(|l| l.strip_prefix("CapEff:"))
            .unwrap()
            .trim()
            .to_owned();
        u64::from_str_radix(&hex, 16).unwrap()
    };
    const NET_ADMIN: u64 = 1 << 12;
    const SWARM: u64 = (1 << 21) | (1 << 2); // CAP_SYS_ADMIN, CAP_DAC_READ_SEARCH
    let pid = machine.sh_ok("systemctl show -p MainPID --value trafficjam");
    assert_eq!(
        effective(&pid),
        NET_ADMIN,
        "capabilities without the drop-in"
    );
    machine.sh_ok(
        "mkdir -p /etc/systemd/system/trafficjam.service.d && \
         cp /usr/share/doc/trafficjam/examples/swarm.conf /etc/systemd/system/trafficjam.service.d/ && \
         systemctl daemon-reload && systemctl restart trafficjam",
    );
    let pid = machine.sh_ok("systemctl show -p MainPID --value trafficjam");
    assert_eq!(
        effective(&pid),
        NET_ADMIN | SWARM,
        "capabilities with the swarm drop-in"
    );
    machine.wait_for(
        "the daemon says it may enter overlay namespaces",
        "journalctl -u trafficjam --no-pager -o cat -n 30 | grep -q 'CAP_SYS_ADMIN and CAP_DAC_READ_SEARCH'",
        Duration::from_secs(10),
    );
    assert!(table_present(), "rules dropped under the swarm drop-in");
    machine.sh_ok(
        "rm -r /etc/systemd/system/trafficjam.service.d && systemctl daemon-reload && \
         systemctl restart trafficjam",
    );

    // An upgrade to the next version, built from the same tree with the version bumped,
    // under traffic: the table never disappears, the backends never meet, the
    // configuration (a changed conffile, a file of the user's) stays, the service runs.
    // The .rpm first: the next version's build shares the cargo target directory.
    let rpm = rpm_build.join().expect("packaging/build-rpm failed");
    let lint = run(Command::new("rpmlint")
        .arg("-r")
        .arg(repo().join("rpm/rpmlintrc"))
        .arg(repo().join("rpm/trafficjam.spec"))
        .arg(&rpm));
    assert!(
        String::from_utf8_lossy(&lint.stdout).contains(" 0 errors"),
        "rpmlint: {}",
        text(&lint)
    );
    let next = next_deb(&work);
    let next_name = next.file_name().unwrap().to_string_lossy().into_owned();
    std::fs::copy(&next, root.join("root").join(&next_name)).unwrap();
    machine.sh_ok("echo '# changed by the admin' >>/etc/trafficjam/trafficjam.toml");
    without_a_window(
        "the upgrade",
        &web1,
        &ip_web2,
        Duration::from_secs(8),
        || {
            machine.sh_ok(&format!(
            "cd /root && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ./{next_name}"
        ));
        },
    );
    machine.sh_ok("systemctl is-active trafficjam");
    let upgraded = machine.sh_ok("trafficjam --version");
    assert!(
        upgraded.ends_with(&next_version()),
        "after the upgrade: {upgraded}"
    );
    assert!(
        machine
            .sh_ok("cat /etc/trafficjam/trafficjam.toml")
            .ends_with("# changed by the admin"),
        "the upgrade replaced the changed configuration"
    );
    assert!(section.exists(), "the upgrade removed 50-web.toml");
    machine.wait_for(
        "web still isolated after the upgrade",
        &format!("trafficjam status | grep -q 'network: {web}'"),
        Duration::from_secs(10),
    );
    assert_probes(
        "after the upgrade",
        &[
            Probe::tcp(&web1, &ip_web2, false),
            Probe::tcp(&proxy, &ip_b, true),
        ],
        &lab,
    );

    // apt remove: no table of ours; apt purge: configuration and user gone.
    machine.sh_ok("DEBIAN_FRONTEND=noninteractive apt-get remove -y trafficjam");
    assert!(!table_present(), "apt remove left our table");
    assert!(
        !run(Command::new("nft").args(["list", "table", "bridge", "trafficjam"]))
            .status
            .success(),
        "apt remove left our bridge table"
    );
    machine.sh_ok("DEBIAN_FRONTEND=noninteractive apt-get purge -y trafficjam");
    assert!(
        !root.join("etc/trafficjam").exists(),
        "purge left /etc/trafficjam"
    );
    // The system user stays (Debian's practice: no reuse of its id by another user).
    assert!(
        machine.sh("getent passwd trafficjam").status.success(),
        "purge deleted the system user"
    );
}

/// The base rootfs with Debian 12's Docker engine (`docker.io`) installed and enabled, the
/// busybox binary for a test image, and what the engine needs to run under nspawn:
/// nspawn mounts the cgroup v1 hierarchies read-only, and the engine writes them.
fn rootfs_with_docker(work: &Path) -> PathBuf {
    let root = cached("rootfs-docker", &work.join("rootfs-docker"));
    let dropin = root.join("etc/systemd/system/docker.service.d");
    std::fs::create_dir_all(&dropin).unwrap();
    std::fs::write(
        dropin.join("nspawn-cgroups.conf"),
        "[Service]\nExecStartPre=/bin/sh -c 'mount -o remount,rw /sys/fs/cgroup; \
         for c in /sys/fs/cgroup/*/; do mount -o remount,rw,bind \"$c\"; done'\n",
    )
    .unwrap();
    let busybox = ok(Command::new("sh").args(["-c", "command -v busybox"]));
    std::fs::copy(busybox, root.join("root/busybox")).unwrap();
    root
}

/// Boots a machine with its own Docker engine in network namespace `netns` (a fresh one
/// is a fresh kernel network state: no bridges, no tables, as after a reboot).
fn boot_docker_machine(root: &Path, netns: &common::Netns) -> Machine {
    Machine::boot_with(
        root,
        "tjboot",
        &[
            format!("--network-namespace-path=/run/netns/{}", netns.name),
            // The engine needs everything a container manager needs.
            "--capability=all".into(),
            "--system-call-filter=add_key keyctl bpf".into(),
        ],
        // /proc/sys and /sys writable: the engine sets sysctls and cgroups.
        &[("SYSTEMD_NSPAWN_API_VFS_WRITABLE", "1")],
    )
}

/// The issue's reboot: trafficjam and Docker both under the machine's systemd, containers
/// with restart policies, a backend that tries to reach another every 50 ms from its
/// first moment. After a reboot (a fresh kernel network state, both services started as
/// systemd orders them, a configuration broken meanwhile), it never gets through; the
/// same sequence without trafficjam lets it through (the control).
#[test]
fn a_reboot_under_systemd_never_opens_an_isolated_network() {
    if !common::kernel_tier_available() || !system_tier_available() {
        return;
    }
    let work = std::env::temp_dir().join(format!("tj-boot-{}", std::process::id()));
    std::fs::create_dir_all(&work).unwrap();
    struct Cleanup(PathBuf);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _cleanup = Cleanup(work.clone());
    let deb = built_deb();
    let root = rootfs_with_docker(&work);
    std::fs::copy(&deb, root.join("root").join(deb.file_name().unwrap())).unwrap();
    let deb_name = deb.file_name().unwrap().to_string_lossy().into_owned();

    let mut netns = common::Netns::new("boot");
    let machine = boot_docker_machine(&root, &netns);
    machine.wait_for(
        "docker active",
        "systemctl is-active docker",
        Duration::from_secs(60),
    );
    machine.sh_ok(
        "d=$(mktemp -d) && mkdir $d/bin && cp /root/busybox $d/bin/ && \
         for a in sh nc sleep date grep echo; do ln -s busybox $d/bin/$a; done && \
         tar -C $d -c . | docker import - tj/busybox >/dev/null && \
         docker network create --subnet 10.231.0.0/24 web >/dev/null",
    );
    let server = "tj/busybox nc -ll -p 8080 -e /bin/echo pong";
    machine.sh_ok(&format!(
        "docker run -d --name proxy --restart always --network web --ip 10.231.0.2 {server} && \
         docker run -d --name target --restart always --network web --ip 10.231.0.3 {server} && \
         docker run -d --name prober --restart always --network web --ip 10.231.0.4 tj/busybox \
           sh -c 'while :; do if nc -w 1 10.231.0.3 8080 </dev/null | grep -q pong; then \
           echo LEAK $(date +%s); fi; sleep 0.05; done'"
    ));
    let leaks_since = |machine: &Machine, since: u64| -> usize {
        let logs = machine.sh_ok("docker logs prober 2>&1");
        logs.lines()
            .filter_map(|l| l.strip_prefix("LEAK "))
            .filter_map(|t| t.trim().parse::<u64>().ok())
            .filter(|t| *t >= since)
            .count()
    };
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    };
    // Control: Docker alone, a reaches b.
    machine.wait_for(
        "control: the prober reaches its target without trafficjam",
        "docker logs prober 2>&1 | grep -q LEAK",
        Duration::from_secs(10),
    );

    // trafficjam installed, the network configured in TOML: a stops reaching b.
    machine.sh_ok(&format!(
        "cd /root && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends ./{deb_name} >/dev/null && \
         printf '[network.web]\\nwhitelist = \"name=proxy\"\\n' > /etc/trafficjam/50-web.toml && \
         systemctl reload trafficjam"
    ));
    machine.wait_for(
        "web isolated, proxy whitelisted",
        "trafficjam status | grep -q 'whitelisted: proxy'",
        Duration::from_secs(20),
    );
    std::thread::sleep(Duration::from_secs(2));
    let isolated_at = now();
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        leaks_since(&machine, isolated_at),
        0,
        "the prober reached its target under trafficjam"
    );
    machine.sh_ok("docker exec proxy nc -w 2 10.231.0.3 8080 | grep -q pong");

    // Meanwhile the configuration breaks; then the machine reboots: a fresh kernel
    // network state, our service before Docker, Docker restarting every container.
    std::fs::write(
        root.join("etc/trafficjam/50-web.toml"),
        "[network.web]\nwhitelist = []\n",
    )
    .unwrap();
    drop(machine);
    netns = common::Netns::new("boot");
    let rebooted_at = now();
    let machine = boot_docker_machine(&root, &netns);
    machine.wait_for(
        "the prober restarted by its policy",
        "docker inspect -f '{{.State.Running}}' prober | grep -q true",
        Duration::from_secs(60),
    );
    let order = machine.sh_ok(
        "systemctl show -p ActiveEnterTimestampMonotonic --value trafficjam; \
         systemctl show -p ExecMainStartTimestampMonotonic --value docker",
    );
    let order: Vec<u64> = order.lines().map(|l| l.trim().parse().unwrap()).collect();
    assert!(
        order[0] > 0 && order[0] <= order[1],
        "trafficjam was not ready before Docker started: {order:?}"
    );
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        leaks_since(&machine, rebooted_at),
        0,
        "the prober reached its target during or after the reboot:\n{}",
        machine.journal()
    );
    // The broken file is named, the last good configuration runs, the proxy is back.
    let journal = machine.journal();
    assert!(
        journal.contains("running the last good one")
            && journal.contains("/etc/trafficjam/50-web.toml:2:13:"),
        "{journal}"
    );
    machine.wait_for(
        "degraded, said so",
        "trafficjam status | grep -q degraded",
        Duration::from_secs(10),
    );
    machine.wait_for(
        "the proxy whitelisted again once Docker answered",
        "docker exec proxy nc -w 1 10.231.0.3 8080 | grep -q pong",
        Duration::from_secs(20),
    );
    assert_eq!(
        leaks_since(&machine, rebooted_at),
        0,
        "the prober reached its target"
    );
    drop(machine);
    drop(netns);
}
