//! The drop log: what the kernel reports through NFLOG, said by name.
//!
//! The reader thread ([`crate::firewall::Firewall::watch_drops`]) hands each logged packet
//! to [`run`], which names both ends from the [`Directory`] the daemon loop publishes after
//! every pass (containers by address, ports by interface, the host, the outside), and
//! logs one line per connection attempt: a SYN retried, or a flood from one source, is
//! counted, not repeated, and summarised at the end of the window. Lines are bounded per
//! window whatever arrives; the kernel bounds what arrives (a rate limit per deny chain).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc, watch};
use tokio::time::Instant;
use tracing::info;

use crate::docker::Snapshot;
use crate::firewall::DropReport;
use crate::firewall::{LogEvent, LoggedPacket};
use crate::plan::names::LOG_RATE;
use crate::plan::{Mac, ManagedNetwork, Reason, mac_text};
use crate::policy::Mode;

/// How long repeats of an attempt are counted before a summary says how many there were.
pub const WINDOW: Duration = Duration::from_secs(10);
/// Lines (attempts) logged per window at most; the rest are counted into summaries.
pub const LINES_PER_WINDOW: usize = 50;
/// Sources named in the summaries of one window at most; the rest are added up.
pub const SUMMARIES_PER_WINDOW: usize = 10;
/// Sources counted apart per window at most (forged frames can claim any address): the
/// rest are counted together.
const SOURCES_PER_WINDOW: usize = 1_000;

/// A container as the drop log names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Named {
    pub name: String,
    /// The first 12 characters of its id.
    pub id: String,
}

/// What the log knows about one managed network.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetworkNames {
    pub mode: Mode,
    pub by_address: HashMap<IpAddr, Named>,
    /// Container interfaces on the bridge (host side), by name.
    pub by_port: HashMap<String, Named>,
    pub by_mac: HashMap<Mac, Named>,
    pub gateways: Vec<IpAddr>,
}

/// Names for the addresses and ports of every managed network, as of the last pass.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Directory {
    pub networks: HashMap<String, NetworkNames>,
    /// Network name by bridge name.
    pub bridges: HashMap<String, String>,
}

impl Directory {
    /// The directory of the networks a pass isolates.
    pub fn new(snapshot: &Snapshot, networks: &[ManagedNetwork]) -> Directory {
        let mut dir = Directory::default();
        for net in networks {
            let Some(docker) = snapshot.networks.iter().find(|n| n.name == net.name) else {
                continue;
            };
            let mut names = NetworkNames {
                mode: net.mode,
                gateways: docker.gateways.clone(),
                ..NetworkNames::default()
            };
            for e in &docker.endpoints {
                let named = Named {
                    name: e.container_name.trim_start_matches('/').to_owned(),
                    id: e.container_id.chars().take(12).collect(),
                };
                for addr in &e.addrs {
                    names.by_address.insert(*addr, named.clone());
                }
                if let Some(mac) = e.mac {
                    names.by_mac.insert(mac, named.clone());
                }
            }
            for port in &net.ports {
                if let Some(named) = names.by_mac.get(&port.mac).cloned() {
                    names.by_port.insert(port.name.clone(), named);
                }
            }
            dir.bridges.insert(net.bridge.clone(), net.name.clone());
            dir.networks.insert(net.name.clone(), names);
        }
        dir
    }
}

/// One end of a dropped packet.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Party {
    Container {
        name: String,
        id: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        address: Option<IpAddr>,
    },
    /// The host itself (its address on the network's bridge, or any of its own).
    Host { address: Option<IpAddr> },
    /// An address that is no container of the network: outside, or unknown.
    Address { address: IpAddr },
    /// Nothing to name it by (a frame without an IP header from an unknown port).
    Unknown {
        #[serde(skip_serializing_if = "Option::is_none")]
        mac: Option<String>,
    },
}

impl Party {
    /// The name a journal field carries: the container's name, `host`, or the address.
    pub fn field(&self) -> String {
        match self {
            Party::Container { name, .. } => name.clone(),
            Party::Host { .. } => "host".into(),
            Party::Address { address } => address.to_string(),
            Party::Unknown { mac: Some(mac) } => mac.clone(),
            Party::Unknown { mac: None } => "unknown".into(),
        }
    }
}

impl std::fmt::Display for Party {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Party::Container {
                name,
                id,
                address: Some(a),
            } => write!(f, "{name} ({id}, {a})"),
            Party::Container { name, id, .. } => write!(f, "{name} ({id})"),
            Party::Host { address: Some(a) } => write!(f, "host ({a})"),
            Party::Host { address: None } => f.write_str("host"),
            Party::Address { address } => write!(f, "{address}"),
            Party::Unknown { mac: Some(m) } => write!(f, "unknown ({m})"),
            Party::Unknown { mac: None } => f.write_str("unknown"),
        }
    }
}

/// One blocked (or, audited, would-be blocked) connection attempt, by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    pub network: String,
    pub reason: String,
    /// True in audit mode: the packet was let through.
    pub audit: bool,
    pub source: Party,
    pub destination: Party,
    /// `tcp`, `udp`, `icmp`, `icmpv6`, `arp`, or the protocol's number.
    pub protocol: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}

impl Attempt {
    /// The line a person reads.
    pub fn text(&self) -> String {
        let what = if self.audit {
            "would drop (audit)"
        } else {
            "dropped"
        };
        let port = self.port.map(|p| format!("/{p}")).unwrap_or_default();
        format!(
            "{what} {}{port} from {} to {} on {} ({})",
            self.protocol, self.source, self.destination, self.network, self.reason
        )
    }
}

fn protocol_name(ethertype: u16, protocol: Option<u8>) -> String {
    match (ethertype, protocol) {
        (crate::firewall::ETHERTYPE_ARP, _) => "arp".into(),
        (_, Some(6)) => "tcp".into(),
        (_, Some(17)) => "udp".into(),
        (_, Some(1)) => "icmp".into(),
        (_, Some(58)) => "icmpv6".into(),
        (_, Some(132)) => "sctp".into(),
        (_, Some(n)) => n.to_string(),
        (e, None) => format!("ethertype 0x{e:04x}"),
    }
}

/// Names the ends of a logged packet. `bridge_name` resolves the interface indexes the
/// kernel gave (for the network when the prefix was cut, and for the source port).
pub fn describe(
    packet: &LoggedPacket,
    dir: &Directory,
    interface_name: &impl Fn(u32) -> Option<String>,
) -> Option<Attempt> {
    let reason = packet.reason?;
    let network = if dir.networks.contains_key(&packet.network) {
        packet.network.clone()
    } else {
        let bridge = packet.bridge_index.and_then(interface_name)?;
        dir.bridges.get(&bridge)?.clone()
    };
    let names = dir.networks.get(&network)?;
    let h = &packet.packet;
    let container = |addr: IpAddr| {
        names.by_address.get(&addr).map(|n| Party::Container {
            name: n.name.clone(),
            id: n.id.clone(),
            address: Some(addr),
        })
    };
    // A forged frame is named by the port it came from, never by what it claims.
    let from_port = packet
        .port_index
        .and_then(interface_name)
        .and_then(|p| names.by_port.get(&p))
        .map(|n| Party::Container {
            name: n.name.clone(),
            id: n.id.clone(),
            address: h.source,
        });
    let source = match (reason, h.source) {
        (Reason::Spoofed, _) => from_port.unwrap_or_else(|| Party::Unknown {
            mac: packet.source_mac.as_ref().map(mac_text),
        }),
        (_, Some(addr)) => container(addr)
            .or(from_port)
            .unwrap_or(Party::Address { address: addr }),
        (_, None) => Party::Unknown {
            mac: packet.source_mac.as_ref().map(mac_text),
        },
    };
    let destination = match (reason, h.destination) {
        (Reason::Host, address) => Party::Host { address },
        (_, Some(addr)) if names.gateways.contains(&addr) => Party::Host {
            address: Some(addr),
        },
        (_, Some(addr)) => container(addr).unwrap_or(Party::Address { address: addr }),
        (_, None) => Party::Unknown { mac: None },
    };
    Some(Attempt {
        network,
        reason: reason.name().into(),
        audit: names.mode == Mode::Audit,
        source,
        destination,
        protocol: protocol_name(h.ethertype, h.protocol),
        port: h.destination_port,
    })
}

/// Repeats counted in one window for one source, said at the end of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub network: String,
    pub source: String,
    pub more: u64,
    /// The window, in seconds.
    pub seconds: u64,
}

impl Summary {
    pub fn text(&self) -> String {
        let sampled = if self.more >= u64::from(LOG_RATE) {
            format!(
                " (a flood: the kernel reports at most {LOG_RATE} drops a second per network and reason, the counters count them all)"
            )
        } else {
            String::new()
        };
        format!(
            "… and {} more from {} on {} in the last {} s{sampled}",
            self.more, self.source, self.network, self.seconds
        )
    }
}

/// Decides which attempts get a line: the first of each (network, reason, source,
/// destination, protocol, port) per window, up to [`LINES_PER_WINDOW`]; the rest are
/// counted per source for the window's summaries.
#[derive(Debug)]
pub struct Throttle {
    window_start: Instant,
    lines: usize,
    seen: HashSet<(String, String, Party, Party, String, Option<u16>)>,
    more: BTreeMap<(String, String), u64>,
}

impl Throttle {
    pub fn new(now: Instant) -> Throttle {
        Throttle {
            window_start: now,
            lines: 0,
            seen: HashSet::new(),
            more: BTreeMap::new(),
        }
    }

    /// Whether `drop` gets a line of its own (else it is counted).
    pub fn admit(&mut self, drop: &Attempt) -> bool {
        let key = (
            drop.network.clone(),
            drop.reason.clone(),
            drop.source.clone(),
            drop.destination.clone(),
            drop.protocol.clone(),
            drop.port,
        );
        // `seen` holds the attempts that got a line: at most LINES_PER_WINDOW.
        if self.lines < LINES_PER_WINDOW && self.seen.insert(key) {
            self.lines += 1;
            return true;
        }
        let mut source = (drop.network.clone(), drop.source.field());
        if self.more.len() >= SOURCES_PER_WINDOW && !self.more.contains_key(&source) {
            source = ("every network".into(), "other sources".into());
        }
        *self.more.entry(source).or_default() += 1;
        false
    }

    /// When the window is over: its summaries (bounded), and a new window.
    pub fn roll(&mut self, now: Instant) -> Option<Vec<Summary>> {
        if now.duration_since(self.window_start) < WINDOW {
            return None;
        }
        let seconds = now.duration_since(self.window_start).as_secs().max(1);
        let more = std::mem::take(&mut self.more);
        *self = Throttle::new(now);
        let mut by_count: Vec<_> = more.into_iter().collect();
        by_count.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let mut summaries: Vec<Summary> = by_count
            .iter()
            .take(SUMMARIES_PER_WINDOW)
            .map(|((network, source), more)| Summary {
                network: network.clone(),
                source: source.clone(),
                more: *more,
                seconds,
            })
            .collect();
        let rest: u64 = by_count
            .iter()
            .skip(SUMMARIES_PER_WINDOW)
            .map(|(_, n)| n)
            .sum();
        if rest > 0 {
            summaries.push(Summary {
                network: "every network".into(),
                source: format!("{} other sources", by_count.len() - SUMMARIES_PER_WINDOW),
                more: rest,
                seconds,
            });
        }
        Some(summaries)
    }

    /// When the current window ends.
    pub fn window_end(&self) -> Instant {
        self.window_start + WINDOW
    }
}

/// What the drop log has done, for the metrics.
#[derive(Debug, Default)]
pub struct DropLogStats {
    /// Packets the kernel reported.
    pub reported: AtomicU64,
    /// Lines logged (one per attempt).
    pub lines: AtomicU64,
    /// Packets counted into summaries instead of lines.
    pub summarised: AtomicU64,
    /// Reports lost (the socket or the queue overflowed).
    pub lost: AtomicU64,
}

/// What a live view (`trafficjam watch`) receives: a line or a summary, as JSON.
pub type Notices = broadcast::Sender<String>;

/// One notice, as `trafficjam watch` reads it back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Notice {
    Drop(Attempt),
    Summary(Summary),
}

impl Notice {
    pub fn text(&self) -> String {
        match self {
            Notice::Drop(d) => d.text(),
            Notice::Summary(s) => s.text(),
        }
    }
}

/// Names and logs what the reader hands on, until the channel closes.
pub async fn run(
    mut events: mpsc::Receiver<LogEvent>,
    directory: watch::Receiver<Arc<Directory>>,
    stats: Arc<DropLogStats>,
    notices: Notices,
) {
    let mut throttle = Throttle::new(Instant::now());
    let mut interfaces: HashMap<u32, String> = HashMap::new();
    let mut interfaces_read: Option<Instant> = None;
    loop {
        let event = tokio::select! {
            e = events.recv() => match e {
                Some(e) => Some(e),
                None => return,
            },
            () = tokio::time::sleep_until(throttle.window_end()) => None,
        };
        if let Some(summaries) = throttle.roll(Instant::now()) {
            for s in summaries {
                info!(
                    network = %s.network,
                    src_container = %s.source,
                    count = s.more,
                    "{}",
                    s.text()
                );
                send(&notices, Notice::Summary(s));
            }
        }
        let packet = match event {
            None | Some(LogEvent::Idle) => continue,
            Some(LogEvent::Lost) => {
                stats.lost.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            Some(LogEvent::Packet(p)) => p,
        };
        stats.reported.fetch_add(1, Ordering::Relaxed);
        let dir = directory.borrow().clone();
        let name_of = |index: u32| {
            if let Some(name) = interfaces.get(&index) {
                return Some(name.clone());
            }
            None
        };
        let mut drop = describe(&packet, &dir, &name_of);
        let unknown = packet
            .port_index
            .is_some_and(|i| !interfaces.contains_key(&i));
        if (drop.is_none() || unknown)
            && interfaces_read.is_none_or(|at| at.elapsed() >= Duration::from_secs(1))
        {
            // An interface not seen yet: read the kernel's list again (once a second at
            // most, whatever arrives).
            interfaces = interface_names();
            interfaces_read = Some(Instant::now());
            drop = describe(&packet, &dir, &|i| interfaces.get(&i).cloned());
        }
        let Some(drop) = drop else {
            continue;
        };
        if !throttle.admit(&drop) {
            stats.summarised.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        stats.lines.fetch_add(1, Ordering::Relaxed);
        let port = drop.port.map(|p| p.to_string()).unwrap_or_default();
        info!(
            network = %drop.network,
            reason = %drop.reason,
            src_container = %drop.source.field(),
            dst_container = %drop.destination.field(),
            proto = %drop.protocol,
            dport = %port,
            audit = drop.audit,
            "{}",
            drop.text()
        );
        send(&notices, Notice::Drop(drop));
    }
}

/// The daemon loop's side of the drop log: the directory it publishes, the counters and
/// notices the naming task feeds, and the watch on the kernel's group.
#[derive(Debug)]
pub struct DropLog {
    pub directory: watch::Sender<Arc<Directory>>,
    pub stats: Arc<DropLogStats>,
    pub notices: Notices,
    events: Option<mpsc::Sender<LogEvent>>,
    /// The group being read, and the flag that keeps its watch wanted.
    watching: Option<(u16, Arc<AtomicBool>)>,
    /// The group last stopped, and when: its reader lets go of it within a second.
    stopped: Option<(u16, Instant)>,
    /// Why the group cannot be read.
    pub error: Option<String>,
    /// Why the kernel refused rules that log (they are left out until a reload).
    pub rules_refused: Option<String>,
}

/// Reports queued between the reader and the naming task at most; beyond, they are lost
/// (and counted), never buffered without bound.
const QUEUE: usize = 4096;

impl Default for DropLog {
    fn default() -> Self {
        DropLog {
            directory: watch::Sender::new(Arc::new(Directory::default())),
            stats: Arc::new(DropLogStats::default()),
            notices: broadcast::channel(256).0,
            events: None,
            watching: None,
            stopped: None,
            error: None,
            rules_refused: None,
        }
    }
}

impl DropLog {
    /// The group being read, if any.
    pub fn group(&self) -> Option<u16> {
        self.watching.as_ref().map(|(g, _)| *g)
    }

    /// Ends the current watch (its thread stops, and unbinds the group, within a
    /// second).
    pub fn stop(&mut self) {
        if let Some((group, wanted)) = self.watching.take() {
            wanted.store(false, Ordering::Relaxed);
            self.stopped = Some((group, Instant::now()));
        }
    }

    /// How long to wait before binding `group` again: the reader stopped last may still
    /// hold it.
    pub fn rebind_delay(&self, group: u16) -> Duration {
        match self.stopped {
            Some((g, at)) if g == group => Duration::from_millis(1500).saturating_sub(at.elapsed()),
            _ => Duration::ZERO,
        }
    }

    /// The report a new watch of `group` hands the kernel's reports to (the naming task
    /// is started with the first). Only one watch is wanted at a time.
    pub fn report(&mut self, group: u16) -> DropReport {
        self.stop();
        let events = self
            .events
            .get_or_insert_with(|| {
                let (tx, rx) = mpsc::channel(QUEUE);
                tokio::spawn(run(
                    rx,
                    self.directory.subscribe(),
                    self.stats.clone(),
                    self.notices.clone(),
                ));
                tx
            })
            .clone();
        let wanted = Arc::new(AtomicBool::new(true));
        self.watching = Some((group, wanted.clone()));
        let stats = self.stats.clone();
        Box::new(move |event| {
            if !wanted.load(Ordering::Relaxed) {
                return false;
            }
            if event != LogEvent::Idle && events.try_send(event).is_err() {
                stats.lost.fetch_add(1, Ordering::Relaxed);
            }
            !events.is_closed()
        })
    }
}

fn send(notices: &Notices, notice: Notice) {
    if notices.receiver_count() > 0
        && let Ok(json) = serde_json::to_string(&notice)
    {
        let _ = notices.send(json);
    }
}

/// Every interface's name by index, from the kernel.
fn interface_names() -> HashMap<u32, String> {
    nix::net::if_::if_nameindex()
        .map(|list| {
            list.iter()
                .map(|i| (i.index(), i.name().to_string_lossy().into_owned()))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::docker::{Endpoint, NetworkSnapshot};
    use crate::firewall::PacketHeaders;
    use crate::plan::Port;

    fn directory() -> Directory {
        let mut net = crate::daemon::reconcile::tests::network("web", "br-web", None);
        net.endpoints = vec![
            Endpoint {
                container_id: "aaaaaaaaaaaa1111".into(),
                container_name: "/web-1".into(),
                addrs: vec!["10.1.0.3".parse().unwrap()],
                mac: Some([2, 0, 0, 0, 0, 3]),
            },
            Endpoint {
                container_id: "bbbbbbbbbbbb2222".into(),
                container_name: "db-1".into(),
                addrs: vec!["10.1.0.4".parse().unwrap()],
                mac: Some([2, 0, 0, 0, 0, 4]),
            },
        ];
        let snapshot = Snapshot {
            networks: vec![NetworkSnapshot { ..net }],
            ..Snapshot::default()
        };
        let managed = ManagedNetwork {
            name: "web".into(),
            bridge: "br-web".into(),
            ports: vec![Port {
                name: "veth3".into(),
                mac: [2, 0, 0, 0, 0, 3],
                addrs: vec![],
            }],
            ..ManagedNetwork::default()
        };
        Directory::new(&snapshot, &[managed])
    }

    fn packet(reason: Reason, src: &str, dst: &str, port: u16) -> LoggedPacket {
        LoggedPacket {
            reason: Some(reason),
            network: "web".into(),
            bridge_index: Some(7),
            port_index: Some(9),
            source_mac: Some([2, 0, 0, 0, 0, 3]),
            packet: PacketHeaders {
                ethertype: 0x0800,
                source: Some(src.parse().unwrap()),
                destination: Some(dst.parse().unwrap()),
                protocol: Some(6),
                source_port: Some(40000),
                destination_port: Some(port),
                icmp_type: None,
                fragment: false,
            },
        }
    }

    fn names(i: u32) -> Option<String> {
        match i {
            7 => Some("br-web".into()),
            9 => Some("veth3".into()),
            _ => None,
        }
    }

    #[test]
    fn both_ends_are_named_containers_host_or_addresses() {
        let dir = directory();
        let d = describe(
            &packet(Reason::Isolation, "10.1.0.3", "10.1.0.4", 5432),
            &dir,
            &names,
        )
        .unwrap();
        assert_eq!(d.source.field(), "web-1");
        assert_eq!(d.destination.field(), "db-1");
        assert_eq!(
            d.text(),
            "dropped tcp/5432 from web-1 (aaaaaaaaaaaa, 10.1.0.3) to db-1 (bbbbbbbbbbbb, 10.1.0.4) on web (isolation)"
        );
        let d = describe(
            &packet(Reason::Host, "10.1.0.3", "10.1.0.1", 22),
            &dir,
            &names,
        )
        .unwrap();
        assert_eq!(d.destination.field(), "host");
        let d = describe(
            &packet(Reason::Outbound, "10.1.0.3", "192.168.1.5", 443),
            &dir,
            &names,
        )
        .unwrap();
        assert_eq!(d.destination.field(), "192.168.1.5");
        // A forged frame is named by its port, whatever address it claims.
        let d = describe(
            &packet(Reason::Spoofed, "10.1.0.4", "10.1.0.9", 80),
            &dir,
            &names,
        )
        .unwrap();
        assert_eq!(d.source.field(), "web-1");
        // A cut prefix: the network is known by its bridge.
        let mut cut = packet(Reason::Isolation, "10.1.0.3", "10.1.0.4", 1);
        cut.network = "we".into();
        assert_eq!(describe(&cut, &dir, &names).unwrap().network, "web");
        // Not a network of ours: nothing to say.
        cut.bridge_index = Some(99);
        assert_eq!(describe(&cut, &dir, &names), None);
    }

    #[test]
    fn an_attempt_gets_one_line_per_window_and_floods_are_summarised() {
        let dir = directory();
        let start = Instant::now();
        let mut t = Throttle::new(start);
        let syn = describe(
            &packet(Reason::Isolation, "10.1.0.3", "10.1.0.4", 5432),
            &dir,
            &names,
        )
        .unwrap();
        assert!(t.admit(&syn));
        // Retries of the same attempt: counted.
        for _ in 0..3 {
            assert!(!t.admit(&syn));
        }
        // A scan: LINES_PER_WINDOW lines at most, the rest counted.
        let mut admitted = 1;
        for port in 1..=20_000u16 {
            let d = describe(
                &packet(Reason::Isolation, "10.1.0.3", "10.1.0.4", port),
                &dir,
                &names,
            )
            .unwrap();
            admitted += usize::from(t.admit(&d));
        }
        assert_eq!(admitted, LINES_PER_WINDOW);
        assert_eq!(t.roll(start + Duration::from_secs(1)), None);
        let summaries = t.roll(start + WINDOW).unwrap();
        assert_eq!(summaries.len(), 1);
        assert_eq!(
            summaries[0].more,
            3 + 20_000 - (LINES_PER_WINDOW as u64 - 1)
        );
        assert_eq!(
            summaries[0].text(),
            format!(
                "… and {} more from web-1 on web in the last 10 s (a flood: the kernel reports at most {LOG_RATE} drops a second per network and reason, the counters count them all)",
                summaries[0].more
            )
        );
        // A new window: the attempt gets a line again.
        assert!(t.admit(&syn));
    }
}
