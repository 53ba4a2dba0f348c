//! OSTree's object model: checksums, object names and paths, the metadata
//! objects (commit, dirtree, dirmeta), the archive repository's compressed
//! content objects (`.filez`), and the rule each is verified by.
//!
//! Every reader here refuses what OSTree itself would not write: non-normal
//! GVariant, wrong lengths, names that are not a single path component. A
//! metadata object's checksum is the SHA-256 of its bytes; a content object's
//! is the SHA-256 of its size-prefixed `(uuuusa(ayay))` header followed by the
//! uncompressed content, which is why a `.filez` is inflated to be verified.

use std::fmt;

use sha2::{Digest as _, Sha256};

use crate::gvariant::{decode_normal, GvError, Type, Value};

/// A problem with one object's bytes.
#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    #[error("{0}")]
    GVariant(#[from] GvError),
    #[error("checksum mismatch: expected {expected}, the bytes hash to {actual}")]
    ChecksumMismatch {
        expected: Checksum,
        actual: Checksum,
    },
    #[error("{0:?} is not a 64-digit lower-case hex checksum")]
    BadChecksum(String),
    #[error("a checksum field holds {0} bytes, not 32")]
    BadChecksumBytes(usize),
    #[error("{0:?} is not a valid file name in a tree")]
    BadFileName(String),
    #[error("content object: {0}")]
    BadContent(String),
}

/// A SHA-256 naming an object.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Checksum([u8; 32]);

impl Checksum {
    /// Parses 64 lower-case hex digits.
    pub fn from_hex(s: &str) -> Result<Checksum, ObjectError> {
        if s.len() != 64 || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(ObjectError::BadChecksum(s.chars().take(80).collect()));
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(|_| ObjectError::BadChecksum(s.into()))?;
        Ok(Checksum(out))
    }

    /// From the 32 raw bytes of an `ay` field.
    pub fn from_bytes(b: &[u8]) -> Result<Checksum, ObjectError> {
        Ok(Checksum(
            b.try_into()
                .map_err(|_| ObjectError::BadChecksumBytes(b.len()))?,
        ))
    }

    /// The SHA-256 of `bytes`.
    pub fn of(bytes: &[u8]) -> Checksum {
        Checksum(Sha256::digest(bytes).into())
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for Checksum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Checksum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Checksum({})", self.to_hex())
    }
}

/// The kinds of loose object an archive repository holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ObjectType {
    Commit,
    CommitMeta,
    DirTree,
    DirMeta,
    /// A content object, compressed (`.filez` in archive repositories).
    File,
}

impl ObjectType {
    /// The loose object's file extension in an archive repository.
    pub fn extension(self) -> &'static str {
        match self {
            ObjectType::Commit => "commit",
            ObjectType::CommitMeta => "commitmeta",
            ObjectType::DirTree => "dirtree",
            ObjectType::DirMeta => "dirmeta",
            ObjectType::File => "filez",
        }
    }

    /// Whether `ostree` counts it as metadata (everything but content).
    pub fn is_metadata(self) -> bool {
        self != ObjectType::File
    }
}

/// An object's name: its checksum and type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ObjectName {
    pub checksum: Checksum,
    pub kind: ObjectType,
}

impl ObjectName {
    pub fn new(checksum: Checksum, kind: ObjectType) -> ObjectName {
        ObjectName { checksum, kind }
    }

    /// `objects/XX/REST.EXT`, relative to the repository root.
    pub fn path(&self) -> String {
        let hex = self.checksum.to_hex();
        format!(
            "objects/{}/{}.{}",
            &hex[..2],
            &hex[2..],
            self.kind.extension()
        )
    }
}

impl fmt::Display for ObjectName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.checksum, self.kind.extension())
    }
}

/// `a{sv}` metadata as ordered (key, value) pairs; the value is the variant's content.
pub type Metadata = Vec<(String, Value)>;

fn metadata_of(v: Value) -> Result<Metadata, ObjectError> {
    Ok(metadata_of_value(v))
}

/// An `a{sv}` value (decoded by that type) as metadata pairs.
pub fn metadata_of_value(v: Value) -> Metadata {
    let Value::Array(_, entries) = v else {
        unreachable!("decoded by type a{{sv}}")
    };
    entries
        .into_iter()
        .map(|e| match e {
            Value::DictEntry(k, v) => match (*k, *v) {
                (Value::Str(k), Value::Variant(v)) => (k, *v),
                _ => unreachable!("decoded by type {{sv}}"),
            },
            _ => unreachable!("decoded by type {{sv}}"),
        })
        .collect()
}

/// Metadata back into its `a{sv}` value.
pub fn metadata_value(m: &Metadata) -> Value {
    Value::Array(
        Type::parse("{sv}").expect("literal"),
        m.iter()
            .map(|(k, v)| {
                Value::DictEntry(
                    Box::new(Value::Str(k.clone())),
                    Box::new(Value::Variant(Box::new(v.clone()))),
                )
            })
            .collect(),
    )
}

fn members(v: Value) -> Vec<Value> {
    match v {
        Value::Tuple(m) => m,
        _ => unreachable!("decoded by a tuple type"),
    }
}

fn take_str(v: Value) -> String {
    match v {
        Value::Str(s) => s,
        _ => unreachable!("decoded by type s"),
    }
}

fn take_bytes(v: Value) -> Vec<u8> {
    match v {
        Value::Bytes(b) => b,
        _ => unreachable!("decoded by type ay"),
    }
}

fn take_array(v: Value) -> Vec<Value> {
    match v {
        Value::Array(_, items) => items,
        _ => unreachable!("decoded by an array type"),
    }
}

/// OSTree stores these fields big-endian inside little-endian GVariant.
fn be32(v: Value) -> u32 {
    match v {
        Value::U32(x) => u32::from_be(x.to_le()),
        _ => unreachable!("decoded by type u"),
    }
}

fn be64(v: Value) -> u64 {
    match v {
        Value::U64(x) => u64::from_be(x.to_le()),
        _ => unreachable!("decoded by type t"),
    }
}

fn be32_value(x: u32) -> Value {
    Value::U32(u32::from_le(x.to_be()))
}

fn be64_value(x: u64) -> Value {
    Value::U64(u64::from_le(x.to_be()))
}

/// One file name inside a dirtree, as `ostree_validate_filename` allows it.
pub fn validate_file_name(name: &str) -> Result<(), ObjectError> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') {
        return Err(ObjectError::BadFileName(name.chars().take(300).collect()));
    }
    Ok(())
}

/// The xattrs of a file or directory: raw (name, value) pairs.
pub type Xattrs = Vec<(Vec<u8>, Vec<u8>)>;

fn xattrs_of(v: Value) -> Xattrs {
    take_array(v)
        .into_iter()
        .map(|p| {
            let mut m = members(p);
            let value = take_bytes(m.pop().expect("ayay"));
            let name = take_bytes(m.pop().expect("ayay"));
            (name, value)
        })
        .collect()
}

pub(crate) fn xattrs_value(x: &Xattrs) -> Value {
    Value::Array(
        Type::parse("(ayay)").expect("literal"),
        x.iter()
            .map(|(n, v)| Value::Tuple(vec![Value::Bytes(n.clone()), Value::Bytes(v.clone())]))
            .collect(),
    )
}

/// A commit object: `(a{sv}aya(say)sstayay)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Commit {
    pub metadata: Metadata,
    pub parent: Option<Checksum>,
    pub related: Vec<(String, Checksum)>,
    pub subject: String,
    pub body: String,
    /// Seconds since the epoch (UTC).
    pub timestamp: u64,
    pub root_tree: Checksum,
    pub root_meta: Checksum,
}

pub const COMMIT_TYPE: &str = "(a{sv}aya(say)sstayay)";
pub const DIRTREE_TYPE: &str = "(a(say)a(sayay))";
pub const DIRMETA_TYPE: &str = "(uuua(ayay))";
pub const FILEZ_HEADER_TYPE: &str = "(tuuuusa(ayay))";
pub const FILE_HEADER_TYPE: &str = "(uuuusa(ayay))";
pub const COMMITMETA_TYPE: &str = "a{sv}";

impl Commit {
    pub fn parse(bytes: &[u8]) -> Result<Commit, ObjectError> {
        let v = decode_normal(&Type::parse(COMMIT_TYPE).expect("literal"), bytes)?;
        let mut m = members(v).into_iter();
        let mut next = || m.next().expect("seven members");
        let metadata = metadata_of(next())?;
        let parent = take_bytes(next());
        let parent = if parent.is_empty() {
            None
        } else {
            Some(Checksum::from_bytes(&parent)?)
        };
        let related = take_array(next())
            .into_iter()
            .map(|r| {
                let mut m = members(r);
                let checksum = Checksum::from_bytes(&take_bytes(m.pop().expect("say")))?;
                Ok((take_str(m.pop().expect("say")), checksum))
            })
            .collect::<Result<_, ObjectError>>()?;
        Ok(Commit {
            metadata,
            parent,
            related,
            subject: take_str(next()),
            body: take_str(next()),
            timestamp: be64(next()),
            root_tree: Checksum::from_bytes(&take_bytes(next()))?,
            root_meta: Checksum::from_bytes(&take_bytes(next()))?,
        })
    }

    pub fn encode(&self) -> Vec<u8> {
        Value::Tuple(vec![
            metadata_value(&self.metadata),
            Value::Bytes(self.parent.map(|p| p.0.to_vec()).unwrap_or_default()),
            Value::Array(
                Type::parse("(say)").expect("literal"),
                self.related
                    .iter()
                    .map(|(n, c)| {
                        Value::Tuple(vec![Value::Str(n.clone()), Value::Bytes(c.0.to_vec())])
                    })
                    .collect(),
            ),
            Value::Str(self.subject.clone()),
            Value::Str(self.body.clone()),
            be64_value(self.timestamp),
            Value::Bytes(self.root_tree.0.to_vec()),
            Value::Bytes(self.root_meta.0.to_vec()),
        ])
        .encode()
    }

    /// A metadata value by key.
    pub fn meta(&self, key: &str) -> Option<&Value> {
        self.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }
}

/// A dirtree object: `(a(say)a(sayay))`, files then subdirectories, each sorted by name.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DirTree {
    /// (name, content checksum)
    pub files: Vec<(String, Checksum)>,
    /// (name, dirtree checksum, dirmeta checksum)
    pub dirs: Vec<(String, Checksum, Checksum)>,
}

impl DirTree {
    pub fn parse(bytes: &[u8]) -> Result<DirTree, ObjectError> {
        let v = decode_normal(&Type::parse(DIRTREE_TYPE).expect("literal"), bytes)?;
        let mut m = members(v);
        let dirs = take_array(m.pop().expect("two members"))
            .into_iter()
            .map(|d| {
                let mut m = members(d);
                let meta = Checksum::from_bytes(&take_bytes(m.pop().expect("sayay")))?;
                let tree = Checksum::from_bytes(&take_bytes(m.pop().expect("sayay")))?;
                let name = take_str(m.pop().expect("sayay"));
                validate_file_name(&name)?;
                Ok((name, tree, meta))
            })
            .collect::<Result<_, ObjectError>>()?;
        let files = take_array(m.pop().expect("two members"))
            .into_iter()
            .map(|f| {
                let mut m = members(f);
                let checksum = Checksum::from_bytes(&take_bytes(m.pop().expect("say")))?;
                let name = take_str(m.pop().expect("say"));
                validate_file_name(&name)?;
                Ok((name, checksum))
            })
            .collect::<Result<_, ObjectError>>()?;
        Ok(DirTree { files, dirs })
    }

    pub fn encode(&self) -> Vec<u8> {
        Value::Tuple(vec![
            Value::Array(
                Type::parse("(say)").expect("literal"),
                self.files
                    .iter()
                    .map(|(n, c)| {
                        Value::Tuple(vec![Value::Str(n.clone()), Value::Bytes(c.0.to_vec())])
                    })
                    .collect(),
            ),
            Value::Array(
                Type::parse("(sayay)").expect("literal"),
                self.dirs
                    .iter()
                    .map(|(n, t, m)| {
                        Value::Tuple(vec![
                            Value::Str(n.clone()),
                            Value::Bytes(t.0.to_vec()),
                            Value::Bytes(m.0.to_vec()),
                        ])
                    })
                    .collect(),
            ),
        ])
        .encode()
    }
}

/// A dirmeta object: `(uuua(ayay))`.
#[derive(Debug, Clone, PartialEq)]
pub struct DirMeta {
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
    pub xattrs: Xattrs,
}

impl DirMeta {
    pub fn parse(bytes: &[u8]) -> Result<DirMeta, ObjectError> {
        let v = decode_normal(&Type::parse(DIRMETA_TYPE).expect("literal"), bytes)?;
        let mut m = members(v).into_iter();
        let mut next = || m.next().expect("four members");
        Ok(DirMeta {
            uid: be32(next()),
            gid: be32(next()),
            mode: be32(next()),
            xattrs: xattrs_of(next()),
        })
    }

    pub fn encode(&self) -> Vec<u8> {
        Value::Tuple(vec![
            be32_value(self.uid),
            be32_value(self.gid),
            be32_value(self.mode),
            xattrs_value(&self.xattrs),
        ])
        .encode()
    }
}

/// The header of a content object: what `ostree` hashes along with the content.
#[derive(Debug, Clone, PartialEq)]
pub struct FileHeader {
    /// The uncompressed content's length (0 for a symlink).
    pub size: u64,
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
    pub rdev: u32,
    /// The target when this is a symlink, else empty.
    pub symlink_target: String,
    pub xattrs: Xattrs,
}

const S_IFMT: u32 = 0o170000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;

impl FileHeader {
    pub fn is_regular(&self) -> bool {
        self.mode & S_IFMT == S_IFREG
    }

    pub fn is_symlink(&self) -> bool {
        self.mode & S_IFMT == S_IFLNK
    }

    /// `(uuuusa(ayay))`, the form hashed into the content checksum.
    pub fn checksum_header(&self) -> Vec<u8> {
        Value::Tuple(vec![
            be32_value(self.uid),
            be32_value(self.gid),
            be32_value(self.mode),
            be32_value(self.rdev),
            Value::Str(self.symlink_target.clone()),
            xattrs_value(&self.xattrs),
        ])
        .encode()
    }

    /// `(tuuuusa(ayay))`, the archive (`.filez`) form.
    pub fn archive_header(&self) -> Vec<u8> {
        Value::Tuple(vec![
            be64_value(self.size),
            be32_value(self.uid),
            be32_value(self.gid),
            be32_value(self.mode),
            be32_value(self.rdev),
            Value::Str(self.symlink_target.clone()),
            xattrs_value(&self.xattrs),
        ])
        .encode()
    }

    fn parse_archive(bytes: &[u8]) -> Result<FileHeader, ObjectError> {
        let v = decode_normal(&Type::parse(FILEZ_HEADER_TYPE).expect("literal"), bytes)?;
        let mut m = members(v).into_iter();
        let mut next = || m.next().expect("seven members");
        let size = be64(next());
        let uid = be32(next());
        let gid = be32(next());
        let mode = be32(next());
        let rdev = be32(next());
        let symlink_target = take_str(next());
        let xattrs = xattrs_of(next());
        Ok(FileHeader {
            size,
            uid,
            gid,
            mode,
            rdev,
            symlink_target,
            xattrs,
        })
    }

    /// Starts the content checksum: the size-prefixed header.
    pub fn start_checksum(&self) -> Sha256 {
        let header = self.checksum_header();
        let mut h = Sha256::new();
        h.update(sized_prefix(header.len()));
        h.update(&header);
        h
    }
}

/// `_ostree_write_variant_with_size`'s framing: a big-endian u32 length and 4 bytes of padding.
fn sized_prefix(len: usize) -> [u8; 8] {
    let mut p = [0u8; 8];
    p[..4].copy_from_slice(&(len as u32).to_be_bytes());
    p
}

/// Checks that `bytes` are the metadata object `name` names: the SHA-256 of the
/// bytes, then the object's own form (normal GVariant, valid fields).
pub fn verify_metadata(name: &ObjectName, bytes: &[u8]) -> Result<(), ObjectError> {
    let actual = Checksum::of(bytes);
    let hashed_as_bytes = matches!(
        name.kind,
        ObjectType::Commit | ObjectType::DirTree | ObjectType::DirMeta
    );
    if hashed_as_bytes && actual != name.checksum {
        return Err(ObjectError::ChecksumMismatch {
            expected: name.checksum,
            actual,
        });
    }
    match name.kind {
        ObjectType::Commit => Commit::parse(bytes).map(drop),
        ObjectType::DirTree => DirTree::parse(bytes).map(drop),
        ObjectType::DirMeta => DirMeta::parse(bytes).map(drop),
        ObjectType::CommitMeta => {
            decode_normal(&Type::parse(COMMITMETA_TYPE).expect("literal"), bytes)
                .map(drop)
                .map_err(Into::into)
        }
        ObjectType::File => verify_filez(&name.checksum, bytes).map(drop),
    }
}

/// Splits a `.filez` into its header and compressed content.
pub fn split_filez(bytes: &[u8]) -> Result<(FileHeader, &[u8]), ObjectError> {
    if bytes.len() < 8 {
        return Err(ObjectError::BadContent(
            "shorter than its 8-byte header prefix".into(),
        ));
    }
    let len = u32::from_be_bytes(bytes[..4].try_into().expect("4 bytes")) as usize;
    if bytes[4..8] != [0, 0, 0, 0] {
        return Err(ObjectError::BadContent(
            "non-zero padding after the header length".into(),
        ));
    }
    let end = 8usize
        .checked_add(len)
        .filter(|&e| e <= bytes.len())
        .ok_or_else(|| {
            ObjectError::BadContent("header longer than the object (truncated?)".into())
        })?;
    let header = FileHeader::parse_archive(&bytes[8..end])?;
    Ok((header, &bytes[end..]))
}

/// Verifies a `.filez`: inflates the content, checks its length against the
/// header, and the SHA-256 of header and content against `expected`.
pub fn verify_filez(expected: &Checksum, bytes: &[u8]) -> Result<FileHeader, ObjectError> {
    let mut verifier = FilezVerifier::new(*expected);
    verifier.update(bytes)?;
    verifier.finish()
}

/// Verifies a `.filez` as its bytes arrive, holding its header and one
/// buffer of inflated content at a time: a pushed object of any size is
/// checked while it streams into the store, never whole in memory.
pub struct FilezVerifier {
    expected: Checksum,
    /// The bytes before the content: the length prefix and the header.
    head: Vec<u8>,
    /// Set once the header is read.
    content: Option<FilezContent>,
}

struct FilezContent {
    header: FileHeader,
    hash: Sha256,
    inflate: flate2::Decompress,
    out: Vec<u8>,
    inflated: u64,
    /// Compressed bytes seen (of a non-regular file: bytes it must not have).
    compressed: u64,
    /// Bytes after the deflate stream's end.
    trailing: u64,
    ended: bool,
}

/// Inflated bytes handled at a time.
const INFLATE_BUFFER: usize = 64 * 1024;

impl std::fmt::Debug for FilezVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FilezVerifier")
            .field("expected", &self.expected)
            .finish_non_exhaustive()
    }
}

impl FilezVerifier {
    /// A verifier of the object whose checksum is `expected`.
    pub fn new(expected: Checksum) -> FilezVerifier {
        FilezVerifier {
            expected,
            head: Vec::new(),
            content: None,
        }
    }

    /// Takes the next bytes of the object.
    pub fn update(&mut self, mut bytes: &[u8]) -> Result<(), ObjectError> {
        if self.content.is_none() {
            if self.head.len() < 8 {
                let take = (8 - self.head.len()).min(bytes.len());
                self.head.extend_from_slice(&bytes[..take]);
                bytes = &bytes[take..];
                if self.head.len() < 8 {
                    return Ok(());
                }
                if self.head[4..8] != [0, 0, 0, 0] {
                    return Err(ObjectError::BadContent(
                        "non-zero padding after the header length".into(),
                    ));
                }
            }
            let len = u32::from_be_bytes(self.head[..4].try_into().expect("4 bytes")) as usize;
            let end = 8 + len;
            let take = (end - self.head.len()).min(bytes.len());
            self.head.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.head.len() < end {
                return Ok(());
            }
            let header = FileHeader::parse_archive(&self.head[8..end])?;
            self.content = Some(FilezContent {
                hash: header.start_checksum(),
                header,
                inflate: flate2::Decompress::new(false),
                out: vec![0u8; INFLATE_BUFFER],
                inflated: 0,
                compressed: 0,
                trailing: 0,
                ended: false,
            });
        }
        let content = self.content.as_mut().expect("set above");
        content.compressed += bytes.len() as u64;
        if content.header.is_regular() {
            content.inflate(bytes, false)?;
        }
        Ok(())
    }

    /// The object's header, once every byte arrived and it is what the
    /// checksum names.
    pub fn finish(self) -> Result<FileHeader, ObjectError> {
        let Some(mut content) = self.content else {
            return Err(ObjectError::BadContent(if self.head.len() < 8 {
                "shorter than its 8-byte header prefix".into()
            } else {
                "header longer than the object (truncated?)".into()
            }));
        };
        if content.header.is_regular() {
            content.inflate(&[], true)?;
            if content.inflated != content.header.size {
                return Err(ObjectError::BadContent(format!(
                    "inflates to {} bytes, its header says {} (truncated?)",
                    content.inflated, content.header.size
                )));
            }
            if content.trailing > 0 {
                return Err(ObjectError::BadContent(format!(
                    "{} bytes after the end of the compressed content",
                    content.trailing
                )));
            }
            if !content.ended {
                return Err(ObjectError::BadContent(
                    "the compressed content ends before its deflate stream does (truncated)".into(),
                ));
            }
        } else if content.compressed > 0 && content.header.size != 0 {
            return Err(ObjectError::BadContent(
                "a non-regular file carries content".into(),
            ));
        }
        let actual = Checksum(content.hash.finalize().into());
        if actual != self.expected {
            return Err(ObjectError::ChecksumMismatch {
                expected: self.expected,
                actual,
            });
        }
        Ok(content.header)
    }
}

impl FilezContent {
    /// Inflates `input` into the hash; at the end (`last`), whatever the
    /// inflater still holds.
    fn inflate(&mut self, mut input: &[u8], last: bool) -> Result<(), ObjectError> {
        loop {
            if self.ended {
                self.trailing += input.len() as u64;
                return Ok(());
            }
            let (before_in, before_out) = (self.inflate.total_in(), self.inflate.total_out());
            let status = self
                .inflate
                .decompress(input, &mut self.out, flate2::FlushDecompress::None)
                .map_err(|e| {
                    ObjectError::BadContent(format!("bad deflate stream (truncated?): {e}"))
                })?;
            let used = (self.inflate.total_in() - before_in) as usize;
            let produced = (self.inflate.total_out() - before_out) as usize;
            input = &input[used..];
            self.inflated += produced as u64;
            if self.inflated > self.header.size {
                return Err(ObjectError::BadContent(format!(
                    "inflates to more than the {} bytes its header says",
                    self.header.size
                )));
            }
            self.hash.update(&self.out[..produced]);
            if status == flate2::Status::StreamEnd {
                self.ended = true;
                continue;
            }
            // Done when nothing is left to feed and the inflater has nothing
            // more to give (a full buffer may mean more is pending).
            let stalled = used == 0 && produced == 0;
            if (input.is_empty() && produced < self.out.len()) || stalled {
                if last && !stalled && produced > 0 {
                    continue;
                }
                return Ok(());
            }
        }
    }
}

/// Builds a `.filez` from a header and the uncompressed content.
pub fn encode_filez(header: &FileHeader, content: &[u8]) -> Vec<u8> {
    let archive = header.archive_header();
    let mut out = Vec::with_capacity(8 + archive.len() + content.len() / 2);
    out.extend_from_slice(&sized_prefix(archive.len()));
    out.extend_from_slice(&archive);
    if header.is_regular() {
        let mut z = flate2::write::DeflateEncoder::new(out, flate2::Compression::new(6));
        std::io::Write::write_all(&mut z, content).expect("writing to memory");
        out = z.finish().expect("writing to memory");
    }
    out
}

/// The content checksum of a file with this header and content.
pub fn content_checksum(header: &FileHeader, content: &[u8]) -> Checksum {
    let mut h = header.start_checksum();
    h.update(content);
    Checksum(h.finalize().into())
}

/// A ref name as OSTree allows it: `/`-separated components of letters,
/// digits, `_`, `-` and `.`, none empty or starting with `.` or `-`.
pub fn validate_ref_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 1024
        && name.split('/').all(|c| {
            let mut chars = c.chars();
            matches!(chars.next(), Some(f) if f.is_ascii_alphanumeric() || f == '_')
                && chars.all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '_' | '-' | '.'))
        })
}

/// A ref file's content: a checksum and a newline (the newline optional).
pub fn parse_ref_file(bytes: &[u8]) -> Result<Checksum, ObjectError> {
    let s =
        std::str::from_utf8(bytes).map_err(|_| ObjectError::BadChecksum("<not UTF-8>".into()))?;
    Checksum::from_hex(s.trim_end_matches('\n'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(size: u64) -> FileHeader {
        FileHeader {
            size,
            uid: 0,
            gid: 0,
            mode: S_IFREG | 0o644,
            rdev: 0,
            symlink_target: String::new(),
            xattrs: vec![(b"user.a\0".to_vec(), b"1".to_vec())],
        }
    }

    #[test]
    fn filez_round_trip_and_a_flipped_bit_or_truncation_is_caught() {
        let content = b"hello world, hello world, hello world\n".repeat(50);
        let h = header(content.len() as u64);
        let sum = content_checksum(&h, &content);
        let filez = encode_filez(&h, &content);
        assert_eq!(verify_filez(&sum, &filez).unwrap(), h);
        // The last byte's high bits are padding after the final deflate block, which inflate
        // ignores: a flip there changes no content, so the object is still the one named.
        let last = filez.len() - 1;
        for i in 0..filez.len() {
            for bit in [0x01, 0x10] {
                let mut bad = filez.clone();
                bad[i] ^= bit;
                assert!(
                    verify_filez(&sum, &bad).is_err() || i == last,
                    "flipped bit {bit:#x} at {i} of {} passed",
                    filez.len()
                );
            }
        }
        for cut in 1..filez.len() {
            assert!(
                verify_filez(&sum, &filez[..cut]).is_err(),
                "cut at {cut} passed"
            );
        }
        let mut trailing = filez.clone();
        trailing.push(0);
        assert!(verify_filez(&sum, &trailing).is_err());
    }

    /// The streaming check gives the whole-object verdict however the bytes are cut into
    /// chunks: a good object passes, and a flipped bit, a truncation or trailing bytes fail,
    /// for content bigger than the inflate buffer (several refills) and for a symlink.
    #[test]
    fn filez_verified_in_chunks_agrees_with_the_whole() {
        let mut content = Vec::new();
        let mut x: u32 = 7;
        while content.len() < 3 * INFLATE_BUFFER + 123 {
            // Compressible but not trivially: the inflater's output outruns its input.
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            content.extend_from_slice(format!("line {} of the object\n", x % 97).as_bytes());
        }
        let h = header(content.len() as u64);
        let sum = content_checksum(&h, &content);
        let filez = encode_filez(&h, &content);
        let mut link = header(0);
        link.mode = 0o120777;
        link.symlink_target = "target".into();
        let link_sum = content_checksum(&link, b"");
        let link_filez = encode_filez(&link, b"");
        let chunked = |sum: &Checksum, bytes: &[u8], size: usize| {
            let mut v = FilezVerifier::new(*sum);
            for chunk in bytes.chunks(size) {
                v.update(chunk)?;
            }
            v.finish()
        };
        for size in [1, 3, 7, 64, 4096, 65_536, usize::MAX] {
            assert_eq!(chunked(&sum, &filez, size).unwrap(), h, "chunks of {size}");
            assert_eq!(
                chunked(&link_sum, &link_filez, size).unwrap(),
                link,
                "symlink, chunks of {size}"
            );
            let mut bad = filez.clone();
            bad[filez.len() / 2] ^= 0x10;
            assert!(
                chunked(&sum, &bad, size).is_err(),
                "flipped, chunks of {size}"
            );
            for cut in [1, 8, 20, filez.len() / 2, filez.len() - 1] {
                assert!(
                    chunked(&sum, &filez[..cut], size).is_err(),
                    "cut at {cut}, chunks of {size}"
                );
            }
            let mut trailing = filez.clone();
            trailing.extend_from_slice(b"xx");
            let err = chunked(&sum, &trailing, size).unwrap_err().to_string();
            assert!(err.contains("2 bytes after the end"), "{err}");
            assert!(chunked(&Checksum([9; 32]), &filez, size).is_err());
        }
    }

    #[test]
    fn metadata_objects_round_trip_and_are_verified() {
        let tree = DirTree {
            files: vec![
                ("a".into(), Checksum([1; 32])),
                ("é".into(), Checksum([2; 32])),
            ],
            dirs: vec![("d".into(), Checksum([3; 32]), Checksum([4; 32]))],
        };
        let bytes = tree.encode();
        assert_eq!(DirTree::parse(&bytes).unwrap(), tree);
        let name = ObjectName::new(Checksum::of(&bytes), ObjectType::DirTree);
        verify_metadata(&name, &bytes).unwrap();
        let mut bad = bytes.clone();
        bad[0] ^= 1;
        assert!(verify_metadata(&name, &bad).is_err());
        let evil = DirTree {
            files: vec![("..".into(), Checksum([1; 32]))],
            dirs: vec![],
        };
        assert!(DirTree::parse(&evil.encode()).is_err());
        let meta = DirMeta {
            uid: 0,
            gid: 0,
            mode: 0o40755,
            xattrs: vec![],
        };
        assert_eq!(DirMeta::parse(&meta.encode()).unwrap(), meta);
        let commit = Commit {
            metadata: vec![("version".into(), Value::Str("1".into()))],
            parent: None,
            related: vec![],
            subject: "s".into(),
            body: String::new(),
            timestamp: 1_700_000_000,
            root_tree: Checksum::of(&bytes),
            root_meta: Checksum::of(&meta.encode()),
        };
        assert_eq!(Commit::parse(&commit.encode()).unwrap(), commit);
    }

    #[test]
    fn ref_names() {
        for ok in ["main", "exampleos/x86_64/stable", "a.b-c_d", "_x"] {
            assert!(validate_ref_name(ok), "{ok}");
        }
        for bad in [
            "", "../x", "a//b", "/a", "a/", ".hidden", "-x", "a b", "a/../b",
        ] {
            assert!(!validate_ref_name(bad), "{bad}");
        }
    }
}
