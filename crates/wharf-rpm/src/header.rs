//! Reading an RPM file's lead, signature header and main header.
//!
//! Written here rather than taken from the `rpm` crate: that crate's
//! `Package` reads the whole payload into memory, and its header-only reader
//! still pulls in its compression and signature stacks. Only the headers are
//! needed (the payload is streamed into the blob store untouched), and the
//! format is small: a 96-byte lead, then two headers of the same shape — a
//! 16-byte intro (magic, reserved, entry count, store size), the index
//! entries (16 bytes each) and the data store — the first padded to 8 bytes.
//!
//! [`parse`] works on the leading bytes of a file and says when it needs more
//! ([`Parsed::NeedMore`]), so the caller can feed it chunks as they arrive and
//! never hold more than the headers. Every offset and count is bounds-checked
//! against the store; sizes are capped so a hostile file cannot make us
//! allocate much. The main header is checked against the SHA-256 (or, for old
//! packages, SHA-1) digest the signature header carries.

use std::collections::BTreeMap;

use sha1::Digest as _;

use crate::RpmError;

const LEAD_LEN: usize = 96;
const LEAD_MAGIC: [u8; 4] = [0xed, 0xab, 0xee, 0xdb];
const HEADER_MAGIC: [u8; 8] = [0x8e, 0xad, 0xe8, 0x01, 0, 0, 0, 0];
/// rpm's own limits (`HEADER_TAGS_MAX`, and a data cap well under its 256 MiB).
const MAX_ENTRIES: u32 = 0xffff;
const MAX_STORE: u32 = 64 << 20;

/// The most leading bytes [`parse`] can ask for before it decides.
pub const MAX_HEADERS_LEN: usize =
    LEAD_LEN + 2 * (16 + 16 * MAX_ENTRIES as usize + MAX_STORE as usize) + 8;

// Signature header tags.
const SIG_SIZE: u32 = 1000;
const SIG_LONGSIZE: u32 = 270;
const SIG_PAYLOADSIZE: u32 = 1007;
const SIG_SHA1: u32 = 269;
const SIG_SHA256: u32 = 273;
const SIG_RSA: u32 = 268;
const SIG_DSA: u32 = 267;
const SIG_PGP: u32 = 1002;
const SIG_GPG: u32 = 1005;
const SIG_RESERVEDSPACE: u32 = 1008;
/// `RPMTAG_HEADERSIGNATURES`: the region tag of a signature header.
const REGION_SIGNATURES: u32 = 62;
/// Data types (`RPM_*_TYPE`).
const TYPE_BIN: u32 = 7;

/// Main header tags used for rpm-md metadata.
#[allow(missing_docs)]
pub mod tag {
    pub const NAME: u32 = 1000;
    pub const VERSION: u32 = 1001;
    pub const RELEASE: u32 = 1002;
    pub const EPOCH: u32 = 1003;
    pub const SUMMARY: u32 = 1004;
    pub const DESCRIPTION: u32 = 1005;
    pub const BUILDTIME: u32 = 1006;
    pub const BUILDHOST: u32 = 1007;
    pub const SIZE: u32 = 1009;
    pub const VENDOR: u32 = 1011;
    pub const LICENSE: u32 = 1014;
    pub const PACKAGER: u32 = 1015;
    pub const GROUP: u32 = 1016;
    pub const URL: u32 = 1020;
    pub const ARCH: u32 = 1022;
    pub const FILEMODES: u32 = 1030;
    pub const FILEFLAGS: u32 = 1037;
    pub const SOURCERPM: u32 = 1044;
    pub const ARCHIVESIZE: u32 = 1046;
    pub const PROVIDENAME: u32 = 1047;
    pub const REQUIREFLAGS: u32 = 1048;
    pub const REQUIRENAME: u32 = 1049;
    pub const REQUIREVERSION: u32 = 1050;
    pub const CONFLICTFLAGS: u32 = 1053;
    pub const CONFLICTNAME: u32 = 1054;
    pub const CONFLICTVERSION: u32 = 1055;
    pub const CHANGELOGTIME: u32 = 1080;
    pub const CHANGELOGNAME: u32 = 1081;
    pub const CHANGELOGTEXT: u32 = 1082;
    pub const OBSOLETENAME: u32 = 1090;
    pub const PROVIDEFLAGS: u32 = 1112;
    pub const PROVIDEVERSION: u32 = 1113;
    pub const OBSOLETEFLAGS: u32 = 1114;
    pub const OBSOLETEVERSION: u32 = 1115;
    pub const DIRINDEXES: u32 = 1116;
    pub const BASENAMES: u32 = 1117;
    pub const DIRNAMES: u32 = 1118;
    pub const SOURCEPACKAGE: u32 = 1106;
    pub const LONGSIZE: u32 = 5009;
    pub const LONGARCHIVESIZE: u32 = 271;
    pub const RECOMMENDNAME: u32 = 5046;
    pub const RECOMMENDVERSION: u32 = 5047;
    pub const RECOMMENDFLAGS: u32 = 5048;
    pub const SUGGESTNAME: u32 = 5049;
    pub const SUGGESTVERSION: u32 = 5050;
    pub const SUGGESTFLAGS: u32 = 5051;
    pub const SUPPLEMENTNAME: u32 = 5052;
    pub const SUPPLEMENTVERSION: u32 = 5053;
    pub const SUPPLEMENTFLAGS: u32 = 5054;
    pub const ENHANCENAME: u32 = 5055;
    pub const ENHANCEVERSION: u32 = 5056;
    pub const ENHANCEFLAGS: u32 = 5057;
}

/// One header entry's data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// CHAR, INT8, INT16, INT32, INT64.
    Int(Vec<u64>),
    /// STRING (one), STRING_ARRAY and I18NSTRING (the first is the default locale).
    Strings(Vec<String>),
    /// BIN.
    Bin(Vec<u8>),
}

/// The headers of one RPM file.
#[derive(Debug, Clone)]
pub struct RpmHeader {
    /// Where the main header starts in the file (createrepo_c's `header-range start`).
    pub header_start: u64,
    /// Where it ends, which is where the payload starts.
    pub header_end: u64,
    /// Header plus payload bytes, as the signature header states (the file's
    /// size is `header_start + signed_size`).
    pub signed_size: Option<u64>,
    /// Whether the signature header carries an OpenPGP signature.
    pub signed: bool,
    /// The OpenPGP signature of the main header (rpm 4's header-only RSA or
    /// DSA signature, what `rpmsign` writes), as a binary signature packet.
    pub header_signature: Option<Vec<u8>>,
    /// The uncompressed payload's size, which rpm keeps in the signature header.
    sig_archive_size: Option<u64>,
    tags: BTreeMap<u32, Value>,
}

/// What [`parse`] made of the leading bytes it was given.
#[derive(Debug)]
pub enum Parsed {
    /// The headers, complete and checked.
    Done(Box<RpmHeader>),
    /// At least this many leading bytes are needed to decide.
    NeedMore(usize),
}

fn bad(msg: impl Into<String>) -> RpmError {
    RpmError::Package(msg.into())
}

struct Section<'a> {
    index: &'a [u8],
    store: &'a [u8],
    /// Bytes from the intro's magic to the end of the store.
    len: usize,
}

/// Frames one header section at the start of `b` (magic, counts, bounds);
/// `Ok(None)` when `b` is too short, with the length needed in `need`.
fn section<'a>(b: &'a [u8], what: &str, need: &mut usize) -> Result<Option<Section<'a>>, RpmError> {
    if b.len() < 16 {
        *need = 16;
        return Ok(None);
    }
    if b[..8] != HEADER_MAGIC {
        return Err(bad(format!("the {what} header has no header magic")));
    }
    let count = u32::from_be_bytes(b[8..12].try_into().expect("4 bytes"));
    let store_len = u32::from_be_bytes(b[12..16].try_into().expect("4 bytes"));
    if count == 0 || count > MAX_ENTRIES {
        return Err(bad(format!("the {what} header claims {count} entries")));
    }
    if store_len > MAX_STORE {
        return Err(bad(format!(
            "the {what} header claims a {store_len}-byte store"
        )));
    }
    let index_len = 16 * count as usize;
    let len = 16 + index_len + store_len as usize;
    if b.len() < len {
        *need = len;
        return Ok(None);
    }
    Ok(Some(Section {
        index: &b[16..16 + index_len],
        store: &b[16 + index_len..len],
        len,
    }))
}

/// The entries of a framed section, every offset and count checked against its store.
fn entries(s: &Section<'_>, what: &str) -> Result<BTreeMap<u32, Value>, RpmError> {
    let mut tags = BTreeMap::new();
    for e in s.index.chunks_exact(16) {
        let word = |i: usize| u32::from_be_bytes(e[i..i + 4].try_into().expect("4 bytes"));
        let (tag, kind, offset, n) = (word(0), word(4), word(8) as usize, word(12) as usize);
        let value = value(s.store, kind, offset, n)
            .map_err(|m| bad(format!("the {what} header's tag {tag}: {m}")))?;
        if let Some(v) = value {
            tags.insert(tag, v);
        }
    }
    Ok(tags)
}

fn value(store: &[u8], kind: u32, offset: usize, n: usize) -> Result<Option<Value>, String> {
    let rest = store
        .get(offset..)
        .ok_or_else(|| format!("offset {offset} lies outside the store"))?;
    let ints = |width: usize| -> Result<Value, String> {
        let bytes = n
            .checked_mul(width)
            .and_then(|len| rest.get(..len))
            .ok_or_else(|| format!("{n} numbers overrun the store"))?;
        Ok(Value::Int(
            bytes
                .chunks_exact(width)
                .map(|c| c.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b)))
                .collect(),
        ))
    };
    Ok(Some(match kind {
        0 => return Ok(None),
        1 | 2 => ints(1)?,
        3 => ints(2)?,
        4 => ints(4)?,
        5 => ints(8)?,
        6..=9 if kind != 7 => {
            let n = if kind == 6 { 1 } else { n };
            let mut strings = Vec::with_capacity(n.min(4096));
            let mut at = rest;
            for _ in 0..n {
                let end = at
                    .iter()
                    .position(|b| *b == 0)
                    .ok_or("a string runs past the store")?;
                strings.push(String::from_utf8_lossy(&at[..end]).into_owned());
                at = &at[end + 1..];
            }
            Value::Strings(strings)
        }
        7 => Value::Bin(
            rest.get(..n)
                .ok_or_else(|| format!("{n} bytes overrun the store"))?
                .to_vec(),
        ),
        other => return Err(format!("unknown data type {other}")),
    }))
}

/// Parses the lead, signature header and main header at the start of `bytes`
/// (the first bytes of an RPM file, possibly more).
pub fn parse(bytes: &[u8]) -> Result<Parsed, RpmError> {
    if bytes.len() < LEAD_LEN {
        if !LEAD_MAGIC.starts_with(&bytes[..bytes.len().min(4)]) {
            return Err(bad("not an RPM file (no lead magic)"));
        }
        return Ok(Parsed::NeedMore(LEAD_LEN));
    }
    if bytes[..4] != LEAD_MAGIC {
        return Err(bad("not an RPM file (no lead magic)"));
    }
    if bytes[4] != 3 && bytes[4] != 4 {
        return Err(bad(format!(
            "RPM format version {} is not supported",
            bytes[4]
        )));
    }
    let mut need = 0;
    let Some(sig) = section(&bytes[LEAD_LEN..], "signature", &mut need)? else {
        return Ok(Parsed::NeedMore(LEAD_LEN + need));
    };
    let header_start = LEAD_LEN + sig.len.div_ceil(8) * 8;
    let Some(main) = section(bytes.get(header_start..).unwrap_or(&[]), "main", &mut need)? else {
        return Ok(Parsed::NeedMore(header_start + need));
    };
    let header_end = header_start + main.len;
    let header_bytes = &bytes[header_start..header_end];
    let sig_tags = entries(&sig, "signature")?;
    let hex_tag = |t: u32| match sig_tags.get(&t) {
        Some(Value::Strings(s)) => s.first().cloned(),
        _ => None,
    };
    match (hex_tag(SIG_SHA256), hex_tag(SIG_SHA1)) {
        (Some(want), _) => {
            if hex::encode(sha2::Sha256::digest(header_bytes)) != want.to_ascii_lowercase() {
                return Err(bad("the header does not match its SHA-256 digest"));
            }
        }
        (None, Some(want)) => {
            if hex::encode(sha1::Sha1::digest(header_bytes)) != want.to_ascii_lowercase() {
                return Err(bad("the header does not match its SHA-1 digest"));
            }
        }
        (None, None) => return Err(bad("the signature header carries no header digest")),
    }
    // Only bytes the digest vouches for are interpreted.
    let main_tags = entries(&main, "main")?;
    let int_tag = |t: u32| match sig_tags.get(&t) {
        Some(Value::Int(v)) => v.first().copied(),
        _ => None,
    };
    let signed_size = int_tag(SIG_LONGSIZE).or_else(|| int_tag(SIG_SIZE));
    let signed = [SIG_RSA, SIG_DSA, SIG_PGP, SIG_GPG]
        .iter()
        .any(|t| sig_tags.contains_key(t));
    let header = RpmHeader {
        header_start: header_start as u64,
        header_end: header_end as u64,
        signed_size,
        signed,
        header_signature: [SIG_RSA, SIG_DSA]
            .iter()
            .find_map(|t| match sig_tags.get(t) {
                Some(Value::Bin(b)) => Some(b.clone()),
                _ => None,
            }),
        sig_archive_size: int_tag(tag::LONGARCHIVESIZE).or_else(|| int_tag(SIG_PAYLOADSIZE)),
        tags: main_tags,
    };
    for (t, what) in [
        (tag::NAME, "name"),
        (tag::VERSION, "version"),
        (tag::RELEASE, "release"),
    ] {
        if header.string(t).is_none_or(str::is_empty) {
            return Err(bad(format!("the header has no {what}")));
        }
    }
    Ok(Parsed::Done(Box::new(header)))
}

/// The length of one entry's data at the start of `rest`, as rpm's
/// `dataLength` computes it; `None` when it overruns `rest`.
fn data_len(rest: &[u8], kind: u32, count: usize) -> Option<usize> {
    let width = match kind {
        1 | 2 => 1,
        3 => 2,
        4 => 4,
        5 => 8,
        TYPE_BIN => return (count <= rest.len()).then_some(count),
        6..=9 => {
            let n = if kind == 6 { 1 } else { count };
            let mut len = 0;
            for _ in 0..n {
                len += rest.get(len..)?.iter().position(|b| *b == 0)? + 1;
            }
            return Some(len);
        }
        _ => return None,
    };
    count.checked_mul(width).filter(|len| *len <= rest.len())
}

fn push_entry(index: &mut Vec<u8>, tag: u32, kind: u32, offset: usize, count: u32) {
    for word in [tag, kind, offset as u32, count] {
        index.extend_from_slice(&word.to_be_bytes());
    }
}

/// The alignment rpm requires of a type's data in a header store.
fn alignment(kind: u32) -> usize {
    match kind {
        3 => 2,
        4 => 4,
        5 => 8,
        _ => 1,
    }
}

/// rpm's signature tag for a header-only OpenPGP signature: RSA keys go
/// under `RSAHEADER`, every other algorithm (DSA, EdDSA, ECDSA) under
/// `DSAHEADER`, as `rpmsign` files them.
fn header_signature_tag(signature: &[u8]) -> Result<u32, RpmError> {
    let not_a_signature = || bad("the package signer returned no OpenPGP signature packet");
    let first = *signature.first().ok_or_else(not_a_signature)?;
    if first & 0x80 == 0 {
        return Err(not_a_signature());
    }
    // The packet header: the new format's tag and length octets, or the old one's.
    let (tag, body_at) = if first & 0x40 != 0 {
        let len_at = signature.get(1).copied().ok_or_else(not_a_signature)?;
        let len_octets = match len_at {
            0..=191 => 1,
            192..=223 => 2,
            255 => 5,
            _ => return Err(not_a_signature()),
        };
        (first & 0x3f, 1 + len_octets)
    } else {
        let len_octets = match first & 3 {
            0 => 1,
            1 => 2,
            2 => 4,
            _ => return Err(not_a_signature()),
        };
        ((first >> 2) & 0x0f, 1 + len_octets)
    };
    if tag != 2 {
        return Err(not_a_signature());
    }
    let body = signature.get(body_at..).ok_or_else(not_a_signature)?;
    // v4 (and v5/v6): version, type, public-key algorithm; v3 keeps the
    // algorithm after its hashed material and key ID.
    let algorithm = match body.first() {
        Some(3) => body.get(15),
        Some(4..=6) => body.get(2),
        _ => None,
    }
    .copied()
    .ok_or_else(not_a_signature)?;
    Ok(if (1..=3).contains(&algorithm) {
        SIG_RSA
    } else {
        SIG_DSA
    })
}

/// The leading bytes of a package (at least through its main header, as
/// [`parse`] read them) with its signature header rewritten to carry
/// `signature`, a binary OpenPGP signature of the main header, in place of
/// any signatures it carried: what `rpmsign --resign` does. The main header
/// and payload are untouched, so every digest but the signatures stays valid;
/// `RESERVEDSPACE` (left by rpmbuild for this) shrinks so that, when it can,
/// the file keeps its size and the main header its offset.
pub fn with_header_signature(
    bytes: &[u8],
    header: &RpmHeader,
    signature: &[u8],
) -> Result<Vec<u8>, RpmError> {
    let sig_tag = header_signature_tag(signature)?;
    let mut need = 0;
    let sig = section(&bytes[LEAD_LEN..], "signature", &mut need)?
        .ok_or_else(|| bad("the signature header is incomplete"))?;
    let header_start = header.header_start as usize;
    let mut kept: Vec<(u32, u32, u32, &[u8])> = Vec::new();
    let mut reserved = false;
    for e in sig.index.chunks_exact(16) {
        let word = |i: usize| u32::from_be_bytes(e[i..i + 4].try_into().expect("4 bytes"));
        let (tag, kind, offset, count) = (word(0), word(4), word(8) as usize, word(12));
        match tag {
            REGION_SIGNATURES | SIG_RSA | SIG_DSA | SIG_PGP | SIG_GPG => continue,
            SIG_RESERVEDSPACE => {
                reserved = true;
                continue;
            }
            _ => {}
        }
        let rest = sig.store.get(offset..).ok_or_else(|| {
            bad(format!(
                "the signature header's tag {tag} lies outside its store"
            ))
        })?;
        let len = data_len(rest, kind, count as usize).ok_or_else(|| {
            bad(format!(
                "the signature header's tag {tag} overruns its store"
            ))
        })?;
        kept.push((tag, kind, count, &rest[..len]));
    }
    let len = u32::try_from(signature.len()).map_err(|_| bad("the signature is too large"))?;
    kept.push((sig_tag, TYPE_BIN, len, signature));
    kept.sort_by_key(|(tag, ..)| *tag);

    let build = |entries: &[(u32, u32, u32, &[u8])]| -> Vec<u8> {
        // The region entry first, its trailer last in the store.
        let count = entries.len() + 1;
        let mut index = Vec::with_capacity(16 * count);
        let mut store: Vec<u8> = Vec::new();
        let mut rest_index = Vec::with_capacity(16 * entries.len());
        for (tag, kind, n, data) in entries {
            let align = alignment(*kind);
            store.resize(store.len().div_ceil(align) * align, 0);
            push_entry(&mut rest_index, *tag, *kind, store.len(), *n);
            store.extend_from_slice(data);
        }
        let trailer_at = store.len();
        let negative_index = (-(16 * count as i64)) as i32 as u32;
        for word in [REGION_SIGNATURES, TYPE_BIN, negative_index, 16] {
            store.extend_from_slice(&word.to_be_bytes());
        }
        push_entry(&mut index, REGION_SIGNATURES, TYPE_BIN, trailer_at, 16);
        index.extend(rest_index);
        let mut out = HEADER_MAGIC.to_vec();
        out.extend_from_slice(&(count as u32).to_be_bytes());
        out.extend_from_slice(&(store.len() as u32).to_be_bytes());
        out.extend(index);
        out.extend(store);
        out
    };
    let mut section_bytes = build(&kept);
    let old_len = header_start - LEAD_LEN;
    if reserved {
        // Another entry (16 index bytes) and its data must fit exactly into
        // what the old header took, padding included.
        let room = old_len.checked_sub(section_bytes.len() + 16);
        if let Some(room) = room.filter(|r| *r > 0) {
            let zeros = vec![0u8; room];
            let mut with_reserve = kept.clone();
            with_reserve.push((SIG_RESERVEDSPACE, TYPE_BIN, room as u32, &zeros));
            with_reserve.sort_by_key(|(tag, ..)| *tag);
            section_bytes = build(&with_reserve);
        }
    }
    let mut out = Vec::with_capacity(bytes.len() + signature.len());
    out.extend_from_slice(&bytes[..LEAD_LEN]);
    out.extend_from_slice(&section_bytes);
    out.resize(out.len().div_ceil(8) * 8, 0);
    out.extend_from_slice(&bytes[header_start..]);
    Ok(out)
}

impl RpmHeader {
    /// A string tag (the first of an array).
    pub fn string(&self, tag: u32) -> Option<&str> {
        match self.tags.get(&tag) {
            Some(Value::Strings(s)) => s.first().map(String::as_str),
            _ => None,
        }
    }

    /// A string array tag; empty when absent.
    pub fn strings(&self, tag: u32) -> &[String] {
        match self.tags.get(&tag) {
            Some(Value::Strings(s)) => s,
            _ => &[],
        }
    }

    /// A number array tag; empty when absent.
    pub fn ints(&self, tag: u32) -> &[u64] {
        match self.tags.get(&tag) {
            Some(Value::Int(v)) => v,
            _ => &[],
        }
    }

    /// A number tag.
    pub fn int(&self, tag: u32) -> Option<u64> {
        self.ints(tag).first().copied()
    }

    /// The uncompressed payload's size (`size archive`).
    pub fn archive_size(&self) -> u64 {
        self.int(tag::LONGARCHIVESIZE)
            .or_else(|| self.int(tag::ARCHIVESIZE))
            .or(self.sig_archive_size)
            .unwrap_or(0)
    }

    /// `NAME`.
    pub fn name(&self) -> &str {
        self.string(tag::NAME).unwrap_or_default()
    }

    /// `src` for a source package, else `ARCH`.
    pub fn arch(&self) -> &str {
        if self.tags.contains_key(&tag::SOURCEPACKAGE) {
            "src"
        } else {
            self.string(tag::ARCH).unwrap_or("noarch")
        }
    }

    /// `EPOCH` (0 when absent).
    pub fn epoch(&self) -> u64 {
        self.int(tag::EPOCH).unwrap_or(0)
    }

    /// `VERSION`.
    pub fn version(&self) -> &str {
        self.string(tag::VERSION).unwrap_or_default()
    }

    /// `RELEASE`.
    pub fn release(&self) -> &str {
        self.string(tag::RELEASE).unwrap_or_default()
    }

    /// `NAME-VERSION-RELEASE.ARCH`, the conventional file name without `.rpm`
    /// (and the form `wharf rpm rm` takes, with `EPOCH:` before the version when nonzero).
    pub fn nvra(&self) -> String {
        format!(
            "{}-{}-{}.{}",
            self.name(),
            self.version(),
            self.release(),
            self.arch()
        )
    }

    /// `NAME-[EPOCH:]VERSION-RELEASE.ARCH`.
    pub fn nevra(&self) -> String {
        match self.epoch() {
            0 => self.nvra(),
            e => format!(
                "{}-{e}:{}-{}.{}",
                self.name(),
                self.version(),
                self.release(),
                self.arch()
            ),
        }
    }

    /// The full paths of the files the package installs, in header order,
    /// with their modes and flags.
    pub fn files(&self) -> impl Iterator<Item = (String, u64, u64)> + '_ {
        let dirs = self.strings(tag::DIRNAMES);
        let base = self.strings(tag::BASENAMES);
        let index = self.ints(tag::DIRINDEXES);
        let modes = self.ints(tag::FILEMODES);
        let flags = self.ints(tag::FILEFLAGS);
        base.iter().enumerate().map(move |(i, b)| {
            let dir = index
                .get(i)
                .and_then(|d| dirs.get(*d as usize))
                .map(String::as_str)
                .unwrap_or_default();
            (
                format!("{dir}{b}"),
                modes.get(i).copied().unwrap_or(0),
                flags.get(i).copied().unwrap_or(0),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A header section with the given entries (tag, type, data).
    fn section_bytes(entries: &[(u32, u32, u32, Vec<u8>)]) -> Vec<u8> {
        let mut index = Vec::new();
        let mut store = Vec::new();
        for (tag, kind, count, data) in entries {
            index.extend_from_slice(&tag.to_be_bytes());
            index.extend_from_slice(&kind.to_be_bytes());
            index.extend_from_slice(&(store.len() as u32).to_be_bytes());
            index.extend_from_slice(&count.to_be_bytes());
            store.extend_from_slice(data);
        }
        let mut out = HEADER_MAGIC.to_vec();
        out.extend_from_slice(&(entries.len() as u32).to_be_bytes());
        out.extend_from_slice(&(store.len() as u32).to_be_bytes());
        out.extend(index);
        out.extend(store);
        out
    }

    fn string(s: &str) -> Vec<u8> {
        let mut v = s.as_bytes().to_vec();
        v.push(0);
        v
    }

    /// A small but complete RPM: lead, signature header with the SHA-256 of the
    /// main header and the size, main header, a payload.
    fn sample() -> Vec<u8> {
        let main = section_bytes(&[
            (tag::NAME, 6, 1, string("hello")),
            (tag::VERSION, 6, 1, string("1.0")),
            (tag::RELEASE, 6, 1, string("1")),
            (tag::ARCH, 6, 1, string("noarch")),
            (tag::REQUIRENAME, 8, 2, [string("a"), string("b")].concat()),
        ]);
        let payload = b"payload bytes";
        let digest = hex::encode(sha2::Sha256::digest(&main));
        let size = (main.len() + payload.len()) as u32;
        let sig = section_bytes(&[
            (SIG_SHA256, 6, 1, string(&digest)),
            (SIG_SIZE, 4, 1, size.to_be_bytes().to_vec()),
        ]);
        let mut out = LEAD_MAGIC.to_vec();
        out.extend_from_slice(&[3, 0]);
        out.resize(LEAD_LEN, 0);
        out.extend_from_slice(&sig);
        out.resize(out.len().div_ceil(8) * 8, 0);
        out.extend(main);
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn a_complete_package_parses() {
        let bytes = sample();
        let Parsed::Done(h) = parse(&bytes).unwrap() else {
            panic!("incomplete")
        };
        assert_eq!(h.nevra(), "hello-1.0-1.noarch");
        assert_eq!(h.strings(tag::REQUIRENAME), ["a", "b"]);
        assert_eq!(
            h.header_start + h.signed_size.unwrap(),
            bytes.len() as u64,
            "the signature header's size covers header and payload"
        );
        assert!(!h.signed);
    }

    #[test]
    fn truncations_ask_for_more_and_flipped_bytes_never_panic() {
        let bytes = sample();
        let Parsed::Done(h) = parse(&bytes).unwrap() else {
            panic!()
        };
        let end = h.header_end as usize;
        for cut in 0..end {
            match parse(&bytes[..cut]) {
                Ok(Parsed::NeedMore(n)) => assert!(n > cut, "asks for more than it has"),
                other => panic!("a {cut}-byte prefix gave {other:?}"),
            }
        }
        // Every single flipped byte in the headers is either refused or, for
        // the few bytes no check covers (lead padding, signature values other
        // than the digest), parsed; never a panic.
        let mut refused = 0;
        for at in 0..end {
            let mut b = bytes.clone();
            b[at] ^= 0x5a;
            match parse(&b) {
                Err(RpmError::Package(_)) | Ok(Parsed::NeedMore(_)) => refused += 1,
                Err(other) => panic!("unexpected error {other}"),
                Ok(Parsed::Done(_)) => {}
            }
        }
        // Every byte of the main header is covered by the digest.
        let main_len = end - h.header_start as usize;
        assert!(refused >= main_len, "{refused} refusals of {end} flips");
        for at in h.header_start as usize..end {
            let mut b = bytes.clone();
            b[at] ^= 1;
            assert!(
                !matches!(parse(&b), Ok(Parsed::Done(_))),
                "a flip at {at} in the main header passed"
            );
        }
    }

    /// A v4 OpenPGP signature packet (new format) made by `algorithm`; the
    /// rest is filler, as only rpm's tag choice reads it here.
    fn signature_packet(algorithm: u8) -> Vec<u8> {
        let mut body = vec![4, 0, algorithm, 8];
        body.extend(std::iter::repeat_n(0xab, 60));
        let mut out = vec![0xc2, body.len() as u8];
        out.extend(body);
        out
    }

    #[test]
    fn a_new_header_signature_replaces_the_old_and_leaves_header_and_payload_alone() {
        let bytes = sample();
        let Parsed::Done(h) = parse(&bytes).unwrap() else {
            panic!()
        };
        let eddsa = signature_packet(22);
        let signed = with_header_signature(&bytes, &h, &eddsa).unwrap();
        let Parsed::Done(s) = parse(&signed).unwrap() else {
            panic!("the signed copy does not parse")
        };
        assert!(s.signed);
        assert_eq!(s.header_signature.as_deref(), Some(&eddsa[..]));
        assert_eq!(
            &signed[s.header_start as usize..],
            &bytes[h.header_start as usize..],
            "header and payload are byte for byte the original's"
        );
        assert_eq!(s.header_start % 8, 0);
        // Signing again replaces the signature: an RSA one goes under RSAHEADER.
        let rsa = signature_packet(1);
        let again = with_header_signature(&signed, &s, &rsa).unwrap();
        let Parsed::Done(a) = parse(&again).unwrap() else {
            panic!()
        };
        assert_eq!(a.header_signature.as_deref(), Some(&rsa[..]));
        let sig = section(&again[LEAD_LEN..], "signature", &mut 0)
            .unwrap()
            .unwrap();
        let tags = entries(&sig, "signature").unwrap();
        assert!(tags.contains_key(&SIG_RSA) && !tags.contains_key(&SIG_DSA));
        // The region trailer says the region holds every entry.
        let trailer = &sig.store[sig.store.len() - 16..];
        let count = sig.index.len() as i32 / 16;
        assert_eq!(&trailer[..4], &REGION_SIGNATURES.to_be_bytes());
        assert_eq!(
            i32::from_be_bytes(trailer[8..12].try_into().unwrap()),
            -16 * count
        );
        assert!(with_header_signature(&bytes, &h, b"not a packet").is_err());
    }

    #[test]
    fn reserved_space_absorbs_the_signature_so_the_header_keeps_its_offset() {
        let main = section_bytes(&[
            (tag::NAME, 6, 1, string("hello")),
            (tag::VERSION, 6, 1, string("1.0")),
            (tag::RELEASE, 6, 1, string("1")),
        ]);
        let digest = hex::encode(sha2::Sha256::digest(&main));
        let size = (main.len() as u32 + 4).to_be_bytes().to_vec();
        let sig = section_bytes(&[
            (SIG_SHA256, 6, 1, string(&digest)),
            (SIG_SIZE, 4, 1, size),
            (SIG_RESERVEDSPACE, 7, 4128, vec![0; 4128]),
        ]);
        let mut bytes = LEAD_MAGIC.to_vec();
        bytes.extend_from_slice(&[3, 0]);
        bytes.resize(LEAD_LEN, 0);
        bytes.extend_from_slice(&sig);
        bytes.resize(bytes.len().div_ceil(8) * 8, 0);
        bytes.extend(main);
        bytes.extend_from_slice(b"data");
        let Parsed::Done(h) = parse(&bytes).unwrap() else {
            panic!()
        };
        let signed = with_header_signature(&bytes, &h, &signature_packet(22)).unwrap();
        let Parsed::Done(s) = parse(&signed).unwrap() else {
            panic!()
        };
        assert_eq!(s.header_start, h.header_start);
        assert_eq!(signed.len(), bytes.len());
    }

    #[test]
    fn garbage_is_not_an_rpm() {
        assert!(matches!(parse(b"<html>"), Err(RpmError::Package(_))));
        assert!(matches!(
            parse(&[0u8; 200]),
            Err(RpmError::Package(m)) if m.contains("not an RPM")
        ));
        // A deterministic shower of random bytes behind a valid lead.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..2000 {
            let mut b = sample();
            for _ in 0..4 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let at = LEAD_LEN + (state as usize % (b.len() - LEAD_LEN));
                b[at] = (state >> 32) as u8;
            }
            let _ = parse(&b);
        }
    }
}
