//! Large blobs stream through Wharf: its memory stays flat however large a blob is.
//!
//! The blob is generated and hashed on the fly on the test side too, so neither end holds it.

use anyhow::{ensure, Result};
use wharf_testkit::fixture::{stream_digest, Rng};
use wharf_testkit::http;

use crate::support::{e2e, location_path, start_upload, with_auth, with_query};

const REPO: &str = "e2e/streaming";

/// Big enough that buffering it whole would dwarf the server's baseline memory.
const BLOB_SIZE: u64 = 256 * 1024 * 1024;

/// How much the server's peak memory may grow while it takes and serves the blob.
const GROWTH_LIMIT: u64 = 96 * 1024 * 1024;

#[test]
fn memory_stays_flat_for_a_large_blob() -> Result<()> {
    e2e(|target| {
        let mut seed_bytes = [0u8; 8];
        Rng::from_entropy().fill(&mut seed_bytes);
        let seed = u64::from_le_bytes(seed_bytes);
        let (_, digest) = stream_digest(&mut Rng::from_seed(seed).reader(BLOB_SIZE))?;
        let addr = target.registry().addr();
        let auth = target.auth_headers();
        let baseline = match target.wharf() {
            Some(server) => Some(server.peak_rss_bytes()?),
            None => None,
        };

        let upload = start_upload(target, REPO)?;
        let put = http::request_streaming(
            addr,
            "PUT",
            &with_query(&upload, &format!("digest={digest}")),
            &with_auth(&auth, &[("Content-Type", "application/octet-stream")]),
            BLOB_SIZE,
            &mut Rng::from_seed(seed).reader(BLOB_SIZE),
        )?;
        ensure!(
            put.status == 201,
            "monolithic PUT: {} {}",
            put.status,
            put.text()
        );
        location_path(&put)?;

        let (status, size, served) = http::get_digest_with_headers(
            addr,
            &format!("/v2/{REPO}/blobs/{digest}"),
            &with_auth(&auth, &[]),
        )?;
        ensure!(status == 200, "GET blob: {status}");
        ensure!(
            size == BLOB_SIZE && served == digest,
            "served {size} bytes with digest {served}"
        );

        if let (Some(baseline), Some(server)) = (baseline, target.wharf()) {
            let peak = server.peak_rss_bytes()?;
            let growth = peak.saturating_sub(baseline);
            eprintln!(
                "wharf peak memory: {} MiB before, {} MiB after a {} MiB blob",
                baseline >> 20,
                peak >> 20,
                BLOB_SIZE >> 20
            );
            ensure!(
                growth < GROWTH_LIMIT,
                "wharf's peak memory grew by {} MiB (from {} MiB) for a {} MiB blob",
                growth >> 20,
                baseline >> 20,
                BLOB_SIZE >> 20
            );
        }
        target.assert_store_clean()
    })
}
