//! Where mirrored objects come from: an archive repository over HTTP(S), or
//! one on a local path. Both answer "the bytes at this repository path, or
//! nothing there", which is all the walk needs; a local path is just another
//! upstream, so `wharf ostree import` shares every check a sync makes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;

use crate::local::LocalMode;

/// What went wrong talking to an upstream.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("{url}: {why}")]
    Http { url: String, why: String },
    #[error("{path}: {source}")]
    Local {
        path: String,
        source: std::io::Error,
    },
    #[error("bad upstream settings: {0}")]
    Settings(String),
}

/// How to reach an upstream.
#[derive(Debug, Clone, Default)]
pub struct UpstreamSettings {
    /// An `http(s)://` URL of the repository's top, or a local directory.
    pub url: String,
    /// Basic credentials.
    pub credentials: Option<(String, String)>,
    /// PEM CA bundle trusted instead of the system roots.
    pub ca_bundle: Option<Vec<u8>>,
    /// Connections kept alive at most (the requests in flight).
    pub concurrency: usize,
}

/// An upstream repository.
#[derive(Debug, Clone)]
pub enum Upstream {
    Http {
        client: reqwest::Client,
        base: String,
        credentials: Option<(String, String)>,
    },
    /// A repository on a local path, in any mode [`LocalMode`] reads.
    Local { root: PathBuf, mode: LocalMode },
}

/// One fetched file: its bytes (`None`: not there).
pub type Fetched = Option<Bytes>;

impl Upstream {
    pub fn new(settings: &UpstreamSettings) -> Result<Upstream, UpstreamError> {
        let url = settings.url.trim_end_matches('/');
        if url.starts_with("http://") || url.starts_with("https://") {
            let mut builder = reqwest::Client::builder()
                .pool_max_idle_per_host(settings.concurrency.max(1))
                .tcp_nodelay(true)
                .connect_timeout(Duration::from_secs(30))
                .read_timeout(Duration::from_secs(120))
                .user_agent(concat!(
                    "wharf/",
                    env!("CARGO_PKG_VERSION"),
                    " (ostree mirror)"
                ));
            if let Some(pem) = &settings.ca_bundle {
                let certs = reqwest::Certificate::from_pem_bundle(pem)
                    .map_err(|e| UpstreamError::Settings(format!("ca_bundle: {e}")))?;
                builder = builder.tls_built_in_root_certs(false);
                for c in certs {
                    builder = builder.add_root_certificate(c);
                }
            }
            let client = builder
                .build()
                .map_err(|e| UpstreamError::Settings(e.to_string()))?;
            Ok(Upstream::Http {
                client,
                base: url.to_owned(),
                credentials: settings.credentials.clone(),
            })
        } else if url.contains("://") {
            Err(UpstreamError::Settings(format!(
                "{url:?}: only http(s):// URLs and local paths are upstreams"
            )))
        } else {
            // Archive until the repository's config says otherwise (`with_local_mode`).
            Ok(Upstream::Local {
                root: PathBuf::from(&settings.url),
                mode: LocalMode::Archive,
            })
        }
    }

    /// A short description for messages.
    pub fn describe(&self) -> String {
        match self {
            Upstream::Http { base, .. } => base.clone(),
            Upstream::Local { root, .. } => root.display().to_string(),
        }
    }

    /// A local repository read in `mode` (its config's); an HTTP upstream is
    /// always an archive.
    pub fn with_local_mode(self, mode: LocalMode) -> Upstream {
        match self {
            Upstream::Local { root, .. } => Upstream::Local { root, mode },
            http => http,
        }
    }

    /// The file at `path` (relative, already validated by the caller).
    pub async fn get(&self, path: &str) -> Result<Fetched, UpstreamError> {
        match self {
            Upstream::Local { root, mode } if *mode != LocalMode::Archive => {
                match path.strip_suffix(".filez") {
                    // A content object: read from its `.file` as the archive form.
                    Some(stem) if path.starts_with("objects/") => {
                        let file = root.join(format!("{stem}.file"));
                        let mode = *mode;
                        let shown = file.display().to_string();
                        tokio::task::spawn_blocking(move || {
                            crate::local::read_as_filez(&file, mode)
                        })
                        .await
                        .map_err(|e| UpstreamError::Local {
                            path: shown.clone(),
                            source: std::io::Error::other(e.to_string()),
                        })?
                        .map(|b| b.map(Bytes::from))
                        .map_err(|source| UpstreamError::Local {
                            path: shown,
                            source,
                        })
                    }
                    _ => read_local(root, path).await,
                }
            }
            Upstream::Local { root, .. } => read_local(root, path).await,
            Upstream::Http {
                client,
                base,
                credentials,
            } => {
                let url = format!("{base}/{path}");
                let mut attempt = 0u32;
                loop {
                    attempt += 1;
                    let mut req = client.get(&url);
                    if let Some((user, password)) = credentials {
                        req = req.basic_auth(user, Some(password));
                    }
                    let why = match req.send().await {
                        Ok(resp) => {
                            let status = resp.status();
                            // ostree itself reads 403 on an optional file as "not there".
                            if status == reqwest::StatusCode::NOT_FOUND
                                || status == reqwest::StatusCode::FORBIDDEN
                                    && (path.ends_with(".commitmeta") || path.ends_with(".sig"))
                            {
                                return Ok(None);
                            }
                            if status.is_success() {
                                match resp.bytes().await {
                                    Ok(b) => return Ok(Some(b)),
                                    Err(e) => format!("reading the body: {}", error_chain(&e)),
                                }
                            } else if status.is_server_error()
                                || status == reqwest::StatusCode::TOO_MANY_REQUESTS
                            {
                                format!("answered {status}")
                            } else {
                                return Err(UpstreamError::Http {
                                    url,
                                    why: format!("answered {status}"),
                                });
                            }
                        }
                        Err(e) => error_chain(&e),
                    };
                    if attempt >= 4 {
                        return Err(UpstreamError::Http { url, why });
                    }
                    tokio::time::sleep(Duration::from_millis(250 << attempt)).await;
                }
            }
        }
    }

    /// The refs under `refs/heads` of a local repository (an HTTP upstream
    /// cannot be listed: its refs come from the summary).
    pub fn list_local_refs(&self) -> Option<Vec<(String, PathBuf)>> {
        let Upstream::Local { root, .. } = self else {
            return None;
        };
        let heads = root.join("refs/heads");
        let mut out = Vec::new();
        let mut stack = vec![(heads.clone(), String::new())];
        while let Some((dir, prefix)) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let full = if prefix.is_empty() {
                    name
                } else {
                    format!("{prefix}/{name}")
                };
                match e.file_type() {
                    Ok(t) if t.is_dir() => stack.push((e.path(), full)),
                    Ok(_) => out.push((full, e.path())),
                    Err(_) => {}
                }
            }
        }
        out.sort();
        Some(out)
    }
}

async fn read_local(root: &Path, path: &str) -> Result<Fetched, UpstreamError> {
    match tokio::fs::read(root.join(path)).await {
        Ok(b) => Ok(Some(Bytes::from(b))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => Ok(None),
        Err(source) => Err(UpstreamError::Local {
            path: root.join(path).display().to_string(),
            source,
        }),
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}
