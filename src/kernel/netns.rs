//! Entering a Swarm overlay network's namespace: Docker keeps one per overlay network on
//! each node (`<exec-root>/netns/<epoch>-<id>`, see `docker::swarm`), with the network's bridge and its VXLAN port.
//! Netlink sockets belong to the namespace of the thread that opens them, so the firewall
//! worker enters the namespace, makes its calls as in the host's, and comes back.
//!
//! setns(2) on a network namespace needs CAP_SYS_ADMIN.

use std::fs::File;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use nix::sched::{CloneFlags, setns};
use nix::sys::statfs::{NSFS_MAGIC, fstatfs};

/// Why a namespace could not be entered.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// The file is there but no namespace is mounted on it: Docker removed the namespace
    /// (its file may linger for a minute), or has not mounted it yet.
    #[error("{0}: no namespace (any more)")]
    Gone(PathBuf),
    #[error(
        "cannot open {path}: {source} (only root may search Docker's exec-root: a Swarm node \
         needs CAP_DAC_READ_SEARCH, see the swarm drop-in in trafficjam(8))"
    )]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "cannot enter {path}: {source} (entering a namespace needs CAP_SYS_ADMIN: enable the \
         swarm drop-in, see trafficjam(8))"
    )]
    Enter {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
}

/// The calling thread's network namespace, to come back to.
#[derive(Debug)]
pub struct Home(File);

impl Home {
    pub fn here() -> std::io::Result<Home> {
        File::open("/proc/thread-self/ns/net").map(Home)
    }

    /// Moves the calling thread into the network namespace mounted at `path`.
    pub fn enter(&self, path: &Path) -> Result<(), NetnsError> {
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(NetnsError::Gone(path.to_owned()));
            }
            Err(source) => {
                return Err(NetnsError::Open {
                    path: path.to_owned(),
                    source,
                });
            }
        };
        // An unmounted namespace file is a plain empty file: setns would say EINVAL.
        match fstatfs(file.as_fd()) {
            Ok(fs) if fs.filesystem_type() == NSFS_MAGIC => {}
            _ => return Err(NetnsError::Gone(path.to_owned())),
        }
        setns(file.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|source| NetnsError::Enter {
            path: path.to_owned(),
            source,
        })
    }

    /// Comes back. A thread that cannot would act on the wrong namespace: that is fatal.
    pub fn leave(&self) {
        if let Err(e) = setns(self.0.as_fd(), CloneFlags::CLONE_NEWNET) {
            eprintln!("trafficjam: cannot return to the host's network namespace: {e}");
            std::process::abort();
        }
    }
}

/// Whether a network namespace is mounted at `path` now.
pub fn mounted(path: &Path) -> bool {
    File::open(path)
        .and_then(|f| fstatfs(f.as_fd()).map_err(std::io::Error::from))
        .is_ok_and(|fs| fs.filesystem_type() == NSFS_MAGIC)
}

/// Every nsfs mount point of a mount table (`/proc/self/mountinfo`'s text).
pub fn nsfs_mounts(table: &str) -> Vec<PathBuf> {
    table.lines().filter_map(nsfs_mount_point).collect()
}

/// The mount point of a mountinfo line that mounts nsfs.
fn nsfs_mount_point(line: &str) -> Option<PathBuf> {
    let (mount, fs) = line.split_once(" - ")?;
    if fs.split(' ').next()? != "nsfs" {
        return None;
    }
    let point = mount.split(' ').nth(4)?;
    // Spaces, tabs, newlines and backslashes are written as octal escapes.
    let mut out = Vec::new();
    let bytes = point.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            if let Ok(v) = u8::from_str_radix(&point[i + 1..i + 4], 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    Some(PathBuf::from(
        <std::ffi::OsString as std::os::unix::ffi::OsStringExt>::from_vec(out),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nsfs_mount_points_are_read_and_unescaped() {
        let line = "615 29 0:4 net:[4026532577] /run/docker/netns/1-b8ynlq5efr rw shared:311 - nsfs nsfs rw";
        assert_eq!(
            nsfs_mount_point(line),
            Some(PathBuf::from("/run/docker/netns/1-b8ynlq5efr"))
        );
        let spaced = "615 29 0:4 net:[4026532577] /run/my\\040docker/1-x rw - nsfs nsfs rw";
        assert_eq!(
            nsfs_mount_point(spaced),
            Some(PathBuf::from("/run/my docker/1-x"))
        );
        let other = "25 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw";
        assert_eq!(nsfs_mount_point(other), None);
    }
}
