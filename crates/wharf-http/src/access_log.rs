//! One access line per HTTP request: method, path, status, bytes sent, duration,
//! principal and request id, as operators expect from any web server.
//!
//! The line is written when the response body is finished (or dropped, when the
//! client goes away), so `bytes` and `duration_ms` cover the whole transfer, not
//! just the handler. Who the caller was is known only inside the guard, so this
//! layer hands a [`PrincipalSlot`] down in the request's extensions and the guard
//! fills it in.
//!
//! This runs on every request, so it is a plain tower layer (no boxed future, no
//! boxed body, nothing copied out of the request but reference-counted handles),
//! and does nothing at all when the access target is filtered out.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{ready, Context, Poll};
use std::time::Instant;

use axum::body::Bytes;
use axum::http::{HeaderValue, Method, Request, Response, Uri};
use http_body::{Body as HttpBody, Frame, SizeHint};
use tower_http::request_id::{MakeRequestId, RequestId};

use crate::access_line::{AccessFields, AccessLogOutput};

/// Where the guard records the signed-in account for the access line.
#[derive(Clone, Default)]
pub(crate) struct PrincipalSlot(Arc<OnceLock<String>>);

impl PrincipalSlot {
    /// Records the caller; the first record wins.
    pub(crate) fn set(&self, principal: &str) {
        let _ = self.0.set(principal.to_owned());
    }
}

/// Wraps a service so that each of its responses ends with an access line,
/// written to `output` (or, without one, as a `tracing` event).
#[derive(Clone, Default)]
pub(crate) struct AccessLogLayer {
    output: Option<Arc<AccessLogOutput>>,
}

impl AccessLogLayer {
    pub(crate) fn new(output: Option<AccessLogOutput>) -> AccessLogLayer {
        AccessLogLayer {
            output: output.map(Arc::new),
        }
    }
}

impl<S> tower::Layer<S> for AccessLogLayer {
    type Service = AccessLog<S>;

    fn layer(&self, inner: S) -> AccessLog<S> {
        AccessLog {
            inner,
            output: self.output.clone(),
        }
    }
}

/// The service made by [`AccessLogLayer`].
#[derive(Clone)]
pub(crate) struct AccessLog<S> {
    inner: S,
    output: Option<Arc<AccessLogOutput>>,
}

impl<S, ReqBody, ResBody> tower::Service<Request<ReqBody>> for AccessLog<S>
where
    S: tower::Service<Request<ReqBody>, Response = Response<ResBody>>,
    // The router's futures are boxed already, so they move freely; this keeps
    // the layer free of pinning code and of a box of its own.
    S::Future: Unpin,
{
    type Response = Response<CountingBody<ResBody>>;
    type Error = S::Error;
    type Future = AccessLogFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let entry = tracing::enabled!(target: "wharf::access", tracing::Level::INFO).then(|| {
            let principal = PrincipalSlot::default();
            req.extensions_mut().insert(principal.clone());
            Entry {
                start: Instant::now(),
                method: req.method().clone(),
                uri: req.uri().clone(),
                request_id: req.headers().get(crate::REQUEST_ID).cloned(),
                status: 0,
                principal,
                output: self.output.clone(),
            }
        });
        AccessLogFuture {
            inner: self.inner.call(req),
            entry,
        }
    }
}

/// The response future of [`AccessLog`]: notes the status, wraps the body.
pub(crate) struct AccessLogFuture<F> {
    inner: F,
    entry: Option<Entry>,
}

impl<F, ResBody, E> Future for AccessLogFuture<F>
where
    F: Future<Output = Result<Response<ResBody>, E>> + Unpin,
{
    type Output = Result<Response<CountingBody<ResBody>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let res = ready!(Pin::new(&mut this.inner).poll(cx))?;
        let status = res.status().as_u16();
        let entry = this.entry.take().map(|entry| Entry { status, ..entry });
        Poll::Ready(Ok(res.map(|inner| CountingBody {
            inner,
            bytes: 0,
            entry,
        })))
    }
}

struct Entry {
    start: Instant,
    method: Method,
    /// The whole URI, not a copy of its path: cloning it only counts a reference.
    uri: Uri,
    request_id: Option<HeaderValue>,
    status: u16,
    principal: PrincipalSlot,
    output: Option<Arc<AccessLogOutput>>,
}

impl Entry {
    fn write(self, bytes: u64) {
        let principal = self.principal.0.get().map(String::as_str).unwrap_or("-");
        let request_id = self
            .request_id
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-");
        if let Some(output) = &self.output {
            output.write(&AccessFields {
                method: self.method.as_str(),
                path: self.uri.path(),
                status: self.status,
                bytes,
                duration: self.start.elapsed(),
                principal,
                request_id,
            });
            return;
        }
        tracing::info!(
            target: "wharf::access",
            method = %self.method,
            path = %self.uri.path(),
            status = self.status,
            bytes,
            duration_ms = self.start.elapsed().as_secs_f64() * 1000.0,
            principal = %principal,
            request_id = %request_id,
            "access"
        );
    }
}

/// The response body, counted; writes the access line when it ends or is dropped.
pub(crate) struct CountingBody<B> {
    inner: B,
    bytes: u64,
    /// `None` once written, or from the start when the access line is filtered out.
    entry: Option<Entry>,
}

impl<B> HttpBody for CountingBody<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if this.entry.is_some() {
            match &polled {
                Poll::Ready(Some(Ok(frame))) => {
                    if let Some(data) = frame.data_ref() {
                        this.bytes += data.len() as u64;
                    }
                }
                Poll::Ready(None) => {
                    if let Some(entry) = this.entry.take() {
                        entry.write(this.bytes);
                    }
                }
                _ => {}
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B> Drop for CountingBody<B> {
    fn drop(&mut self) {
        if let Some(entry) = self.entry.take() {
            entry.write(self.bytes);
        }
    }
}

/// Request ids for requests that arrive without one: a random prefix drawn once
/// per process, then a counter. Unique across processes and restarts like a
/// random UUID, without a trip to the kernel's random source per request.
/// Shaped like a UUID (8-4-4-4-12 hex digits) so log tooling takes it as one.
#[derive(Clone, Copy, Default)]
pub(crate) struct ProcessRequestId;

impl ProcessRequestId {
    /// The id's first 19 characters (`xxxxxxxx-xxxx-xxxx-`), made once.
    fn prefix() -> &'static [u8; 19] {
        static PREFIX: OnceLock<[u8; 19]> = OnceLock::new();
        PREFIX.get_or_init(|| {
            use std::hash::{BuildHasher, Hasher};
            // std seeds every RandomState from the OS's random source.
            let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
            hasher.write_u32(std::process::id());
            if let Ok(since) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
                hasher.write_u128(since.as_nanos());
            }
            let full = Self::format(hasher.finish(), 0);
            let mut prefix = [0u8; 19];
            prefix.copy_from_slice(&full[..19]);
            prefix
        })
    }

    /// `prefix` and `sequence` as 8-4-4-4-12 hex digits.
    fn format(prefix: u64, sequence: u64) -> [u8; 36] {
        let mut out = [b'-'; 36];
        hex_into(&mut out[0..8], prefix >> 32);
        hex_into(&mut out[9..13], prefix >> 16);
        hex_into(&mut out[14..18], prefix);
        hex_into(&mut out[19..23], sequence >> 48);
        hex_into(&mut out[24..36], sequence);
        out
    }
}

/// Writes the low `out.len()` hex digits of `value` into `out`.
fn hex_into(out: &mut [u8], mut value: u64) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for byte in out.iter_mut().rev() {
        *byte = HEX[(value & 0xf) as usize];
        value >>= 4;
    }
}

impl MakeRequestId for ProcessRequestId {
    fn make_request_id<B>(&mut self, _request: &Request<B>) -> Option<RequestId> {
        static SEQUENCE: AtomicU64 = AtomicU64::new(0);
        let sequence = SEQUENCE.fetch_add(1, Ordering::Relaxed);
        let mut id = [b'-'; 36];
        id[..19].copy_from_slice(Self::prefix());
        hex_into(&mut id[19..23], sequence >> 48);
        hex_into(&mut id[24..36], sequence);
        HeaderValue::from_bytes(&id).ok().map(RequestId::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_uuid_shaped_and_distinct() {
        let id = ProcessRequestId::format(0x0123_4567_89ab_cdef, 0xfedc_ba98_7654_3210);
        assert_eq!(&id, b"01234567-89ab-cdef-fedc-ba9876543210");
        let mut maker = ProcessRequestId;
        let req = Request::new(());
        let a = maker.make_request_id(&req).unwrap();
        let b = maker.make_request_id(&req).unwrap();
        assert_ne!(a.header_value(), b.header_value());
        assert_eq!(a.header_value().len(), 36);
        assert_eq!(
            a.header_value().as_bytes()[..19],
            b.header_value().as_bytes()[..19]
        );
    }
}
