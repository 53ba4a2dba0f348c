//! Parsing a `/lookaside` path into what it names, once, before any handler.
//!
//! rpkg builds download URLs as `<name>/<file>/<hashtype>/<hash>/<file>` under
//! the configured base, where `<name>` may carry a namespace (`rpms/bash`);
//! the oldest form, still in old `sources` files, is `<name>/<file>/<md5>/<file>`.
//! Components are percent-decoded (rpkg quotes the file name) and validated
//! through the `wharf-core` types, so nothing unvalidated reaches storage.

use wharf_core::{SourceChecksum, SourceFileName, SourceHashType, SourcePackage};

use super::errors::LookasideHttpError;

/// The prefix every route lives under.
pub(crate) const PREFIX: &str = "/lookaside/";

/// One source file, as a download URL names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SourceRef {
    pub(crate) package: SourcePackage,
    pub(crate) file: SourceFileName,
    pub(crate) checksum: SourceChecksum,
}

/// What a `/lookaside` path names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LookasideRoute {
    /// `upload.cgi`.
    Upload,
    /// A source file.
    Download(SourceRef),
}

/// Parses a request path; a path naming nothing is 404, a hostile one 400.
pub(crate) fn parse(path: &str) -> Result<LookasideRoute, LookasideHttpError> {
    let rest = path
        .strip_prefix(PREFIX)
        .ok_or_else(LookasideHttpError::not_found)?;
    if rest == "upload.cgi" {
        return Ok(LookasideRoute::Upload);
    }
    let comps = rest
        .split('/')
        .map(percent_decode)
        .collect::<Option<Vec<String>>>()
        .ok_or_else(|| LookasideHttpError::bad_request("malformed percent-encoding in the path"))?;
    let n = comps.len();
    // The current form: <name…>/<file>/<hashtype>/<hash>/<file>.
    if n >= 5 && comps[n - 4] == comps[n - 1] {
        if let Ok(kind) = SourceHashType::parse(&comps[n - 3]) {
            return source(&comps[..n - 4], &comps[n - 1], kind, &comps[n - 2]);
        }
    }
    // The legacy form: <name…>/<file>/<md5>/<file>.
    if n >= 4 && comps[n - 3] == comps[n - 1] {
        return source(
            &comps[..n - 3],
            &comps[n - 1],
            SourceHashType::Md5,
            &comps[n - 2],
        );
    }
    Err(LookasideHttpError::not_found())
}

fn source(
    package: &[String],
    file: &str,
    kind: SourceHashType,
    hash: &str,
) -> Result<LookasideRoute, LookasideHttpError> {
    Ok(LookasideRoute::Download(SourceRef {
        package: SourcePackage::new(&package.join("/"))?,
        file: SourceFileName::new(file)?,
        checksum: SourceChecksum::new(kind, hash)?,
    }))
}

/// `%XX` decoding of one path component; `None` for a bad escape or non-UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn download(path: &str) -> SourceRef {
        match parse(path) {
            Ok(LookasideRoute::Download(s)) => s,
            other => panic!("{path}: {other:?}"),
        }
    }

    #[test]
    fn paths() {
        let sha = "a".repeat(128);
        let md5 = "b".repeat(32);
        assert_eq!(
            parse("/lookaside/upload.cgi").unwrap(),
            LookasideRoute::Upload
        );
        let s = download(&format!(
            "/lookaside/bash/bash-5.2.tar.gz/sha512/{sha}/bash-5.2.tar.gz"
        ));
        assert_eq!(s.package.as_str(), "bash");
        assert_eq!(s.checksum.kind(), SourceHashType::Sha512);
        let s = download(&format!("/lookaside/rpms/bash/b.tgz/sha512/{sha}/b.tgz"));
        assert_eq!(s.package.as_str(), "rpms/bash");
        let s = download(&format!("/lookaside/bash/b.tgz/md5/{md5}/b.tgz"));
        assert_eq!(s.checksum.kind(), SourceHashType::Md5);
        let s = download(&format!("/lookaside/bash/b.tgz/{md5}/b.tgz"));
        assert_eq!(s.checksum.hex(), md5);
        let s = download(&format!(
            "/lookaside/bash/my%20file.tgz/md5/{md5}/my%20file.tgz"
        ));
        assert_eq!(s.file.as_str(), "my file.tgz");
        // Hostile or malformed: refused, never a path outside the cache.
        for bad in [
            format!("/lookaside/../b.tgz/md5/{md5}/b.tgz"),
            format!("/lookaside/bash/%2e%2e/md5/{md5}/%2e%2e"),
            format!("/lookaside/bash/a%2fb/md5/{md5}/a%2fb"),
            format!("/lookaside/bash/a%00b/md5/{md5}/a%00b"),
            format!("/lookaside/bash/b.tgz/md5/{sha}/b.tgz"),
            format!("/lookaside/a/b/c/b.tgz/md5/{md5}/b.tgz"),
            "/lookaside/bash/b.tgz/md5/%zz/b.tgz".to_owned(),
        ] {
            assert!(
                matches!(parse(&bad), Err(ref e) if e.status() == axum::http::StatusCode::BAD_REQUEST),
                "{bad}"
            );
        }
        assert!(parse("/lookaside/bash/b.tgz").is_err());
    }
}
