//! Sending one nftables transaction (a netlink batch) and reading every acknowledgement.
//!
//! rustables builds the messages; we send them ourselves because a large whitelist makes a
//! batch far bigger than the default socket buffers (the kernel answers EMSGSIZE, or drops
//! acknowledgements with ENOBUFS), and because a failed batch should name the object the
//! kernel refused, not just an errno.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use rustables::{Batch, MsgType};

use super::NftError;

/// A batch under construction, with a human label for each message so that an error can
/// say which object the kernel refused.
pub(crate) struct Transaction {
    batch: Batch,
    labels: Vec<String>,
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

impl Transaction {
    pub(crate) fn new() -> Self {
        Transaction {
            batch: Batch::new(),
            labels: Vec::new(),
        }
    }

    pub(crate) fn add(&mut self, object: &impl BatchObject, label: impl Into<String>) {
        object.add_to(&mut self.batch, MsgType::Add);
        self.labels.push(label.into());
    }

    pub(crate) fn delete(&mut self, object: &impl BatchObject, label: impl Into<String>) {
        object.add_to(&mut self.batch, MsgType::Del);
        self.labels.push(label.into());
    }

    /// Number of messages between the batch's begin and end markers.
    pub(crate) fn len(&self) -> usize {
        self.labels.len()
    }

    /// Sends the whole batch in one `sendmsg` and waits for the kernel's verdict on every
    /// message. The kernel commits all of it or none of it.
    pub(crate) fn commit(self) -> Result<(), NftError> {
        if self.labels.is_empty() {
            return Ok(());
        }
        let bytes = self.batch.finalize();
        let sock = netlink_socket(libc::NETLINK_NETFILTER)?;
        // Room for the batch, and for one acknowledgement per message: each queued ack
        // costs an skb (about 1 KiB of buffer accounting) until we read it.
        set_buffer(&sock, libc::SO_SNDBUFFORCE, bytes.len() + 65536)?;
        set_buffer(
            &sock,
            libc::SO_RCVBUFFORCE,
            self.labels.len() * 2048 + (1 << 20),
        )?;
        set_receive_timeout(&sock)?;
        send_all(&sock, &bytes)?;

        // Messages carry sequence numbers 1..=n (0 is the batch-begin marker). Every message
        // asked for an ack, so the one for n is the last we will get.
        let last = self.labels.len() as u32;
        let mut first_error: Option<NftError> = None;
        read_acks(&sock, |seq, errno| {
            if errno != 0 && first_error.is_none() {
                let what = seq
                    .checked_sub(1)
                    .and_then(|i| self.labels.get(i as usize))
                    .cloned()
                    .unwrap_or_else(|| format!("message {seq}"));
                first_error = Some(NftError::Refused {
                    what,
                    source: io::Error::from_raw_os_error(errno),
                });
            }
            // seq 0 is the batch-begin marker: an error there ends the batch.
            seq >= last || (seq == 0 && errno != 0)
        })?;
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

pub(crate) fn netlink_socket(protocol: libc::c_int) -> Result<OwnedFd, NftError> {
    // SAFETY: plain socket(2) call; the returned descriptor is owned by OwnedFd at once.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            protocol,
        )
    };
    if fd < 0 {
        return Err(NftError::Socket(io::Error::last_os_error()));
    }
    // SAFETY: fd is a fresh, valid descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn set_buffer(sock: &OwnedFd, option: libc::c_int, size: usize) -> Result<(), NftError> {
    let value = libc::c_int::try_from(size).unwrap_or(libc::c_int::MAX / 2);
    // SAFETY: value lives for the duration of the call, and its size is passed along.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            option,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(NftError::Socket(io::Error::last_os_error()));
    }
    Ok(())
}

/// The kernel answers a batch before `sendmsg` returns; a missing answer must end in an
/// error, not a hang.
pub(crate) fn set_receive_timeout(sock: &OwnedFd) -> Result<(), NftError> {
    let timeout = libc::timeval {
        tv_sec: 30,
        tv_usec: 0,
    };
    // SAFETY: timeout lives for the duration of the call, and its size is passed along.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&timeout as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(NftError::Socket(io::Error::last_os_error()));
    }
    Ok(())
}

pub(crate) fn send_all(sock: &OwnedFd, bytes: &[u8]) -> Result<(), NftError> {
    // A netlink datagram is never split: one send of the whole batch, or an error.
    // SAFETY: the buffer is valid for its length; the kernel address is the zeroed
    // sockaddr_nl (pid 0).
    let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    let sent = unsafe {
        libc::sendto(
            sock.as_raw_fd(),
            bytes.as_ptr().cast(),
            bytes.len(),
            0,
            (&addr as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    if sent < 0 {
        return Err(NftError::Send(io::Error::last_os_error()));
    }
    if sent as usize != bytes.len() {
        return Err(NftError::Send(io::Error::other("short netlink send")));
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
    pub fn errno(&self) -> Result<i32, NftError> {
        // struct nlmsgerr starts with the (negative) errno.
        let bytes = self
            .body
            .get(..4)
            .ok_or_else(|| NftError::Receive(io::Error::other("short netlink error")))?;
        Ok(-i32::from_ne_bytes(bytes.try_into().expect("4 bytes")))
    }
}

/// Reads netlink messages and hands each to `on_answer` until it returns a result.
pub(crate) fn read_answers<T>(
    sock: &OwnedFd,
    mut on_answer: impl FnMut(Answer<'_>) -> Option<Result<T, NftError>>,
) -> Result<T, NftError> {
    const HDR: usize = std::mem::size_of::<libc::nlmsghdr>();
    let mut buf = vec![0u8; 1 << 17];
    loop {
        // SAFETY: buf is valid for writes of its whole length.
        let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(NftError::Receive(err));
        }
        let data = &buf[..n as usize];
        let mut offset = 0;
        while offset + HDR <= data.len() {
            let field = |at: usize, len: usize| &data[offset + at..offset + at + len];
            let len = u32::from_ne_bytes(field(0, 4).try_into().expect("4 bytes")) as usize;
            if len < HDR || offset + len > data.len() {
                return Err(NftError::Receive(io::Error::other(
                    "malformed netlink answer",
                )));
            }
            let answer = Answer {
                kind: u16::from_ne_bytes(field(4, 2).try_into().expect("2 bytes")),
                flags: u16::from_ne_bytes(field(6, 2).try_into().expect("2 bytes")),
                seq: u32::from_ne_bytes(field(8, 4).try_into().expect("4 bytes")),
                body: &data[offset + HDR..offset + len],
            };
            if let Some(result) = on_answer(answer) {
                return result;
            }
            offset += len.next_multiple_of(4);
        }
    }
}

/// Reads acknowledgements, calling `on_ack(seq, errno)` for every NLMSG_ERROR (errno 0 is
/// a success ack) until it returns true. Other message types are ignored.
pub(crate) fn read_acks(
    sock: &OwnedFd,
    mut on_ack: impl FnMut(u32, i32) -> bool,
) -> Result<(), NftError> {
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
