//! Static deltas Wharf generates itself, in OSTree's format, for the
//! repositories whose summary it writes (`wharf ostree commit`, mirrors of a
//! subset of refs): when a ref moves from commit A to commit B, one delta
//! `A-B` (and, if asked, one from nothing to B) lets a client at A fetch the
//! superblock and a few compressed parts instead of every new object.
//!
//! The format, as stock `ostree pull` reads it:
//! - `deltas/XX/REST/superblock`: `(a{sv}tayay(commit)aya(uayttay)a(yaytt))`:
//!   metadata (`ostree.endianness`, the target's `.commitmeta` under
//!   `deltas/XX/REST/commitmeta` so a verifying client can check the commit
//!   before it writes it), a big-endian timestamp, from and to checksums, the
//!   target commit object itself, no dependencies, one header per part
//!   (version, SHA-256 of the part file, its size, the objects' size, the
//!   objects it makes as `type byte ‖ checksum`) and the fallbacks (content
//!   objects too large to be worth a part, which the client fetches as `.filez`).
//! - `deltas/XX/REST/N`: a compression byte (`0` none, `x` xz) and
//!   `(a(uuu)aa(ayay)ayay)`: the distinct (uid, gid, mode) triples (big-endian),
//!   the distinct xattr sets, one data blob and an opcode stream. Only
//!   open-splice-and-close (`S`) is emitted: for metadata `S len off`, for
//!   content `S mode xattrs len off` (varints), each making the next object of
//!   the header's list from a slice of the blob. Content comes from the
//!   `.filez` inflated; a symlink's data is its target.
//!
//! Within a delta, objects are written children first: every file and dirmeta
//! a dirtree names is made before the dirtree itself, so a client that scans
//! the new commit while parts are being applied never finds a dirtree whose
//! content is missing and fetches that content one object at a time.
//!
//! Not generated: bsdiff and rollsum opcodes (similar files are sent whole,
//! compressed); inline parts.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use bytes::Bytes;
use futures_util::TryStreamExt;
use sha2::{Digest as _, Sha256};
use wharf_core::{Digest, RepoName, RepositoryKind, TreePath};
use wharf_meta::{SnapshotEntry, SnapshotId, SnapshotState};
use wharf_snapshot::{Base, SnapshotError, Snapshots, Staged};

use crate::extras::{delta_index_path, delta_map, DeltaName, STATIC_DELTAS_KEY};
use crate::gvariant::{decode, Type, Value};
use crate::mirror::MirrorError;
use crate::object::{
    metadata_of_value, metadata_value, split_filez, xattrs_value, Checksum, Commit, DirTree,
    FileHeader, ObjectError, ObjectName, ObjectType, Xattrs, COMMITMETA_TYPE, COMMIT_TYPE,
};
use crate::summary::Summary;

/// Content objects inflating to more than this are fallbacks, fetched by
/// themselves (ostree's own generator defaults to 4 MB as well).
pub const FALLBACK_SIZE: u64 = 4 << 20;
/// A part is closed once its data reaches this many bytes.
const PART_SIZE: usize = 16 << 20;
/// `OSTREE_DELTAPART_VERSION`.
const PART_VERSION: u32 = 0;

/// Which deltas the `ostree-deltas` job generates for each ref.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DeltaSettings {
    /// Deltas to the ref's commit from up to this many earlier commits: the
    /// commits the ref was at in earlier snapshots (what clients hold), then
    /// its parents. 0: none.
    pub depth: u32,
    /// Also a delta from nothing to the ref's commit (a first pull).
    pub from_scratch: bool,
    /// A delta is kept only if a client downloads at least this share
    /// (percent) less through it than by fetching the objects one by one.
    pub min_saving_percent: u8,
}

impl DeltaSettings {
    /// Whether anything is generated at all.
    pub fn enabled(&self) -> bool {
        self.depth > 0 || self.from_scratch
    }
}

/// Why a delta could not be generated or stored.
#[derive(Debug, thiserror::Error)]
pub enum DeltaError {
    #[error("{0} is not stored in the snapshot")]
    Missing(ObjectName),
    #[error("{what}: {source}")]
    BadObject {
        what: String,
        #[source]
        source: ObjectError,
    },
    #[error("reading stored {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("compressing a delta part: {0}")]
    Compress(#[source] std::io::Error),
    #[error("generating a delta: {0}")]
    Task(String),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error("removing stale deltas: {0}")]
    Cleanup(#[source] Box<MirrorError>),
    #[error("signing the summary: {0}")]
    Sign(#[from] wharf_sign::SignError),
    #[error("the published summary: {0}")]
    Summary(#[source] ObjectError),
    #[error("other writers published {0} times while deltas were generated")]
    Contended(u32),
}

fn tree_path(s: &str) -> TreePath {
    TreePath::new(s).expect("object and delta paths are valid tree paths")
}

fn digest_of(c: &Checksum) -> Digest {
    Digest::parse(&format!("sha256:{c}")).expect("64 hex digits")
}

fn type_byte(kind: ObjectType) -> u8 {
    // OstreeObjectType.
    match kind {
        ObjectType::File => 1,
        ObjectType::DirTree => 2,
        ObjectType::DirMeta => 3,
        ObjectType::Commit => 4,
        ObjectType::CommitMeta => 6,
    }
}

/// A protobuf-style unsigned varint, as ostree's delta opcodes take them.
fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn be32(x: u32) -> Value {
    Value::U32(u32::from_le(x.to_be()))
}

fn be64(x: u64) -> Value {
    Value::U64(u64::from_le(x.to_be()))
}

const S_IFMT: u32 = 0o170000;
const S_IFLNK: u32 = 0o120000;

/// One part being filled.
#[derive(Default)]
struct PartBuilder {
    modes: Vec<(u32, u32, u32)>,
    mode_index: HashMap<(u32, u32, u32), u64>,
    xattrs: Vec<Xattrs>,
    xattr_index: HashMap<Xattrs, u64>,
    data: Vec<u8>,
    ops: Vec<u8>,
    objects: Vec<u8>,
    /// What the objects take once written (their bytes, content uncompressed).
    usize: u64,
}

impl PartBuilder {
    fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }

    fn name(&mut self, name: &ObjectName) {
        self.objects.push(type_byte(name.kind));
        self.objects.extend_from_slice(name.checksum.as_bytes());
    }

    fn add_metadata(&mut self, name: &ObjectName, bytes: &[u8]) {
        self.name(name);
        let offset = self.data.len() as u64;
        self.data.extend_from_slice(bytes);
        self.ops.push(b'S');
        put_varint(&mut self.ops, bytes.len() as u64);
        put_varint(&mut self.ops, offset);
        self.usize += bytes.len() as u64;
    }

    fn add_content(&mut self, checksum: Checksum, header: &FileHeader, content: &[u8]) {
        self.name(&ObjectName::new(checksum, ObjectType::File));
        let triple = (header.uid, header.gid, header.mode);
        let next = self.modes.len() as u64;
        let mode = *self.mode_index.entry(triple).or_insert_with(|| {
            self.modes.push(triple);
            next
        });
        let next = self.xattrs.len() as u64;
        let xattrs = match self.xattr_index.get(&header.xattrs) {
            Some(i) => *i,
            None => {
                self.xattrs.push(header.xattrs.clone());
                self.xattr_index.insert(header.xattrs.clone(), next);
                next
            }
        };
        let data: &[u8] = if header.mode & S_IFMT == S_IFLNK {
            header.symlink_target.as_bytes()
        } else {
            content
        };
        let offset = self.data.len() as u64;
        self.data.extend_from_slice(data);
        self.ops.push(b'S');
        put_varint(&mut self.ops, mode);
        put_varint(&mut self.ops, xattrs);
        put_varint(&mut self.ops, data.len() as u64);
        put_varint(&mut self.ops, offset);
        self.usize += data.len() as u64;
    }

    /// The part file (compression byte and payload) and its header.
    fn finish(self) -> Result<(Vec<u8>, PartHeader), DeltaError> {
        let payload = Value::Tuple(vec![
            Value::Array(
                Type::parse("(uuu)").expect("literal"),
                self.modes
                    .iter()
                    .map(|&(u, g, m)| Value::Tuple(vec![be32(u), be32(g), be32(m)]))
                    .collect(),
            ),
            Value::Array(
                Type::parse("a(ayay)").expect("literal"),
                self.xattrs.iter().map(xattrs_value).collect(),
            ),
            Value::Bytes(self.data),
            Value::Bytes(self.ops),
        ])
        .encode();
        let mut xz = liblzma::write::XzEncoder::new(vec![b'x'], 6);
        std::io::Write::write_all(&mut xz, &payload).map_err(DeltaError::Compress)?;
        let mut file = xz.finish().map_err(DeltaError::Compress)?;
        // Incompressible data goes as it is rather than grow.
        if file.len() > payload.len() {
            file = Vec::with_capacity(payload.len() + 1);
            file.push(0);
            file.extend_from_slice(&payload);
        }
        let header = PartHeader {
            checksum: Checksum::from_bytes(&Sha256::digest(&file)).expect("32 bytes"),
            size: file.len() as u64,
            usize: self.usize,
            objects: self.objects,
        };
        Ok((file, header))
    }
}

struct PartHeader {
    checksum: Checksum,
    size: u64,
    usize: u64,
    objects: Vec<u8>,
}

struct Fallback {
    checksum: Checksum,
    /// The `.filez`'s size, what the client downloads.
    size: u64,
    /// The content's size.
    usize: u64,
}

/// The superblock's bytes.
fn superblock(
    name: &DeltaName,
    timestamp: u64,
    commit: &[u8],
    commitmeta: Option<&[u8]>,
    parts: &[PartHeader],
    fallbacks: &[Fallback],
) -> Result<Vec<u8>, DeltaError> {
    let bad = |what: &str| {
        let what = what.to_owned();
        move |e: crate::gvariant::GvError| DeltaError::BadObject {
            what,
            source: e.into(),
        }
    };
    let commit = decode(&Type::parse(COMMIT_TYPE).expect("literal"), commit)
        .map_err(bad(&format!("commit {}", name.to)))?;
    // The part sizes are written little-endian and said so; ostree reads
    // this key before guessing.
    let mut metadata = vec![("ostree.endianness".to_owned(), Value::Byte(b'l'))];
    if let Some(meta) = commitmeta {
        let meta = decode(&Type::parse(COMMITMETA_TYPE).expect("literal"), meta)
            .map_err(bad(&format!("commitmeta {}", name.to)))?;
        metadata.push((format!("{}/commitmeta", name.dir()), meta));
    }
    Ok(Value::Tuple(vec![
        metadata_value(&metadata),
        be64(timestamp),
        Value::Bytes(name.from.map(|f| f.as_bytes().to_vec()).unwrap_or_default()),
        Value::Bytes(name.to.as_bytes().to_vec()),
        commit,
        Value::Bytes(Vec::new()),
        Value::Array(
            Type::parse("(uayttay)").expect("literal"),
            parts
                .iter()
                .map(|p| {
                    Value::Tuple(vec![
                        Value::U32(PART_VERSION),
                        Value::Bytes(p.checksum.as_bytes().to_vec()),
                        Value::U64(p.size),
                        Value::U64(p.usize),
                        Value::Bytes(p.objects.clone()),
                    ])
                })
                .collect(),
        ),
        Value::Array(
            Type::parse("(yaytt)").expect("literal"),
            fallbacks
                .iter()
                .map(|f| {
                    Value::Tuple(vec![
                        Value::Byte(type_byte(ObjectType::File)),
                        Value::Bytes(f.checksum.as_bytes().to_vec()),
                        Value::U64(f.size),
                        Value::U64(f.usize),
                    ])
                })
                .collect(),
        ),
    ])
    .encode())
}

/// Reads objects of one snapshot (`current`: the staged one, or the
/// published one it will be staged from) and, for what it lacks, of `older`
/// ones: the `from` side of a delta may be a commit retention cut from the
/// new snapshot, which a client at that commit still holds.
struct Reader<'a> {
    snapshots: &'a Snapshots,
    current: &'a SnapshotId,
    /// Retired snapshots of the repository, newest first.
    older: &'a [SnapshotId],
}

impl Reader<'_> {
    /// Only `current`: what a delta *sends* must be in the snapshot that serves it.
    fn current(&self) -> Reader<'_> {
        Reader {
            snapshots: self.snapshots,
            current: self.current,
            older: &[],
        }
    }

    async fn entry(&self, p: &str) -> Result<Option<SnapshotEntry>, DeltaError> {
        let path = tree_path(p);
        for id in std::iter::once(self.current).chain(self.older) {
            if let Some(entry) = self
                .snapshots
                .meta()
                .snapshot_entry(id, &path)
                .await
                .map_err(SnapshotError::from)?
            {
                return Ok(Some(entry));
            }
        }
        Ok(None)
    }

    async fn path(&self, p: &str) -> Result<Option<Vec<u8>>, DeltaError> {
        let Some(entry) = self.entry(p).await? else {
            return Ok(None);
        };
        let chunks: Vec<Bytes> = self
            .snapshots
            .open(&entry, None)
            .await?
            .try_collect()
            .await
            .map_err(|source| DeltaError::Read {
                path: p.to_owned(),
                source,
            })?;
        Ok(Some(chunks.concat()))
    }

    async fn object(&self, name: &ObjectName) -> Result<Vec<u8>, DeltaError> {
        self.path(&name.path())
            .await?
            .ok_or(DeltaError::Missing(*name))
    }

    async fn commit(&self, c: Checksum) -> Result<(Vec<u8>, Commit), DeltaError> {
        let name = ObjectName::new(c, ObjectType::Commit);
        let bytes = self.object(&name).await?;
        let commit = Commit::parse(&bytes).map_err(|source| DeltaError::BadObject {
            what: format!("commit {c}"),
            source,
        })?;
        Ok((bytes, commit))
    }

    async fn dirtree(&self, c: Checksum) -> Result<(Vec<u8>, DirTree), DeltaError> {
        let name = ObjectName::new(c, ObjectType::DirTree);
        let bytes = self.object(&name).await?;
        let tree = DirTree::parse(&bytes).map_err(|source| DeltaError::BadObject {
            what: format!("dirtree {c}"),
            source,
        })?;
        Ok((bytes, tree))
    }

    /// Every dirtree, dirmeta and file the commit reaches.
    async fn reachable(&self, commit: Checksum) -> Result<HashSet<ObjectName>, DeltaError> {
        let (_, c) = self.commit(commit).await?;
        let mut seen = HashSet::new();
        seen.insert(ObjectName::new(c.root_meta, ObjectType::DirMeta));
        let mut todo = vec![c.root_tree];
        while let Some(t) = todo.pop() {
            if !seen.insert(ObjectName::new(t, ObjectType::DirTree)) {
                continue;
            }
            let (_, tree) = self.dirtree(t).await?;
            for (_, f) in tree.files {
                seen.insert(ObjectName::new(f, ObjectType::File));
            }
            for (_, sub, meta) in tree.dirs {
                seen.insert(ObjectName::new(meta, ObjectType::DirMeta));
                todo.push(sub);
            }
        }
        Ok(seen)
    }

    /// The objects `commit` reaches that `have` lacks, children before the
    /// dirtrees naming them (a dirtree in `have` is a complete subtree there).
    async fn missing(
        &self,
        commit: &Commit,
        have: &HashSet<ObjectName>,
    ) -> Result<Vec<ObjectName>, DeltaError> {
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        let mut take = |name: ObjectName, out: &mut Vec<ObjectName>| {
            if !have.contains(&name) && seen.insert(name) {
                out.push(name);
            }
        };
        take(
            ObjectName::new(commit.root_meta, ObjectType::DirMeta),
            &mut out,
        );
        // An explicit stack: (dirtree, whether its children are done).
        let mut stack = vec![(commit.root_tree, false)];
        let mut entered = HashSet::new();
        while let Some((t, children_done)) = stack.pop() {
            let name = ObjectName::new(t, ObjectType::DirTree);
            if children_done {
                take(name, &mut out);
                continue;
            }
            if have.contains(&name) || !entered.insert(t) {
                continue;
            }
            let (_, tree) = self.dirtree(t).await?;
            stack.push((t, true));
            for (_, f) in &tree.files {
                take(ObjectName::new(*f, ObjectType::File), &mut out);
            }
            for (_, sub, meta) in tree.dirs.iter().rev() {
                take(ObjectName::new(*meta, ObjectType::DirMeta), &mut out);
                stack.push((*sub, false));
            }
        }
        Ok(out)
    }
}

/// What [`generate`] stored.
#[derive(Debug, Clone)]
pub struct Generated {
    pub name: DeltaName,
    /// SHA-256 of the superblock, as the summary lists it.
    pub superblock: Checksum,
    /// Every path written (superblock and parts).
    pub paths: Vec<String>,
    /// What a client downloads through the delta: superblock, parts, fallbacks.
    pub delta_bytes: u64,
    /// What it downloads without: the commit and every new object as stored.
    pub object_bytes: u64,
    pub parts: usize,
    pub fallbacks: usize,
}

fn inflate(name: &ObjectName, filez: &[u8]) -> Result<(FileHeader, Vec<u8>), DeltaError> {
    let bad = |source| DeltaError::BadObject {
        what: name.to_string(),
        source,
    };
    let (header, compressed) = split_filez(filez).map_err(bad)?;
    let mut content = Vec::with_capacity(header.size.min(FALLBACK_SIZE) as usize);
    if header.is_regular() {
        std::io::Read::read_to_end(
            &mut std::io::Read::take(
                flate2::read::DeflateDecoder::new(compressed),
                header.size + 1,
            ),
            &mut content,
        )
        .map_err(|e| bad(ObjectError::BadContent(format!("bad deflate stream: {e}"))))?;
        if content.len() as u64 != header.size {
            return Err(bad(ObjectError::BadContent(format!(
                "inflates to {} bytes, its header says {}",
                content.len(),
                header.size
            ))));
        }
    }
    Ok((header, content))
}

/// Generates the delta `name` from the objects in `staged` (its `from`
/// side may be read from `older` snapshots) and stores its parts, then its
/// superblock, there. `None` when it would not save
/// `settings.min_saving_percent` (nothing is stored then, but parts already
/// written, which the snapshot's stale-delta cleanup removes).
pub async fn generate(
    snapshots: &Snapshots,
    staged: &Staged,
    older: &[SnapshotId],
    name: DeltaName,
    settings: &DeltaSettings,
    now: i64,
) -> Result<Option<Generated>, DeltaError> {
    let with_older = Reader {
        snapshots,
        current: staged.id(),
        older,
    };
    let reader = with_older.current();
    let (commit_bytes, commit) = reader.commit(name.to).await?;
    let have = match name.from {
        Some(from) => with_older.reachable(from).await?,
        None => HashSet::new(),
    };
    let missing = reader.missing(&commit, &have).await?;
    let commitmeta = reader
        .path(&ObjectName::new(name.to, ObjectType::CommitMeta).path())
        .await?;
    let dir = name.dir();
    let mut object_bytes = commit_bytes.len() as u64;
    let mut part = PartBuilder::default();
    let mut headers = Vec::new();
    let mut fallbacks = Vec::new();
    let mut paths = Vec::new();
    let mut delta_bytes = 0u64;
    for object in &missing {
        let bytes = reader.object(object).await?;
        object_bytes += bytes.len() as u64;
        if object.kind == ObjectType::File {
            let (header, _) = split_filez(&bytes).map_err(|source| DeltaError::BadObject {
                what: object.to_string(),
                source,
            })?;
            if header.size > FALLBACK_SIZE {
                fallbacks.push(Fallback {
                    checksum: object.checksum,
                    size: bytes.len() as u64,
                    usize: header.size,
                });
                continue;
            }
            let object_name = *object;
            let (header, content) =
                tokio::task::spawn_blocking(move || inflate(&object_name, &bytes))
                    .await
                    .map_err(|e| DeltaError::Task(e.to_string()))??;
            part.add_content(object.checksum, &header, &content);
        } else {
            part.add_metadata(object, &bytes);
        }
        if part.data.len() >= PART_SIZE {
            let full = std::mem::take(&mut part);
            store_part(
                staged,
                &dir,
                full,
                &mut headers,
                &mut paths,
                &mut delta_bytes,
                now,
            )
            .await?;
        }
    }
    if !part.is_empty() {
        store_part(
            staged,
            &dir,
            part,
            &mut headers,
            &mut paths,
            &mut delta_bytes,
            now,
        )
        .await?;
    }
    let sb = superblock(
        &name,
        now.max(0) as u64,
        &commit_bytes,
        commitmeta.as_deref(),
        &headers,
        &fallbacks,
    )?;
    delta_bytes += sb.len() as u64 + fallbacks.iter().map(|f| f.size).sum::<u64>();
    let saved = object_bytes.saturating_sub(delta_bytes);
    if delta_bytes > object_bytes
        || saved * 100 < object_bytes * u64::from(settings.min_saving_percent)
    {
        return Ok(None);
    }
    let superblock = Checksum::from_bytes(&Sha256::digest(&sb)).expect("32 bytes");
    let sb_path = format!("{dir}/superblock");
    staged
        .put_bytes(
            &tree_path(&sb_path),
            Bytes::from(sb),
            Some(&digest_of(&superblock)),
            now,
        )
        .await?;
    paths.push(sb_path);
    Ok(Some(Generated {
        name,
        superblock,
        paths,
        delta_bytes,
        object_bytes,
        parts: headers.len(),
        fallbacks: fallbacks.len(),
    }))
}

async fn store_part(
    staged: &Staged,
    dir: &str,
    part: PartBuilder,
    headers: &mut Vec<PartHeader>,
    paths: &mut Vec<String>,
    delta_bytes: &mut u64,
    now: i64,
) -> Result<(), DeltaError> {
    let (file, header) = tokio::task::spawn_blocking(move || part.finish())
        .await
        .map_err(|e| DeltaError::Task(e.to_string()))??;
    let p = format!("{dir}/{}", headers.len());
    *delta_bytes += file.len() as u64;
    staged
        .put_bytes(
            &tree_path(&p),
            Bytes::from(file),
            Some(&digest_of(&header.checksum)),
            now,
        )
        .await?;
    paths.push(p);
    headers.push(header);
    Ok(())
}

/// The deltas a summary Wharf writes lists, by name, with their superblocks' checksums.
pub type Listing = BTreeMap<DeltaName, Checksum>;

/// The deltas the summary in `staged` lists (empty when it lists none or
/// cannot be read).
async fn listed(reader: &Reader<'_>) -> Result<Listing, DeltaError> {
    let Some(bytes) = reader.path("summary").await? else {
        return Ok(Listing::new());
    };
    Ok(Summary::parse(&bytes)
        .ok()
        .and_then(|s| {
            s.metadata
                .iter()
                .find(|(k, _)| k == STATIC_DELTAS_KEY)
                .and_then(|(_, v)| delta_map(v, "the published summary").ok())
        })
        .unwrap_or_default())
}

/// Brings the deltas of a snapshot whose summary Wharf is about to write up
/// to date with its refs, before that summary replaces the one in `staged`
/// (a commit, a push, a subset mirror): keeps the deltas the old summary
/// listed that lead to a commit a ref in `heads` is at (and whose superblock
/// is stored as listed), removes every other delta and extra, writes
/// `delta-indexes/` for the targets, and returns what the new summary lists.
/// New deltas are the `ostree-deltas` job's ([`refresh_published`]), after
/// the publish, so a ref move never waits for one.
pub async fn carry(
    snapshots: &Snapshots,
    staged: &Staged,
    heads: &BTreeMap<String, Checksum>,
    now: i64,
) -> Result<Listing, DeltaError> {
    let reader = Reader {
        snapshots,
        current: staged.id(),
        older: &[],
    };
    let targets: BTreeSet<Checksum> = heads.values().copied().collect();
    let (listing, keep) = still_valid(&reader, listed(&reader).await?, &targets).await?;
    store_listing(staged, &listing, keep, now).await?;
    Ok(listing)
}

/// Of `listed`, the deltas to one of `targets` whose superblock is stored as
/// listed, and every path they hold.
async fn still_valid(
    reader: &Reader<'_>,
    listed: Listing,
    targets: &BTreeSet<Checksum>,
) -> Result<(Listing, BTreeSet<String>), DeltaError> {
    let mut listing = Listing::new();
    let mut keep = BTreeSet::new();
    for (name, sum) in listed {
        if !targets.contains(&name.to) {
            continue;
        }
        let dir = name.dir();
        let sb = reader.current().entry(&format!("{dir}/superblock")).await?;
        if sb.is_none_or(|e| e.blob != digest_of(&sum)) {
            continue;
        }
        let under = tree_path(&dir);
        let mut pages =
            std::pin::pin!(reader
                .snapshots
                .entry_pages(reader.current, Some(&under), 1000));
        while let Some(page) = pages.try_next().await? {
            keep.extend(page.into_iter().map(|e| e.path.as_str().to_owned()));
        }
        listing.insert(name, sum);
    }
    Ok((listing, keep))
}

/// Removes every extra but `keep` and writes one `delta-indexes/` file per
/// target of `listing`, for clients that look there rather than in the summary.
async fn store_listing(
    staged: &Staged,
    listing: &Listing,
    keep: BTreeSet<String>,
    now: i64,
) -> Result<(), DeltaError> {
    crate::extras::remove_all_except(staged, &keep)
        .await
        .map_err(|e| DeltaError::Cleanup(Box::new(e)))?;
    let mut by_target: BTreeMap<Checksum, Listing> = BTreeMap::new();
    for (name, sum) in listing {
        by_target.entry(name.to).or_default().insert(*name, *sum);
    }
    for (to, deltas) in by_target {
        let index = metadata_value(&vec![(
            STATIC_DELTAS_KEY.to_owned(),
            listing_value(&deltas),
        )])
        .encode();
        staged
            .put_bytes(
                &tree_path(&delta_index_path(&to)),
                Bytes::from(index),
                None,
                now,
            )
            .await?;
    }
    Ok(())
}

/// Retired snapshots a delta's `from` side is read from, newest first: enough
/// to reach the commit a ref was at before its last move (each move is
/// followed by the delta job's own snapshot).
const OLDER_SNAPSHOTS_READ: usize = 6;

/// How often [`refresh_published`] stages again when another writer
/// published while it generated.
const PUBLISH_ATTEMPTS: u32 = 8;

/// What one [`refresh_published`] run did.
#[derive(Debug, Clone)]
pub struct DeltaRun {
    pub outcome: DeltaOutcome,
    /// The deltas it generated.
    pub generated: Vec<Generated>,
    /// The deltas the published summary lists afterwards.
    pub listed: usize,
}

/// How a [`refresh_published`] run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeltaOutcome {
    /// This snapshot (same refs, new deltas and summary) was published.
    Published(i64),
    /// Every wanted delta was already listed: nothing published.
    UpToDate,
    /// The repository publishes nothing yet.
    NothingPublished,
    /// The summary served is not Wharf's (a mirror of every ref serves
    /// upstream's summary, signature and deltas): left alone.
    UpstreamSummary,
}

impl DeltaRun {
    /// The line the job history keeps.
    pub fn line(&self, repo: &RepoName) -> String {
        let what = match self.outcome {
            DeltaOutcome::Published(n) => format!("snapshot {n} published"),
            DeltaOutcome::UpToDate => "up to date, nothing published".into(),
            DeltaOutcome::NothingPublished => "nothing is published yet".into(),
            DeltaOutcome::UpstreamSummary => {
                "serves upstream's summary and deltas; none generated".into()
            }
        };
        format!(
            "{repo}: {} static delta(s) generated, {} listed; {what}",
            self.generated.len(),
            self.listed
        )
    }
}

/// The `ostree-deltas` job: stages a snapshot from the one `repo` publishes,
/// generates the deltas `settings` asks for each ref's commit that are not
/// listed yet, drops those to commits no ref is at, writes the summary again
/// (listing them, signed with `signer`) and publishes it only if `repo`
/// still publishes the snapshot it started from; when another writer
/// published meanwhile, it starts again from that one.
pub async fn refresh_published(
    snapshots: &Snapshots,
    repo: &RepoName,
    settings: &DeltaSettings,
    signer: &wharf_sign::SigningKeys,
    now: i64,
) -> Result<DeltaRun, DeltaError> {
    for _ in 0..PUBLISH_ATTEMPTS {
        let Some(published) = snapshots.published(repo).await? else {
            return Ok(DeltaRun {
                outcome: DeltaOutcome::NothingPublished,
                generated: Vec::new(),
                listed: 0,
            });
        };
        let older: Vec<SnapshotId> = snapshots
            .list(repo)
            .await?
            .into_iter()
            .filter(|s| s.state == SnapshotState::Retired)
            .take(OLDER_SNAPSHOTS_READ)
            .map(|s| s.id)
            .collect();
        // Decided on the published snapshot first: a run with nothing to do
        // stages (and numbers) no snapshot.
        let published_reader = Reader {
            snapshots,
            current: &published.id,
            older: &older,
        };
        match wanted(&published_reader, settings, signer).await? {
            Wanted::Nothing(outcome) => {
                return Ok(DeltaRun {
                    outcome,
                    generated: Vec::new(),
                    listed: 0,
                })
            }
            Wanted::Deltas {
                missing,
                listing,
                old_listing,
                ..
            } if missing.is_empty() && listing == old_listing => {
                return Ok(DeltaRun {
                    outcome: DeltaOutcome::UpToDate,
                    generated: Vec::new(),
                    listed: listing.len(),
                })
            }
            Wanted::Deltas { .. } => {}
        }
        let staged = snapshots
            .stage(
                repo,
                RepositoryKind::Ostree,
                Base::Published,
                "ostree-deltas: static deltas",
            )
            .await?;
        let refreshed = refresh_staged(snapshots, &staged, &older, settings, signer, now).await;
        let (generated, listed) = match refreshed {
            Ok(Refreshed::Changed { generated, listed }) => (generated, listed),
            Ok(Refreshed::Unchanged(run)) => {
                staged.discard().await?;
                return Ok(run);
            }
            Err(e) => {
                let _ = staged.discard().await;
                return Err(e);
            }
        };
        if staged.publish_replacing(Some(&published.id)).await? {
            return Ok(DeltaRun {
                outcome: DeltaOutcome::Published(staged.record().number),
                generated,
                listed,
            });
        }
        staged.discard().await?;
    }
    Err(DeltaError::Contended(PUBLISH_ATTEMPTS))
}

/// What [`refresh_staged`] did to its snapshot.
enum Refreshed {
    /// It is to be published.
    Changed {
        generated: Vec<Generated>,
        listed: usize,
    },
    /// It is to be discarded: nothing changed (the run's outcome says why).
    Unchanged(DeltaRun),
}

/// The body of [`refresh_published`] on one staged snapshot.
async fn refresh_staged(
    snapshots: &Snapshots,
    staged: &Staged,
    older: &[SnapshotId],
    settings: &DeltaSettings,
    signer: &wharf_sign::SigningKeys,
    now: i64,
) -> Result<Refreshed, DeltaError> {
    // Asked again of the staged snapshot: another writer may have published
    // between the check on the published one and the staging.
    let reader = Reader {
        snapshots,
        current: staged.id(),
        older,
    };
    let (mut summary, old_listing, mut listing, mut keep, missing) =
        match wanted(&reader, settings, signer).await? {
            Wanted::Nothing(outcome) => {
                return Ok(Refreshed::Unchanged(DeltaRun {
                    outcome,
                    generated: Vec::new(),
                    listed: 0,
                }))
            }
            Wanted::Deltas {
                summary,
                old_listing,
                listing,
                keep,
                missing,
            } => (summary, old_listing, listing, keep, missing),
        };
    let mut generated = Vec::new();
    for name in missing {
        if let Some(g) = generate(snapshots, staged, older, name, settings, now).await? {
            keep.extend(g.paths.iter().cloned());
            listing.insert(name, g.superblock);
            generated.push(g);
        }
    }
    let listed = listing.len();
    if generated.is_empty() && listing == old_listing {
        return Ok(Refreshed::Unchanged(DeltaRun {
            outcome: DeltaOutcome::UpToDate,
            generated,
            listed,
        }));
    }
    store_listing(staged, &listing, keep, now).await?;
    list_in(&mut summary, &listing);
    for (key, value) in &mut summary.metadata {
        if key == "ostree.summary.last-modified" {
            *value = crate::summary::be_u64_value(now.max(0) as u64);
        }
    }
    let summary = summary.encode();
    let signature = crate::signature::sign(signer, &summary)?;
    crate::summary::put_own(staged, summary, Some(signature), now).await?;
    Ok(Refreshed::Changed { generated, listed })
}

/// What a snapshot's refs want of the delta job.
enum Wanted {
    /// Nothing is Wharf's to do here (the outcome says why).
    Nothing(DeltaOutcome),
    Deltas {
        /// The summary the snapshot serves.
        summary: Summary,
        /// What it lists.
        old_listing: Listing,
        /// Of that, the deltas still valid (to a ref's commit, stored as listed)...
        listing: Listing,
        /// ...and every path they hold.
        keep: BTreeSet<String>,
        /// The deltas `settings` asks for that are not listed, in ref order.
        missing: Vec<DeltaName>,
    },
}

/// What the refs of `reader`'s snapshot want: the deltas from their earlier
/// commits (and from scratch) that its summary does not list yet.
async fn wanted(
    reader: &Reader<'_>,
    settings: &DeltaSettings,
    signer: &wharf_sign::SigningKeys,
) -> Result<Wanted, DeltaError> {
    let current = reader.current();
    let Some(summary_bytes) = current.path("summary").await? else {
        return Ok(Wanted::Nothing(DeltaOutcome::NothingPublished));
    };
    // Only a summary Wharf signed is Wharf's to rewrite.
    let signature = current.path("summary.sig").await?;
    if crate::signature::verify(&signer.keyring(), &summary_bytes, signature.as_deref()).is_err() {
        return Ok(Wanted::Nothing(DeltaOutcome::UpstreamSummary));
    }
    let summary = Summary::parse(&summary_bytes).map_err(DeltaError::Summary)?;
    let old_listing = listed(&current).await?;
    let heads: BTreeMap<String, Checksum> = summary
        .refs
        .iter()
        .map(|r| (r.name.clone(), r.checksum))
        .collect();
    let targets: BTreeSet<Checksum> = heads.values().copied().collect();
    let (listing, keep) = still_valid(reader, old_listing.clone(), &targets).await?;
    let mut missing = Vec::new();
    for (ref_name, to) in &heads {
        let earlier = earlier_commits(reader, ref_name, *to, settings.depth).await?;
        let names = earlier
            .into_iter()
            .map(Some)
            .chain(settings.from_scratch.then_some(None))
            .map(|from| DeltaName { from, to: *to });
        for name in names {
            if !listing.contains_key(&name) && !missing.contains(&name) {
                missing.push(name);
            }
        }
    }
    Ok(Wanted::Deltas {
        summary,
        old_listing,
        listing,
        keep,
        missing,
    })
}

/// Up to `depth` commits a client of `ref_name` may hold before `head`,
/// whose objects are still readable: first the commits the ref was at in
/// the reader's older snapshots (newest first), then `head`'s parents.
async fn earlier_commits(
    reader: &Reader<'_>,
    ref_name: &str,
    head: Checksum,
    depth: u32,
) -> Result<Vec<Checksum>, DeltaError> {
    let mut out: Vec<Checksum> = Vec::new();
    if depth == 0 {
        return Ok(out);
    }
    let ref_path = tree_path(&format!("refs/heads/{ref_name}"));
    let stored = |c: Checksum| async move {
        Ok::<_, DeltaError>(
            reader
                .entry(&ObjectName::new(c, ObjectType::Commit).path())
                .await?
                .is_some(),
        )
    };
    for id in reader.older {
        if out.len() as u32 >= depth {
            break;
        }
        let Some(entry) = reader
            .snapshots
            .meta()
            .snapshot_entry(id, &ref_path)
            .await
            .map_err(SnapshotError::from)?
        else {
            continue;
        };
        let Some(bytes) = reader.snapshots.read_small(&entry).await? else {
            continue;
        };
        let Ok(c) = crate::object::parse_ref_file(&bytes) else {
            continue;
        };
        if c != head && !out.contains(&c) && stored(c).await? {
            out.push(c);
        }
    }
    let mut at = head;
    while (out.len() as u32) < depth {
        let Some(parent) = reader.commit(at).await?.1.parent else {
            break;
        };
        if !stored(parent).await? {
            break;
        }
        if !out.contains(&parent) {
            out.push(parent);
        }
        at = parent;
    }
    Ok(out)
}

/// `ostree.static-deltas` as a summary lists it: `a{sv}`, name → `ay` checksum.
fn listing_value(listing: &Listing) -> Value {
    metadata_value(
        &listing
            .iter()
            .map(|(name, sum)| (name.to_string(), Value::Bytes(sum.as_bytes().to_vec())))
            .collect(),
    )
}

/// Adds the listing to a summary's metadata (nothing when it is empty).
pub fn list_in(summary: &mut Summary, listing: &Listing) {
    summary.metadata.retain(|(k, _)| k != STATIC_DELTAS_KEY);
    if !listing.is_empty() {
        summary
            .metadata
            .push((STATIC_DELTAS_KEY.to_owned(), listing_value(listing)));
    }
}

/// A delta's superblock read back: for tests and `wharf` diagnostics.
#[derive(Debug, Clone, PartialEq)]
pub struct SuperblockInfo {
    pub from: Option<Checksum>,
    pub to: Checksum,
    pub parts: Vec<(Checksum, u64, u64, Vec<ObjectName>)>,
    pub fallbacks: Vec<Checksum>,
    pub metadata_keys: Vec<String>,
}

/// Parses a superblock (as [`generate`] writes them, or ostree does).
pub fn read_superblock(bytes: &[u8]) -> Result<SuperblockInfo, DeltaError> {
    let bad = |source: ObjectError| DeltaError::BadObject {
        what: "superblock".into(),
        source,
    };
    let v = decode(
        &Type::parse(crate::extras::SUPERBLOCK_TYPE).expect("literal"),
        bytes,
    )
    .map_err(|e| bad(e.into()))?;
    let Value::Tuple(f) = v else {
        unreachable!("tuple type")
    };
    let checksum = |v: &Value| match v {
        Value::Bytes(b) => Checksum::from_bytes(b).map_err(bad),
        _ => unreachable!("ay"),
    };
    let metadata_keys = metadata_of_value(f[0].clone())
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    let from = match &f[2] {
        Value::Bytes(b) if b.is_empty() => None,
        v => Some(checksum(v)?),
    };
    let to = checksum(&f[3])?;
    let Value::Array(_, parts) = &f[6] else {
        unreachable!("array")
    };
    let mut out_parts = Vec::new();
    for p in parts {
        let Value::Tuple(p) = p else {
            unreachable!("tuple")
        };
        let (Value::U64(size), Value::U64(usize), Value::Bytes(objs)) = (&p[2], &p[3], &p[4])
        else {
            unreachable!("(uayttay)")
        };
        let mut names = Vec::new();
        for chunk in objs.chunks(33) {
            let kind = match chunk[0] {
                1 => ObjectType::File,
                2 => ObjectType::DirTree,
                3 => ObjectType::DirMeta,
                4 => ObjectType::Commit,
                _ => ObjectType::CommitMeta,
            };
            names.push(ObjectName::new(
                Checksum::from_bytes(&chunk[1..]).map_err(bad)?,
                kind,
            ));
        }
        out_parts.push((checksum(&p[1])?, *size, *usize, names));
    }
    let Value::Array(_, fb) = &f[7] else {
        unreachable!("array")
    };
    let fallbacks = fb
        .iter()
        .map(|x| match x {
            Value::Tuple(m) => checksum(&m[1]),
            _ => unreachable!("tuple"),
        })
        .collect::<Result<_, _>>()?;
    Ok(SuperblockInfo {
        from,
        to,
        parts: out_parts,
        fallbacks,
        metadata_keys,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_are_protobuf_style() {
        let mut v = Vec::new();
        put_varint(&mut v, 0);
        put_varint(&mut v, 127);
        put_varint(&mut v, 128);
        put_varint(&mut v, 300);
        assert_eq!(v, [0x00, 0x7f, 0x80, 0x01, 0xac, 0x02]);
    }

    #[test]
    fn a_part_names_its_objects_in_order_and_dedups_modes() {
        let mut p = PartBuilder::default();
        let meta = ObjectName::new(Checksum::from_bytes(&[3; 32]).unwrap(), ObjectType::DirMeta);
        let header = FileHeader {
            size: 5,
            uid: 0,
            gid: 0,
            mode: 0o100644,
            rdev: 0,
            symlink_target: String::new(),
            xattrs: vec![],
        };
        p.add_content(Checksum::from_bytes(&[1; 32]).unwrap(), &header, b"hello");
        p.add_content(Checksum::from_bytes(&[2; 32]).unwrap(), &header, b"world");
        p.add_metadata(&meta, b"meta");
        assert_eq!(p.modes.len(), 1);
        assert_eq!(p.xattrs.len(), 1);
        assert_eq!(p.objects.len(), 3 * 33);
        assert_eq!(p.objects[0], 1);
        assert_eq!(p.objects[66], 3);
        assert_eq!(&p.data, b"helloworldmeta");
        // S mode=0 xattrs=0 len=5 off=0; S 0 0 5 5; S len=4 off=10
        assert_eq!(p.ops, b"S\x00\x00\x05\x00S\x00\x00\x05\x05S\x04\x0a");
        let (file, header) = p.finish().unwrap();
        assert!(file[0] == b'x' || file[0] == 0);
        assert_eq!(header.size, file.len() as u64);
        assert_eq!(header.usize, 14);
        assert_eq!(
            header.checksum,
            Checksum::from_bytes(&Sha256::digest(&file)).unwrap()
        );
    }
}
