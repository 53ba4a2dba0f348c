//! The repository summary: `(a(s(taya{sv}))a{sv})`, every ref with its
//! commit's checksum and size, and repository-wide metadata. Clients read it
//! to learn the refs in one request; `summary.sig` signs its exact bytes.

use crate::gvariant::{decode_normal, Type, Value};
use crate::object::{metadata_of_value, metadata_value, Checksum, Metadata, ObjectError};

pub const SUMMARY_TYPE: &str = "(a(s(taya{sv}))a{sv})";

/// One ref as listed in a summary.
#[derive(Debug, Clone, PartialEq)]
pub struct SummaryRef {
    pub name: String,
    /// The commit object's size in bytes.
    pub commit_size: u64,
    pub checksum: Checksum,
    /// Per-ref metadata (`ostree.commit.timestamp`, …).
    pub metadata: Metadata,
}

/// A parsed summary.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Summary {
    pub refs: Vec<SummaryRef>,
    pub metadata: Metadata,
}

impl SummaryRef {
    /// A ref as Wharf lists it: its commit's size and timestamp, as `ostree summary -u` does.
    pub fn of_commit(name: String, checksum: Checksum, commit_size: u64, timestamp: u64) -> Self {
        SummaryRef {
            name,
            commit_size,
            checksum,
            metadata: vec![("ostree.commit.timestamp".into(), be_u64_value(timestamp))],
        }
    }
}

impl Summary {
    /// A summary Wharf writes itself (a subset mirror, `wharf ostree commit`),
    /// with the repository metadata `ostree summary -u` writes.
    pub fn written_by_wharf(refs: Vec<SummaryRef>, now: i64) -> Summary {
        Summary {
            refs,
            metadata: vec![
                (
                    "ostree.summary.last-modified".into(),
                    be_u64_value(now.max(0) as u64),
                ),
                (
                    "ostree.summary.mode".into(),
                    Value::Str("archive-z2".into()),
                ),
                (
                    "ostree.summary.tombstone-commits".into(),
                    Value::Bool(false),
                ),
            ],
        }
    }

    pub fn parse(bytes: &[u8]) -> Result<Summary, ObjectError> {
        let v = decode_normal(&Type::parse(SUMMARY_TYPE).expect("literal"), bytes)?;
        let Value::Tuple(mut m) = v else {
            unreachable!("tuple type")
        };
        let metadata = metadata_of_value(m.pop().expect("two members"));
        let Value::Array(_, refs) = m.pop().expect("two members") else {
            unreachable!("array type")
        };
        let refs = refs
            .into_iter()
            .map(|r| {
                let Value::Tuple(mut r) = r else {
                    unreachable!("tuple type")
                };
                let Value::Tuple(mut data) = r.pop().expect("two members") else {
                    unreachable!("tuple type")
                };
                let Value::Str(name) = r.pop().expect("two members") else {
                    unreachable!("string type")
                };
                let metadata = metadata_of_value(data.pop().expect("three members"));
                let Value::Bytes(checksum) = data.pop().expect("three members") else {
                    unreachable!("ay")
                };
                let Value::U64(commit_size) = data.pop().expect("three members") else {
                    unreachable!("t")
                };
                Ok(SummaryRef {
                    name,
                    commit_size,
                    checksum: Checksum::from_bytes(&checksum)?,
                    metadata,
                })
            })
            .collect::<Result<_, ObjectError>>()?;
        Ok(Summary { refs, metadata })
    }

    /// The normal form, refs sorted by name as `ostree summary -u` writes them.
    pub fn encode(&self) -> Vec<u8> {
        let mut refs: Vec<&SummaryRef> = self.refs.iter().collect();
        refs.sort_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
        Value::Tuple(vec![
            Value::Array(
                Type::parse("(s(taya{sv}))").expect("literal"),
                refs.iter()
                    .map(|r| {
                        Value::Tuple(vec![
                            Value::Str(r.name.clone()),
                            Value::Tuple(vec![
                                Value::U64(r.commit_size),
                                Value::Bytes(r.checksum.as_bytes().to_vec()),
                                metadata_value(&r.metadata),
                            ]),
                        ])
                    })
                    .collect(),
            ),
            metadata_value(&self.metadata),
        ])
        .encode()
    }
}

/// A big-endian `t`, as OSTree writes timestamps into metadata.
pub fn be_u64_value(x: u64) -> Value {
    Value::U64(u64::from_le(x.to_be()))
}

/// Stores a summary Wharf wrote with `signature` (Wharf's `summary.sig` for
/// exactly these bytes) or, without one, with no `summary.sig` at all: a
/// signature left from upstream or an earlier summary never signs this one.
pub(crate) async fn put_own(
    staged: &wharf_snapshot::Staged,
    summary: Vec<u8>,
    signature: Option<Vec<u8>>,
    now: i64,
) -> Result<(), wharf_snapshot::SnapshotError> {
    let path = |p: &str| wharf_core::TreePath::new(p).expect("a valid literal path");
    let sig_path = path("summary.sig");
    match signature {
        Some(sig) => {
            staged
                .put_bytes(&sig_path, bytes::Bytes::from(sig), None, now)
                .await?;
        }
        None => {
            staged.remove(std::slice::from_ref(&sig_path)).await?;
        }
    }
    staged
        .put_bytes(&path("summary"), bytes::Bytes::from(summary), None, now)
        .await?;
    Ok(())
}
