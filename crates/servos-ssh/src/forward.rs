//! HTTP to a service bound to the host's loopback (a proxy's admin API), through an SSH
//! `direct-tcpip` channel: sshd connects to `127.0.0.1:port` on the host, nothing runs
//! in a shell and nothing listens on a public address. The request is HTTP/1.0 with
//! `Connection: close`, so the answer is never chunked and ends when the channel closes.

use std::fmt;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::SshError;
use crate::session::Session;

/// Largest answer read back (an admin API's whole config fits easily).
const MAX_RESPONSE: usize = 8 * 1024 * 1024;

/// One request to `127.0.0.1:port` on the host.
#[derive(Clone, PartialEq, Eq)]
pub struct LocalHttpRequest {
    pub port: u16,
    pub method: &'static str,
    /// Absolute path with query, e.g. `/id/servos-web`.
    pub path: String,
    /// A JSON body, sent with `Content-Type: application/json`.
    pub body: Option<Vec<u8>>,
}

impl fmt::Debug for LocalHttpRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalHttpRequest")
            .field("port", &self.port)
            .field("method", &self.method)
            .field("path", &self.path)
            .field("body_len", &self.body.as_ref().map(Vec::len))
            .finish()
    }
}

impl LocalHttpRequest {
    /// The bytes sent on the channel.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = format!(
            "{} {} HTTP/1.0\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n",
            self.method, self.path, self.port
        )
        .into_bytes();
        if let Some(body) = &self.body {
            out.extend_from_slice(
                format!(
                    "Content-Type: application/json\r\nContent-Length: {}\r\n",
                    body.len()
                )
                .as_bytes(),
            );
        }
        out.extend_from_slice(b"\r\n");
        if let Some(body) = &self.body {
            out.extend_from_slice(body);
        }
        out
    }

    fn describe(&self) -> String {
        format!("{} http://127.0.0.1:{}{}", self.method, self.port, self.path)
    }
}

/// The status code and body of the answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalHttpResponse {
    pub status: u16,
    pub body: Vec<u8>,
}

impl LocalHttpResponse {
    /// Parses a whole HTTP/1.x answer (status line, headers, body up to the end).
    pub fn parse(raw: &[u8]) -> Result<Self, String> {
        let split = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or_else(|| "no end of headers in the answer".to_owned())?;
        let head = String::from_utf8_lossy(&raw[..split]);
        let status_line = head.lines().next().unwrap_or_default();
        let mut parts = status_line.split_whitespace();
        let status = match (parts.next(), parts.next()) {
            (Some(v), Some(code)) if v.starts_with("HTTP/1.") => code
                .parse::<u16>()
                .map_err(|_| format!("bad status line {status_line:?}"))?,
            _ => return Err(format!("bad status line {status_line:?}")),
        };
        Ok(Self {
            status,
            body: raw[split + 4..].to_vec(),
        })
    }

    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

impl Session {
    /// Sends `req` to `127.0.0.1:req.port` on the host through a `direct-tcpip` channel
    /// and reads the whole answer, within the session's command timeout.
    pub async fn local_http(&self, req: &LocalHttpRequest) -> Result<LocalHttpResponse, SshError> {
        let addr = self.target().addr();
        let after = self.timeouts().command;
        let fail = |reason: String| SshError::Command {
            addr: addr.clone(),
            command: req.describe(),
            reason,
        };
        let exchange = async {
            let channel = self
                .handle()
                .channel_open_direct_tcpip("127.0.0.1", u32::from(req.port), "127.0.0.1", 0)
                .await
                .map_err(|e| fail(format!("cannot open a channel to 127.0.0.1:{}: {e}", req.port)))?;
            let mut stream = channel.into_stream();
            stream
                .write_all(&req.encode())
                .await
                .map_err(|e| fail(format!("sending the request: {e}")))?;
            stream
                .flush()
                .await
                .map_err(|e| fail(format!("sending the request: {e}")))?;
            let mut raw = Vec::new();
            let mut buf = [0u8; 16 * 1024];
            loop {
                let n = stream
                    .read(&mut buf)
                    .await
                    .map_err(|e| fail(format!("reading the answer: {e}")))?;
                if n == 0 {
                    break;
                }
                raw.extend_from_slice(&buf[..n]);
                if raw.len() > MAX_RESPONSE {
                    return Err(fail(format!("the answer exceeds {MAX_RESPONSE} bytes")));
                }
            }
            LocalHttpResponse::parse(&raw).map_err(fail)
        };
        match tokio::time::timeout(after, exchange).await {
            Ok(result) => result,
            Err(_) => Err(SshError::CommandTimeout {
                addr: addr.clone(),
                command: req.describe(),
                after,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_http10_with_host_and_length() {
        let req = LocalHttpRequest {
            port: 2019,
            method: "PUT",
            path: "/id/servos-web".into(),
            body: Some(b"{}".to_vec()),
        };
        assert_eq!(
            String::from_utf8(req.encode()).unwrap(),
            "PUT /id/servos-web HTTP/1.0\r\nHost: 127.0.0.1:2019\r\nConnection: close\r\n\
             Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
        );
        let get = LocalHttpRequest {
            port: 2019,
            method: "GET",
            path: "/config/".into(),
            body: None,
        };
        assert_eq!(
            String::from_utf8(get.encode()).unwrap(),
            "GET /config/ HTTP/1.0\r\nHost: 127.0.0.1:2019\r\nConnection: close\r\n\r\n"
        );
    }

    #[test]
    fn answers_parse_status_and_body() {
        let r = LocalHttpResponse::parse(b"HTTP/1.0 404 Not Found\r\nX: y\r\n\r\n{\"error\":1}").unwrap();
        assert_eq!(r.status, 404);
        assert_eq!(r.body_text(), "{\"error\":1}");
        assert!(LocalHttpResponse::parse(b"garbage").is_err());
        assert!(LocalHttpResponse::parse(b"SSH-2.0 x\r\n\r\n").is_err());
    }
}
