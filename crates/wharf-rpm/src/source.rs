//! Where a mirror reads upstream from: an http(s) base URL or a local directory.
//!
//! Both answer the same two questions: the bytes of a small file (repomd.xml
//! and its signature, which may be absent) and a stream of a large one (data
//! files and packages, never buffered). Paths are the validated tree paths of
//! the metadata, so a local directory is never left and a URL's path segments
//! are percent-encoded one by one (a `?` or `#` in a file name stays a name).

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use wharf_blob::ByteStream;

use crate::RpmError;

/// How to reach an http(s) upstream.
#[derive(Debug, Clone, Default)]
pub struct SourceSettings {
    /// Basic credentials.
    pub credentials: Option<(String, String)>,
    /// PEM CAs trusted instead of the system roots.
    pub ca_bundle: Option<Vec<u8>>,
}

/// An upstream repository's root.
#[derive(Debug, Clone)]
pub enum Source {
    /// `http(s)://…/` (always ending in `/`).
    Http {
        /// The client, with its roots.
        client: reqwest::Client,
        /// The repository's root.
        base: reqwest::Url,
        /// Basic credentials.
        credentials: Option<(String, String)>,
    },
    /// A directory holding `repodata/`.
    Dir(PathBuf),
}

const ATTEMPTS: u32 = 3;

impl Source {
    /// A URL (`http://`, `https://`) or a local directory path.
    pub fn new(url: &str, settings: SourceSettings) -> Result<Source, RpmError> {
        if url.starts_with("http://") || url.starts_with("https://") {
            let mut base = reqwest::Url::parse(url)
                .map_err(|e| RpmError::Upstream(format!("url {url:?}: {e}")))?;
            if !base.path().ends_with('/') {
                base.set_path(&format!("{}/", base.path()));
            }
            let mut builder = reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(30))
                .read_timeout(Duration::from_secs(120));
            if let Some(pem) = &settings.ca_bundle {
                builder = builder.tls_built_in_root_certs(false);
                for cert in reqwest::Certificate::from_pem_bundle(pem)
                    .map_err(|e| RpmError::Upstream(format!("ca_bundle: {e}")))?
                {
                    builder = builder.add_root_certificate(cert);
                }
            }
            let client = builder
                .build()
                .map_err(|e| RpmError::Upstream(format!("http client: {e}")))?;
            Ok(Source::Http {
                client,
                base,
                credentials: settings.credentials,
            })
        } else {
            let dir = PathBuf::from(url.strip_prefix("file://").unwrap_or(url));
            if !dir.is_dir() {
                return Err(RpmError::Upstream(format!(
                    "url {url:?} is neither http(s):// nor an existing directory"
                )));
            }
            Ok(Source::Dir(dir))
        }
    }

    /// Where `path` is, for messages.
    pub fn describe(&self, path: &str) -> String {
        match self {
            Source::Http { base, .. } => self.url(base, path).to_string(),
            Source::Dir(dir) => dir.join(path).display().to_string(),
        }
    }

    fn url(&self, base: &reqwest::Url, path: &str) -> reqwest::Url {
        let mut url = base.clone();
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.pop_if_empty().extend(path.split('/'));
        }
        url
    }

    /// A small file whole, at most `limit` bytes; `None` when upstream has no such file.
    pub async fn fetch_small(&self, path: &str, limit: u64) -> Result<Option<Bytes>, RpmError> {
        let Some(mut stream) = self.open_optional(path).await? else {
            return Ok(None);
        };
        let mut body = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk =
                chunk.map_err(|e| RpmError::Upstream(format!("{}: {e}", self.describe(path))))?;
            body.extend_from_slice(&chunk);
            if body.len() as u64 > limit {
                return Err(RpmError::Upstream(format!(
                    "{}: larger than {limit} bytes",
                    self.describe(path)
                )));
            }
        }
        Ok(Some(Bytes::from(body)))
    }

    /// A stream of a file that must exist.
    pub async fn open(&self, path: &str) -> Result<ByteStream, RpmError> {
        self.open_optional(path).await?.ok_or_else(|| {
            RpmError::Upstream(format!("{}: not found upstream", self.describe(path)))
        })
    }

    async fn open_optional(&self, path: &str) -> Result<Option<ByteStream>, RpmError> {
        match self {
            Source::Dir(dir) => match tokio::fs::File::open(dir.join(path)).await {
                Ok(file) => Ok(Some(Box::pin(tokio_util::io::ReaderStream::with_capacity(
                    file,
                    1 << 20,
                )))),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(RpmError::Upstream(format!("{}: {e}", self.describe(path)))),
            },
            Source::Http {
                client,
                base,
                credentials,
            } => {
                let url = self.url(base, path);
                let mut attempt = 0;
                loop {
                    attempt += 1;
                    let mut request = client.get(url.clone());
                    if let Some((user, password)) = credentials {
                        request = request.basic_auth(user, Some(password));
                    }
                    let outcome = request.send().await;
                    let retry = match outcome {
                        Ok(response) if response.status() == reqwest::StatusCode::NOT_FOUND => {
                            return Ok(None)
                        }
                        Ok(response) if response.status().is_success() => {
                            let stream = response.bytes_stream().map_err(std::io::Error::other);
                            return Ok(Some(Box::pin(stream)));
                        }
                        Ok(response) if response.status().is_server_error() => {
                            format!("{url}: {}", response.status())
                        }
                        Ok(response) => {
                            return Err(RpmError::Upstream(format!("{url}: {}", response.status())))
                        }
                        Err(e) => format!("{url}: {e}"),
                    };
                    if attempt >= ATTEMPTS {
                        return Err(RpmError::Upstream(retry));
                    }
                    tracing::debug!(attempt, "{retry}; retrying");
                    tokio::time::sleep(Duration::from_millis(250 << attempt)).await;
                }
            }
        }
    }
}
