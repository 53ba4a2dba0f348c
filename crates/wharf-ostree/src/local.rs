//! A local repository in a mode other than archive: its content objects read
//! as the archive `.filez` they would be, so `wharf ostree import` takes a
//! repository that `ostree commit`, rpm-ostree or a build system wrote in
//! `bare-user`, `bare-user-only` or `bare` mode through the same walk and
//! the same checks as an archive one.
//!
//! The metadata objects (commit, dirtree, dirmeta, commitmeta) are the same
//! bytes in every mode; only a content object differs. Where its header comes
//! from, per mode (as libostree writes them):
//! - `bare-user`: a regular file whose `user.ostreemeta` xattr holds
//!   `(uuua(ayay))` (uid, gid, mode, xattrs); a symlink is a regular file
//!   holding its target.
//! - `bare-user-only`: the file itself, owned by 0:0, no xattrs; symlinks are symlinks.
//! - `bare`: the file itself with its real owner, mode and xattrs.
//!
//! The synthesized `.filez` is verified by the walk like a fetched one: its
//! checksum must be the object's name, so a header read wrongly is refused,
//! never stored.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::object::{encode_filez, DirMeta, FileHeader, Xattrs};

/// How a local repository stores its content objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalMode {
    /// `archive` / `archive-z2`: `.filez` files, read as they are.
    Archive,
    BareUser,
    BareUserOnly,
    Bare,
}

impl LocalMode {
    /// The mode a repository's `config` names, if Wharf can read it.
    pub fn from_config_mode(mode: &str) -> Option<LocalMode> {
        Some(match mode {
            "archive" | "archive-z2" => LocalMode::Archive,
            "bare-user" => LocalMode::BareUser,
            "bare-user-only" => LocalMode::BareUserOnly,
            "bare" => LocalMode::Bare,
            _ => return None,
        })
    }
}

const S_IFMT: u32 = 0o170000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;

/// The xattr a `bare-user` repository keeps a content object's header in.
const OSTREEMETA: &str = "user.ostreemeta";

/// The archive form of the content object stored at `file` (its `.file`
/// path) in a repository of `mode`; `None` when there is no such object.
/// Blocking: call it off the async workers.
pub fn read_as_filez(file: &Path, mode: LocalMode) -> std::io::Result<Option<Vec<u8>>> {
    let meta = match std::fs::symlink_metadata(file) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let file_type = meta.mode() & S_IFMT;
    if file_type != S_IFREG && file_type != S_IFLNK {
        return Err(invalid(file, "is neither a regular file nor a symlink"));
    }
    let (uid, gid, st_mode, xattrs) = match mode {
        LocalMode::Archive => return Ok(None),
        LocalMode::BareUser => {
            if file_type != S_IFREG {
                return Err(invalid(
                    file,
                    "is a symlink, which a bare-user repository stores as a file",
                ));
            }
            let raw = get_xattr(file, OSTREEMETA)?.ok_or_else(|| {
                invalid(
                    file,
                    "has no user.ostreemeta xattr (not a bare-user object)",
                )
            })?;
            let m = DirMeta::parse(&raw)
                .map_err(|e| invalid(file, &format!("user.ostreemeta: {e}")))?;
            (m.uid, m.gid, m.mode, m.xattrs)
        }
        LocalMode::BareUserOnly => (0, 0, meta.mode(), Vec::new()),
        LocalMode::Bare => (meta.uid(), meta.gid(), meta.mode(), read_xattrs(file)?),
    };
    let (content, symlink_target) = match (st_mode & S_IFMT, file_type) {
        (S_IFREG, S_IFREG) => (std::fs::read(file)?, String::new()),
        // bare-user: the target is the file's content, with the C string's NUL.
        (S_IFLNK, S_IFREG) => {
            let mut raw = std::fs::read(file)?;
            if raw.last() == Some(&0) {
                raw.pop();
            }
            let target =
                String::from_utf8(raw).map_err(|_| invalid(file, "symlink target is not UTF-8"))?;
            (Vec::new(), target)
        }
        (S_IFLNK, S_IFLNK) => {
            let target = std::fs::read_link(file)?
                .into_os_string()
                .into_string()
                .map_err(|_| invalid(file, "symlink target is not UTF-8"))?;
            (Vec::new(), target)
        }
        _ => return Err(invalid(file, "mode does not match the stored file")),
    };
    let header = FileHeader {
        size: content.len() as u64,
        uid,
        gid,
        mode: st_mode,
        rdev: 0,
        symlink_target,
        xattrs,
    };
    Ok(Some(encode_filez(&header, &content)))
}

fn invalid(path: &Path, why: &str) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!("{}: {why}", path.display()),
    )
}

fn get_xattr(path: &Path, name: &str) -> std::io::Result<Option<Vec<u8>>> {
    let name = std::ffi::OsStr::new(name);
    let len = match rustix::fs::lgetxattr_query(path, name) {
        Ok(n) => n,
        Err(rustix::io::Errno::NODATA) | Err(rustix::io::Errno::NOTSUP) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let mut value = vec![0u8; len];
    let n = rustix::fs::lgetxattr(path, name, &mut value[..])?;
    value.truncate(n);
    Ok(Some(value))
}

/// A path's extended attributes as OSTree records them: names with their
/// NUL, sorted.
pub(crate) fn read_xattrs(path: &Path) -> std::io::Result<Xattrs> {
    let size = match rustix::fs::llistxattr_query(path) {
        Ok(n) => n,
        // A file system without xattrs has none to record.
        Err(rustix::io::Errno::NOTSUP) => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let mut names = vec![0u8; size];
    let n = rustix::fs::llistxattr(path, &mut names[..])?;
    names.truncate(n);
    let mut out = Vec::new();
    for name in names.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let name_str = std::ffi::OsStr::new(
            std::str::from_utf8(name).map_err(|_| invalid(path, "an xattr name is not UTF-8"))?,
        );
        let len = rustix::fs::lgetxattr_query(path, name_str)?;
        let mut value = vec![0u8; len];
        let n = rustix::fs::lgetxattr(path, name_str, &mut value[..])?;
        value.truncate(n);
        // The GVariant string's NUL is part of the name OSTree records.
        let mut recorded = name.to_vec();
        recorded.push(0);
        out.push((recorded, value));
    }
    out.sort();
    Ok(out)
}
