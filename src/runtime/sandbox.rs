//! A pod's sandbox container (Kubernetes' "pause", from a CRI runtime): it runs
//! nothing of the user's and only holds the pod's namespaces, which the pod's containers join
//! by path (`/proc/PID/ns/...` of its process, or the engine's `/run/netns/...`). flint boots
//! no VM for it: its container process (`create`'s fork) joins the pod's network namespace,
//! makes the pod's UTS namespace (with the sandbox's hostname, which the pod's VMs take) and
//! IPC namespace, and waits for a signal, as pause does. The pod's containers are microVMs;
//! the pod's network goes to the one that connects it (see `flint_oci::network`).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::path::PathBuf;

use anyhow::Context;

/// The annotations by which engines mark a pod's sandbox, with the value that does.
const SANDBOX_ANNOTATIONS: &[(&str, &str)] = &[
    // containerd's CRI plugin.
    ("io.kubernetes.cri.container-type", "sandbox"),
    // CRI-O. (podman 4.3's pod infra container carries none of these: only io.podman.*.)
    ("io.kubernetes.cri-o.ContainerType", "sandbox"),
    // dockershim and cri-dockerd.
    ("io.kubernetes.docker.type", "podsandbox"),
];

/// Whether a container with these annotations is a pod's sandbox.
pub fn is_sandbox(annotations: &BTreeMap<String, String>) -> bool {
    SANDBOX_ANNOTATIONS
        .iter()
        .any(|(key, value)| annotations.get(*key).map(String::as_str) == Some(*value))
}

/// What the sandbox's config asks it to hold.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Holds {
    /// The pod's network namespace (a path), if the engine made one.
    netns: Option<PathBuf>,
    /// A UTS namespace of its own (named `hostname`), and an IPC one.
    new_uts: bool,
    new_ipc: bool,
    hostname: Option<String>,
}

impl Holds {
    /// Reads them from the sandbox's config.json (parsed once, by `create`), so a bad one fails
    /// `create` before anything is forked.
    pub fn from_config(value: &serde_json::Value) -> anyhow::Result<Holds> {
        let mut holds = Holds {
            hostname: value
                .get("hostname")
                .and_then(|h| h.as_str())
                .filter(|h| !h.is_empty())
                .map(str::to_string),
            ..Holds::default()
        };
        let namespaces = value
            .pointer("/linux/namespaces")
            .and_then(|n| n.as_array())
            .cloned()
            .unwrap_or_default();
        for ns in namespaces {
            let kind = ns.get("type").and_then(|t| t.as_str()).unwrap_or_default();
            let path = ns
                .get("path")
                .and_then(|p| p.as_str())
                .filter(|p| !p.is_empty());
            match (kind, path) {
                ("network", Some(p)) => holds.netns = Some(PathBuf::from(p)),
                ("uts", None) => holds.new_uts = true,
                ("ipc", None) => holds.new_ipc = true,
                _ => {}
            }
        }
        if let Some(h) = &holds.hostname {
            if h.len() > 64 || h.contains('\0') {
                anyhow::bail!("hostname: '{h}' is not a hostname (at most 64 bytes)");
            }
        }
        Ok(holds)
    }
}

/// The sandbox's container process: takes up the pod's namespaces, reports ready, and once
/// started waits until a signal ends it (TERM, INT, HUP or KILL, by their default action).
/// Returns only if it could not get ready.
pub fn hold(gate: &mut super::Gate, holds: &Holds) -> anyhow::Result<Infallible> {
    if let Some(dir) = &gate.cgroup {
        flint_vmm::sandbox::cgroup::join(dir, &[])?;
    }
    if let Some(netns) = &holds.netns {
        flint_vmm::sandbox::jail::enter_netns(netns)?;
    }
    let mut flags = 0;
    if holds.new_uts {
        flags |= libc::CLONE_NEWUTS;
    }
    if holds.new_ipc {
        flags |= libc::CLONE_NEWIPC;
    }
    // SAFETY: unshare takes flags only; this process has one thread here.
    if flags != 0 && unsafe { libc::unshare(flags) } < 0 {
        return Err(std::io::Error::last_os_error())
            .context("cannot make the pod's UTS and IPC namespaces");
    }
    if let (true, Some(name)) = (holds.new_uts, &holds.hostname) {
        // SAFETY: sethostname reads len bytes of the name (checked above: ≤ 64, no NUL).
        if unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) } < 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("cannot name the pod '{name}'"));
        }
    }
    for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
        // SAFETY: restoring a signal's default action.
        unsafe { libc::signal(sig, libc::SIG_DFL) };
    }
    gate.ready().context("cannot report to create")?;
    gate.wait_for_start()
        .context("cannot take the start request")?;
    loop {
        // SAFETY: pause only waits for a signal.
        unsafe { libc::pause() };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engines_mark_their_sandboxes_by_annotation() {
        let with = |k: &str, v: &str| BTreeMap::from([(k.to_string(), v.to_string())]);
        assert!(is_sandbox(&with(
            "io.kubernetes.cri.container-type",
            "sandbox"
        )));
        assert!(is_sandbox(&with(
            "io.kubernetes.cri-o.ContainerType",
            "sandbox"
        )));
        assert!(is_sandbox(&with("io.kubernetes.docker.type", "podsandbox")));
        assert!(!is_sandbox(&with(
            "io.kubernetes.cri.container-type",
            "container"
        )));
        assert!(!is_sandbox(&with(
            "io.kubernetes.cri-o.ContainerType",
            "container"
        )));
        assert!(!is_sandbox(&BTreeMap::new()));
    }

    #[test]
    fn a_sandbox_holds_its_network_and_makes_its_uts_and_ipc() {
        let config: serde_json::Value = serde_json::from_str(
            r#"{"hostname": "pod1", "linux": {"namespaces": [
                {"type": "network", "path": "/run/netns/cni-1"}, {"type": "uts"},
                {"type": "ipc"}, {"type": "pid"}, {"type": "mount"}]}}"#,
        )
        .unwrap();
        assert_eq!(
            Holds::from_config(&config).unwrap(),
            Holds {
                netns: Some(PathBuf::from("/run/netns/cni-1")),
                new_uts: true,
                new_ipc: true,
                hostname: Some("pod1".into()),
            }
        );
        let long = serde_json::json!({ "hostname": "x".repeat(65) });
        assert!(Holds::from_config(&long)
            .unwrap_err()
            .to_string()
            .contains("not a hostname"));
    }
}
