//! The control API (`--api-sock PATH`): HTTP/1.1 with JSON bodies on a Unix socket, in
//! Firecracker's style, served by the VMM's control event loop. `resources/api/flint-api.yaml`
//! is its OpenAPI description; [`client`] is `flint ctl`.
//!
//! | request                                     | what it does                              |
//! |---------------------------------------------|-------------------------------------------|
//! | `GET /`                                     | the VM's state (`Running`, `Paused`)      |
//! | `PATCH /vm` `{"state":"Paused"\|"Resumed"}` | pauses or resumes every vCPU              |
//! | `PUT /actions` `{"action_type":"Shutdown"}` | presses the guest's ACPI power button     |
//! | `PUT /snapshot/create` `{"stop":false}`     | writes a snapshot into the two files sent |
//!
//! A snapshot's files come with the request as open file descriptors (SCM_RIGHTS: the state
//! file, then the memory file), not as paths: flint, confined, can open no path, and the
//! client creates the files with its own rights where it may (`flint ctl snapshot` does).
//!
//! The socket is made 0600 (only its owner may drive the VM) and removed when flint exits by a
//! small process of its own ([`socket::ApiSocket`]): flint itself can no longer remove any file
//! by then (Landlock). A client can make flint hold at most [`MAX_CONNECTIONS`] connections
//! (the one idle longest makes room for a new one) and [`http::MAX_REQUEST`] bytes on each.

pub mod client;
pub mod http;
pub mod server;
pub mod socket;

use serde::{Deserialize, Serialize};

use http::{Request, Response};

/// Connections held at once; a new one beyond closes the one idle longest.
pub const MAX_CONNECTIONS: usize = 16;

/// `GET /`: what the VM is doing (Firecracker's `InstanceInfo` names).
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct InstanceInfo {
    pub app_name: String,
    pub state: VmState,
    pub vmm_version: String,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum VmState {
    Running,
    Paused,
}

/// `PATCH /vm`.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct VmStateChange {
    pub state: RequestedState,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum RequestedState {
    Paused,
    Resumed,
}

/// `PUT /actions`.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Action {
    pub action_type: ActionType,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum ActionType {
    /// Press the guest's ACPI power button: it shuts itself down cleanly.
    Shutdown,
}

/// `PUT /snapshot/create`.
#[derive(Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SnapshotCreate {
    /// End the VM once the snapshot is durable (flint exits 0).
    #[serde(default)]
    pub stop: bool,
}

/// What a request asks the VM to do.
#[derive(Debug)]
pub enum Command {
    Info,
    Pause,
    Resume,
    Shutdown,
    Snapshot {
        stop: bool,
        state: std::fs::File,
        memory: std::fs::File,
    },
}

/// The VM side of the API: carries out one command.
pub trait Controller {
    fn handle(&mut self, command: Command) -> Response;
}

/// Turns a request (and the files sent with it) into a command, or the error response that
/// says what was wrong with it.
pub fn route(req: &Request, files: Vec<std::fs::File>) -> Result<Command, Response> {
    let path = req.path.split('?').next().unwrap_or("");
    if (req.method.as_str(), path) == ("PUT", "/snapshot/create") {
        let args: SnapshotCreate = if req.body.is_empty() {
            SnapshotCreate::default()
        } else {
            body(req)?
        };
        let mut files = files.into_iter();
        return match (files.next(), files.next()) {
            (Some(state), Some(memory)) => Ok(Command::Snapshot {
                stop: args.stop,
                state,
                memory,
            }),
            _ => Err(Response::error(
                400,
                "PUT /snapshot/create needs two open files sent with the request (SCM_RIGHTS): \
                 the state file, then the memory file (flint ctl snapshot --out DIR does this)",
            )),
        };
    }
    if !files.is_empty() {
        return Err(Response::error(
            400,
            format!("{} {path} takes no file descriptors", req.method),
        ));
    }
    match (req.method.as_str(), path) {
        ("GET", "/") => Ok(Command::Info),
        ("PATCH", "/vm") => match body::<VmStateChange>(req)?.state {
            RequestedState::Paused => Ok(Command::Pause),
            RequestedState::Resumed => Ok(Command::Resume),
        },
        ("PUT", "/actions") => match body::<Action>(req)?.action_type {
            ActionType::Shutdown => Ok(Command::Shutdown),
        },
        (_, "/" | "/vm" | "/actions" | "/snapshot/create") => Err(Response::error(
            405,
            format!(
                "{} {path} is not served (see the API description)",
                req.method
            ),
        )),
        _ => Err(Response::error(404, format!("no such resource: {path}"))),
    }
}

/// The request's JSON body as a `T`, or a 400 that says what is wrong with it.
fn body<T: serde::de::DeserializeOwned>(req: &Request) -> Result<T, Response> {
    serde_json::from_slice(&req.body)
        .map_err(|e| Response::error(400, format!("{} {}: bad body: {e}", req.method, req.path)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: &str, path: &str, body: &str) -> Request {
        Request {
            method: method.into(),
            path: path.into(),
            body: body.as_bytes().to_vec(),
            close: false,
        }
    }

    fn route(req: &Request) -> Result<Command, Response> {
        super::route(req, Vec::new())
    }

    fn fault(r: Result<Command, Response>) -> (u16, String) {
        let r = r.expect_err("an error response");
        let f: http::Fault = serde_json::from_str(r.body.as_deref().unwrap()).unwrap();
        (r.status, f.fault_message)
    }

    #[test]
    fn routes_map_to_commands() {
        assert!(matches!(route(&req("GET", "/", "")), Ok(Command::Info)));
        assert!(matches!(
            route(&req("PATCH", "/vm", r#"{"state":"Paused"}"#)),
            Ok(Command::Pause)
        ));
        assert!(matches!(
            route(&req("PATCH", "/vm", r#"{"state": "Resumed"}"#)),
            Ok(Command::Resume)
        ));
        assert!(matches!(
            route(&req("PUT", "/actions", r#"{"action_type":"Shutdown"}"#)),
            Ok(Command::Shutdown)
        ));
    }

    #[test]
    fn the_openapi_description_names_every_route_and_value() {
        let yaml = include_str!("../../../../resources/api/flint-api.yaml");
        for needle in [
            "\n  /:\n    get:",
            "\n  /vm:\n    patch:",
            "\n  /actions:\n    put:",
            "\n  /snapshot/create:\n    put:",
            "capture_us",
            "memory_bytes_written",
            "enum: [Running, Paused]",
            "enum: [Paused, Resumed]",
            "enum: [Shutdown]",
            "fault_message",
        ] {
            assert!(yaml.contains(needle), "flint-api.yaml lacks {needle:?}");
        }
    }

    #[test]
    fn a_snapshot_request_needs_its_two_files() {
        let (status, msg) = fault(route(&req("PUT", "/snapshot/create", "")));
        assert_eq!(status, 400);
        assert!(msg.contains("two open files"), "{msg}");
        let files = || {
            vec![
                std::fs::File::open("/dev/null").unwrap(),
                std::fs::File::open("/dev/null").unwrap(),
            ]
        };
        let r = super::route(&req("PUT", "/snapshot/create", r#"{"stop":true}"#), files());
        assert!(matches!(r, Ok(Command::Snapshot { stop: true, .. })));
        let r = super::route(&req("PUT", "/snapshot/create", ""), files());
        assert!(matches!(r, Ok(Command::Snapshot { stop: false, .. })));
        let r = super::route(&req("PUT", "/snapshot/create", r#"{"out":"x"}"#), files());
        assert_eq!(fault(r).0, 400);
        assert_eq!(fault(route(&req("GET", "/snapshot/create", ""))).0, 405);
    }

    #[test]
    fn bad_requests_say_what_was_wrong() {
        let (status, msg) = fault(route(&req("PATCH", "/vm", r#"{"state":"Sleeping"}"#)));
        assert_eq!(status, 400);
        assert!(msg.contains("unknown variant `Sleeping`"), "{msg}");
        let (status, msg) = fault(route(&req("PATCH", "/vm", r#"{"state":"Paused","x":1}"#)));
        assert_eq!(status, 400);
        assert!(msg.contains("unknown field `x`"), "{msg}");
        let (status, _) = fault(route(&req("PATCH", "/vm", "")));
        assert_eq!(status, 400);
        assert_eq!(fault(route(&req("DELETE", "/vm", ""))).0, 405);
        assert_eq!(fault(route(&req("GET", "/nope", ""))).0, 404);
    }
}
