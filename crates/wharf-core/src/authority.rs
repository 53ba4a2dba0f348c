//! The one reader of a request's authority (`host[:port]`), for every place
//! that echoes it back: the token realm in a challenge, the HTTPS redirect.
//!
//! Header bytes are never echoed: an authority that exists is a DNS name, an
//! IPv4 address or a bracketed IPv6 address, with an optional port of digits
//! — no quotes, spaces, user info, paths or fragments that could end a quoted
//! challenge parameter or the host part of a URL.

use std::fmt;

/// A validated `host[:port]`, host lower-cased.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authority {
    host: String,
    port: Option<u16>,
}

impl Authority {
    /// Parses `host[:port]`; `None` for anything else.
    pub fn parse(s: &str) -> Option<Authority> {
        if s.is_empty() || s.len() > 261 {
            return None;
        }
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (v6, after) = rest.split_once(']')?;
            v6.parse::<std::net::Ipv6Addr>().ok()?;
            let port = match after {
                "" => None,
                p => Some(p.strip_prefix(':')?),
            };
            (&s[..v6.len() + 2], port)
        } else {
            match s.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (s, None),
            }
        };
        let port = match port {
            None => None,
            Some(p) if (1..=5).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()) => {
                Some(p.parse::<u16>().ok()?)
            }
            Some(_) => return None,
        };
        let dns_ok = || {
            !host.is_empty()
                && host.len() <= 253
                && host.split('.').all(|label| {
                    !label.is_empty()
                        && label.len() <= 63
                        && !label.starts_with('-')
                        && !label.ends_with('-')
                        && label
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                })
        };
        if !host.starts_with('[') && !dns_ok() {
            return None;
        }
        Some(Authority {
            host: host.to_ascii_lowercase(),
            port,
        })
    }

    /// The host, lower-case; an IPv6 address keeps its brackets.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port, if one was given.
    pub fn port(&self) -> Option<u16> {
        self.port
    }
}

impl fmt::Display for Authority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.port {
            Some(port) => write!(f, "{}:{port}", self.host),
            None => f.write_str(&self.host),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_host_and_port_are_authorities() {
        for (ok, host, port) in [
            ("localhost", "localhost", None),
            ("localhost:5000", "localhost", Some(5000)),
            (
                "Registry.Example.com:443",
                "registry.example.com",
                Some(443),
            ),
            ("127.0.0.1:8443", "127.0.0.1", Some(8443)),
            ("[::1]", "[::1]", None),
            ("[::1]:5000", "[::1]", Some(5000)),
        ] {
            let a = Authority::parse(ok).unwrap_or_else(|| panic!("{ok}"));
            assert_eq!((a.host(), a.port()), (host, port), "{ok}");
            assert_eq!(a.to_string(), ok.to_ascii_lowercase());
        }
        for bad in [
            "",
            "evil\",error=\"x",
            "a b",
            "user@host",
            "host:",
            "host:99999",
            "host:12a",
            "host/path",
            "evil.example/x.mirror.test",
            "registry.test#x",
            "-bad.example",
            "[::1",
            "[nothex]:1",
            "[::1]x",
        ] {
            assert_eq!(Authority::parse(bad), None, "{bad}");
        }
    }
}
