//! Docker's Swarm conventions, in one place: the names it gives an overlay network's
//! namespace, bridge and VXLAN port on each node, where that namespace is mounted, and the
//! bridge its containers reach the outside through.

use std::path::{Path, PathBuf};

use super::Overlay;
use crate::firewall::{mounted, nsfs_mounts};

/// The names Docker gives an overlay network's bridge and VXLAN device in its namespace
/// (measured with Docker 20.10): used until the kernel shows them.
pub const OVERLAY_BRIDGE: (&str, &str) = ("br0", "vxlan0");

/// The bridge through which the containers of overlay networks reach the outside (and
/// their own node).
pub const GWBRIDGE: &str = "docker_gwbridge";

/// Docker names an overlay network's namespace `<epoch>-<network id>` cut to 12 bytes
/// (libnetwork's GenerateKey): `1-` and 10 characters of the id, `10-` and 9. The epoch
/// counts up each time Docker builds the namespace again while the network stays on the
/// node.
const OVERLAY_NAME_LEN: usize = 12;

/// The epoch of `name` when it is the name Docker gives the namespace of the overlay
/// network `id` (its whole id).
pub fn overlay_epoch(name: &str, id: &str) -> Option<u32> {
    let (epoch, _) = name.split_once('-')?;
    let epoch: u32 = epoch.parse().ok()?;
    let full = format!("{epoch}-{id}");
    (full.get(..OVERLAY_NAME_LEN.min(full.len())) == Some(name)).then_some(epoch)
}

/// Whether `name` has the form of an overlay network's namespace (`<epoch>-…`, 12 bytes).
pub fn is_overlay_name(name: &str) -> bool {
    name.len() == OVERLAY_NAME_LEN
        && name
            .split_once('-')
            .is_some_and(|(epoch, rest)| epoch.parse::<u32>().is_ok() && !rest.is_empty())
}

/// Where Docker mounted the namespace of the overlay network `id`: in `sandboxes`
/// (Docker's directory of sandbox namespaces) when known, else wherever the kernel's
/// mount table shows one, provided all are in one directory (one Docker on the host).
/// The highest epoch wins.
/// Fails when `sandboxes` cannot be read (without CAP_DAC_READ_SEARCH, Docker's
/// exec-root is root's alone).
pub fn overlay_namespace(sandboxes: Option<&Path>, id: &str) -> std::io::Result<Option<PathBuf>> {
    let candidates: Vec<PathBuf> = match sandboxes {
        Some(dir) => std::fs::read_dir(dir)?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| mounted(p))
            .collect(),
        None => {
            let table = std::fs::read("/proc/self/mountinfo")?;
            nsfs_mounts(&String::from_utf8_lossy(&table))
        }
    };
    let mut found: Vec<(u32, PathBuf)> = candidates
        .into_iter()
        .filter_map(|p| {
            let epoch = overlay_epoch(&p.file_name()?.to_string_lossy(), id)?;
            Some((epoch, p))
        })
        .collect();
    let first_dir = found
        .first()
        .and_then(|(_, p)| p.parent().map(Path::to_owned));
    if found
        .iter()
        .any(|(_, p)| p.parent() != first_dir.as_deref())
    {
        return Ok(None); // several Dockers: which one is ours is not the mount table's to say
    }
    found.sort();
    Ok(found.pop().map(|(_, p)| p))
}

/// The overlay network `id` on this node: its namespace as [`overlay_namespace`] finds it
/// in `sandboxes` (or the mount table), or why it cannot be looked for.
pub(crate) fn find_overlay(sandboxes: Option<&Path>, id: &str) -> Overlay {
    match overlay_namespace(sandboxes, id) {
        Ok(netns) => Overlay {
            netns,
            problem: None,
        },
        Err(e) => Overlay {
            netns: None,
            problem: Some(format!(
                "cannot read Docker's namespaces in {}: {e} (only root may search Docker's \
                 exec-root: a Swarm node needs the swarm drop-in, see trafficjam(8))",
                sandboxes.map_or_else(
                    || "/proc/self/mountinfo".into(),
                    |d| d.display().to_string()
                )
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_namespace_names_carry_an_epoch_and_the_id() {
        let id = "b8ynlq5efro3ub4w95kdzzy87";
        assert_eq!(overlay_epoch("1-b8ynlq5efr", id), Some(1));
        // Cut to 12 bytes: a longer epoch leaves fewer characters of the id.
        assert_eq!(overlay_epoch("12-b8ynlq5ef", id), Some(12));
        assert_eq!(overlay_epoch("12-b8ynlq5efr", id), None);
        assert_eq!(overlay_epoch("1-k1jj8ai5bw", id), None);
        assert_eq!(overlay_epoch("lb_b8ynlq5ef", id), None);
        assert_eq!(overlay_epoch("x-b8ynlq5efr", id), None);
        assert!(is_overlay_name("1-b8ynlq5efr") && is_overlay_name("12-b8ynlq5ef"));
        assert!(!is_overlay_name("0123456789ab") && !is_overlay_name("lb_b8ynlq5ef"));
        assert!(!is_overlay_name("ingress_sbox"));
    }

    #[test]
    fn a_directory_that_cannot_be_read_is_said_with_the_reason() {
        let dir = std::env::temp_dir().join(format!("tj-no-such-dir-{}", std::process::id()));
        let overlay = find_overlay(Some(&dir), "b8ynlq5efro3ub4w95kdzzy87");
        assert_eq!(overlay.netns, None);
        let problem = overlay.problem.unwrap();
        assert!(
            problem.starts_with(&format!(
                "cannot read Docker's namespaces in {}: ",
                dir.display()
            )),
            "{problem}"
        );
        assert!(
            problem.ends_with(
                " (only root may search Docker's exec-root: a Swarm node needs the swarm \
                 drop-in, see trafficjam(8))"
            ),
            "{problem}"
        );
    }
}
