//! What a mirror of all refs copies beside the objects, byte for byte: static
//! deltas (`deltas/…/superblock` and its parts) and their `delta-indexes/`,
//! flatpak's summary index (`summary.idx`, its signature as `summary.idx.sig`
//! and `summaries/<sha256>.idx.sig`, the subsummaries in `summaries/`),
//! and the refs of other collections (`refs/mirrors/<collection>/<ref>`).
//!
//! Copied unchanged so that upstream signatures stay valid, but never trusted
//! blindly: a superblock must hash to the checksum the summary (or a delta
//! index) lists for it, each part to the checksum in its superblock, and each
//! flatpak subsummary, uncompressed, to the checksum in `summary.idx`. Any
//! mismatch refuses the whole run, so nothing is published.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};

use base64::Engine as _;
use bytes::Bytes;
use futures_util::TryStreamExt;
use sha2::{Digest as _, Sha256};
use wharf_core::{Digest, TreePath};
use wharf_snapshot::Staged;

use crate::gvariant::{decode, Type, Value};
use crate::mirror::MirrorError;
use crate::object::{metadata_of_value, validate_ref_name, Checksum, Metadata, ObjectError};
use crate::summary::Summary;
use crate::upstream::Upstream;

/// `ostree.static-deltas`: delta name → SHA-256 of its superblock.
pub const STATIC_DELTAS_KEY: &str = "ostree.static-deltas";
const COLLECTION_MAP_KEY: &str = "ostree.summary.collection-map";
const INDEXED_DELTAS_KEY: &str = "ostree.summary.indexed-deltas";
pub(crate) const SUPERBLOCK_TYPE: &str = "(a{sv}tayay(a{sv}aya(say)sstayay)aya(uayttay)a(yaytt))";
const SUMMARY_INDEX_TYPE: &str = "(a{s(ayaaya{sv})}a{sv})";
/// A flatpak subsummary inflated beyond this is refused (Flathub's are a few MiB).
const MAX_SUBSUMMARY: u64 = 256 << 20;

/// The top-level paths this module owns in a snapshot: anything under them
/// that the current run did not write is stale and removed.
const OWNED_PREFIXES: [&str; 4] = ["deltas", "delta-indexes", "summaries", "refs/mirrors"];
const OWNED_FILES: [&str; 2] = ["summary.idx", "summary.idx.sig"];

/// A static delta: from a commit (or from nothing) to a commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct DeltaName {
    pub from: Option<Checksum>,
    pub to: Checksum,
}

impl DeltaName {
    /// `TO` or `FROM-TO`, in hex, as the summary lists them.
    pub fn parse(s: &str) -> Result<DeltaName, ObjectError> {
        match s.split_once('-') {
            Some((from, to)) => Ok(DeltaName {
                from: Some(Checksum::from_hex(from)?),
                to: Checksum::from_hex(to)?,
            }),
            None => Ok(DeltaName {
                from: None,
                to: Checksum::from_hex(s)?,
            }),
        }
    }

    /// The delta's directory: `deltas/XX/REST` of the modified base64 of
    /// `to`, or of `from` then `-` and `to`.
    pub fn dir(&self) -> String {
        match self.from {
            Some(from) => {
                let f = modified_base64(&from);
                format!(
                    "deltas/{}/{}-{}",
                    &f[..2],
                    &f[2..],
                    modified_base64(&self.to)
                )
            }
            None => {
                let t = modified_base64(&self.to);
                format!("deltas/{}/{}", &t[..2], &t[2..])
            }
        }
    }
}

impl std::fmt::Display for DeltaName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.from {
            Some(from) => write!(f, "{from}-{}", self.to),
            None => write!(f, "{}", self.to),
        }
    }
}

/// OSTree's path-safe base64: standard alphabet, `/` written `_`, no padding.
pub fn modified_base64(c: &Checksum) -> String {
    base64::engine::general_purpose::STANDARD_NO_PAD
        .encode(c.as_bytes())
        .replace('/', "_")
}

/// `delta-indexes/XX/REST.index` for deltas to `to`.
pub fn delta_index_path(to: &Checksum) -> String {
    let t = modified_base64(to);
    format!("delta-indexes/{}/{}.index", &t[..2], &t[2..])
}

fn refused(s: String) -> MirrorError {
    MirrorError::Refused(s)
}

fn bad_gv(what: String) -> impl FnOnce(crate::gvariant::GvError) -> MirrorError {
    move |e| refused(format!("{what}: {e}"))
}

fn path(s: &str) -> Result<TreePath, MirrorError> {
    TreePath::new(s).map_err(|e| refused(format!("{s:?} is not a valid path: {e}")))
}

fn digest_of(c: &Checksum) -> Digest {
    Digest::parse(&format!("sha256:{c}")).expect("64 hex digits")
}

fn sha256(bytes: &[u8]) -> Checksum {
    Checksum::from_bytes(&Sha256::digest(bytes)).expect("32 bytes")
}

/// The `name → ay checksum` map inside an `a{sv}` metadata value.
pub fn delta_map(value: &Value, what: &str) -> Result<BTreeMap<DeltaName, Checksum>, MirrorError> {
    let Value::Array(_, entries) = value else {
        return Err(refused(format!(
            "{what}: {STATIC_DELTAS_KEY} is not a{{sv}}"
        )));
    };
    let mut out = BTreeMap::new();
    for e in entries {
        let Value::DictEntry(k, v) = e else {
            return Err(refused(format!(
                "{what}: {STATIC_DELTAS_KEY} is not a{{sv}}"
            )));
        };
        let (Value::Str(name), Value::Variant(v)) = (&**k, &**v) else {
            return Err(refused(format!(
                "{what}: {STATIC_DELTAS_KEY} is not a{{sv}}"
            )));
        };
        let Value::Bytes(sum) = &**v else {
            return Err(refused(format!(
                "{what}: static delta {name:?} has no checksum bytes"
            )));
        };
        let delta = DeltaName::parse(name)
            .map_err(|e| refused(format!("{what}: static delta {name:?}: {e}")))?;
        let sum = Checksum::from_bytes(sum)
            .map_err(|e| refused(format!("{what}: static delta {name}: {e}")))?;
        out.insert(delta, sum);
    }
    Ok(out)
}

fn lookup<'a>(m: &'a Metadata, key: &str) -> Option<&'a Value> {
    m.iter().find(|(k, _)| k == key).map(|(_, v)| v)
}

/// A collection's ref, served at `refs/mirrors/<collection>/<name>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollectionRef {
    pub collection: String,
    pub name: String,
    pub checksum: Checksum,
}

/// `ostree_validate_collection_id`: dotted, each element a name.
fn valid_collection_id(id: &str) -> bool {
    let parts: Vec<&str> = id.split('.').collect();
    parts.len() >= 2
        && id.len() <= 255
        && parts.iter().all(|p| {
            let mut c = p.chars();
            matches!(c.next(), Some(f) if f.is_ascii_alphabetic() || f == '_')
                && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
        })
}

/// The refs of other collections that an upstream summary lists
/// (`ostree.summary.collection-map`); the walk takes their commits too.
pub fn collection_refs(summary: &Summary) -> Result<Vec<CollectionRef>, MirrorError> {
    let Some(map) = lookup(&summary.metadata, COLLECTION_MAP_KEY) else {
        return Ok(Vec::new());
    };
    let what = "upstream summary";
    let malformed = || {
        refused(format!(
            "{what}: {COLLECTION_MAP_KEY} is not a{{sa(s(taya{{sv}}))}}"
        ))
    };
    let Value::Array(_, collections) = map else {
        return Err(malformed());
    };
    let mut out = Vec::new();
    for c in collections {
        let Value::DictEntry(id, refs) = c else {
            return Err(malformed());
        };
        let (Value::Str(id), Value::Array(_, refs)) = (&**id, &**refs) else {
            return Err(malformed());
        };
        if !valid_collection_id(id) {
            return Err(refused(format!(
                "{what} lists a collection {id:?}, which is not a valid collection ID; nothing taken"
            )));
        }
        for r in refs {
            let Value::Tuple(m) = r else {
                return Err(malformed());
            };
            let (Some(Value::Str(name)), Some(Value::Tuple(data))) = (m.first(), m.get(1)) else {
                return Err(malformed());
            };
            if !validate_ref_name(name) {
                return Err(refused(format!(
                    "upstream lists a ref named {name:?} in collection {id}, which is not a valid ref name; nothing taken"
                )));
            }
            let Some(Value::Bytes(sum)) = data.get(1) else {
                return Err(malformed());
            };
            out.push(CollectionRef {
                collection: id.clone(),
                name: name.clone(),
                checksum: Checksum::from_bytes(sum)
                    .map_err(|e| refused(format!("{what}: ref {id}:{name}: {e}")))?,
            });
        }
    }
    Ok(out)
}

/// One run's copying of the extras into `staged`.
pub(crate) struct Extras<'a> {
    pub upstream: &'a Upstream,
    pub staged: &'a Staged,
    pub bytes: &'a AtomicU64,
    pub now: i64,
}

impl Extras<'_> {
    async fn get(&self, p: &str) -> Result<Option<Bytes>, MirrorError> {
        let got = self.upstream.get(p).await?;
        if let Some(b) = &got {
            self.bytes.fetch_add(b.len() as u64, Ordering::Relaxed);
        }
        Ok(got)
    }

    async fn put(
        &self,
        written: &mut BTreeSet<String>,
        p: &str,
        bytes: Bytes,
        expected: Option<&Digest>,
    ) -> Result<(), MirrorError> {
        self.staged
            .put_bytes(&path(p)?, bytes, expected, self.now)
            .await?;
        written.insert(p.to_owned());
        Ok(())
    }

    /// Copies every extra the upstream summary (and the files beside it)
    /// names, verified, and the collection refs given (whose commits the walk
    /// has stored); then drops what an earlier snapshot had and upstream no
    /// longer lists. Returns how many deltas were copied.
    pub async fn copy(
        &self,
        summary: &Summary,
        ref_commits: &BTreeSet<Checksum>,
        collection_refs: &[CollectionRef],
    ) -> Result<usize, MirrorError> {
        let mut written = BTreeSet::new();
        let deltas = self.copy_deltas(summary, ref_commits, &mut written).await?;
        self.copy_flatpak_index(&mut written).await?;
        for r in collection_refs {
            let p = format!("refs/mirrors/{}/{}", r.collection, r.name);
            self.put(
                &mut written,
                &p,
                Bytes::from(format!("{}\n", r.checksum)),
                None,
            )
            .await?;
        }
        remove_stale(self.staged, &written).await?;
        Ok(deltas)
    }

    async fn copy_deltas(
        &self,
        summary: &Summary,
        ref_commits: &BTreeSet<Checksum>,
        written: &mut BTreeSet<String>,
    ) -> Result<usize, MirrorError> {
        let mut deltas = match lookup(&summary.metadata, STATIC_DELTAS_KEY) {
            Some(v) => delta_map(v, "upstream summary")?,
            None => BTreeMap::new(),
        };
        // Delta indexes: one per target commit, for clients that read them
        // instead of the summary's list (which a repository may leave out).
        let indexed = matches!(
            lookup(&summary.metadata, INDEXED_DELTAS_KEY),
            Some(Value::Bool(true))
        );
        let mut targets: BTreeSet<Checksum> = deltas.keys().map(|d| d.to).collect();
        if indexed {
            targets.extend(ref_commits.iter().copied());
        }
        for to in targets {
            let p = delta_index_path(&to);
            let Some(bytes) = self.get(&p).await? else {
                continue;
            };
            let what = format!("upstream {p}");
            let index = decode(&Type::parse("a{sv}").expect("literal"), &bytes)
                .map_err(bad_gv(what.clone()))?;
            let index = metadata_of_value(index);
            if let Some(v) = lookup(&index, STATIC_DELTAS_KEY) {
                for (name, sum) in delta_map(v, &what)? {
                    if name.to != to {
                        return Err(refused(format!(
                            "{what} lists static delta {name}, which does not lead to {to}"
                        )));
                    }
                    if let Some(listed) = deltas.insert(name, sum) {
                        if listed != sum {
                            return Err(refused(format!(
                                "{what}: static delta {name} has superblock checksum {sum}, the summary says {listed}"
                            )));
                        }
                    }
                }
            }
            self.put(written, &p, bytes, None).await?;
        }
        for (name, sum) in &deltas {
            self.copy_delta(name, sum, written).await?;
        }
        Ok(deltas.len())
    }

    async fn copy_delta(
        &self,
        name: &DeltaName,
        sum: &Checksum,
        written: &mut BTreeSet<String>,
    ) -> Result<(), MirrorError> {
        let dir = name.dir();
        let sb_path = format!("{dir}/superblock");
        let superblock = self.get(&sb_path).await?.ok_or_else(|| {
            refused(format!(
                "upstream lists static delta {name} but lacks {sb_path}"
            ))
        })?;
        let actual = sha256(&superblock);
        if actual != *sum {
            return Err(refused(format!(
                "upstream static delta {name}: superblock checksum mismatch: expected {sum}, the bytes hash to {actual}"
            )));
        }
        let what = format!("upstream static delta {name} superblock");
        let value = decode(&Type::parse(SUPERBLOCK_TYPE).expect("literal"), &superblock)
            .map_err(bad_gv(what.clone()))?;
        let Value::Tuple(mut fields) = value else {
            unreachable!("tuple type")
        };
        let Value::Array(_, parts) = fields.swap_remove(6) else {
            unreachable!("array type")
        };
        let metadata = metadata_of_value(fields.swap_remove(0));
        for (i, part) in parts.iter().enumerate() {
            let Value::Tuple(entry) = part else {
                unreachable!("tuple type")
            };
            let Some(Value::Bytes(part_sum)) = entry.get(1) else {
                unreachable!("ay")
            };
            let part_sum = Checksum::from_bytes(part_sum)
                .map_err(|e| refused(format!("{what}: part {i}: {e}")))?;
            let part_path = format!("{dir}/{i}");
            // A part kept inside the superblock's metadata is not a file.
            if lookup(&metadata, &part_path).is_some() {
                continue;
            }
            let digest = digest_of(&part_sum);
            if self
                .staged
                .put_existing(&path(&part_path)?, &digest, self.now)
                .await?
            {
                written.insert(part_path);
                continue;
            }
            let bytes = self.get(&part_path).await?.ok_or_else(|| {
                refused(format!(
                    "upstream static delta {name}: superblock lists part {i}, but upstream lacks {part_path}"
                ))
            })?;
            let actual = sha256(&bytes);
            if actual != part_sum {
                return Err(refused(format!(
                    "upstream static delta {name}: part {i} checksum mismatch: expected {part_sum}, the bytes hash to {actual}"
                )));
            }
            self.put(written, &part_path, bytes, Some(&digest)).await?;
        }
        self.put(written, &sb_path, superblock, Some(&digest_of(sum)))
            .await
    }

    /// flatpak's `summary.idx` (with its signature) and the subsummaries it
    /// names, each checked against the index; subsummary deltas are copied
    /// when present (flatpak checks what it rebuilds from them).
    async fn copy_flatpak_index(&self, written: &mut BTreeSet<String>) -> Result<(), MirrorError> {
        let Some(index) = self.get("summary.idx").await? else {
            return Ok(());
        };
        let what = "upstream summary.idx";
        let value = decode(&Type::parse(SUMMARY_INDEX_TYPE).expect("literal"), &index)
            .map_err(bad_gv(what.into()))?;
        let Value::Tuple(fields) = value else {
            unreachable!("tuple type")
        };
        let Some(Value::Array(_, subsummaries)) = fields.first() else {
            unreachable!("array type")
        };
        for entry in subsummaries {
            let Value::DictEntry(name, data) = entry else {
                unreachable!("dict entry type")
            };
            let (Value::Str(name), Value::Tuple(data)) = (&**name, &**data) else {
                unreachable!("{{s(ayaaya{{sv}})}}")
            };
            let (Some(Value::Bytes(sum)), Some(Value::Array(_, history))) =
                (data.first(), data.get(1))
            else {
                unreachable!("(ayaaya{{sv}})")
            };
            let sum = Checksum::from_bytes(sum)
                .map_err(|e| refused(format!("{what}: subsummary {name:?}: {e}")))?;
            let p = format!("summaries/{sum}.gz");
            let gz = self.get(&p).await?.ok_or_else(|| {
                refused(format!(
                    "{what} lists subsummary {name:?}, but upstream lacks {p}"
                ))
            })?;
            let checked = gz.clone();
            let actual = tokio::task::spawn_blocking(move || gunzip_sha256(&checked))
                .await
                .map_err(|e| refused(format!("checking {p}: {e}")))?
                .map_err(|e| refused(format!("upstream {p}: {e}")))?;
            if actual != sum {
                return Err(refused(format!(
                    "upstream {p}: subsummary {name:?} checksum mismatch: expected {sum}, it inflates to bytes hashing to {actual}"
                )));
            }
            self.put(written, &p, gz, None).await?;
            for old in history {
                let Value::Bytes(old) = old else {
                    unreachable!("ay")
                };
                let old = Checksum::from_bytes(old)
                    .map_err(|e| refused(format!("{what}: subsummary {name:?} history: {e}")))?;
                let p = format!("summaries/{old}-{sum}.delta");
                if let Some(delta) = self.get(&p).await? {
                    self.put(written, &p, delta, None).await?;
                }
            }
        }
        // The signature also by the index's digest, which a client holding a cached index asks for.
        let by_digest = format!("summaries/{}.idx.sig", sha256(&index));
        self.put(written, "summary.idx", index, None).await?;
        if let Some(sig) = self.get("summary.idx.sig").await? {
            self.put(written, "summary.idx.sig", sig, None).await?;
        }
        if let Some(sig) = self.get(&by_digest).await? {
            self.put(written, &by_digest, sig, None).await?;
        }
        Ok(())
    }
}

/// Removes what `OWNED_PREFIXES` and `OWNED_FILES` hold but `written` does not name.
async fn remove_stale(staged: &Staged, written: &BTreeSet<String>) -> Result<(), MirrorError> {
    let mut stale = Vec::new();
    for prefix in OWNED_PREFIXES {
        let under = path(prefix)?;
        let mut pages = std::pin::pin!(staged.entry_pages(Some(&under), 1000));
        while let Some(page) = pages.try_next().await? {
            stale.extend(
                page.into_iter()
                    .filter(|e| !written.contains(e.path.as_str()))
                    .map(|e| e.path),
            );
        }
    }
    for f in OWNED_FILES {
        if !written.contains(f) {
            stale.push(path(f)?);
        }
    }
    for chunk in stale.chunks(1000) {
        staged.remove(chunk).await?;
    }
    Ok(())
}

/// The SHA-256 of a gzip stream's content, refusing more than `MAX_SUBSUMMARY` bytes.
fn gunzip_sha256(gz: &[u8]) -> Result<Checksum, String> {
    let mut decoder = flate2::read::GzDecoder::new(gz).take(MAX_SUBSUMMARY + 1);
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 << 10];
    let mut total = 0u64;
    loop {
        let n = decoder
            .read(&mut buf)
            .map_err(|e| format!("not a gzip stream: {e}"))?;
        if n == 0 {
            break;
        }
        total += n as u64;
        if total > MAX_SUBSUMMARY {
            return Err(format!("inflates to more than {MAX_SUBSUMMARY} bytes"));
        }
        hasher.update(&buf[..n]);
    }
    Ok(Checksum::from_bytes(&hasher.finalize()).expect("32 bytes"))
}

/// Removes the extras a summary Wharf writes must not serve (they belong to
/// an upstream summary it does not copy), but for the paths in `keep` (the
/// deltas Wharf's own summary lists).
pub(crate) async fn remove_all_except(
    staged: &Staged,
    keep: &BTreeSet<String>,
) -> Result<(), MirrorError> {
    remove_stale(staged, keep).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delta_paths_match_ostree() {
        // From `ostree static-delta generate` in a scratch repository.
        let from =
            Checksum::from_hex("2834faf865694e020e1bac2e1c2177a19d97420d268a53fadc854b130a53b742")
                .unwrap();
        let to =
            Checksum::from_hex("bd04445bfe5003e0bca82672ebe5f17089ca222b2cf8bd159a4d167bd209cd78")
                .unwrap();
        let name = DeltaName::parse(&format!("{from}-{to}")).unwrap();
        assert_eq!(
            name.dir(),
            "deltas/KD/T6+GVpTgIOG6wuHCF3oZ2XQg0milP63IVLEwpTt0I-vQREW_5QA+C8qCZy6+XxcInKIiss+L0Vmk0We9IJzXg"
        );
        assert_eq!(name.to_string(), format!("{from}-{to}"));
        let scratch = DeltaName::parse(&to.to_hex()).unwrap();
        assert_eq!(
            scratch.dir(),
            "deltas/vQ/REW_5QA+C8qCZy6+XxcInKIiss+L0Vmk0We9IJzXg"
        );
        assert_eq!(
            delta_index_path(&to),
            "delta-indexes/vQ/REW_5QA+C8qCZy6+XxcInKIiss+L0Vmk0We9IJzXg.index"
        );
        assert!(DeltaName::parse("../x").is_err());
        assert!(DeltaName::parse(&format!("{from}-../x")).is_err());
    }

    #[test]
    fn collection_ids() {
        assert!(valid_collection_id("org.example.Os"));
        assert!(!valid_collection_id("single"));
        assert!(!valid_collection_id("org..x"));
        assert!(!valid_collection_id("org/../x"));
    }

    fn summary_with_collection(id: &str, name: &str) -> Summary {
        let map = Value::Array(
            Type::parse("{sa(s(taya{sv}))}").unwrap(),
            vec![Value::DictEntry(
                Box::new(Value::Str(id.into())),
                Box::new(Value::Array(
                    Type::parse("(s(taya{sv}))").unwrap(),
                    vec![Value::Tuple(vec![
                        Value::Str(name.into()),
                        Value::Tuple(vec![
                            Value::U64(150),
                            Value::Bytes(vec![7; 32]),
                            Value::Array(Type::parse("{sv}").unwrap(), vec![]),
                        ]),
                    ])],
                )),
            )],
        );
        let summary = Summary {
            refs: vec![],
            metadata: vec![(COLLECTION_MAP_KEY.into(), map)],
        };
        // Through the bytes, as a mirror reads it.
        Summary::parse(&summary.encode()).unwrap()
    }

    #[test]
    fn collection_refs_are_read_and_bad_names_refused() {
        let refs =
            collection_refs(&summary_with_collection("org.example.Os", "os/stable")).unwrap();
        assert_eq!(
            refs,
            vec![CollectionRef {
                collection: "org.example.Os".into(),
                name: "os/stable".into(),
                checksum: Checksum::from_bytes(&[7; 32]).unwrap(),
            }]
        );
        assert!(collection_refs(&summary_with_collection("org/../x", "os")).is_err());
        assert!(collection_refs(&summary_with_collection("org.example.Os", "../x")).is_err());
        assert!(collection_refs(&Summary::default()).unwrap().is_empty());
    }

    #[test]
    fn subsummaries_inflate_and_hash() {
        use std::io::Write;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(b"subsummary").unwrap();
        let gz = enc.finish().unwrap();
        assert_eq!(gunzip_sha256(&gz).unwrap(), sha256(b"subsummary"));
        assert!(gunzip_sha256(b"not gzip").is_err());
    }
}
