//! A client of the control API (what `flint ctl` uses): one request per connection, with any
//! file descriptors sent alongside its bytes, and the response's status and body.

use std::io::Read;
use std::os::fd::RawFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use vmm_sys_util::sock_ctrl_msg::ScmSocket;

use super::http::Fault;

/// How long a response may take (a snapshot of a large guest writes its memory first).
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(600);
const MAX_RESPONSE: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach flint's API at {path} (is flint running with --api-sock {path}?)")]
    Connect {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("sending the request failed")]
    Send(#[source] std::io::Error),
    #[error("reading the response failed")]
    Receive(#[source] std::io::Error),
    #[error("flint's response is not HTTP: {0}")]
    BadResponse(String),
    /// The VM refused: the status and flint's `fault_message`.
    #[error("{message} (HTTP {status})")]
    Refused { status: u16, message: String },
}

/// A successful response: its status and body (empty for 204).
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: String,
}

/// Sends one request to the API at `socket`; a 4xx or 5xx is [`ClientError::Refused`].
pub fn request(
    socket: &Path,
    method: &str,
    path: &str,
    body: Option<&str>,
    fds: &[RawFd],
) -> Result<Reply, ClientError> {
    let stream = UnixStream::connect(socket).map_err(|source| ClientError::Connect {
        path: socket.display().to_string(),
        source,
    })?;
    stream
        .set_read_timeout(Some(RESPONSE_TIMEOUT))
        .map_err(ClientError::Receive)?;
    let body = body.unwrap_or("");
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    if !body.is_empty() {
        head.push_str("Content-Type: application/json\r\n");
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    let bytes = head.into_bytes();
    // The descriptors go with the first bytes; the rest follows plainly.
    let sent = stream
        .send_with_fds(&[&bytes[..]], fds)
        .map_err(|e| ClientError::Send(std::io::Error::from_raw_os_error(e.errno())))?;
    std::io::Write::write_all(&mut &stream, &bytes[sent..]).map_err(ClientError::Send)?;
    let mut response = Vec::new();
    (&stream)
        .take(MAX_RESPONSE as u64)
        .read_to_end(&mut response)
        .map_err(ClientError::Receive)?;
    parse_response(&response)
}

fn parse_response(bytes: &[u8]) -> Result<Reply, ClientError> {
    let mut headers = [httparse::EMPTY_HEADER; 16];
    let mut resp = httparse::Response::new(&mut headers);
    let head = match resp.parse(bytes) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            return Err(ClientError::BadResponse(
                "the connection closed before a whole response".into(),
            ))
        }
        Err(e) => return Err(ClientError::BadResponse(e.to_string())),
    };
    let status = resp.code.unwrap_or(0);
    let body = String::from_utf8_lossy(&bytes[head..]).into_owned();
    if status >= 400 {
        let message = serde_json::from_str::<Fault>(&body)
            .map(|f| f.fault_message)
            .unwrap_or(body);
        return Err(ClientError::Refused { status, message });
    }
    Ok(Reply { status, body })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_carry_flint_s_message_and_status() {
        let r = parse_response(
            b"HTTP/1.1 409 Conflict\r\nContent-Length: 26\r\n\r\n{\"fault_message\":\"paused\"}",
        );
        match r {
            Err(ClientError::Refused { status, message }) => {
                assert_eq!((status, message.as_str()), (409, "paused"))
            }
            other => panic!("{other:?}"),
        }
        let ok = parse_response(b"HTTP/1.1 204 No Content\r\n\r\n").unwrap();
        assert_eq!((ok.status, ok.body.as_str()), (204, ""));
        assert!(matches!(
            parse_response(b"HTTP/1.1 200"),
            Err(ClientError::BadResponse(_))
        ));
    }
}
