//! skopeo sync YAML files (`mirror.skopeo_files`) as a source of mirror
//! definitions, so an operator's existing `skopeo sync --src yaml` file works
//! unchanged. Each file is lowered at load into `[[mirror.remotes]]` and
//! `[[mirror.sync]]` entries; nothing downstream knows the file existed.
//!
//! The format (`man skopeo-sync`): a mapping from registry (`host[:port]`) to
//! `images` (repository → list of tags, empty meaning every tag),
//! `images-by-tag-regex` (repository → regex), `images-by-semver`
//! (repository → range), `credentials` (`username`, `password`), `tls-verify`
//! and `cert-dir`.
//!
//! YAML is read with `serde_norway`: serde_yaml is deprecated, `serde_yml`
//! carries an unsoundness advisory and an unmaintained notice, and
//! `yaml-rust2` has no serde, so every key's type error would be hand-written;
//! `serde_norway` is the maintained continuation of serde_yaml's API.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::mirror::{MirrorConfig, RemoteConfig, SyncConfig};
use crate::ConfigError;

/// One registry of a skopeo sync file.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
struct SkopeoRegistry {
    images: BTreeMap<String, Option<Vec<String>>>,
    images_by_tag_regex: BTreeMap<String, String>,
    images_by_semver: BTreeMap<String, String>,
    credentials: Option<SkopeoCredentials>,
    tls_verify: Option<bool>,
    cert_dir: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SkopeoCredentials {
    username: String,
    password: String,
}

/// The remote name a skopeo file's registry gets: its `host[:port]` with the
/// colon written `_` (what `wharf sync NAME` takes).
pub fn skopeo_remote_name(registry: &str) -> String {
    registry.replace(':', "_")
}

impl MirrorConfig {
    /// Reads every `skopeo_files` entry (relative paths from `base`) and
    /// appends the remotes and sync definitions it describes. Errors name the
    /// file and the key.
    pub fn lower_skopeo_files(&mut self, base: &Path) -> Result<(), ConfigError> {
        for (i, file) in self.skopeo_files.clone().iter().enumerate() {
            let path = if file.is_absolute() {
                file.clone()
            } else {
                base.join(file)
            };
            let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
                path: path.clone(),
                source,
            })?;
            let shown = format!("{} (mirror.skopeo_files[{i}])", path.display());
            self.lower_skopeo_text(&text, &shown, path.parent().unwrap_or(base))?;
        }
        Ok(())
    }

    /// Lowers one file's text; `origin` names it in errors.
    pub fn lower_skopeo_text(
        &mut self,
        text: &str,
        origin: &str,
        base: &Path,
    ) -> Result<(), ConfigError> {
        let fail = |key: &str, message: String| ConfigError::Parse {
            path: origin.to_owned(),
            message: if key.is_empty() {
                message
            } else {
                format!("{key}: {message}")
            },
        };
        let top: BTreeMap<String, serde_norway::Value> =
            serde_norway::from_str(text).map_err(|e| fail("", e.to_string()))?;
        for (registry, value) in top {
            let entry: SkopeoRegistry =
                serde_norway::from_value(value).map_err(|e| fail(&registry, e.to_string()))?;
            let authority_ok = !registry.is_empty()
                && registry
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'));
            if !authority_ok {
                return Err(fail(
                    &registry,
                    "a registry key is HOST[:PORT] (no scheme, no path)".to_owned(),
                ));
            }
            let name = skopeo_remote_name(&registry);
            if self.remotes.iter().any(|r| r.name == name) {
                return Err(fail(
                    &registry,
                    format!(
                        "a remote named {name:?} is already defined (in the TOML or another skopeo file)"
                    ),
                ));
            }
            // skopeo's tls-verify: false also lets it fall back to plain HTTP;
            // Wharf never skips certificate checks, so false means plain HTTP
            // and a registry with a private CA takes cert-dir.
            let tls = entry.tls_verify.unwrap_or(true);
            let url = format!("{}://{registry}", if tls { "https" } else { "http" });
            let ca_bundle = match &entry.cert_dir {
                None => PathBuf::new(),
                Some(dir) => {
                    let dir = if dir.is_absolute() {
                        dir.clone()
                    } else {
                        base.join(dir)
                    };
                    cert_dir_bundle(&dir).map_err(|m| fail(&format!("{registry}.cert-dir"), m))?
                }
            };
            let (username, password) = match entry.credentials {
                Some(c) if c.username.is_empty() || c.password.is_empty() => {
                    return Err(fail(
                        &format!("{registry}.credentials"),
                        "username and password must both be non-empty".to_owned(),
                    ))
                }
                Some(c) => (c.username, Some(c.password)),
                None => (String::new(), None),
            };
            self.remotes.push(RemoteConfig {
                name: name.clone(),
                url,
                insecure_http: !tls,
                username,
                password_file: PathBuf::new(),
                password,
                ca_bundle,
                concurrency: 4,
                prefix: None,
                // A skopeo file has no schedule: `wharf sync` or `wharf jobs run` runs it.
                interval_secs: 0,
                schedule: String::new(),
                jitter_secs: 60,
                requests_per_second: 0.0,
                pull_through: None,
            });
            let definition = |repository: &str| SyncConfig {
                remote: name.clone(),
                repositories: vec![repository.to_owned()],
                tags: Vec::new(),
                include: String::new(),
                exclude: String::new(),
                semver: String::new(),
                platforms: Vec::new(),
                signatures: true,
                verify_keys: Vec::new(),
            };
            for (repository, tags) in &entry.images {
                self.sync.push(SyncConfig {
                    tags: tags.clone().unwrap_or_default(),
                    ..definition(repository)
                });
            }
            for (repository, regex) in &entry.images_by_tag_regex {
                if let Err(e) = regex::Regex::new(regex) {
                    return Err(fail(
                        &format!("{registry}.images-by-tag-regex.{repository}"),
                        format!("{regex:?} is not a regex: {e}"),
                    ));
                }
                self.sync.push(SyncConfig {
                    include: regex.clone(),
                    ..definition(repository)
                });
            }
            for (repository, range) in &entry.images_by_semver {
                if let Err(e) = wharf_core::SemverRange::parse(range) {
                    return Err(fail(
                        &format!("{registry}.images-by-semver.{repository}"),
                        e.to_string(),
                    ));
                }
                self.sync.push(SyncConfig {
                    semver: range.clone(),
                    ..definition(repository)
                });
            }
            if entry.images.is_empty()
                && entry.images_by_tag_regex.is_empty()
                && entry.images_by_semver.is_empty()
            {
                return Err(fail(
                    &registry,
                    "names no images (images, images-by-tag-regex or images-by-semver)".to_owned(),
                ));
            }
        }
        Ok(())
    }
}

/// The one CA file of a containers-certs.d style directory (`*.crt`).
fn cert_dir_bundle(dir: &Path) -> Result<PathBuf, String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut cas = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| format!("{}: {e}", dir.display()))?.path();
        match path.extension().and_then(|e| e.to_str()) {
            Some("crt") => cas.push(path),
            Some("cert" | "key") => {
                return Err(format!(
                    "{}: client certificates are not supported for upstreams",
                    path.display()
                ))
            }
            _ => {}
        }
    }
    match cas.len() {
        1 => Ok(cas.remove(0)),
        0 => Err(format!("{} holds no *.crt CA file", dir.display())),
        n => Err(format!(
            "{} holds {n} *.crt files; Wharf takes one CA bundle (concatenate them)",
            dir.display()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lower(text: &str) -> Result<MirrorConfig, ConfigError> {
        let mut m = MirrorConfig::default();
        m.lower_skopeo_text(text, "sync.yml", Path::new("/nonexistent"))?;
        Ok(m)
    }

    #[test]
    fn the_man_page_example_lowers_to_remotes_and_definitions() {
        let m = lower(
            r#"
docker.io:
    images:
        busybox: []
        redis:
            - "1.0"
            - "2.0"
    images-by-tag-regex:
        nginx: ^1\.13\.[12]-alpine-perl$
    images-by-semver:
        alpine: ">= 3.12.0"
    credentials:
        username: john
        password: this is a secret
    tls-verify: true
127.0.0.1:5000:
    tls-verify: false
    images:
        coreos/etcd:
            - latest
"#,
        )
        .unwrap();
        let names: Vec<&str> = m.remotes.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["127.0.0.1_5000", "docker.io"]);
        let local = &m.remotes[0];
        assert_eq!(local.url, "http://127.0.0.1:5000");
        assert!(local.insecure_http && local.username.is_empty() && local.password.is_none());
        let hub = &m.remotes[1];
        assert_eq!(hub.url, "https://docker.io");
        assert_eq!(hub.username, "john");
        assert_eq!(hub.password.as_deref(), Some("this is a secret"));
        let defs: Vec<(&str, &str, Vec<String>, &str, &str)> = m
            .sync
            .iter()
            .map(|s| {
                (
                    s.remote.as_str(),
                    s.repositories[0].as_str(),
                    s.tags.clone(),
                    s.include.as_str(),
                    s.semver.as_str(),
                )
            })
            .collect();
        assert_eq!(
            defs,
            [
                (
                    "127.0.0.1_5000",
                    "coreos/etcd",
                    vec!["latest".to_owned()],
                    "",
                    ""
                ),
                ("docker.io", "busybox", vec![], "", ""),
                (
                    "docker.io",
                    "redis",
                    vec!["1.0".to_owned(), "2.0".to_owned()],
                    "",
                    ""
                ),
                (
                    "docker.io",
                    "nginx",
                    vec![],
                    r"^1\.13\.[12]-alpine-perl$",
                    ""
                ),
                ("docker.io", "alpine", vec![], "", ">= 3.12.0"),
            ]
        );
        let cfg = crate::Config {
            mirror: m,
            ..Default::default()
        };
        cfg.validate().unwrap();
    }

    #[test]
    fn errors_name_the_file_and_the_key() {
        for (text, needles) in [
            (
                "quay.io:\n  imgs: {}\n",
                &["sync.yml", "quay.io", "unknown field `imgs`"][..],
            ),
            (
                "quay.io:\n  images-by-semver:\n    etcd: \">= x\"\n",
                &["sync.yml", "quay.io.images-by-semver.etcd"],
            ),
            (
                "quay.io:\n  images-by-tag-regex:\n    etcd: \"(\"\n",
                &["quay.io.images-by-tag-regex.etcd", "not a regex"],
            ),
            (
                "quay.io:\n  tls-verify: false\n",
                &["quay.io", "names no images"],
            ),
            (
                "quay.io:\n  images: {a: []}\n  credentials: {username: u}\n",
                &["quay.io", "password"],
            ),
            (
                "quay.io:\n  images: {a: []}\n  cert-dir: /nonexistent/certs\n",
                &["quay.io.cert-dir", "/nonexistent/certs"],
            ),
            ("https://quay.io:\n  images: {a: []}\n", &["HOST[:PORT]"]),
            ("- not\n- a mapping\n", &["sync.yml"]),
        ] {
            let err = lower(text).unwrap_err().to_string();
            for needle in needles {
                assert!(err.contains(needle), "{needle:?} missing from {err}");
            }
        }
        let mut m = lower("quay.io:\n  images: {a: []}\n").unwrap();
        let err = m
            .lower_skopeo_text("quay.io:\n  images: {b: []}\n", "two.yml", Path::new("/"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("two.yml") && err.contains("already defined"),
            "{err}"
        );
    }

    #[test]
    fn cert_dir_gives_the_ca_bundle() {
        let dir = std::env::temp_dir().join(format!("wharf-skopeo-certs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("ca.crt"), "pem").unwrap();
        let m = lower(&format!(
            "reg.example:\n  images: {{a: []}}\n  cert-dir: {}\n",
            dir.display()
        ))
        .unwrap();
        assert_eq!(m.remotes[0].ca_bundle, dir.join("ca.crt"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
