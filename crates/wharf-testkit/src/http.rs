//! A minimal blocking HTTP/1.1 client over a raw `TcpStream`.
//!
//! The end-to-end tests need byte-level control that a full client hides: a request whose body is
//! shorter than its `Content-Length`, a connection dropped mid-upload.
//! Every request uses `Connection: close`, so a response ends at EOF unless it is chunked or has a
//! `Content-Length`; both are handled.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use sha2::{Digest as _, Sha256};

/// How long a request may wait for the server before the test fails.
const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// A parsed response.
#[derive(Debug, Clone)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// Header names lower-cased, in the order received.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

impl Response {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value.as_str())
    }

    /// The body as text, for error messages.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends one request and reads the whole response.
///
/// `path` is the request target (path and query); `Host`, `Connection: close` and, when there is
/// a body, `Content-Length` are added unless `headers` sets them.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<Response> {
    let mut stream = connect(addr)?;
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    let has_length = headers
        .iter()
        .any(|(key, _)| key.eq_ignore_ascii_case("content-length"));
    for (key, value) in headers {
        head.push_str(&format!("{key}: {value}\r\n"));
    }
    if !has_length && (!body.is_empty() || matches!(method, "PUT" | "POST" | "PATCH")) {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    stream.flush()?;
    read_response(stream, method == "HEAD")
        .with_context(|| format!("reading the response to {method} {path}"))
}

/// Sends a request whose body of `len` bytes is streamed from `body`, for uploads too large to
/// hold in memory; the response is read whole.
pub fn request_streaming(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    len: u64,
    body: &mut impl Read,
) -> Result<Response> {
    let mut stream = connect(addr)?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {len}\r\n"
    );
    for (key, value) in headers {
        head.push_str(&format!("{key}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    let copied = std::io::copy(&mut body.take(len), &mut stream)?;
    if copied != len {
        bail!("the body source ended after {copied} of {len} bytes");
    }
    stream.flush()?;
    read_response(stream, false).with_context(|| format!("reading the response to {method} {path}"))
}

/// GETs `path` and returns the status, the body's size and its `sha256:` digest, hashing as it
/// reads so a large body is never held in memory.
pub fn get_digest(addr: SocketAddr, path: &str) -> Result<(u16, u64, String)> {
    get_digest_with_headers(addr, path, &[])
}

/// Like [`get_digest`], sending `headers` too (an `Authorization`, for Wharf).
pub fn get_digest_with_headers(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<(u16, u64, String)> {
    let mut stream = connect(addr)?;
    let mut head = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (key, value) in headers {
        head.push_str(&format!("{key}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.flush()?;
    let mut reader = BufReader::new(stream);
    let (status, headers) = read_head(&mut reader)?;
    if headers
        .iter()
        .any(|(key, value)| key == "transfer-encoding" && value.contains("chunked"))
    {
        // Chunked bodies are small in practice (errors); de-chunk in memory.
        let mut body = Vec::new();
        read_chunked(&mut reader, &mut body)?;
        return Ok((
            status,
            body.len() as u64,
            crate::fixture::sha256_digest(&body),
        ));
    }
    let mut hasher = Sha256::new();
    let size = std::io::copy(&mut reader, &mut hasher)?;
    Ok((
        status,
        size,
        format!("sha256:{}", hex::encode(hasher.finalize())),
    ))
}

/// The value of an `Authorization` header with HTTP Basic credentials (RFC 7617).
pub fn basic_auth(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        crate::client_auth::base64(format!("{user}:{password}").as_bytes())
    )
}

/// Opens a connection with read and write time limits.
pub fn connect(addr: SocketAddr) -> Result<TcpStream> {
    let stream =
        TcpStream::connect_timeout(&addr, IO_TIMEOUT).with_context(|| format!("connect {addr}"))?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(stream)
}

fn read_response(stream: TcpStream, head_only: bool) -> Result<Response> {
    let mut reader = BufReader::new(stream);
    let (status, headers) = read_head(&mut reader)?;
    let header = |name: &str| {
        headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.clone())
    };
    let mut body = Vec::new();
    let no_body = head_only || status == 204 || status == 304 || (100..200).contains(&status);
    if !no_body {
        if header("transfer-encoding").is_some_and(|te| te.contains("chunked")) {
            read_chunked(&mut reader, &mut body)?;
        } else if let Some(len) = header("content-length") {
            let len: u64 = len.parse().context("bad Content-Length")?;
            reader.take(len).read_to_end(&mut body)?;
        } else {
            reader.read_to_end(&mut body)?;
        }
    }
    Ok(Response {
        status,
        headers,
        body,
    })
}

/// Reads the status line and headers; header names are lower-cased.
fn read_head(reader: &mut impl BufRead) -> Result<(u16, Vec<(String, String)>)> {
    let mut status_line = String::new();
    reader.read_line(&mut status_line)?;
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse::<u16>().ok())
        .with_context(|| format!("bad status line {status_line:?}"))?;
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            bail!("connection closed inside the response head");
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((key, value)) = line.split_once(':') {
            headers.push((key.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
    }
    Ok((status, headers))
}

fn read_chunked(reader: &mut impl BufRead, body: &mut Vec<u8>) -> Result<()> {
    loop {
        let mut size_line = String::new();
        reader.read_line(&mut size_line)?;
        let size_hex = size_line.trim().split(';').next().unwrap_or("");
        let size = usize::from_str_radix(size_hex, 16)
            .with_context(|| format!("bad chunk size {size_line:?}"))?;
        if size == 0 {
            // Trailers, if any, end with an empty line; the connection closes after them anyway.
            let mut rest = Vec::new();
            let _ = reader.read_to_end(&mut rest);
            return Ok(());
        }
        let start = body.len();
        body.resize(start + size, 0);
        reader.read_exact(&mut body[start..])?;
        let mut crlf = [0u8; 2];
        reader.read_exact(&mut crlf)?;
    }
}
