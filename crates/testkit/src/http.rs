//! A minimal HTTP/1.1 client for control requests to local test servers (unsigned, one request
//! per connection), so that the kit needs no HTTP library.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::TestkitError;

/// Status code and body of a response.
pub(crate) struct Response {
    pub status: u16,
    pub body: String,
}

/// Send one request to `addr` and read the whole response.
pub(crate) fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<Response, TestkitError> {
    let fail = |e: std::io::Error| TestkitError::new(format!("{method} http://{addr}{path}: {e}"));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(fail)?;
    stream.set_read_timeout(Some(Duration::from_secs(30))).map_err(fail)?;
    let mut head =
        format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n", body.len());
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).map_err(fail)?;
    stream.write_all(body).map_err(fail)?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).map_err(fail)?;
    let text = String::from_utf8_lossy(&raw);
    let status =
        text.strip_prefix("HTTP/1.").and_then(|rest| rest.get(2..5)).and_then(|code| code.parse().ok()).ok_or_else(
            || TestkitError::new(format!("{method} http://{addr}{path}: not an HTTP response: {text:.200}")),
        )?;
    let body = text.split_once("\r\n\r\n").map(|(_, body)| body.to_owned()).unwrap_or_default();
    Ok(Response { status, body })
}
