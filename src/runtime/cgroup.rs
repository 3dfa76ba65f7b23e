//! `linux.cgroupsPath`: the cgroup (v2) the container's process, the VMM, runs in. podman and
//! containerd give it in cgroupfs form (`/libpod_parent/libpod-ID`) or, with
//! `--systemd-cgroup`, in systemd's `slice:prefix:name`; either way flint makes the directory
//! itself under `/sys/fs/cgroup` (no systemd unit: the lab and most container hosts without
//! systemd have none to ask) and `delete` removes it.

use std::path::{Path, PathBuf};

use anyhow::Context;

/// Where cgroup v2 is mounted.
const ROOT: &str = "/sys/fs/cgroup";

/// The directory `cgroups_path` names under [`ROOT`].
pub fn dir_for(cgroups_path: &str, systemd: bool) -> anyhow::Result<PathBuf> {
    let relative = if systemd {
        systemd_path(cgroups_path)?
    } else {
        // A relative path is taken from the root too: flint has no cgroup of its own to nest in.
        cgroups_path.trim_start_matches('/').to_string()
    };
    let mut dir = PathBuf::from(ROOT);
    for part in relative.split('/').filter(|p| !p.is_empty()) {
        if part == "." || part == ".." {
            anyhow::bail!("linux.cgroupsPath '{cgroups_path}' leads out of {ROOT}");
        }
        dir.push(part);
    }
    Ok(dir)
}

/// systemd's `slice:prefix:name` as a path: each dash in the slice's name is a level
/// (`a-b.slice` is `a.slice/a-b.slice`), and the unit is `prefix-name.scope`.
fn systemd_path(spec: &str) -> anyhow::Result<String> {
    let parts: Vec<&str> = spec.split(':').collect();
    let [slice, prefix, name] = parts[..] else {
        anyhow::bail!(
            "linux.cgroupsPath '{spec}' is not systemd's slice:prefix:name (given --systemd-cgroup)"
        );
    };
    let slice = if slice.is_empty() {
        "system.slice"
    } else {
        slice
    };
    let Some(stem) = slice.strip_suffix(".slice") else {
        anyhow::bail!("linux.cgroupsPath '{spec}': '{slice}' is not a .slice");
    };
    let mut path = String::new();
    if stem != "-" {
        let mut so_far = String::new();
        for piece in stem.split('-') {
            if piece.is_empty() {
                anyhow::bail!("linux.cgroupsPath '{spec}': '{slice}' is not a valid slice name");
            }
            if !so_far.is_empty() {
                so_far.push('-');
            }
            so_far.push_str(piece);
            path.push_str(&format!("/{so_far}.slice"));
        }
    }
    let unit = if prefix.is_empty() {
        format!("{name}.scope")
    } else {
        format!("{prefix}-{name}.scope")
    };
    Ok(format!("{path}/{unit}"))
}

/// Makes the cgroup's parents (the VMM makes the cgroup itself when it joins it, see
/// `--cgroup`), on a cgroup v2 hierarchy only.
pub fn prepare(dir: &Path) -> anyhow::Result<()> {
    if !flint_vmm::sandbox::cgroup::on_cgroup2(Path::new(ROOT)) {
        anyhow::bail!(
            "linux.cgroupsPath: {ROOT} is not a cgroup v2 hierarchy (flint places the VMM in cgroup v2 only)"
        );
    }
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot make the cgroup {}", parent.display()))?;
    }
    Ok(())
}

/// Enables `controller` for the children of each cgroup from the root down to `dir`'s parent
/// (as crun does), so that `dir`, once made, has the controller's files. False if a level does
/// not offer it or refuses (a cgroup with processes of its own, say).
pub fn enable_controller(dir: &Path, controller: &str) -> bool {
    let Ok(below) = dir.strip_prefix(ROOT) else {
        return false;
    };
    // The root and each of dir's ancestors below it.
    let mut levels = vec![PathBuf::from(ROOT)];
    for part in below.parent().into_iter().flat_map(Path::components) {
        let next = levels[levels.len() - 1].join(part);
        levels.push(next);
    }
    for level in levels {
        let control = level.join("cgroup.subtree_control");
        let enabled = std::fs::read_to_string(&control)
            .is_ok_and(|s| s.split_whitespace().any(|c| c == controller));
        if !enabled && std::fs::write(&control, format!("+{controller}")).is_err() {
            return false;
        }
    }
    true
}

/// Removes the container's cgroup once its process has ended (its parents stay: others may
/// share them, as with runc).
pub fn remove(dir: &Path) {
    let _ = std::fs::remove_dir(dir);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroupfs_paths_go_under_the_root() {
        assert_eq!(
            dir_for("/libpod_parent/libpod-abc", false).unwrap(),
            Path::new("/sys/fs/cgroup/libpod_parent/libpod-abc")
        );
        assert_eq!(
            dir_for("k8s/pod1", false).unwrap(),
            Path::new("/sys/fs/cgroup/k8s/pod1")
        );
        assert!(dir_for("/a/../../etc", false).is_err());
    }

    #[test]
    fn systemd_slices_nest_by_dashes() {
        assert_eq!(
            dir_for("machine.slice:libpod:abc", true).unwrap(),
            Path::new("/sys/fs/cgroup/machine.slice/libpod-abc.scope")
        );
        assert_eq!(
            dir_for("kubepods-besteffort-pod1.slice:cri-containerd:x", true).unwrap(),
            Path::new(
                "/sys/fs/cgroup/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1.slice/cri-containerd-x.scope"
            )
        );
        assert_eq!(
            dir_for(":runc:x", true).unwrap(),
            Path::new("/sys/fs/cgroup/system.slice/runc-x.scope")
        );
        assert_eq!(
            dir_for("-.slice::x", true).unwrap(),
            Path::new("/sys/fs/cgroup/x.scope")
        );
        assert!(dir_for("/plain/path", true).is_err());
        assert!(dir_for("a--b.slice:p:n", true).is_err());
        assert!(dir_for("nope:p:n", true).is_err());
    }
}
