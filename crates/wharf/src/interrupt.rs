//! Ctrl-C for foreground runs (`wharf sync`, `wharf ostree import`): the
//! first press asks the run to stop at its next safe point, the second kills.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// A flag that becomes true at the first Ctrl-C, after printing `stopping`
/// (what the run does next, e.g. "nothing will be published"); a second
/// Ctrl-C exits with 130 at once.
pub(crate) fn on_ctrl_c(stopping: &'static str) -> Arc<AtomicBool> {
    let interrupted = Arc::new(AtomicBool::new(false));
    let flag = interrupted.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("wharf: stopping{stopping} (Ctrl-C again to kill)");
            flag.store(true, Ordering::Relaxed);
            if tokio::signal::ctrl_c().await.is_ok() {
                std::process::exit(130);
            }
        }
    });
    interrupted
}
