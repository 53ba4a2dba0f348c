//! The HTTP client every check talks through, and the fully read response it gets back.
//!
//! Checks never touch reqwest directly for sending: [`Client::send`] reads the whole body into a
//! [`Resp`] that remembers the method and URL, so every assertion can quote what was asked and
//! what came back.
//! Redirects are followed (reqwest's default policy), because the spec lets a registry redirect
//! any request and states its statuses "after any redirects have been followed".
//! A second path, [`Client::raw_get`], writes a request line by hand for the one check that must
//! send a `..` path segment, which URL libraries normalise away.

use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderValue, CONTENT_TYPE};
use reqwest::{Method, RequestBuilder, StatusCode, Url};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::outcome::{fail, Failure};

/// How long one request may take before the check fails; a registry that hangs must not stall
/// the whole run.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Credentials sent on every request when `--basic-auth` is given.
#[derive(Clone, Debug)]
pub struct BasicAuth {
    /// The user name.
    pub user: String,
    /// The password.
    pub password: String,
}

/// A registry client bound to one base URL.
#[derive(Clone, Debug)]
pub struct Client {
    http: reqwest::Client,
    base: Url,
    auth: Option<BasicAuth>,
}

/// A response whose body has been read in full.
#[derive(Debug)]
pub struct Resp {
    /// The request method, for messages.
    pub method: Method,
    /// The URL the request was sent to (before redirects), for messages.
    pub url: Url,
    /// The final status.
    pub status: StatusCode,
    /// The final response headers.
    pub headers: HeaderMap,
    /// The whole body, or what arrived of it before [`Resp::body_error`].
    pub body: Bytes,
    /// Why reading the body failed, if it did (e.g. a `Content-Length` the server did not
    /// honour); the status and headers are still valid, so status-only checks can proceed.
    pub body_error: Option<String>,
}

impl Client {
    /// Builds a client for the registry at `base`, e.g. `http://127.0.0.1:5000`.
    pub fn new(base: Url, auth: Option<BasicAuth>) -> Result<Self, Failure> {
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .user_agent(concat!("wharf-conformance/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Client { http, base, auth })
    }

    /// Whether credentials are configured.
    pub fn has_auth(&self) -> bool {
        self.auth.is_some()
    }

    /// Resolves an absolute path such as `/v2/` or a `Location` header value (absolute or
    /// relative, as the spec allows both) against the base URL.
    pub fn resolve(&self, target: &str) -> Result<Url, Failure> {
        match self.base.join(target) {
            Ok(url) => Ok(url),
            Err(err) => fail!("cannot resolve {target:?} against {}: {err}", self.base),
        }
    }

    /// Starts a request to a path or URL, with credentials when configured.
    pub fn request(&self, method: Method, target: &str) -> Result<RequestBuilder, Failure> {
        Ok(self.request_url(method, self.resolve(target)?))
    }

    /// Starts a request to an already resolved URL, with credentials when configured.
    pub fn request_url(&self, method: Method, url: Url) -> RequestBuilder {
        let builder = self.http.request(method, url);
        match &self.auth {
            Some(auth) => builder.basic_auth(&auth.user, Some(&auth.password)),
            None => builder,
        }
    }

    /// Starts a request without credentials, for the unauthenticated base check.
    pub fn request_anonymous(
        &self,
        method: Method,
        target: &str,
    ) -> Result<RequestBuilder, Failure> {
        Ok(self.http.request(method, self.resolve(target)?))
    }

    /// Sends a request and reads the whole response body.
    pub async fn send(&self, builder: RequestBuilder) -> Result<Resp, Failure> {
        let request = builder.build()?;
        let method = request.method().clone();
        let url = request.url().clone();
        let response = match self.http.execute(request).await {
            Ok(it) => it,
            Err(err) => return Err(Failure::from(err).context(&format!("{method} {url}"))),
        };
        let status = response.status();
        let headers = response.headers().clone();
        let (body, body_error) = match response.bytes().await {
            Ok(it) => (it, None),
            Err(err) => (Bytes::new(), Some(Failure::from(err).to_string())),
        };
        Ok(Resp {
            method,
            url,
            status,
            headers,
            body,
            body_error,
        })
    }

    /// Shorthand for a body-less request with no extra headers.
    pub async fn call(&self, method: Method, target: &str) -> Result<Resp, Failure> {
        let builder = self.request(method, target)?;
        self.send(builder).await
    }

    /// Sends `GET <path>` over a hand-written HTTP/1.1 request and returns the status code.
    ///
    /// URL parsers resolve `..` segments (and their percent-encoded forms) before a request is
    /// sent, so the only way to show a registry a literal `..` in a repository name is to write
    /// the request line ourselves.
    /// Only plain `http` base URLs are supported; TLS would need a second client stack.
    pub async fn raw_get(&self, path: &str) -> Result<u16, Failure> {
        if self.base.scheme() != "http" {
            fail!("raw requests are only implemented for http:// registries");
        }
        let Some(host) = self.base.host_str() else {
            fail!("base URL {} has no host", self.base);
        };
        let port = self.base.port_or_known_default().unwrap_or(80);
        let host_header = match self.base.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_owned(),
        };
        let mut request = format!(
            "GET {path} HTTP/1.1\r\nHost: {host_header}\r\nAccept: */*\r\nConnection: close\r\n"
        );
        if let Some(auth) = &self.auth {
            let token = base64(format!("{}:{}", auth.user, auth.password).as_bytes());
            request.push_str(&format!("Authorization: Basic {token}\r\n"));
        }
        request.push_str("\r\n");

        // IPv6 literals come back from host_str() in brackets, which connect() does not accept.
        let connect_host = host.trim_start_matches('[').trim_end_matches(']');
        let exchange = async {
            let mut stream = tokio::net::TcpStream::connect((connect_host, port)).await?;
            stream.write_all(request.as_bytes()).await?;
            let mut buf = Vec::new();
            // The status line arrives first; reading a bounded prefix is enough.
            let mut chunk = [0u8; 1024];
            while !buf.windows(2).any(|w| w == b"\r\n") && buf.len() < 8192 {
                let n = stream.read(&mut chunk).await?;
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            Ok::<_, std::io::Error>(buf)
        };
        let buf = match tokio::time::timeout(REQUEST_TIMEOUT, exchange).await {
            Ok(Ok(buf)) => buf,
            Ok(Err(err)) => fail!("raw GET {path}: {err}"),
            Err(_) => fail!("raw GET {path}: timed out"),
        };
        let text = String::from_utf8_lossy(&buf);
        let status_line = text.lines().next().unwrap_or_default();
        match status_line.split_whitespace().nth(1).map(str::parse::<u16>) {
            Some(Ok(code)) => Ok(code),
            _ => fail!("raw GET {path}: unparsable status line {status_line:?}"),
        }
    }
}

impl Resp {
    /// A header's value as text, if present and valid UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|it| it.to_str().ok())
    }

    /// Every value of a header, for headers that may repeat (`Link`, `OCI-Filters-Applied`).
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .get_all(name)
            .iter()
            .filter_map(|it: &HeaderValue| it.to_str().ok())
            .collect()
    }

    /// The `Content-Type` without parameters, which the spec tells clients to ignore.
    pub fn content_type(&self) -> Option<&str> {
        self.headers
            .get(CONTENT_TYPE)
            .and_then(|it| it.to_str().ok())
            .map(|it| it.split(';').next().unwrap_or_default().trim())
    }

    /// The body parsed as JSON.
    pub fn json(&self) -> Result<serde_json::Value, Failure> {
        match serde_json::from_slice(&self.body) {
            Ok(it) => Ok(it),
            Err(err) => fail!(
                "{}: body is not JSON ({err}): {}",
                self.summary(),
                self.snippet()
            ),
        }
    }

    /// `GET /v2/... -> 404`, for messages.
    pub fn summary(&self) -> String {
        format!(
            "{} {} -> {}",
            self.method,
            self.url.path(),
            self.status.as_u16()
        )
    }

    /// The start of the body as one line of text, for messages.
    pub fn snippet(&self) -> String {
        const LIMIT: usize = 200;
        if let Some(err) = &self.body_error {
            return format!("(body unreadable: {err})");
        }
        if self.body.is_empty() {
            return "(empty body)".to_owned();
        }
        let text = String::from_utf8_lossy(&self.body[..self.body.len().min(LIMIT)]);
        let mut line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
        if self.body.len() > LIMIT {
            line.push_str(" ...");
        }
        line
    }
}

/// Standard base64 with padding, for the hand-written Authorization header.
fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        let cases = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (input, expected) in cases {
            assert_eq!(base64(input.as_bytes()), expected);
        }
    }
}
