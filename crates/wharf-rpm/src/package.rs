//! A package already in the blob store, as a mirror reads it back: its
//! headers (a ranged read of the file's start, never the whole file) and the
//! check of its header signature against a remote's keys.

use wharf_blob::BlobStore;
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
        // One read into memory (one hop to the store, not a stream): metadata
        // generation reads every package's headers this way.
        let bytes = blobs
            .read_at(digest, start, end - start)
            .await
            .map_err(|e| RpmError::Store(format!("{what}: {e}")))?;
        if bytes.is_empty() {
            return Err(RpmError::Package(format!(
                "{what}: the file ends inside its headers"
            )));
        }
        if head.is_empty() {
            head = Vec::from(bytes);
        } else {
            head.extend_from_slice(&bytes);
        }
    }
}

/// The headers of many stored packages (`(digest, size, what)`), their
/// starts read together; a package whose headers do not fit the first read
/// is read again on its own.
pub(crate) async fn stored_headers(
    blobs: &BlobStore,
    packages: &[(&Digest, u64, &str)],
) -> Vec<Result<Box<RpmHeader>, RpmError>> {
    let digests: Vec<Digest> = packages.iter().map(|(d, _, _)| (*d).clone()).collect();
    let heads = blobs.read_heads(&digests, FIRST_READ).await;
    let mut headers = Vec::with_capacity(packages.len());
    for (&(digest, size, what), head) in packages.iter().zip(heads) {
        let parsed = match head {
            Err(e) => Err(RpmError::Store(format!("{what}: {e}"))),
            Ok(head) => match header::parse(&head) {
                Ok(Parsed::Done(h)) => Ok(h),
                Ok(Parsed::NeedMore(_)) if (head.len() as u64) < size => {
                    stored_header(blobs, digest, size, what)
                        .await
                        .map(|(h, _)| h)
                }
                Ok(Parsed::NeedMore(_)) => Err(RpmError::Package(format!(
                    "{what}: the file ends inside its headers"
                ))),
                Err(e) => Err(RpmError::Package(format!("{what}: {e}"))),
            },
        };
        headers.push(parsed);
    }
    headers
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
