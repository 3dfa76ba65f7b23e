//! The control API's HTTP/1.1: one request parsed from what a connection has sent so far
//! (`httparse` for the head, `Content-Length` for the body; no chunked bodies), and responses
//! with a JSON body. Everything a client sends is bounded: [`MAX_REQUEST`] bytes in all.

use serde::Serialize;

/// The largest request (head and body) flint reads; a larger one is refused (413).
pub const MAX_REQUEST: usize = 16 * 1024;
const MAX_HEADERS: usize = 32;

/// One parsed request.
#[derive(Debug, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub body: Vec<u8>,
    /// The client asked to close the connection after this response.
    pub close: bool,
}

/// What the bytes received so far hold.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// Not a whole request yet.
    Incomplete,
    /// A request, and how many bytes of the buffer it took.
    Request(Request, usize),
    /// Not a request flint serves; answer this and close.
    Bad(Response),
}

/// Parses the first request in `buf`.
pub fn parse(buf: &[u8]) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() >= MAX_REQUEST => {
            return Parsed::Bad(Response::error(413, "the request head is too large"));
        }
        Ok(httparse::Status::Partial) => return Parsed::Incomplete,
        Err(httparse::Error::TooManyHeaders) => {
            return Parsed::Bad(Response::error(
                431,
                format!("more than {MAX_HEADERS} headers"),
            ));
        }
        Err(e) => return Parsed::Bad(Response::error(400, format!("not an HTTP request: {e}"))),
    };
    let mut content_length = 0usize;
    let mut close = req.version == Some(0);
    for h in req.headers.iter() {
        let value = String::from_utf8_lossy(h.value);
        let value = value.trim();
        if h.name.eq_ignore_ascii_case("content-length") {
            match value.parse::<usize>() {
                Ok(n) => content_length = n,
                Err(_) => return Parsed::Bad(Response::error(400, "a bad Content-Length")),
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Parsed::Bad(Response::error(
                411,
                "send the body with a Content-Length (chunked bodies are not accepted)",
            ));
        } else if h.name.eq_ignore_ascii_case("connection") {
            close = value.eq_ignore_ascii_case("close");
        }
    }
    let Some(total) = head_len
        .checked_add(content_length)
        .filter(|t| *t <= MAX_REQUEST)
    else {
        return Parsed::Bad(Response::error(
            413,
            format!("the request is larger than {MAX_REQUEST} bytes"),
        ));
    };
    if buf.len() < total {
        return Parsed::Incomplete;
    }
    Parsed::Request(
        Request {
            method: req.method.unwrap_or_default().to_string(),
            path: req.path.unwrap_or_default().to_string(),
            body: buf[head_len..total].to_vec(),
            close,
        },
        total,
    )
}

/// A response: a status and an optional JSON body.
#[derive(Debug, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: Option<String>,
}

/// The body of every error response (Firecracker's shape).
#[derive(Serialize, serde::Deserialize)]
pub struct Fault {
    pub fault_message: String,
}

impl Response {
    pub fn no_content() -> Response {
        Response {
            status: 204,
            body: None,
        }
    }

    pub fn json(status: u16, value: &impl Serialize) -> Response {
        match serde_json::to_string(value) {
            Ok(body) => Response {
                status,
                body: Some(body),
            },
            Err(e) => Response::error(500, format!("cannot encode the response: {e}")),
        }
    }

    pub fn error(status: u16, message: impl Into<String>) -> Response {
        let fault = Fault {
            fault_message: message.into(),
        };
        Response {
            status,
            // A struct of one string always encodes.
            body: serde_json::to_string(&fault).ok(),
        }
    }

    /// The response as bytes on the wire.
    pub fn to_bytes(&self, close: bool) -> Vec<u8> {
        let body = self.body.as_deref().unwrap_or("");
        let mut out = format!("HTTP/1.1 {} {}\r\n", self.status, reason(self.status));
        if self.body.is_some() {
            out.push_str("Content-Type: application/json\r\n");
        }
        if self.status != 204 {
            out.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        if close {
            out.push_str("Connection: close\r\n");
        }
        out.push_str("\r\n");
        out.push_str(body);
        out.into_bytes()
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Payload Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(buf: &[u8]) -> Request {
        match parse(buf) {
            Parsed::Request(r, n) => {
                assert_eq!(n, buf.len());
                r
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_request_with_a_body_parses_once_complete() {
        let full =
            b"PATCH /vm HTTP/1.1\r\nHost: x\r\nContent-Length: 18\r\n\r\n{\"state\":\"Paused\"}";
        for cut in 0..full.len() {
            assert_eq!(parse(&full[..cut]), Parsed::Incomplete, "cut at {cut}");
        }
        let r = request(full);
        assert_eq!(r.method, "PATCH");
        assert_eq!(r.path, "/vm");
        assert_eq!(r.body, b"{\"state\":\"Paused\"}");
        assert!(!r.close);
    }

    #[test]
    fn two_pipelined_requests_parse_one_at_a_time() {
        let buf = b"GET / HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\nConnection: close\r\n\r\n";
        let Parsed::Request(_, n) = parse(buf) else {
            panic!()
        };
        assert!(request(&buf[n..]).close);
    }

    #[test]
    fn oversized_and_malformed_requests_are_refused_with_a_status() {
        let status = |b: &[u8]| match parse(b) {
            Parsed::Bad(r) => r.status,
            other => panic!("{other:?}"),
        };
        assert_eq!(status(b"\x00\x01garbage\r\n\r\n"), 400);
        assert_eq!(
            status(b"PUT / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n"),
            400
        );
        assert_eq!(
            status(b"PUT / HTTP/1.1\r\nContent-Length: 1000000\r\n\r\n"),
            413
        );
        assert_eq!(
            status(b"PUT / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            411
        );
        assert_eq!(status(&vec![b'a'; MAX_REQUEST]), 413);
        let many: String = (0..40).map(|i| format!("X-{i}: y\r\n")).collect();
        assert_eq!(
            status(format!("GET / HTTP/1.1\r\n{many}\r\n").as_bytes()),
            431
        );
    }

    #[test]
    fn responses_carry_their_length_and_errors_a_fault_message() {
        let r = Response::error(400, "bad \"thing\"");
        let text = String::from_utf8(r.to_bytes(true)).unwrap();
        assert!(text.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{text}");
        assert!(text.contains("Connection: close\r\n"));
        assert!(text.ends_with("\r\n\r\n{\"fault_message\":\"bad \\\"thing\\\"\"}"));
        let body_len = r.body.unwrap().len();
        assert!(text.contains(&format!("Content-Length: {body_len}\r\n")));
        let text = String::from_utf8(Response::no_content().to_bytes(false)).unwrap();
        assert_eq!(text, "HTTP/1.1 204 No Content\r\n\r\n");
    }
}
