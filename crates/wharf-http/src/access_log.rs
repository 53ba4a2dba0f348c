//! One access line per HTTP request: method, path, status, bytes sent, duration,
//! principal and request id, as operators expect from any web server.
//!
//! The line is written when the response body is finished (or dropped, when the
//! client goes away), so `bytes` and `duration_ms` cover the whole transfer, not
//! just the handler. Who the caller was is known only inside the guard, so this
//! layer hands a [`PrincipalSlot`] down in the request's extensions and the guard
//! fills it in.

use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use http_body::{Body as HttpBody, Frame, SizeHint};

/// Where the guard records the signed-in account for the access line.
#[derive(Clone, Default)]
pub(crate) struct PrincipalSlot(Arc<OnceLock<String>>);

impl PrincipalSlot {
    /// Records the caller; the first record wins.
    pub(crate) fn set(&self, principal: &str) {
        let _ = self.0.set(principal.to_owned());
    }
}

/// The middleware: passes a [`PrincipalSlot`] down, wraps the response body.
pub(crate) async fn access_log(mut req: Request, next: Next) -> Response {
    let start = Instant::now();
    let slot = PrincipalSlot::default();
    req.extensions_mut().insert(slot.clone());
    let entry = Entry {
        start,
        method: req.method().to_string(),
        path: req.uri().path().to_owned(),
        request_id: req
            .headers()
            .get(crate::REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_owned(),
        status: 0,
        principal: slot,
    };
    let res = next.run(req).await;
    let (parts, body) = res.into_parts();
    let entry = Entry {
        status: parts.status.as_u16(),
        ..entry
    };
    Response::from_parts(
        parts,
        Body::new(CountingBody {
            inner: body,
            bytes: 0,
            entry: Some(entry),
        }),
    )
}

struct Entry {
    start: Instant,
    method: String,
    path: String,
    request_id: String,
    status: u16,
    principal: PrincipalSlot,
}

impl Entry {
    fn write(self, bytes: u64) {
        let principal = self.principal.0.get().map(String::as_str).unwrap_or("-");
        tracing::info!(
            target: "wharf::access",
            method = %self.method,
            path = %self.path,
            status = self.status,
            bytes,
            duration_ms = self.start.elapsed().as_secs_f64() * 1000.0,
            principal = %principal,
            request_id = %self.request_id,
            "access"
        );
    }
}

/// The response body, counted; writes the access line when it ends or is dropped.
struct CountingBody {
    inner: Body,
    bytes: u64,
    entry: Option<Entry>,
}

impl HttpBody for CountingBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
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
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for CountingBody {
    fn drop(&mut self) {
        if let Some(entry) = self.entry.take() {
            entry.write(self.bytes);
        }
    }
}
