//! Writing the access line itself, byte for byte in the shape the rest of the
//! log has (tracing-subscriber's text and flattened JSON formats), without
//! going through `tracing`.
//!
//! Why by hand: the line is written once per request, and through a tracing
//! event it cost about 14,000 instructions (callgrind, manifest GET) — the
//! dispatcher, the field visitor's `fmt::Arguments`, a float and a calendar
//! date formatted with `core::fmt` — a quarter of a whole cached manifest GET.
//! Here the fields are known, so they go straight into a per-thread buffer:
//! integers with `itoa`, the duration as fixed-point microseconds, and the
//! date part of the timestamp formatted once per second.

use std::cell::RefCell;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Where finished lines go: the process's log writer (standard error through
/// the writer thread, in `wharf serve`).
pub trait LineSink: Send + Sync + 'static {
    /// Writes one whole line, `\n` included. Lines are never split or merged.
    fn write_line(&self, line: &[u8]);
}

/// The log's format, as `log.format` chose it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineFormat {
    /// `TIMESTAMP  INFO wharf::access: access key=value …`, never coloured.
    Text,
    /// One JSON object with the fields at the top level.
    Json,
}

/// The access log's destination and format; `None` in [`crate::AppState`]
/// sends access lines through `tracing` instead (any subscriber works).
#[derive(Clone)]
pub struct AccessLogOutput {
    /// Text or JSON.
    pub format: LineFormat,
    /// Where lines go.
    pub sink: Arc<dyn LineSink>,
}

/// The fields of one access line.
pub(crate) struct AccessFields<'a> {
    pub(crate) method: &'a str,
    pub(crate) path: &'a str,
    pub(crate) status: u16,
    pub(crate) bytes: u64,
    pub(crate) duration: Duration,
    pub(crate) principal: &'a str,
    pub(crate) request_id: &'a str,
}

/// The date-and-time part of a timestamp (`2026-12-01T14:28:15`) for one
/// second, so that formatting it happens once per second per thread.
struct SecondCache {
    unix_secs: u64,
    text: [u8; 19],
}

thread_local! {
    static LINE: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(256));
    static SECOND: RefCell<Option<SecondCache>> = const { RefCell::new(None) };
}

impl AccessLogOutput {
    /// Formats and writes one access line.
    pub(crate) fn write(&self, fields: &AccessFields<'_>) {
        LINE.with(|line| {
            // A sink that logs would re-enter; take a fresh buffer then.
            let mut owned;
            let mut borrowed = line.try_borrow_mut();
            let buf: &mut Vec<u8> = match borrowed {
                Ok(ref mut b) => b,
                Err(_) => {
                    owned = Vec::with_capacity(256);
                    &mut owned
                }
            };
            buf.clear();
            format_line(buf, self.format, SystemTime::now(), fields);
            self.sink.write_line(buf);
        });
    }
}

fn format_line(buf: &mut Vec<u8>, format: LineFormat, now: SystemTime, f: &AccessFields<'_>) {
    let mut int = itoa::Buffer::new();
    match format {
        LineFormat::Text => {
            push_timestamp(buf, now);
            buf.extend_from_slice(b"  INFO wharf::access: access method=");
            buf.extend_from_slice(f.method.as_bytes());
            buf.extend_from_slice(b" path=");
            buf.extend_from_slice(f.path.as_bytes());
            buf.extend_from_slice(b" status=");
            buf.extend_from_slice(int.format(f.status).as_bytes());
            buf.extend_from_slice(b" bytes=");
            buf.extend_from_slice(int.format(f.bytes).as_bytes());
            buf.extend_from_slice(b" duration_ms=");
            push_millis(buf, f.duration);
            buf.extend_from_slice(b" principal=");
            buf.extend_from_slice(f.principal.as_bytes());
            buf.extend_from_slice(b" request_id=");
            buf.extend_from_slice(f.request_id.as_bytes());
        }
        LineFormat::Json => {
            buf.extend_from_slice(b"{\"timestamp\":\"");
            push_timestamp(buf, now);
            buf.extend_from_slice(b"\",\"level\":\"INFO\",\"message\":\"access\",\"method\":\"");
            push_json_escaped(buf, f.method);
            buf.extend_from_slice(b"\",\"path\":\"");
            push_json_escaped(buf, f.path);
            buf.extend_from_slice(b"\",\"status\":");
            buf.extend_from_slice(int.format(f.status).as_bytes());
            buf.extend_from_slice(b",\"bytes\":");
            buf.extend_from_slice(int.format(f.bytes).as_bytes());
            buf.extend_from_slice(b",\"duration_ms\":");
            push_millis(buf, f.duration);
            buf.extend_from_slice(b",\"principal\":\"");
            push_json_escaped(buf, f.principal);
            buf.extend_from_slice(b"\",\"request_id\":\"");
            push_json_escaped(buf, f.request_id);
            buf.extend_from_slice(b"\",\"target\":\"wharf::access\"}");
        }
    }
    buf.push(b'\n');
}

/// `2026-12-01T14:28:15.513957Z`: UTC, microseconds, as tracing-subscriber writes it.
fn push_timestamp(buf: &mut Vec<u8>, now: SystemTime) {
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    SECOND.with(|cache| {
        let mut cache = cache.borrow_mut();
        let fresh = match &*cache {
            Some(c) if c.unix_secs == secs => None,
            _ => Some(SecondCache {
                unix_secs: secs,
                text: civil_time(secs),
            }),
        };
        if let Some(fresh) = fresh {
            *cache = Some(fresh);
        }
        if let Some(c) = &*cache {
            buf.extend_from_slice(&c.text);
        }
    });
    buf.push(b'.');
    push_padded(buf, u64::from(since.subsec_micros()), 6);
    buf.push(b'Z');
}

/// Milliseconds with three decimals (microsecond resolution): `0.086`, `541.122`.
fn push_millis(buf: &mut Vec<u8>, duration: Duration) {
    let micros = duration.as_micros().min(u128::from(u64::MAX)) as u64;
    let mut int = itoa::Buffer::new();
    buf.extend_from_slice(int.format(micros / 1000).as_bytes());
    buf.push(b'.');
    push_padded(buf, micros % 1000, 3);
}

/// `value` in exactly `width` decimal digits, zero-padded (`value` < 10^width).
fn push_padded(buf: &mut Vec<u8>, mut value: u64, width: usize) {
    let start = buf.len();
    buf.resize(start + width, b'0');
    for slot in buf[start..].iter_mut().rev() {
        *slot = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

/// `YYYY-MM-DDTHH:MM:SS` of a Unix time, UTC.
fn civil_time(unix_secs: u64) -> [u8; 19] {
    let (year, month, day) = wharf_core::time::civil_from_days((unix_secs / 86_400) as i64);
    let rem = unix_secs % 86_400;
    let mut out = *b"0000-00-00T00:00:00";
    let mut put = |at: usize, width: usize, mut value: u64| {
        for slot in out[at..at + width].iter_mut().rev() {
            *slot = b'0' + (value % 10) as u8;
            value /= 10;
        }
    };
    put(0, 4, year.clamp(0, 9999) as u64);
    put(5, 2, month as u64);
    put(8, 2, day as u64);
    put(11, 2, rem / 3600);
    put(14, 2, rem % 3600 / 60);
    put(17, 2, rem % 60);
    out
}

/// `text` as the inside of a JSON string.
fn push_json_escaped(buf: &mut Vec<u8>, text: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = text.as_bytes();
    let mut plain_from = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f => b"",
            _ => continue,
        };
        buf.extend_from_slice(&bytes[plain_from..i]);
        if escape.is_empty() {
            buf.extend_from_slice(b"\\u00");
            buf.push(HEX[usize::from(b >> 4)]);
            buf.push(HEX[usize::from(b & 0xf)]);
        } else {
            buf.extend_from_slice(escape);
        }
        plain_from = i + 1;
    }
    buf.extend_from_slice(&bytes[plain_from..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields() -> AccessFields<'static> {
        AccessFields {
            method: "GET",
            path: "/v2/a\"b/manifests/latest",
            status: 200,
            bytes: 1234,
            duration: Duration::from_micros(541_122),
            principal: "admin",
            request_id: "op-1",
        }
    }

    #[test]
    fn dates_match_the_calendar() {
        assert_eq!(&civil_time(0), b"1970-01-01T00:00:00");
        assert_eq!(&civil_time(951_782_400), b"2000-02-29T00:00:00");
        assert_eq!(&civil_time(1_796_135_295), b"2026-12-01T14:28:15");
        assert_eq!(&civil_time(4_102_444_799), b"2099-12-31T23:59:59");
    }

    #[test]
    fn text_lines_have_the_logs_shape() {
        let mut buf = Vec::new();
        let at = UNIX_EPOCH + Duration::new(1_796_135_295, 513_957_123);
        format_line(&mut buf, LineFormat::Text, at, &fields());
        assert_eq!(
            String::from_utf8(buf).unwrap(),
            "2026-12-01T14:28:15.513957Z  INFO wharf::access: access method=GET \
             path=/v2/a\"b/manifests/latest status=200 bytes=1234 duration_ms=541.122 \
             principal=admin request_id=op-1\n"
        );
    }

    #[test]
    fn json_lines_parse_and_carry_every_field() {
        let mut buf = Vec::new();
        let at = UNIX_EPOCH + Duration::new(1_796_135_295, 5_000);
        let mut f = fields();
        f.duration = Duration::from_micros(86);
        format_line(&mut buf, LineFormat::Json, at, &f);
        assert_eq!(buf.last(), Some(&b'\n'));
        let v: serde_json::Value = serde_json::from_slice(&buf).unwrap();
        assert_eq!(v["timestamp"], "2026-12-01T14:28:15.000005Z");
        assert_eq!(v["level"], "INFO");
        assert_eq!(v["message"], "access");
        assert_eq!(v["target"], "wharf::access");
        assert_eq!(v["method"], "GET");
        assert_eq!(v["path"], "/v2/a\"b/manifests/latest");
        assert_eq!(v["status"], 200);
        assert_eq!(v["bytes"], 1234);
        assert_eq!(v["duration_ms"].as_f64(), Some(0.086));
        assert_eq!(v["principal"], "admin");
        assert_eq!(v["request_id"], "op-1");
        let mut control = Vec::new();
        push_json_escaped(&mut control, "a\u{1}b\\");
        assert_eq!(control, b"a\\u0001b\\\\");
    }
}
