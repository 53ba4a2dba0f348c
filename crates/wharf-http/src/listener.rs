//! Accepting and serving connections, plain or TLS, under limits that keep
//! slow and hostile clients from starving everyone else.
//!
//! Every listener gets the same treatment:
//! - at most `max_connections` at once; further clients wait in the kernel's
//!   accept queue instead of costing a task, buffers and a descriptor each;
//! - a connection must deliver its first request head within
//!   `header_read_timeout` (HTTP/1.1 also applies it to every later head,
//!   timed from the end of the previous response);
//! - a connection on which nothing moves for `idle_timeout` while the server
//!   waits on the client — for a next request, or for the client to read a
//!   response — is closed;
//! - a request body must deliver `min_body_bytes` in every `min_body_window`,
//!   or it is cut: what arrived stays (an upload session keeps it and is
//!   unlocked at once), and the connection is closed.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::Router;
use bytes::Bytes;
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use wharf_tls::{ClientCertSubject, ACME_TLS_ALPN};

/// How long a client may take to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);

/// HTTP/2 flow-control windows. hyper's defaults (64 KiB per stream) make an
/// upload wait for a window update every 64 KiB, which cut h2 pushes to a
/// quarter of HTTP/1.1's rate; these let a stream keep a few milliseconds of
/// data in flight. They bound what one connection can make the server buffer.
const H2_STREAM_WINDOW: u32 = 4 * 1024 * 1024;
const H2_CONNECTION_WINDOW: u32 = 8 * 1024 * 1024;
/// Largest frame a client may send; bigger frames mean fewer per-frame costs.
const H2_MAX_FRAME: u32 = 256 * 1024;

/// Bytes HTTP/1.1 may queue for a socket that is not draining (and the largest
/// request head it reads). Per connection, so a client that stops reading pins
/// at most this much besides the kernel's socket buffer.
const H1_MAX_BUF: usize = 128 * 1024;

/// The limits applied to every connection of a listener.
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    /// Connections served at once.
    pub max_connections: usize,
    /// Time allowed for a request head to arrive.
    pub header_read_timeout: Duration,
    /// Time a connection may sit with nothing moving while the server waits on the client.
    pub idle_timeout: Duration,
    /// Bytes a request body must deliver in every `min_body_window`.
    pub min_body_bytes: u64,
    /// The window of `min_body_bytes`.
    pub min_body_window: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            max_connections: 4096,
            header_read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(120),
            min_body_bytes: 1024,
            min_body_window: Duration::from_secs(30),
        }
    }
}

/// Serves `app` on `listener` (over TLS with `tls`) until `cancel` fires, then
/// lets open connections finish for up to `grace`.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    limits: ConnectionLimits,
    cancel: CancellationToken,
    grace: Duration,
) {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    let limits = Arc::new(limits);
    let builder = Arc::new(connection_builder(&limits));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        // A free slot first: beyond the cap, clients wait in the accept queue.
        let slot = tokio::select! {
            _ = cancel.cancelled() => break,
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
        };
        let (tcp, remote) = tokio::select! {
            _ = cancel.cancelled() => break,
            res = listener.accept() => match res {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: back off rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let connection = Connection {
            app: app.clone(),
            builder: builder.clone(),
            limits: limits.clone(),
            acceptor: acceptor.clone(),
            remote,
        };
        let watcher = graceful.watcher();
        let activity = Arc::new(Activity::new());
        let served = tokio::spawn({
            let activity = activity.clone();
            async move {
                connection.run(tcp, activity, watcher).await;
                drop(slot);
            }
        });
        // A task of its own, so that the connection's task is not woken by,
        // nor polls, a timer on every request; it aborts the connection (which
        // drops it and so closes the socket) when it stalls.
        tokio::spawn(watch(
            activity,
            limits.clone(),
            remote,
            served.abort_handle(),
        ));
    }
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after the grace period");
    }
}

fn connection_builder(limits: &ConnectionLimits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // The watchdog applies the header read timeout to every head (see
        // `Watchdog::stalled`); hyper's own would register and cancel a timer
        // on every request.
        .header_read_timeout(None)
        .max_buf_size(H1_MAX_BUF);
    builder
        .http2()
        .timer(TokioTimer::new())
        .initial_stream_window_size(H2_STREAM_WINDOW)
        .initial_connection_window_size(H2_CONNECTION_WINDOW)
        .max_frame_size(H2_MAX_FRAME)
        // Dead peers are found by pings; idle live ones by the idle timeout.
        .keep_alive_interval(limits.idle_timeout / 2)
        .keep_alive_timeout(Duration::from_secs(20));
    builder
}

struct Connection {
    app: Router,
    builder: Arc<auto::Builder<TokioExecutor>>,
    limits: Arc<ConnectionLimits>,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    remote: SocketAddr,
}

impl Connection {
    async fn run(
        self,
        tcp: tokio::net::TcpStream,
        activity: Arc<Activity>,
        watcher: hyper_util::server::graceful::Watcher,
    ) {
        let io = Watched {
            inner: tcp,
            activity: activity.clone(),
        };
        let remote = self.remote;
        match &self.acceptor {
            None => self.serve_http(io, None, activity, watcher).await,
            Some(acceptor) => {
                let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(io)).await {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => {
                        tracing::debug!(client.addr = %remote, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => return,
                };
                if tls.get_ref().1.alpn_protocol() == Some(ACME_TLS_ALPN) {
                    // A TLS-ALPN-01 validation: the handshake was the whole exchange.
                    return;
                }
                // rustls verified the chain during the handshake; only the name is read here.
                let subject = ClientCertSubject::of_connection(tls.get_ref().1);
                self.serve_http(tls, subject, activity, watcher).await;
            }
        }
    }

    async fn serve_http<I>(
        self,
        io: I,
        client_subject: Option<ClientCertSubject>,
        activity: Arc<Activity>,
        watcher: hyper_util::server::graceful::Watcher,
    ) where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Connection {
            app,
            builder,
            limits,
            remote,
            ..
        } = self;
        let body_rate = (limits.min_body_bytes, limits.min_body_window);
        let requests = activity.clone();
        let service =
            hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                let in_service = requests.begin_request();
                if req.version() == hyper::Version::HTTP_2 {
                    requests.http2.store(true, Ordering::Relaxed);
                }
                req.extensions_mut().insert(ConnectInfo(remote));
                if let Some(subject) = &client_subject {
                    req.extensions_mut().insert(subject.clone());
                }
                let req = req.map(|body| {
                    if body.is_end_stream() {
                        // Nothing to watch (a GET): no wrapper, and no allocation.
                        Body::empty()
                    } else {
                        Body::new(MinRateBody::new(body, body_rate))
                    }
                });
                // The router is an `Arc`; its `call` starts the request at once.
                let response = tower::Service::call(&mut app.clone(), req);
                let requests = requests.clone();
                async move {
                    let res = response.await?;
                    let responding = requests.begin_response();
                    drop(in_service);
                    // Handed to hyper as it is: the router's body is boxed already.
                    Ok::<_, std::convert::Infallible>(res.map(|body| TrackedBody {
                        inner: body,
                        _responding: responding,
                    }))
                }
            });
        let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
        if let Err(e) = watcher.watch(conn.into_owned()).await {
            tracing::debug!(client.addr = %remote, error = %e, "connection ended with an error");
        }
    }
}

/// Checks `activity` every tick until the connection's task ends, and aborts
/// that task when the connection has stalled.
async fn watch(
    activity: Arc<Activity>,
    limits: Arc<ConnectionLimits>,
    remote: SocketAddr,
    served: tokio::task::AbortHandle,
) {
    let tick = (limits.header_read_timeout.min(limits.idle_timeout) / 4)
        .clamp(Duration::from_millis(100), Duration::from_secs(1));
    let mut watchdog = Watchdog::new(&activity);
    let mut ticks = tokio::time::interval(tick);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        if served.is_finished() {
            return;
        }
        if let Some(reason) = watchdog.stalled(&activity, &limits) {
            tracing::debug!(client.addr = %remote, reason, "closing a stalled connection");
            served.abort();
            return;
        }
    }
}

/// What one connection is doing, as seen from its socket and its requests.
///
/// The socket only raises flags (a plain store, no clock read, on every read
/// and write); the watchdog turns them into times once per tick. Times are so
/// at most one tick late, which only ever makes a limit fire later, never
/// earlier.
struct Activity {
    /// When the connection was accepted (the TLS handshake counts against the
    /// first request head's time).
    opened: Instant,
    /// A byte moved either way since the watchdog last looked.
    moved: AtomicBool,
    /// A byte was written since the watchdog last looked.
    wrote: AtomicBool,
    /// A write is waiting for the client to drain its socket.
    write_blocked: AtomicBool,
    /// A request or its response ended since the watchdog last looked.
    finished: AtomicBool,
    /// The connection speaks HTTP/2, which has no wait for a next head.
    http2: AtomicBool,
    requests_seen: AtomicU64,
    /// Requests being handled (head received, response head not yet out).
    in_service: AtomicUsize,
    /// Response bodies still being sent.
    responding: AtomicUsize,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            opened: Instant::now(),
            moved: AtomicBool::new(false),
            wrote: AtomicBool::new(false),
            write_blocked: AtomicBool::new(false),
            finished: AtomicBool::new(false),
            http2: AtomicBool::new(false),
            requests_seen: AtomicU64::new(0),
            in_service: AtomicUsize::new(0),
            responding: AtomicUsize::new(0),
        }
    }

    fn moved(&self, wrote: bool) {
        self.moved.store(true, Ordering::Relaxed);
        if wrote {
            self.wrote.store(true, Ordering::Relaxed);
            self.write_blocked.store(false, Ordering::Relaxed);
        }
    }

    fn begin_request(self: &Arc<Self>) -> Counted {
        self.requests_seen.fetch_add(1, Ordering::Relaxed);
        Counted::new(self.clone(), |a| &a.in_service)
    }

    fn begin_response(self: &Arc<Self>) -> Counted {
        Counted::new(self.clone(), |a| &a.responding)
    }
}

/// The connection's clock, read once per tick by its watchdog.
struct Watchdog {
    opened: Instant,
    /// When a byte was last seen moving either way, as time since `opened`.
    last_io: Duration,
    /// When a byte was last seen written.
    last_write: Duration,
    /// When a request or response was last seen ending.
    last_finished: Duration,
}

impl Watchdog {
    fn new(activity: &Activity) -> Watchdog {
        Watchdog {
            opened: activity.opened,
            last_io: Duration::ZERO,
            last_write: Duration::ZERO,
            last_finished: Duration::ZERO,
        }
    }

    /// Why the connection should be closed now, if it should.
    fn stalled(&mut self, activity: &Activity, limits: &ConnectionLimits) -> Option<&'static str> {
        let now = self.opened.elapsed();
        if activity.moved.swap(false, Ordering::Relaxed) {
            self.last_io = now;
        }
        if activity.wrote.swap(false, Ordering::Relaxed) {
            self.last_write = now;
        }
        if activity.finished.swap(false, Ordering::Relaxed) {
            self.last_finished = now;
        }
        if activity.requests_seen.load(Ordering::Relaxed) == 0 && now >= limits.header_read_timeout
        {
            return Some("no complete request head within the header read timeout");
        }
        let in_service = activity.in_service.load(Ordering::Relaxed);
        let responding = activity.responding.load(Ordering::Relaxed);
        let between_requests = in_service == 0 && responding == 0;
        if between_requests && now.saturating_sub(self.last_io) >= limits.idle_timeout {
            return Some("idle");
        }
        // HTTP/1.1 waits for its next head from the end of the last response
        // (the last byte written, if the client was still draining it).
        if between_requests
            && !activity.http2.load(Ordering::Relaxed)
            && now.saturating_sub(self.last_finished.max(self.last_write))
                >= limits.header_read_timeout
        {
            return Some("no complete request head within the header read timeout");
        }
        let not_reading = responding > 0 || activity.write_blocked.load(Ordering::Relaxed);
        if not_reading && now.saturating_sub(self.last_write) >= limits.idle_timeout {
            return Some("the client stopped reading its response");
        }
        None
    }
}

/// Holds one count of an [`Activity`] counter while alive.
struct Counted {
    activity: Arc<Activity>,
    counter: fn(&Activity) -> &AtomicUsize,
}

impl Counted {
    fn new(activity: Arc<Activity>, counter: fn(&Activity) -> &AtomicUsize) -> Counted {
        counter(&activity).fetch_add(1, Ordering::Relaxed);
        Counted { activity, counter }
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        (self.counter)(&self.activity).fetch_sub(1, Ordering::Relaxed);
        self.activity.finished.store(true, Ordering::Relaxed);
    }
}

/// The socket, noting every byte that moves.
struct Watched<T> {
    inner: T,
    activity: Arc<Activity>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let res = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(res, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.moved(false);
        }
        res
    }
}

impl<T: AsyncWrite + Unpin> Watched<T> {
    fn noted(&self, res: Poll<io::Result<usize>>) -> Poll<io::Result<usize>> {
        match &res {
            Poll::Ready(Ok(n)) if *n > 0 => self.activity.moved(true),
            Poll::Pending => self.activity.write_blocked.store(true, Ordering::Relaxed),
            _ => {}
        }
        res
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let res = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.noted(res)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let res = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.noted(res)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A request body that must keep delivering at a minimum rate.
struct MinRateBody<B> {
    inner: B,
    min_bytes: u64,
    window: Duration,
    /// Bytes received in the current window.
    received: u64,
    /// End of the current window; set at the first poll.
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<B> MinRateBody<B> {
    fn new(inner: B, (min_bytes, window): (u64, Duration)) -> MinRateBody<B> {
        MinRateBody {
            inner,
            min_bytes,
            window,
            received: 0,
            deadline: None,
        }
    }
}

impl<B> HttpBody for MinRateBody<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: Into<axum::BoxError>,
{
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.received += data.len() as u64;
                }
                return Poll::Ready(Some(Ok(frame)));
            }
            Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Pending => {}
        }
        if this.window.is_zero() || this.min_bytes == 0 {
            return Poll::Pending;
        }
        let window = this.window;
        let deadline = this
            .deadline
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(window)));
        while deadline.as_mut().poll(cx).is_ready() {
            if this.received < this.min_bytes {
                let e = io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "request body delivered {} bytes in {} s, less than the minimum of {}",
                        this.received,
                        window.as_secs_f64(),
                        this.min_bytes
                    ),
                );
                return Poll::Ready(Some(Err(e.into())));
            }
            this.received = 0;
            deadline
                .as_mut()
                .reset(tokio::time::Instant::now() + window);
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body that counts as "responding" until it is done or dropped.
struct TrackedBody<B> {
    inner: B,
    _responding: Counted,
}

impl<B> HttpBody for TrackedBody<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
