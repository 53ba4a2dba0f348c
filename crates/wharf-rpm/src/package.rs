//! A package already in the blob store, as a mirror reads it back: its
//! headers (a ranged read of the file's start, never the whole file) and the
//! check of its header signature against a remote's keys.

use futures_util::StreamExt;
use wharf_blob::{BlobStore, ByteRange};
use wharf_core::Digest;

use crate::header::{self, Parsed, RpmHeader};
use crate::RpmError;

/// The first read: most headers fit, a bigger one costs a second read.
const FIRST_READ: u64 = 256 << 10;

/// The headers of the stored package `digest` (`size` bytes), and the bytes
/// read to parse them (which hold the signed main header).
pub(crate) async fn stored_header(
    blobs: &BlobStore,
    digest: &Digest,
    size: u64,
    what: &str,
) -> Result<(Box<RpmHeader>, Vec<u8>), RpmError> {
    let mut head: Vec<u8> = Vec::new();
    loop {
        let want =
            match header::parse(&head).map_err(|e| RpmError::Package(format!("{what}: {e}")))? {
                Parsed::Done(h) => return Ok((h, head)),
                Parsed::NeedMore(n) => (n as u64).max(FIRST_READ),
            };
        let start = head.len() as u64;
        let end = want.min(size);
        if start >= end {
            return Err(RpmError::Package(format!(
                "{what}: the file ends inside its headers"
            )));
        }
        let mut stream = blobs
            .read(
                digest,
                Some(ByteRange {
                    start,
                    end: end - 1,
                }),
            )
            .await
            .map_err(|e| RpmError::Store(format!("{what}: {e}")))?;
        while let Some(chunk) = stream.next().await {
            head.extend_from_slice(&chunk.map_err(|e| RpmError::Store(format!("{what}: {e}")))?);
        }
    }
}

/// `Ok` when the package's header signature (what rpmsign writes: an
/// OpenPGP signature over the main header) was made by a key of `trust`.
pub(crate) fn check_signature(
    header: &RpmHeader,
    head: &[u8],
    trust: &wharf_sign::Keyring,
    what: &str,
) -> Result<(), RpmError> {
    let Some(signature) = &header.header_signature else {
        return Err(RpmError::Signature(format!(
            "{what} is not signed, and gpg_keys are configured for this remote"
        )));
    };
    let signed = head
        .get(header.header_start as usize..header.header_end as usize)
        .ok_or_else(|| {
            RpmError::Package(format!(
                "{what}: its main header lies outside the bytes read"
            ))
        })?;
    trust.verify_openpgp(signed, signature).map_err(|e| {
        RpmError::Signature(format!(
            "{what}: its signature is not one a configured key made ({e})"
        ))
    })?;
    Ok(())
}
