//! Progress bars for an OSTree mirror run on a terminal (`wharf sync`,
//! `wharf ostree import`): refs done of those selected, and the transfer
//! (metadata and content objects stored, bytes and rate), with the run's
//! lines scrolling above them; the same shape as the OCI sync's bars. Off a
//! terminal the plain observer in `ostree.rs` prints lines instead.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use wharf_ostree::MirrorObserver;

pub(crate) struct Bars {
    multi: MultiProgress,
    refs: ProgressBar,
    transfer: ProgressBar,
    metadata: AtomicU64,
    content: AtomicU64,
    interrupted: Arc<AtomicBool>,
}

impl Bars {
    pub(crate) fn new(remote: &str, interrupted: Arc<AtomicBool>) -> Bars {
        let multi = MultiProgress::new();
        let refs = multi.add(ProgressBar::new(0));
        refs.set_style(
            ProgressStyle::with_template("{prefix:>12} [{bar:30}] {pos}/{len} refs  {elapsed}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        refs.set_prefix(remote.to_owned());
        let transfer = multi.add(ProgressBar::new_spinner());
        transfer.set_style(
            ProgressStyle::with_template(
                "{spinner:>12} {msg}, {bytes} fetched at {binary_bytes_per_sec}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        transfer.set_message("0 metadata, 0 content objects");
        transfer.enable_steady_tick(Duration::from_millis(120));
        Bars {
            multi,
            refs,
            transfer,
            metadata: AtomicU64::new(0),
            content: AtomicU64::new(0),
            interrupted,
        }
    }

    pub(crate) fn finish(&self) {
        self.refs.finish_and_clear();
        self.transfer.finish_and_clear();
    }
}

impl MirrorObserver for Bars {
    fn refs_selected(&self, n: u64) {
        self.refs.inc_length(n);
    }
    fn fetched(&self, metadata: u64, content: u64, bytes: u64) {
        let m = self.metadata.fetch_add(metadata, Ordering::Relaxed) + metadata;
        let c = self.content.fetch_add(content, Ordering::Relaxed) + content;
        self.transfer
            .set_message(format!("{m} metadata, {c} content objects"));
        self.transfer.inc(bytes);
    }
    fn ref_done(&self) {
        self.refs.inc(1);
    }
    fn line(&self, line: &str) {
        let _ = self.multi.println(line);
    }
    fn cancelled(&self) -> bool {
        self.interrupted.load(Ordering::Relaxed)
    }
}
