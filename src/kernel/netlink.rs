//! Sending one nftables transaction (a netlink batch) and reading every acknowledgement.
//!
//! rustables builds the messages; we send them ourselves because a large whitelist makes a
//! batch far bigger than the default socket buffers (the kernel answers EMSGSIZE, or drops
//! acknowledgements with ENOBUFS), and because a failed batch should name the object the
//! kernel refused, not just an errno.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use nix::errno::Errno;
use nix::sys::socket::{
    AddressFamily, MsgFlags, NetlinkAddr, SetSockOpt, SockFlag, SockProtocol, SockType, recv,
    sendto, setsockopt, socket, sockopt,
};
use nix::sys::time::TimeVal;
use rustables::{Batch, MsgType};

use crate::kernel::KernelError;

/// A batch under construction, with a human label for each message so that an error can
/// say which object the kernel refused.
///
/// Messages come from rustables (tables, chains, most rules and sets) or are encoded here
/// ([`super::nftables::raw`]: what rustables cannot say, such as sets of ranges and lookups of
/// connection fields). rustables' messages are gathered in a batch of its own and moved
/// over, renumbered, whenever a raw one follows, so the order is the order of `add`.
pub(crate) struct Transaction {
    /// Finished messages, sequence numbers 1..=n in order.
    messages: Vec<u8>,
    /// rustables' messages not yet moved over.
    pending: Option<Batch>,
    labels: Vec<Label>,
}

/// What a message of a batch is: named when the kernel refuses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Label {
    pub(crate) what: String,
    /// A rule that logs (NFLOG), which a kernel without nfnetlink_log refuses.
    pub(crate) log_rule: bool,
}

impl From<String> for Label {
    fn from(what: String) -> Self {
        Label {
            what,
            log_rule: false,
        }
    }
}

impl From<&str> for Label {
    fn from(what: &str) -> Self {
        Label::from(what.to_owned())
    }
}

impl std::fmt::Debug for Transaction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transaction")
            .field("messages", &self.labels.len())
            .finish()
    }
}

/// Anything rustables can put in a batch.
pub(crate) trait BatchObject {
    fn add_to(&self, batch: &mut Batch, msg_type: MsgType);
}

macro_rules! batch_object {
    ($($t:ty),*) => {$(
        impl BatchObject for $t {
            fn add_to(&self, batch: &mut Batch, msg_type: MsgType) {
                batch.add(self, msg_type);
            }
        }
    )*};
}
batch_object!(
    rustables::Table,
    rustables::Chain,
    rustables::Rule,
    rustables::Set,
    rustables::set::SetElementList
);

const NLMSG_HDR: usize = std::mem::size_of::<libc::nlmsghdr>();
/// nfgenmsg: family, version, resource id.
const NFGENMSG_LEN: usize = 4;

/// A complete nftables netlink message: header (sequence number left 0), nfgenmsg, body.
pub(crate) fn nft_message(kind: u32, flags: u16, family: u8, body: &[u8]) -> Vec<u8> {
    let len = NLMSG_HDR + NFGENMSG_LEN + body.len();
    let mut msg = Vec::with_capacity(len);
    msg.extend_from_slice(&(len as u32).to_ne_bytes());
    let kind = ((libc::NFNL_SUBSYS_NFTABLES as u16) << 8) | kind as u16;
    msg.extend_from_slice(&kind.to_ne_bytes());
    let flags = (libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16 | flags;
    msg.extend_from_slice(&flags.to_ne_bytes());
    msg.extend_from_slice(&[0; 8]); // sequence number, port id
    msg.extend_from_slice(&[family, libc::NFNETLINK_V0 as u8, 0, 0]);
    msg.extend_from_slice(body);
    msg
}

/// Sets the sequence numbers of the messages in `bytes`, from `first` on; returns how many.
fn renumber(bytes: &mut [u8], first: u32) -> u32 {
    let mut offset = 0;
    let mut seq = first;
    while offset + NLMSG_HDR <= bytes.len() {
        let len = u32::from_ne_bytes(bytes[offset..offset + 4].try_into().expect("4 bytes"));
        bytes[offset + 8..offset + 12].copy_from_slice(&seq.to_ne_bytes());
        seq += 1;
        offset += (len as usize).next_multiple_of(4);
    }
    seq - first
}

impl Transaction {
    pub(crate) fn new() -> Self {
        Transaction {
            messages: Vec::new(),
            pending: None,
            labels: Vec::new(),
        }
    }

    pub(crate) fn add(&mut self, object: &impl BatchObject, label: impl Into<Label>) {
        object.add_to(self.pending.get_or_insert_with(Batch::new), MsgType::Add);
        self.labels.push(label.into());
    }

    pub(crate) fn delete(&mut self, object: &impl BatchObject, label: impl Into<Label>) {
        object.add_to(self.pending.get_or_insert_with(Batch::new), MsgType::Del);
        self.labels.push(label.into());
    }

    /// Adds a message encoded by [`nft_message`].
    pub(crate) fn add_raw(&mut self, message: Vec<u8>, label: impl Into<Label>) {
        self.flush();
        self.messages.extend(message);
        self.messages
            .resize(self.messages.len().next_multiple_of(4), 0);
        self.labels.push(label.into());
    }

    /// Moves rustables' pending messages over, without their batch markers.
    fn flush(&mut self) {
        let Some(batch) = self.pending.take() else {
            return;
        };
        let bytes = batch.finalize();
        let begin = u32::from_ne_bytes(bytes[..4].try_into().expect("4 bytes")) as usize;
        let end = NLMSG_HDR + NFGENMSG_LEN;
        self.messages
            .extend_from_slice(&bytes[begin.next_multiple_of(4)..bytes.len() - end]);
    }

    /// Number of messages between the batch's begin and end markers.
    pub(crate) fn len(&self) -> usize {
        self.labels.len()
    }

    /// The batch as sent: begin marker, messages numbered 1..=n, end marker.
    fn finish(mut self) -> (Vec<u8>, Vec<Label>) {
        self.flush();
        let marker = |kind: i32, seq: u32| {
            let mut m = Vec::with_capacity(NLMSG_HDR + NFGENMSG_LEN);
            m.extend_from_slice(&((NLMSG_HDR + NFGENMSG_LEN) as u32).to_ne_bytes());
            m.extend_from_slice(&(kind as u16).to_ne_bytes());
            m.extend_from_slice(&(libc::NLM_F_REQUEST as u16).to_ne_bytes());
            m.extend_from_slice(&seq.to_ne_bytes());
            m.extend_from_slice(&0u32.to_ne_bytes());
            m.extend_from_slice(&[libc::AF_UNSPEC as u8, libc::NFNETLINK_V0 as u8]);
            m.extend_from_slice(&(libc::NFNL_SUBSYS_NFTABLES as u16).to_be_bytes());
            m
        };
        let mut bytes = marker(libc::NFNL_MSG_BATCH_BEGIN, 0);
        let n = renumber(&mut self.messages, 1);
        debug_assert_eq!(n as usize, self.labels.len());
        bytes.extend(self.messages);
        bytes.extend(marker(libc::NFNL_MSG_BATCH_END, n + 1));
        (bytes, self.labels)
    }

    /// Sends the whole batch in one `sendmsg` and waits for the kernel's verdict on every
    /// message. The kernel commits all of it or none of it.
    pub(crate) fn commit(self) -> Result<(), KernelError> {
        if self.labels.is_empty() {
            return Ok(());
        }
        let (bytes, labels) = self.finish();
        let sock = netlink_socket(SockProtocol::NetlinkNetFilter)?;
        // Room for the batch, and for one acknowledgement per message: each queued ack
        // costs an skb (about 1 KiB of buffer accounting) until we read it.
        set_buffer(&sock, sockopt::SndBufForce, bytes.len() + 65536)?;
        set_buffer(&sock, sockopt::RcvBufForce, labels.len() * 2048 + (1 << 20))?;
        set_receive_timeout(&sock)?;
        send_all(&sock, &bytes)?;

        let mut verdict = BatchVerdict::new(&labels);
        read_acks(&sock, |seq, errno| verdict.ack(seq, errno))?;
        verdict.result()
    }
}

/// The kernel's verdict on a batch, gathered from its acknowledgements.
struct BatchVerdict<'a> {
    labels: &'a [Label],
    first_error: Option<KernelError>,
}

impl<'a> BatchVerdict<'a> {
    fn new(labels: &'a [Label]) -> Self {
        BatchVerdict {
            labels,
            first_error: None,
        }
    }

    /// Takes one acknowledgement; true when it is the last one to wait for.
    fn ack(&mut self, seq: u32, errno: i32) -> bool {
        if errno != 0 && self.first_error.is_none() {
            let what = seq
                .checked_sub(1)
                .and_then(|i| self.labels.get(i as usize))
                .cloned()
                .unwrap_or_else(|| Label::from(format!("message {seq}")));
            self.first_error = Some(KernelError::Refused {
                what: what.what,
                source: io::Error::from_raw_os_error(errno),
                log_rule: what.log_rule,
            });
        }
        // Messages carry sequence numbers 1..=n (0 is the batch-begin marker, and an error
        // there ends the batch). Every message asked for an ack, so n's is the last.
        seq >= self.labels.len() as u32 || (seq == 0 && errno != 0)
    }

    fn result(self) -> Result<(), KernelError> {
        match self.first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

pub(crate) fn netlink_socket(protocol: SockProtocol) -> Result<OwnedFd, KernelError> {
    socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        protocol,
    )
    .map_err(|e| KernelError::Socket(e.into()))
}

fn set_buffer<O: SetSockOpt<Val = usize>>(
    sock: &OwnedFd,
    option: O,
    size: usize,
) -> Result<(), KernelError> {
    // The kernel doubles the value it is given, as an int.
    let size = size.min(i32::MAX as usize / 2);
    setsockopt(sock, option, &size).map_err(|e| KernelError::Socket(e.into()))
}

/// The kernel answers a batch before `sendmsg` returns; a missing answer must end in an
/// error, not a hang.
/// What one read of a notification socket gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Notice {
    /// A datagram of this many bytes.
    Datagram(usize),
    /// The kernel dropped notifications (the socket overflowed): anything may have changed.
    Lost,
    /// The socket's receive timeout passed with nothing to read.
    Idle,
}

/// Reads one datagram of notifications into `buf` (again when interrupted).
pub(crate) fn next_notice(sock: &OwnedFd, buf: &mut [u8]) -> Result<Notice, KernelError> {
    loop {
        return match nix::sys::socket::recv(sock.as_raw_fd(), buf, MsgFlags::empty()) {
            Ok(n) => Ok(Notice::Datagram(n)),
            Err(Errno::EINTR) => continue,
            Err(Errno::ENOBUFS) => Ok(Notice::Lost),
            Err(Errno::EAGAIN) => Ok(Notice::Idle),
            Err(e) => Err(KernelError::Receive(e.into())),
        };
    }
}

pub(crate) fn set_receive_timeout(sock: &OwnedFd) -> Result<(), KernelError> {
    setsockopt(sock, sockopt::ReceiveTimeout, &TimeVal::new(30, 0))
        .map_err(|e| KernelError::Socket(e.into()))
}

pub(crate) fn send_all(sock: &OwnedFd, bytes: &[u8]) -> Result<(), KernelError> {
    // A netlink datagram is never split: one send of the whole batch, or an error.
    let kernel = NetlinkAddr::new(0, 0);
    let sent = sendto(sock.as_raw_fd(), bytes, &kernel, MsgFlags::empty())
        .map_err(|e| KernelError::Send(e.into()))?;
    if sent != bytes.len() {
        return Err(KernelError::Send(io::Error::other("short netlink send")));
    }
    Ok(())
}

/// One netlink message as read back: its header fields and its payload.
pub(crate) struct Answer<'a> {
    pub kind: u16,
    pub flags: u16,
    pub seq: u32,
    pub body: &'a [u8],
}

impl Answer<'_> {
    /// The errno of an NLMSG_ERROR message (0 for a success acknowledgement).
    pub(crate) fn errno(&self) -> Result<i32, KernelError> {
        // struct nlmsgerr starts with the (negative) errno.
        let bytes = self
            .body
            .get(..4)
            .ok_or_else(|| KernelError::Receive(io::Error::other("short netlink error")))?;
        Ok(-i32::from_ne_bytes(bytes.try_into().expect("4 bytes")))
    }
}

const HDR: usize = std::mem::size_of::<libc::nlmsghdr>();

/// Hands every netlink message in one datagram to `on_answer`, until it returns a result.
/// `None`: the datagram ended without one (read the next).
pub(crate) fn parse_answers<T>(
    data: &[u8],
    on_answer: &mut impl FnMut(Answer<'_>) -> Option<Result<T, KernelError>>,
) -> Option<Result<T, KernelError>> {
    let mut offset = 0;
    while offset + HDR <= data.len() {
        let field = |at: usize, len: usize| &data[offset + at..offset + at + len];
        let len = u32::from_ne_bytes(field(0, 4).try_into().expect("4 bytes")) as usize;
        if len < HDR || offset + len > data.len() {
            return Some(Err(KernelError::Receive(io::Error::other(
                "malformed netlink answer",
            ))));
        }
        let answer = Answer {
            kind: u16::from_ne_bytes(field(4, 2).try_into().expect("2 bytes")),
            flags: u16::from_ne_bytes(field(6, 2).try_into().expect("2 bytes")),
            seq: u32::from_ne_bytes(field(8, 4).try_into().expect("4 bytes")),
            body: &data[offset + HDR..offset + len],
        };
        if let Some(result) = on_answer(answer) {
            return Some(result);
        }
        offset += len.next_multiple_of(4);
    }
    None
}

/// Reads netlink messages and hands each to `on_answer` until it returns a result.
pub(crate) fn read_answers<T>(
    sock: &OwnedFd,
    mut on_answer: impl FnMut(Answer<'_>) -> Option<Result<T, KernelError>>,
) -> Result<T, KernelError> {
    let mut buf = vec![0u8; 1 << 17];
    loop {
        let n = match recv(sock.as_raw_fd(), &mut buf, MsgFlags::empty()) {
            Ok(n) => n,
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(KernelError::Receive(e.into())),
        };
        if let Some(result) = parse_answers(&buf[..n], &mut on_answer) {
            return result;
        }
    }
}

/// Reads acknowledgements, calling `on_ack(seq, errno)` for every NLMSG_ERROR (errno 0 is
/// a success ack) until it returns true. Other message types are ignored.
pub(crate) fn read_acks(
    sock: &OwnedFd,
    mut on_ack: impl FnMut(u32, i32) -> bool,
) -> Result<(), KernelError> {
    read_answers(sock, |answer| {
        if answer.kind != libc::NLMSG_ERROR as u16 {
            return None;
        }
        match answer.errno() {
            Ok(errno) => on_ack(answer.seq, errno).then_some(Ok(())),
            Err(e) => Some(Err(e)),
        }
    })
}

/// Appends one netlink attribute (type, length, payload, padding to 4 bytes).
pub(crate) fn push_attr(buf: &mut Vec<u8>, kind: u16, payload: &[u8]) {
    let len = 4 + payload.len();
    buf.extend_from_slice(&(len as u16).to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(payload);
    buf.resize(buf.len().next_multiple_of(4), 0);
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An acknowledgement as the kernel sent it (captured with `strace -e read=`): NLMSG_ERROR
    /// with errno 0, followed by the header of the request it answers.
    pub(crate) const CAPTURED_ACK: &[u8] = b"\x24\x00\x00\x00\x02\x00\x00\x01\x00\x00\x00\x00\xc2\x26\x00\x00\x00\x00\x00\x00\x2c\x00\x00\x00\x04\x0a\x05\x00\x00\x00\x00\x00\x00\x00\x00\x00";

    /// The captured ack with another sequence number and errno.
    fn ack(seq: u32, errno: i32) -> Vec<u8> {
        let mut bytes = CAPTURED_ACK.to_vec();
        bytes[8..12].copy_from_slice(&seq.to_ne_bytes());
        bytes[16..20].copy_from_slice(&(-errno).to_ne_bytes());
        bytes
    }

    fn acks_of(datagram: &[u8], labels: &[Label]) -> (Result<(), KernelError>, usize) {
        let mut verdict = BatchVerdict::new(labels);
        let mut seen = 0;
        let ended = parse_answers(datagram, &mut |answer| {
            seen += 1;
            let errno = answer.errno().expect("an error message");
            verdict
                .ack(answer.seq, errno)
                .then_some(Ok::<(), KernelError>(()))
        });
        assert!(
            matches!(ended, Some(Ok(()))),
            "the last ack was not recognised"
        );
        (verdict.result(), seen)
    }

    #[test]
    fn captured_ack_is_a_success() {
        let mut errno = None;
        let ended = parse_answers(CAPTURED_ACK, &mut |answer| {
            assert_eq!(answer.kind, libc::NLMSG_ERROR as u16);
            errno = Some(answer.errno());
            Some(Ok::<(), KernelError>(()))
        });
        assert!(matches!(ended, Some(Ok(()))));
        assert_eq!(errno.unwrap().unwrap(), 0);
    }

    #[test]
    fn a_batch_succeeds_when_every_message_is_acknowledged() {
        let labels = vec![Label::from("table inet t"), Label::from("chain forward")];
        let datagram = [ack(1, 0), ack(2, 0)].concat();
        let (result, seen) = acks_of(&datagram, &labels);
        assert!(result.is_ok());
        assert_eq!(seen, 2);
    }

    #[test]
    fn a_refused_message_is_named_by_its_label() {
        let labels = vec![Label::from("table inet t"), Label::from("chain forward")];
        let datagram = [ack(1, 0), ack(2, libc::EEXIST)].concat();
        let (result, _) = acks_of(&datagram, &labels);
        let error = result.unwrap_err().to_string();
        assert!(error.contains("chain forward"), "{error}");
        assert!(error.contains("File exists"), "{error}");
        // An error on the batch-begin marker ends the batch at once.
        let (result, seen) = acks_of(&[ack(0, libc::EPERM), ack(1, 0)].concat(), &labels);
        assert!(result.is_err());
        assert_eq!(seen, 1);
    }

    #[test]
    fn a_refused_log_rule_is_known_by_its_label_not_its_text() {
        let log_rule = Label {
            what: "rule \"limit rate 100/second log group 1\" in chain deny_isolation_n".into(),
            log_rule: true,
        };
        let labels = vec![Label::from("table inet t"), log_rule];
        let (result, _) = acks_of(&[ack(1, 0), ack(2, libc::ENOENT)].concat(), &labels);
        assert!(result.unwrap_err().refused_a_log_rule());
        // A rule whose text merely says "log" is not one.
        let labels = vec![Label::from("rule \"log prefix\" in chain x")];
        let (result, _) = acks_of(&ack(1, libc::ENOENT), &labels);
        assert!(!result.unwrap_err().refused_a_log_rule());
    }

    #[test]
    fn a_truncated_answer_is_an_error_not_a_hang() {
        let mut bytes = CAPTURED_ACK.to_vec();
        bytes[0] = 200; // claims more than the datagram holds
        let ended = parse_answers(&bytes, &mut |_| Some(Ok::<(), KernelError>(())));
        assert!(matches!(ended, Some(Err(KernelError::Receive(_)))));
    }
}
