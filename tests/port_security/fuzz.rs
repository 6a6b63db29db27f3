//! A random-frame fuzzer for layer 2: what a container's port may send is an allowlist,
//! so the proof is not a list of attacks but frames nobody thought of. The generator
//! starts from honest frames (ARP, IPv4, IPv6, neighbour discovery) and tells random
//! lies in them: another source MAC, VLAN tags, another address, router adverts, DHCP
//! server ports, extension headers, fragments, other ether types, flipped bits. Each frame
//! carries a marker (magic and index) in its payload; packet sockets in the other
//! containers and on the bridge see which ones arrived, and [`judge`] says, from the
//! frame as sent, whether it was allowed to. Seeded: a failure names its seed.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use trafficjam::plan::Mac;

// The ports of the containers' listeners (tests/common).
use crate::common::{TCP_PORT, UDP_PORT};

/// Marks the fuzzer's frames; the frame's index follows it (big-endian u32).
pub const MAGIC: [u8; 4] = [0xf2, 0x7a, 0x55, 0xc3];
const MARK_LEN: usize = MAGIC.len() + 4;

/// splitmix64: small, seeded, and the same on every machine.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// True with probability `percent`/100.
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    fn byte(&mut self) -> u8 {
        self.next() as u8
    }

    fn u16(&mut self) -> u16 {
        self.next() as u16
    }

    fn bytes<const N: usize>(&mut self) -> [u8; N] {
        std::array::from_fn(|_| self.byte())
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }

    /// One of `choices`, by weight.
    fn weighted<T: Copy>(&mut self, choices: &[(u64, T)]) -> T {
        let total: u64 = choices.iter().map(|(w, _)| w).sum();
        let mut at = self.next() % total;
        for (w, item) in choices {
            if at < *w {
                return *item;
            }
            at -= w;
        }
        unreachable!()
    }
}

/// Who a party on the network is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    pub mac: Mac,
    pub v4: Ipv4Addr,
    pub v6: Ipv6Addr,
    pub link_local: Ipv6Addr,
}

/// The attacker and everyone it may try to pass for (containers and the gateway).
#[derive(Debug)]
pub struct Fuzzer {
    rng: Rng,
    me: Identity,
    others: Vec<Identity>,
}

const BROADCAST: Mac = [0xff; 6];

impl Fuzzer {
    pub fn new(seed: u64, me: Identity, others: Vec<Identity>) -> Fuzzer {
        Fuzzer {
            rng: Rng::new(seed),
            me,
            others,
        }
    }

    fn other(&mut self) -> Identity {
        let i = self.rng.below(self.others.len());
        self.others[i]
    }

    fn random_unicast_mac(&mut self) -> Mac {
        let mut m: Mac = self.rng.bytes();
        m[0] &= 0xfe;
        m
    }

    fn source_mac(&mut self) -> Mac {
        match self
            .rng
            .weighted(&[(60, 0), (15, 1), (10, 2), (5, 3), (5, 4), (5, 5)])
        {
            0 => self.me.mac,
            1 => self.other().mac,
            2 => self.random_unicast_mac(),
            3 => {
                let mut m: Mac = self.rng.bytes();
                m[0] |= 1;
                m
            }
            4 => [0; 6],
            _ => BROADCAST,
        }
    }

    fn destination_mac(&mut self) -> Mac {
        match self
            .rng
            .weighted(&[(35, 0), (15, 1), (10, 2), (10, 3), (5, 4), (5, 5), (20, 6)])
        {
            0 => self.other().mac,
            1 => BROADCAST,
            // The IEEE link-local groups, which the bridge treats apart.
            2 => [0x01, 0x80, 0xc2, 0, 0, self.rng.byte() & 0x0f],
            3 => {
                let low = self.other().v6.octets();
                self.rng.pick(&[
                    [0x33, 0x33, 0, 0, 0, 1],
                    [0x33, 0x33, 0xff, low[13], low[14], low[15]],
                ])
            }
            4 => [0x01, 0x00, 0x5e, 0, 0, 1],
            5 => self.me.mac,
            _ => self.random_unicast_mac(),
        }
    }

    fn source_v4(&mut self) -> Ipv4Addr {
        match self
            .rng
            .weighted(&[(55, 0), (15, 1), (8, 2), (4, 3), (8, 4), (10, 5)])
        {
            0 => self.me.v4,
            1 => self.other().v4,
            2 => Ipv4Addr::UNSPECIFIED,
            3 => Ipv4Addr::BROADCAST,
            4 => self.in_subnet_v4(),
            _ => Ipv4Addr::from(self.rng.bytes::<4>()),
        }
    }

    fn destination_v4(&mut self) -> Ipv4Addr {
        match self
            .rng
            .weighted(&[(40, 0), (15, 1), (10, 2), (5, 3), (5, 4), (10, 5), (15, 6)])
        {
            0 => self.other().v4,
            1 => Ipv4Addr::BROADCAST,
            2 => {
                let o = self.me.v4.octets();
                Ipv4Addr::new(o[0], o[1], o[2], 255)
            }
            3 => Ipv4Addr::new(224, 0, 0, 1),
            4 => self.me.v4,
            5 => self.in_subnet_v4(),
            _ => Ipv4Addr::from(self.rng.bytes::<4>()),
        }
    }

    fn in_subnet_v4(&mut self) -> Ipv4Addr {
        let o = self.me.v4.octets();
        Ipv4Addr::new(o[0], o[1], o[2], self.rng.byte())
    }

    fn source_v6(&mut self) -> Ipv6Addr {
        match self
            .rng
            .weighted(&[(35, 0), (20, 1), (10, 2), (15, 3), (10, 4), (10, 5)])
        {
            0 => self.me.v6,
            1 => self.me.link_local,
            2 => Ipv6Addr::UNSPECIFIED,
            3 => {
                let o = self.other();
                self.rng.pick(&[o.v6, o.link_local])
            }
            4 => self.in_subnet_v6(),
            _ => Ipv6Addr::from(self.rng.bytes::<16>()),
        }
    }

    fn destination_v6(&mut self) -> Ipv6Addr {
        match self
            .rng
            .weighted(&[(35, 0), (15, 1), (5, 2), (5, 3), (10, 4), (5, 5), (25, 6)])
        {
            0 => {
                let o = self.other();
                self.rng.pick(&[o.v6, o.link_local])
            }
            1 => "ff02::1".parse().unwrap(),
            2 => "ff02::2".parse().unwrap(),
            3 => "ff02::16".parse().unwrap(),
            4 => {
                let low = self.other().v6.octets();
                Ipv6Addr::from([
                    0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, low[13], low[14], low[15],
                ])
            }
            5 => self.me.v6,
            _ => self.in_subnet_v6(),
        }
    }

    fn in_subnet_v6(&mut self) -> Ipv6Addr {
        let mut o = self.me.v6.octets();
        o[8..].copy_from_slice(&self.rng.bytes::<8>());
        Ipv6Addr::from(o)
    }

    /// A neighbour discovery target: mostly the attacker's own, often another's.
    fn target_v6(&mut self) -> Ipv6Addr {
        match self
            .rng
            .weighted(&[(40, 0), (10, 1), (30, 2), (10, 3), (10, 4)])
        {
            0 => self.me.v6,
            1 => self.me.link_local,
            2 => {
                let o = self.other();
                self.rng.pick(&[o.v6, o.link_local])
            }
            3 => self.in_subnet_v6(),
            _ => Ipv6Addr::from(self.rng.bytes::<16>()),
        }
    }

    fn mark(&mut self, index: u32) -> Vec<u8> {
        let mut m = MAGIC.to_vec();
        m.extend_from_slice(&index.to_be_bytes());
        m
    }

    fn tail(&mut self) -> Vec<u8> {
        let n = self.rng.below(24);
        (0..n).map(|_| self.rng.byte()).collect()
    }

    /// Frame number `index`.
    pub fn frame(&mut self, index: u32) -> Vec<u8> {
        let mut f = Vec::with_capacity(128);
        f.extend_from_slice(&self.destination_mac());
        f.extend_from_slice(&self.source_mac());
        let tags = self.rng.weighted(&[(85, 0), (10, 1), (5, 2)]);
        for _ in 0..tags {
            let tpid = {
                let any0 = self.rng.u16();
                self.rng
                    .weighted(&[(60, 0x8100), (25, 0x88a8), (10, 0x9100), (5, any0)])
            };
            let tci = if self.rng.chance(50) {
                u16::from(self.rng.byte() & 0xe0) << 8
            } else {
                self.rng.u16()
            };
            f.extend_from_slice(&tpid.to_be_bytes());
            f.extend_from_slice(&tci.to_be_bytes());
        }
        let (ether_type, body) = match self.rng.weighted(&[(25, 0), (30, 1), (35, 2), (10, 3)]) {
            0 => (0x0806, self.arp(index)),
            1 => (0x0800, self.ipv4(index)),
            2 => (0x86dd, self.ipv6(index)),
            _ => self.other_protocol(index),
        };
        f.extend_from_slice(&u16::to_be_bytes(ether_type));
        f.extend(body);
        // A few flipped bits anywhere before the marker.
        let (marked_at, _) = marker(&f).expect("every frame is marked");
        if self.rng.chance(15) {
            for _ in 0..1 + self.rng.below(3) {
                let at = self.rng.below(marked_at);
                f[at] ^= 1 << self.rng.below(8);
            }
        }
        if f.len() < 60 {
            f.resize(60, 0);
        }
        f
    }

    fn arp(&mut self, index: u32) -> Vec<u8> {
        let mut b = Vec::with_capacity(64);
        if self.rng.chance(5) {
            b.extend_from_slice(&self.rng.bytes::<6>());
        } else {
            b.extend_from_slice(&[0, 1, 8, 0, 6, 4]);
        }
        let op = {
            let any0 = self.rng.u16();
            self.rng.weighted(&[(50, 1), (40, 2), (10, any0)])
        };
        b.extend_from_slice(&op.to_be_bytes());
        let sender_mac = if self.rng.chance(50) {
            self.me.mac
        } else {
            self.source_mac()
        };
        b.extend_from_slice(&sender_mac);
        b.extend_from_slice(&self.source_v4().octets());
        let target_mac = {
            let any0 = self.other().mac;
            self.rng.pick(&[[0; 6], BROADCAST, any0])
        };
        b.extend_from_slice(&target_mac);
        b.extend_from_slice(&self.destination_v4().octets());
        // A trailer: the kernel reads 28 bytes of ARP and ignores the rest.
        b.extend(self.mark(index));
        b.extend(self.tail());
        b
    }

    fn ipv4(&mut self, index: u32) -> Vec<u8> {
        let options = if self.rng.chance(5) {
            4 * (1 + self.rng.below(2))
        } else {
            0
        };
        let protocol = {
            let any0 = self.rng.byte();
            self.rng.weighted(&[(40, 17), (30, 6), (20, 1), (10, any0)])
        };
        let src = self.source_v4();
        let dst = self.destination_v4();
        let mut l4 = match protocol {
            17 => {
                let sport = {
                    let any0 = self.rng.u16();
                    self.rng
                        .weighted(&[(10, 67), (10, 68), (20, UDP_PORT), (10, 53), (50, any0)])
                };
                let dport = {
                    let any0 = self.rng.u16();
                    self.rng
                        .weighted(&[(10, 67), (10, 68), (40, UDP_PORT), (40, any0)])
                };
                udp_header(sport, dport)
            }
            6 => self.tcp_header(),
            1 => {
                let kind = {
                    let any0 = self.rng.byte();
                    self.rng
                        .weighted(&[(30, 8), (15, 0), (10, 3), (10, 5), (10, 11), (25, any0)])
                };
                let mut h = vec![kind, self.rng.byte() & 0x0f, 0, 0];
                h.extend_from_slice(&self.rng.bytes::<4>());
                h
            }
            _ => Vec::new(),
        };
        l4.extend(self.mark(index));
        l4.extend(self.tail());
        if protocol == 17 {
            let len = l4.len() as u16;
            l4[4..6].copy_from_slice(&len.to_be_bytes());
        }
        let header_len = 20 + options;
        let mut h = vec![0u8; header_len];
        h[0] = if self.rng.chance(95) {
            0x40 | (header_len / 4) as u8
        } else {
            self.rng.byte()
        };
        h[1] = self.rng.byte();
        let total = if self.rng.chance(92) {
            (header_len + l4.len()) as u16
        } else {
            self.rng.u16()
        };
        h[2..4].copy_from_slice(&total.to_be_bytes());
        h[4..6].copy_from_slice(&self.rng.bytes::<2>());
        let fragment = {
            let any0 = self.rng.u16() & 0x3fff;
            self.rng
                .weighted(&[(45, 0u16), (40, 0x4000), (7, 0x2000), (8, any0)])
        };
        h[6..8].copy_from_slice(&fragment.to_be_bytes());
        h[8] = self.rng.byte();
        h[9] = protocol;
        h[12..16].copy_from_slice(&src.octets());
        h[16..20].copy_from_slice(&dst.octets());
        for option in &mut h[20..] {
            *option = if self.rng.chance(70) {
                1
            } else {
                self.rng.byte()
            };
        }
        let sum = if self.rng.chance(90) {
            checksum(&[&h])
        } else {
            self.rng.u16()
        };
        h[10..12].copy_from_slice(&sum.to_be_bytes());
        h.extend(l4);
        h
    }

    fn tcp_header(&mut self) -> Vec<u8> {
        let mut h = vec![0u8; 20];
        h[0..2].copy_from_slice(&self.rng.bytes::<2>());
        let dport = {
            let any0 = self.rng.u16();
            self.rng.weighted(&[(40, TCP_PORT), (60, any0)])
        };
        h[2..4].copy_from_slice(&dport.to_be_bytes());
        h[4..12].copy_from_slice(&self.rng.bytes::<8>());
        h[12] = 0x50;
        // SYN, SYN-ACK, ACK, RST, anything.
        h[13] = {
            let any0 = self.rng.byte();
            self.rng
                .weighted(&[(25, 0x02), (10, 0x12), (20, 0x10), (10, 0x04), (35, any0)])
        };
        h[14..16].copy_from_slice(&[0xff, 0xff]);
        h
    }

    fn ipv6(&mut self, index: u32) -> Vec<u8> {
        let src = self.source_v6();
        let dst = self.destination_v6();
        let (next, mut l4) = match self.rng.weighted(&[(55, 0), (25, 1), (15, 2), (5, 3)]) {
            0 => (58u8, self.icmpv6(index, src, dst)),
            1 => {
                let sport = {
                    let any0 = self.rng.u16();
                    self.rng
                        .weighted(&[(10, 547), (5, 546), (25, UDP_PORT), (60, any0)])
                };
                let dport = {
                    let any0 = self.rng.u16();
                    self.rng
                        .weighted(&[(10, 546), (5, 547), (45, UDP_PORT), (40, any0)])
                };
                let mut u = udp_header(sport, dport);
                u.extend(self.mark(index));
                u.extend(self.tail());
                let len = u.len() as u16;
                u[4..6].copy_from_slice(&len.to_be_bytes());
                let sum = upper_checksum(src, dst, 17, &u);
                u[6..8].copy_from_slice(&sum.to_be_bytes());
                (17, u)
            }
            2 => {
                let mut t = self.tcp_header();
                t.extend(self.mark(index));
                (6, t)
            }
            _ => {
                let mut p = self.mark(index);
                p.extend(self.tail());
                (
                    {
                        let any0 = self.rng.byte();
                        self.rng.pick(&[59, any0])
                    },
                    p,
                )
            }
        };
        // Extension headers before the upper layer: hop-by-hop, destination options,
        // routing, fragment (first or not), authentication.
        let mut next = next;
        if self.rng.chance(25) {
            let kind = self
                .rng
                .weighted(&[(30, 0u8), (20, 60), (10, 43), (30, 44), (10, 51)]);
            let mut ext = vec![next, 0, 0, 0, 0, 0, 0, 0];
            match kind {
                43 => ext[2] = 0, // routing type 0, no segment left
                44 => {
                    let offset = if self.rng.chance(60) {
                        0
                    } else {
                        self.rng.u16() & 0xfff8
                    };
                    let more = u16::from(self.rng.chance(50));
                    ext[2..4].copy_from_slice(&(offset | more).to_be_bytes());
                    ext[4..8].copy_from_slice(&self.rng.bytes::<4>());
                }
                51 => ext[1] = 0, // (0 + 2) * 4 = 8 bytes
                _ => ext[2] = 1,  // PadN over the rest
            }
            if kind == 0 || kind == 60 {
                ext[3] = 4;
            }
            ext.extend(l4);
            l4 = ext;
            next = kind;
        }
        let mut h = vec![0u8; 40];
        let first = if self.rng.chance(95) {
            0x60
        } else {
            self.rng.byte()
        };
        h[0] = first;
        h[1..4].copy_from_slice(&self.rng.bytes::<3>());
        let length = if self.rng.chance(92) {
            l4.len() as u16
        } else {
            self.rng.u16()
        };
        h[4..6].copy_from_slice(&length.to_be_bytes());
        h[6] = next;
        h[7] = {
            let any0 = self.rng.byte();
            self.rng.weighted(&[(80, 255), (10, 1), (10, any0)])
        };
        h[8..24].copy_from_slice(&src.octets());
        h[24..40].copy_from_slice(&dst.octets());
        h.extend(l4);
        h
    }

    fn icmpv6(&mut self, index: u32, src: Ipv6Addr, dst: Ipv6Addr) -> Vec<u8> {
        let kind = {
            let any0 = self.rng.byte();
            let any1 = self.rng.byte();
            self.rng.weighted(&[
                (20, 135),
                (20, 136),
                (5, 133),
                (10, 134),
                (7, 137),
                (7, 143),
                (5, 131),
                (2, 132),
                (10, 128),
                (5, 129),
                (4, 1 + any0 % 4),
                (5, any1),
            ])
        };
        let code = if self.rng.chance(90) {
            0
        } else {
            self.rng.byte()
        };
        let mut m = vec![kind, code, 0, 0];
        let lladdr_option = |kind: u8, mac: Mac| {
            let mut o = vec![kind, 1];
            o.extend_from_slice(&mac);
            o
        };
        let nd = (133..=137).contains(&kind);
        // Sometimes a nonce option (RFC 3971's 14) first: receivers take the first
        // link-layer option wherever it is.
        let nonce_first = self.rng.chance(15);
        let nonce: [u8; 6] = self.rng.bytes();
        let lladdr_option = |kind: u8, mac: Mac| {
            let mut o = Vec::new();
            if nonce_first {
                o.extend_from_slice(&[14, 1]);
                o.extend_from_slice(&nonce);
            }
            o.extend(lladdr_option(kind, mac));
            o
        };
        match kind {
            133 => {
                m.extend_from_slice(&[0; 4]);
                let mac = self.source_mac();
                m.extend(lladdr_option(1, mac));
            }
            134 => {
                m.extend_from_slice(&[64, self.rng.byte() & 0xc0, 0x07, 0x08]);
                m.extend_from_slice(&[0; 8]);
                if self.rng.chance(50) {
                    // Prefix information: on-link, autonomous.
                    let mut o = vec![3, 4, 64, 0xc0];
                    o.extend_from_slice(&[0, 0, 0x0e, 0x10, 0, 0, 0x0e, 0x10, 0, 0, 0, 0]);
                    o.extend_from_slice(&self.in_subnet_v6().octets());
                    m.extend(o);
                }
                let mac = self.source_mac();
                m.extend(lladdr_option(1, mac));
            }
            135 => {
                m.extend_from_slice(&[0; 4]);
                let target = self.target_v6();
                m.extend_from_slice(&target.octets());
                if self.rng.chance(70) {
                    let mac = self.source_mac();
                    m.extend(lladdr_option(1, mac));
                }
            }
            136 => {
                m.extend_from_slice(&[self.rng.byte() & 0xe0, 0, 0, 0]);
                let target = self.target_v6();
                m.extend_from_slice(&target.octets());
                let mac = self.source_mac();
                m.extend(lladdr_option(2, mac));
            }
            137 => {
                m.extend_from_slice(&[0; 4]);
                let target = self.target_v6();
                m.extend_from_slice(&target.octets());
                let dest = self.destination_v6();
                m.extend_from_slice(&dest.octets());
            }
            143 => {
                m.extend_from_slice(&[0, 0, 0, 1, 4, 0, 0, 0]);
                m.extend_from_slice(&self.destination_v6().octets());
            }
            131 | 132 => {
                m.extend_from_slice(&[0; 4]);
                m.extend_from_slice(&self.destination_v6().octets());
            }
            _ => m.extend_from_slice(&self.rng.bytes::<4>()),
        }
        if nd {
            // An option no kernel knows (RFC 4727's experimental 253): ignored, so the
            // message stays valid with the marker in it.
            let mut o = vec![253, 2];
            o.extend(self.mark(index));
            o.extend_from_slice(&self.rng.bytes::<6>());
            m.extend(o);
        } else {
            m.extend(self.mark(index));
            m.extend(self.tail());
        }
        let sum = if self.rng.chance(95) {
            upper_checksum(src, dst, 58, &m)
        } else {
            self.rng.u16()
        };
        m[2..4].copy_from_slice(&sum.to_be_bytes());
        m
    }

    fn other_protocol(&mut self, index: u32) -> (u16, Vec<u8>) {
        let kind = {
            let any0 = self.rng.u16();
            self.rng.pick(&[
                0x88cc, // LLDP
                0x8863, // PPPoE discovery
                0x8864, // PPPoE session
                0x888e, // EAPOL
                0x0842, // wake-on-LAN
                0x8035, // RARP
                0x88f7, // PTP
                0x8809, // slow protocols (LACP)
                0x9000, // loopback
                0x0026, // an 802.3 length (LLC follows)
                any0,
            ])
        };
        let mut b = if kind < 0x0600 {
            vec![0x42, 0x42, 0x03]
        } else {
            Vec::new()
        };
        let n = 8 + self.rng.below(24);
        b.extend((0..n).map(|_| self.rng.byte()));
        b.extend(self.mark(index));
        (kind, b)
    }
}

fn udp_header(sport: u16, dport: u16) -> Vec<u8> {
    let mut h = vec![0u8; 8];
    h[0..2].copy_from_slice(&sport.to_be_bytes());
    h[2..4].copy_from_slice(&dport.to_be_bytes());
    h
}

/// The Internet checksum of the concatenated parts.
fn checksum(parts: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    let bytes: Vec<u8> = parts.iter().flat_map(|p| p.iter().copied()).collect();
    for pair in bytes.chunks(2) {
        let word = u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An IPv6 upper-layer checksum (pseudo-header, RFC 8200 §8.1).
fn upper_checksum(src: Ipv6Addr, dst: Ipv6Addr, next: u8, upper: &[u8]) -> u16 {
    let mut pseudo = Vec::with_capacity(40);
    pseudo.extend_from_slice(&src.octets());
    pseudo.extend_from_slice(&dst.octets());
    pseudo.extend_from_slice(&(upper.len() as u32).to_be_bytes());
    pseudo.extend_from_slice(&[0, 0, 0, next]);
    checksum(&[&pseudo, upper])
}

/// Where a frame was seen, and so what it may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// The bridge itself (promiscuous): every frame that passed the port's checks.
    Bridge,
    /// The whitelisted proxy: isolation lets through what is not an opening.
    Proxy,
    /// Another backend: only neighbour discovery, listener reports and ARP reach it.
    Isolated,
}

/// Why frame `f`, sent by `me`, must not have arrived at `place`; None if it may have.
/// It reads the fields where the kernel's rules read them (fixed offsets for addresses;
/// the transport header only where the kernel's validation would find it), so that
/// what it calls forbidden is forbidden by the design, not by a guess.
pub fn judge(f: &[u8], me: &Identity, place: Place) -> Option<String> {
    if f[6..12] != me.mac {
        return Some("a source MAC not its own".into());
    }
    if f[..5] == [0x01, 0x80, 0xc2, 0, 0] && f[5] & 0xf0 == 0 {
        return Some("a frame to an IEEE link-local group".into());
    }
    judge_packet(f, me, place)
}

/// [`judge`] but for the source MAC: for a packet of the attacker's that the host routed
/// (its MAC then is the host's), which isolation must judge all the same.
pub fn judge_packet(f: &[u8], me: &Identity, place: Place) -> Option<String> {
    let ether_type = u16::from_be_bytes([f[12], f[13]]);
    let l3 = &f[14..];
    match ether_type {
        0x0806 => {
            if l3.len() < 18 {
                return Some("a short ARP".into());
            }
            if l3[8..14] != me.mac {
                return Some("an ARP sender MAC not its own".into());
            }
            let sender = Ipv4Addr::new(l3[14], l3[15], l3[16], l3[17]);
            if sender != me.v4 && !sender.is_unspecified() {
                return Some(format!("an ARP sender address not its own ({sender})"));
            }
            None
        }
        0x0800 => judge_ipv4(l3, me, place),
        0x86dd => judge_ipv6(l3, me, place),
        0x8100 | 0x88a8 | 0x9100 => Some("a VLAN tag".into()),
        other => Some(format!("ether type {other:#06x}")),
    }
}

fn judge_ipv4(l3: &[u8], me: &Identity, place: Place) -> Option<String> {
    if l3.len() < 20 {
        return Some("a short IPv4 header".into());
    }
    let src = Ipv4Addr::new(l3[12], l3[13], l3[14], l3[15]);
    // The kernel's validation (nft_set_pktinfo_ipv4_validate): only then are the ports read.
    let header = usize::from(l3[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([l3[2], l3[3]]));
    let valid = l3[0] >> 4 == 4 && header >= 20 && total >= header && l3.len() >= total;
    let ports = (valid && u16::from_be_bytes([l3[6], l3[7]]) & 0x1fff == 0 && l3[9] == 17)
        .then(|| l3.get(header..header + 4))
        .flatten()
        .map(|p| {
            (
                u16::from_be_bytes([p[0], p[1]]),
                u16::from_be_bytes([p[2], p[3]]),
            )
        });
    let dhcp_client = src.is_unspecified() && ports == Some((68, 67));
    if src != me.v4 && !dhcp_client {
        return Some(format!("an IPv4 source not its own ({src})"));
    }
    if place == Place::Isolated {
        return Some("IPv4 to an isolated container".into());
    }
    // Fragments: br_netfilter reassembles them before the bridge's forward hook, so
    // isolation judges the whole packet (a later fragment alone is never delivered).
    let fragment = u16::from_be_bytes([l3[6], l3[7]]);
    let l4 = &l3[header.min(l3.len())..];
    if !valid || fragment & 0x1fff != 0 {
        return None;
    }
    match l3[9] {
        17 if l4.len() >= 4 => {
            let (sport, dport) = (
                u16::from_be_bytes([l4[0], l4[1]]),
                u16::from_be_bytes([l4[2], l4[3]]),
            );
            (sport == 67 || dport == 68).then(|| "a DHCP server message".into())
        }
        6 if place == Place::Proxy && l4.len() >= 14 && l4[13] & 0x17 == 0x02 => {
            Some("a TCP SYN to the proxy".into())
        }
        1 if place == Place::Proxy && l4.first() == Some(&8) => {
            Some("an echo request to the proxy".into())
        }
        _ => None,
    }
}

/// The upper layer of an IPv6 packet as the kernel's `ipv6_find_hdr` finds it.
#[derive(Debug, PartialEq)]
enum Upper {
    /// Protocol and offset, readable (not a later fragment).
    Readable(u8, usize),
    /// A later fragment: the protocol is known, its header is not there.
    LaterFragment,
    /// The kernel's validation fails: no transport match applies.
    Invalid,
}

fn ipv6_upper(l3: &[u8]) -> Upper {
    let is_extension = |h: u8| matches!(h, 0 | 43 | 44 | 51 | 59 | 60);
    let payload = usize::from(u16::from_be_bytes([l3[4], l3[5]]));
    if l3[0] >> 4 != 6 || payload + 40 > l3.len() {
        return Upper::Invalid;
    }
    let (mut next, mut at) = (l3[6], 40usize);
    loop {
        if !is_extension(next) || next == 59 {
            return Upper::Readable(next, at);
        }
        if at + 2 > l3.len() {
            return Upper::Invalid;
        }
        let length = match next {
            44 => {
                if at + 4 > l3.len() {
                    return Upper::Invalid;
                }
                let offset = u16::from_be_bytes([l3[at + 2], l3[at + 3]]) & !7;
                if offset != 0 {
                    let after = l3[at];
                    return if !is_extension(after) || after == 59 {
                        Upper::LaterFragment
                    } else {
                        Upper::Invalid
                    };
                }
                8
            }
            // nftables asks ipv6_find_hdr to stop at an authentication header
            // (IP6_FH_F_AUTH): its upper layer is AH, whatever follows.
            51 => return Upper::Readable(51, at),
            _ => (usize::from(l3[at + 1]) + 1) * 8,
        };
        next = l3[at];
        at += length;
    }
}

fn judge_ipv6(l3: &[u8], me: &Identity, place: Place) -> Option<String> {
    if l3.len() < 40 {
        return Some("a short IPv6 header".into());
    }
    let src = Ipv6Addr::from(<[u8; 16]>::try_from(&l3[8..24]).unwrap());
    let upper = ipv6_upper(l3);
    let icmp = match upper {
        Upper::Readable(58, at) if l3.len() > at => Some((l3[at], &l3[at..])),
        _ => None,
    };
    let kind = icmp.map(|(k, _)| k);
    let own = src == me.v6 || src == me.link_local;
    let duplicate_address_detection = src.is_unspecified() && matches!(kind, Some(135 | 143));
    if !own && !duplicate_address_detection {
        return Some(format!("an IPv6 source not its own ({src})"));
    }
    match kind {
        Some(134) => return Some("a router advertisement".into()),
        Some(137) => return Some("a redirect".into()),
        Some(136) => {
            let target = icmp
                .and_then(|(_, m)| m.get(8..24))
                .map(|t| Ipv6Addr::from(<[u8; 16]>::try_from(t).unwrap()));
            if target != Some(me.v6) && target != Some(me.link_local) {
                return Some(format!(
                    "an advertisement for another's address ({target:?})"
                ));
            }
        }
        _ => {}
    }
    // The MAC a neighbour discovery message carries, which its receivers believe: none
    // (no option, no extension header), or the port's own in the first option.
    let length = usize::from(u16::from_be_bytes([l3[4], l3[5]]));
    let bare = |size: usize| l3[6] == 58 && length == size;
    let own_option = |at: usize, kind: u8| {
        icmp.is_some_and(|(_, m)| {
            m.get(at..at + 2) == Some(&[kind, 1][..]) && m.get(at + 2..at + 8) == Some(&me.mac[..])
        })
    };
    if own {
        match kind {
            Some(135) if !bare(24) && !own_option(24, 1) => {
                return Some("a solicitation with a link-layer option not its own".into());
            }
            Some(136) if !bare(24) && !own_option(24, 2) => {
                return Some("an advertisement with a link-layer option not its own".into());
            }
            Some(133) if !bare(8) && !own_option(8, 1) => {
                return Some("a router solicitation with a link-layer option not its own".into());
            }
            _ => {}
        }
    }
    if let Upper::Readable(17, at) = upper
        && let Some(ports) = l3.get(at..at + 4)
    {
        let (sport, dport) = (
            u16::from_be_bytes([ports[0], ports[1]]),
            u16::from_be_bytes([ports[2], ports[3]]),
        );
        if sport == 547 || dport == 546 {
            return Some("a DHCPv6 server message".into());
        }
    }
    let discovery_or_report = matches!(kind, Some(131 | 132 | 133 | 135 | 136 | 143));
    match place {
        Place::Isolated if !discovery_or_report => {
            Some(format!("IPv6 ({upper:?}) to an isolated container"))
        }
        Place::Proxy => match upper {
            Upper::Readable(6, at) if l3.get(at + 13).is_some_and(|f| f & 0x17 == 0x02) => {
                Some("a TCP SYN to the proxy".into())
            }
            _ if kind == Some(128) => Some("an echo request to the proxy".into()),
            _ => None,
        },
        _ => None,
    }
}

/// Where `MAGIC` starts in `frame`, and the index after it.
pub fn marker(frame: &[u8]) -> Option<(usize, u32)> {
    let at = frame.windows(MAGIC.len()).position(|w| w == MAGIC)?;
    let index = frame.get(at + MAGIC.len()..at + MARK_LEN)?;
    Some((at, u32::from_be_bytes(index.try_into().unwrap())))
}

/// Whether `seen` is the frame `sent` (up to its marker: the kernel may trim what follows
/// an IP packet), and not another frame quoting its payload (an echo, an ICMP error, a
/// packet the host routed).
pub fn same_frame(seen: &[u8], sent: &[u8], marker_at: usize) -> bool {
    let end = marker_at + MARK_LEN;
    sent.len() >= end && seen[..end] == sent[..end]
}

/// A raw packet socket on one interface (AF_PACKET, every protocol): what a container
/// with CAP_NET_RAW has.
#[derive(Debug)]
pub struct PacketSocket {
    fd: OwnedFd,
}

const ETH_P_ALL_BE: u16 = (libc::ETH_P_ALL as u16).to_be();

impl PacketSocket {
    /// Opens and binds it, in the calling thread's network namespace.
    pub fn open(interface: &str) -> io::Result<PacketSocket> {
        let index = nix::net::if_::if_nametoindex(interface).map_err(io::Error::from)?;
        // SAFETY: plain system calls on a descriptor this function owns; the address is a
        // zeroed sockaddr_ll with its fields set.
        unsafe {
            let fd = libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                i32::from(ETH_P_ALL_BE),
            );
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            let fd = OwnedFd::from_raw_fd(fd);
            let mut address: libc::sockaddr_ll = std::mem::zeroed();
            address.sll_family = libc::AF_PACKET as u16;
            address.sll_protocol = ETH_P_ALL_BE;
            address.sll_ifindex = index as i32;
            let bound = libc::bind(
                fd.as_raw_fd(),
                (&raw const address).cast(),
                size_of::<libc::sockaddr_ll>() as u32,
            );
            if bound < 0 {
                return Err(io::Error::last_os_error());
            }
            // Room for a whole round (root may exceed rmem_max), and a short wait.
            let size: libc::c_int = 32 << 20;
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUFFORCE,
                (&raw const size).cast(),
                size_of::<libc::c_int>() as u32,
            );
            let wait = libc::timeval {
                tv_sec: 0,
                tv_usec: 50_000,
            };
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&raw const wait).cast(),
                size_of::<libc::timeval>() as u32,
            );
            Ok(PacketSocket { fd })
        }
    }

    pub fn send(&self, frame: &[u8]) -> io::Result<()> {
        // SAFETY: the buffer outlives the call.
        let sent =
            unsafe { libc::send(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// The next frame received (not sent) on the interface, or None after the wait.
    pub fn receive(&self) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; 2048];
        // SAFETY: the buffer and the address outlive the call, their sizes are theirs.
        unsafe {
            let mut from: libc::sockaddr_ll = std::mem::zeroed();
            let mut from_len = size_of::<libc::sockaddr_ll>() as u32;
            let n = libc::recvfrom(
                self.fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                0,
                (&raw mut from).cast(),
                &mut from_len,
            );
            if n < 0 {
                return None;
            }
            if from.sll_pkttype == libc::PACKET_OUTGOING {
                return Some(Vec::new());
            }
            buf.truncate(n as usize);
            Some(buf)
        }
    }
}

/// Collects the marked frames received on a socket until `stop`, then until the socket
/// has been quiet for one wait (or a second has passed).
pub fn collect(socket: &PacketSocket, stop: &Arc<AtomicBool>) -> Vec<Vec<u8>> {
    let mut seen = Vec::new();
    let mut stopped: Option<std::time::Instant> = None;
    loop {
        let frame = socket.receive();
        if let Some(frame) = &frame
            && marker(frame).is_some()
        {
            seen.push(frame.clone());
        }
        if stop.load(Ordering::Relaxed) {
            let since = *stopped.get_or_insert_with(std::time::Instant::now);
            if frame.is_none() || since.elapsed() > Duration::from_secs(1) {
                return seen;
            }
        }
    }
}

/// A pause that lets the receivers' queues drain while sending.
pub const PACE: Duration = Duration::from_millis(1);
