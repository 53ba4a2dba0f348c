//! The log's writer: every line (tracing events and access lines) is appended
//! to one shared buffer, and a thread writes the buffer to standard error.
//!
//! Written here rather than taken from `tracing_appender::non_blocking`,
//! whose thread is woken for every line and flushes whenever its queue is
//! empty: under an `ostree pull` (thousands of small requests) that was one
//! futex wake and one `write(2)` per request, a fifth of the server's CPU
//! (measured with `perf record` against `wrk`). Here only the first line into
//! an empty buffer wakes the thread, which then waits [`GATHER`] for more
//! before it writes them all at once; an idle server's line still goes out
//! within that time. A full buffer makes writers wait rather than drop lines:
//! an access log with gaps is worse than a slower request under a flood.

use std::io::Write;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

/// How long the thread gathers lines after the first one before writing.
const GATHER: Duration = Duration::from_millis(2);

/// Bytes queued at most; a writer finding the buffer this full waits.
const BUFFER_LIMIT: usize = 1 << 20;

#[derive(Default)]
struct State {
    buffer: Vec<u8>,
    closed: bool,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    /// Signalled when the buffer gets its first bytes, or on close.
    filled: Condvar,
    /// Signalled when the thread took the buffer.
    drained: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain bytes behind: keep going.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A handle that appends to the buffer; cheap to clone.
#[derive(Clone)]
pub(crate) struct LogWriter {
    shared: Arc<Shared>,
}

/// Keeps the thread; dropping it writes out everything queued and stops it.
pub(crate) struct LogFlushGuard {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// Starts the thread writing to `out`.
pub(crate) fn spawn(mut out: impl Write + Send + 'static) -> (LogWriter, LogFlushGuard) {
    let shared = Arc::new(Shared::default());
    let worker = shared.clone();
    let thread = std::thread::Builder::new()
        .name("log-writer".into())
        .spawn(move || {
            let mut taken = Vec::new();
            loop {
                let mut state = worker.lock();
                while state.buffer.is_empty() && !state.closed {
                    state = worker.filled.wait(state).unwrap_or_else(|e| e.into_inner());
                }
                if !state.closed {
                    // Let the lines of the next few requests join this write.
                    drop(state);
                    std::thread::sleep(GATHER);
                    state = worker.lock();
                }
                let closed = state.closed;
                std::mem::swap(&mut state.buffer, &mut taken);
                drop(state);
                worker.drained.notify_all();
                if !taken.is_empty() {
                    let _ = out.write_all(&taken);
                    let _ = out.flush();
                    taken.clear();
                }
                if closed && worker.lock().buffer.is_empty() {
                    return;
                }
            }
        })
        .expect("spawning the log writer thread");
    (
        LogWriter {
            shared: shared.clone(),
        },
        LogFlushGuard {
            shared,
            thread: Some(thread),
        },
    )
}

impl LogWriter {
    /// Appends one whole line (or event) to the buffer.
    pub(crate) fn append(&self, bytes: &[u8]) {
        let mut state = self.shared.lock();
        while state.buffer.len() >= BUFFER_LIMIT && !state.closed {
            state = self
                .shared
                .drained
                .wait(state)
                .unwrap_or_else(|e| e.into_inner());
        }
        let was_empty = state.buffer.is_empty();
        state.buffer.extend_from_slice(bytes);
        drop(state);
        if was_empty {
            self.shared.filled.notify_one();
        }
    }
}

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.append(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LogWriter;

    fn make_writer(&'a self) -> LogWriter {
        self.clone()
    }
}

impl Drop for LogFlushGuard {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.filled.notify_one();
        self.shared.drained.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `Write` into shared memory, to read back what the thread wrote.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_line_from_every_thread_arrives_whole_and_a_lone_line_is_written_soon() {
        let out = Captured::default();
        let (writer, guard) = spawn(out.clone());
        writer.append(b"first\n");
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while out.0.lock().unwrap().is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "a lone line was not written"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        // Eight threads, more than the buffer holds in all, so writers also wait for room.
        let line = |t: usize, i: usize| format!("thread {t} line {i} {}\n", "x".repeat(200));
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let w = writer.clone();
                std::thread::spawn(move || {
                    for i in 0..1000 {
                        w.append(line(t, i).as_bytes());
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        drop(guard);
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1 + 8 * 1000);
        for t in 0..8 {
            let mine: Vec<&str> = lines
                .iter()
                .copied()
                .filter(|l| l.starts_with(&format!("thread {t} ")))
                .collect();
            let expected: Vec<String> = (0..1000).map(|i| line(t, i)).collect();
            let expected: Vec<&str> = expected.iter().map(|l| l.trim_end()).collect();
            assert_eq!(mine, expected, "thread {t}'s lines, whole and in order");
        }
    }
}
