//! Where a mirror reads upstream from: an http(s) base URL, a local
//! directory, or the mirrors a metalink or mirrorlist names ([`crate::mirrorlist`]).
//!
//! Both answer the same two questions: the bytes of a small file (repomd.xml
//! and its signature, which may be absent) and a stream of a large one (data
//! files and packages, never buffered). Paths are the validated tree paths of
//! the metadata, so a local directory is never left and a URL's path segments
//! are percent-encoded one by one (a `?` or `#` in a file name stays a name).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use wharf_blob::ByteStream;

use crate::mirrorlist::{parse_metalink, parse_mirrorlist, ListKind};
use crate::RpmError;

/// The path a metalink vouches for.
const REPOMD: &str = "repodata/repomd.xml";
/// The largest metalink or mirrorlist read.
const MAX_LIST_BYTES: u64 = 4 << 20;
/// Mirrors of one list tried before the run gives up.
const MAX_MIRRORS_TRIED: usize = 16;

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
    /// The mirrors a metalink or mirrorlist names; one is chosen by the
    /// first read and serves the rest of the run.
    Listed(Arc<Listed>),
}

/// A metalink or mirrorlist upstream, and the mirror chosen from it.
#[derive(Debug)]
pub struct Listed {
    kind: ListKind,
    list: reqwest::Url,
    client: reqwest::Client,
    /// Sent to the list's own host only, never to a mirror elsewhere.
    credentials: Option<(String, String)>,
    allow_http: bool,
    /// The mirror, and the repomd.xml it served (checked against the list).
    chosen: tokio::sync::OnceCell<(Source, Bytes)>,
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
            Ok(Source::Http {
                client: http_client(&settings)?,
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

    /// The mirrors the metalink or mirrorlist at `url` names; plain-HTTP
    /// mirrors only with `allow_http`.
    pub fn listed(
        kind: ListKind,
        url: &str,
        settings: SourceSettings,
        allow_http: bool,
    ) -> Result<Source, RpmError> {
        let list = reqwest::Url::parse(url)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https"))
            .ok_or_else(|| {
                RpmError::Upstream(format!("{} {url:?} is not an http(s) URL", kind.as_str()))
            })?;
        Ok(Source::Listed(Arc::new(Listed {
            kind,
            list,
            client: http_client(&settings)?,
            credentials: settings.credentials,
            allow_http,
            chosen: tokio::sync::OnceCell::new(),
        })))
    }

    /// The mirror a listed source chose (choosing it now), else itself.
    async fn resolved(&self, limit: u64) -> Result<&Source, RpmError> {
        match self {
            Source::Listed(listed) => Ok(&listed.choose(limit).await?.0),
            other => Ok(other),
        }
    }

    /// Where `path` is, for messages.
    pub fn describe(&self, path: &str) -> String {
        match self {
            Source::Http { base, .. } => self.url(base, path).to_string(),
            Source::Dir(dir) => dir.join(path).display().to_string(),
            Source::Listed(listed) => match listed.chosen.get() {
                Some((mirror, _)) => mirror.describe(path),
                None => format!("{path} (from the {} {})", listed.kind.as_str(), listed.list),
            },
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
        if let Source::Listed(listed) = self {
            let (mirror, repomd) = listed.choose(limit).await?;
            if path == REPOMD {
                return Ok(Some(repomd.clone()));
            }
            return Box::pin(mirror.fetch_small(path, limit)).await;
        }
        let Some(stream) = self.open_optional(path).await? else {
            return Ok(None);
        };
        Ok(Some(collect(stream, limit, &self.describe(path)).await?))
    }

    /// A stream of a file that must exist.
    pub async fn open(&self, path: &str) -> Result<ByteStream, RpmError> {
        self.open_optional(path).await?.ok_or_else(|| {
            RpmError::Upstream(format!("{}: not found upstream", self.describe(path)))
        })
    }

    async fn open_optional(&self, path: &str) -> Result<Option<ByteStream>, RpmError> {
        match self {
            Source::Listed(_) => {
                let mirror = self.resolved(crate::MAX_REPOMD_BYTES).await?;
                Box::pin(mirror.open_optional(path)).await
            }
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
            } => http_get(client, self.url(base, path), credentials.as_ref()).await,
        }
    }
}

/// GET `url`, retrying server errors and transport failures; `None` on 404.
async fn http_get(
    client: &reqwest::Client,
    url: reqwest::Url,
    credentials: Option<&(String, String)>,
) -> Result<Option<ByteStream>, RpmError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let mut request = client.get(url.clone());
        if let Some((user, password)) = credentials {
            request = request.basic_auth(user, Some(password));
        }
        let outcome = request.send().await;
        let retry = match outcome {
            Ok(response) if response.status() == reqwest::StatusCode::NOT_FOUND => return Ok(None),
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

/// A stream's bytes, at most `limit` of them; `what` names it in errors.
async fn collect(mut stream: ByteStream, limit: u64, what: &str) -> Result<Bytes, RpmError> {
    let mut body = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| RpmError::Upstream(format!("{what}: {e}")))?;
        body.extend_from_slice(&chunk);
        if body.len() as u64 > limit {
            return Err(RpmError::Upstream(format!(
                "{what}: larger than {limit} bytes"
            )));
        }
    }
    Ok(Bytes::from(body))
}

fn http_client(settings: &SourceSettings) -> Result<reqwest::Client, RpmError> {
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
    builder
        .build()
        .map_err(|e| RpmError::Upstream(format!("http client: {e}")))
}

impl Listed {
    /// The chosen mirror and its repomd.xml: the first mirror of the list
    /// whose repomd.xml the list vouches for, chosen once.
    async fn choose(&self, limit: u64) -> Result<&(Source, Bytes), RpmError> {
        self.chosen.get_or_try_init(|| self.pick(limit)).await
    }

    async fn pick(&self, limit: u64) -> Result<(Source, Bytes), RpmError> {
        let what = format!("the {} {}", self.kind.as_str(), self.list);
        let stream = http_get(&self.client, self.list.clone(), self.credentials.as_ref())
            .await?
            .ok_or_else(|| RpmError::Upstream(format!("{what}: not found")))?;
        let body = collect(stream, MAX_LIST_BYTES, &what).await?;
        let list = match self.kind {
            ListKind::Metalink => parse_metalink(&body, self.allow_http),
            ListKind::Mirrorlist => {
                parse_mirrorlist(&String::from_utf8_lossy(&body), self.allow_http)
            }
        }
        .map_err(|e| RpmError::Upstream(format!("{what}: {e}")))?;
        let mut refused = Vec::new();
        for base in list.bases.iter().take(MAX_MIRRORS_TRIED) {
            let Ok(base) = reqwest::Url::parse(base) else {
                refused.push(format!("{base}: not a URL"));
                continue;
            };
            let same_host = base.host_str() == self.list.host_str()
                && base.port_or_known_default() == self.list.port_or_known_default();
            let mirror = Source::Http {
                client: self.client.clone(),
                base: base.clone(),
                credentials: self.credentials.clone().filter(|_| same_host),
            };
            let credentials = self.credentials.as_ref().filter(|_| same_host);
            let url = mirror.url(&base, REPOMD);
            let fetched = match http_get(&self.client, url, credentials).await {
                Ok(Some(stream)) => collect(stream, limit, &mirror.describe(REPOMD))
                    .await
                    .map(Some),
                Ok(None) => Ok(None),
                Err(e) => Err(e),
            };
            match fetched {
                Ok(Some(repomd)) if list.vouches_for(self.kind, &repomd) => {
                    tracing::info!(mirror = %mirror.describe(""), "chose a mirror from {what}");
                    return Ok((mirror, repomd));
                }
                Ok(Some(_)) => refused.push(format!(
                    "{}: not the repomd.xml the metalink vouches for (a stale or tampered mirror)",
                    mirror.describe(REPOMD)
                )),
                Ok(None) => refused.push(format!("{}: not found", mirror.describe(REPOMD))),
                Err(e) => refused.push(e.to_string()),
            }
        }
        Err(RpmError::Upstream(format!(
            "{what}: no mirror served a usable repomd.xml ({})",
            refused.join("; ")
        )))
    }
}
