//! `wharf ostree push`: a commit of a local archive repository sent to a
//! Wharf server over `/api/v1/ostree/<repo>/…` (wharf-http `api/ostree.rs`).
//! It reads the commit's closure (`wharf_ostree::push::local_closure`, which
//! verifies every metadata object on the way), asks the server which objects
//! it lacks, uploads only those, several at once, and then moves the ref,
//! which the server publishes only once it holds everything. A client, not a
//! store user: it opens no data directory and reads no configuration.

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::{bail, Context};
use futures_util::{StreamExt, TryStreamExt};
use serde_json::{json, Value};
use wharf_core::RepoName;
use wharf_ostree::object::validate_ref_name;
use wharf_ostree::push::{local_closure, local_ref, LocalObject, MAX_NAMES};

/// `wharf ostree push …`
#[derive(clap::Args)]
pub(crate) struct PushArgs {
    /// The server, `https://HOST[:PORT]`.
    #[arg(long, value_name = "URL")]
    url: String,
    /// The repository (kind ostree) on the server; created by the first push.
    #[arg(long = "repo", value_name = "REPO")]
    repo: String,
    /// The branch to move on the server.
    #[arg(long, short = 'b', value_name = "BRANCH")]
    branch: String,
    /// The local archive repository (`ostree init --mode=archive`).
    #[arg(long = "from", value_name = "PATH")]
    from: PathBuf,
    /// The local ref to push (`refs/heads/REF`); default: BRANCH.
    #[arg(long = "ref", value_name = "REF")]
    local_ref: Option<String>,
    /// Move the branch only if it still names this commit (else 409).
    #[arg(long, value_name = "COMMIT")]
    parent: Option<String>,
    /// User name (with `--password-file`).
    #[arg(long, value_name = "USER", requires = "password_file")]
    user: Option<String>,
    /// File holding the password.
    #[arg(long = "password-file", value_name = "FILE", requires = "user")]
    password_file: Option<PathBuf>,
    /// File holding an API token (instead of a user and password).
    #[arg(long = "token-file", value_name = "FILE", conflicts_with = "user")]
    token_file: Option<PathBuf>,
    /// PEM CA bundle trusted for the server instead of the system roots.
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// Objects uploaded at once.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=64))]
    jobs: u16,
}

enum Credentials {
    None,
    Basic(String, String),
    Bearer(String),
}

struct Client {
    http: reqwest::Client,
    base: String,
    credentials: Credentials,
}

fn secret(path: &PathBuf) -> anyhow::Result<String> {
    let s = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(s.trim_end_matches(['\n', '\r']).to_owned())
}

impl Client {
    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let req = self.http.request(method, format!("{}/{path}", self.base));
        match &self.credentials {
            Credentials::None => req,
            Credentials::Basic(u, p) => req.basic_auth(u, Some(p)),
            Credentials::Bearer(t) => req.bearer_auth(t),
        }
    }

    /// Sends `req`; the answer's JSON, or the server's own message as the error.
    async fn send(&self, what: &str, req: reqwest::RequestBuilder) -> anyhow::Result<Value> {
        let resp = req.send().await.with_context(|| what.to_owned())?;
        let status = resp.status();
        let body = resp.bytes().await.with_context(|| what.to_owned())?;
        let value: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        if !status.is_success() {
            let msg = value
                .pointer("/error/message")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
            bail!("{what}: the server answered {status}: {msg}");
        }
        Ok(value)
    }
}

/// Runs one push; prints one summary line.
pub(crate) async fn push(args: PushArgs) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let repo = RepoName::parse(&args.repo).with_context(|| format!("--repo {:?}", args.repo))?;
    if !validate_ref_name(&args.branch) {
        bail!("--branch {:?} is not a valid ref name", args.branch);
    }
    let credentials = match (&args.user, &args.password_file, &args.token_file) {
        (Some(u), Some(p), None) => Credentials::Basic(u.clone(), secret(p)?),
        (None, None, Some(t)) => Credentials::Bearer(secret(t)?),
        _ => Credentials::None,
    };
    let mut http = reqwest::Client::builder();
    if let Some(ca) = &args.ca {
        let pem = std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?;
        for cert in reqwest::Certificate::from_pem_bundle(&pem)
            .with_context(|| format!("--ca {}: not a PEM bundle", ca.display()))?
        {
            http = http.add_root_certificate(cert);
        }
        http = http.tls_built_in_root_certs(false);
    }
    let client = Client {
        http: http.build().context("setting up the HTTP client")?,
        base: format!(
            "{}/api/v1/ostree/{}",
            args.url.trim_end_matches('/'),
            repo.as_str()
        ),
        credentials,
    };

    let from = args.from.clone();
    let local = args
        .local_ref
        .clone()
        .unwrap_or_else(|| args.branch.clone());
    let (commit, objects) = tokio::task::spawn_blocking(move || {
        let commit = local_ref(&from, &local)?;
        anyhow::Ok((commit, local_closure(&from, commit)?))
    })
    .await
    .context("reading the local repository")??;

    let mut missing: HashSet<String> = HashSet::new();
    for chunk in objects.chunks(MAX_NAMES) {
        let names: Vec<String> = chunk.iter().map(|o| o.name.to_string()).collect();
        let answer = client
            .send(
                "asking which objects the server lacks",
                client
                    .request(reqwest::Method::POST, "missing")
                    .json(&names),
            )
            .await?;
        let listed = answer
            .get("missing")
            .and_then(Value::as_array)
            .context("the server's answer to missing has no list")?;
        missing.extend(listed.iter().filter_map(Value::as_str).map(str::to_owned));
    }
    let to_send: Vec<&LocalObject> = objects
        .iter()
        .filter(|o| missing.contains(&o.name.to_string()))
        .collect();
    let bytes_sent = AtomicU64::new(0);
    let client_ref = &client;
    let bytes_ref = &bytes_sent;
    futures_util::stream::iter(to_send.iter().copied())
        .map(|o| async move {
            let bytes = tokio::fs::read(&o.file)
                .await
                .with_context(|| format!("reading {}", o.file.display()))?;
            let n = bytes.len() as u64;
            client_ref
                .send(
                    &format!("uploading {}", o.name),
                    client_ref
                        .request(reqwest::Method::PUT, &o.name.path())
                        .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
                        .body(bytes),
                )
                .await?;
            bytes_ref.fetch_add(n, Ordering::Relaxed);
            anyhow::Ok(())
        })
        .buffer_unordered(usize::from(args.jobs))
        .try_collect::<Vec<()>>()
        .await?;

    let mut body = json!({ "commit": commit.to_string() });
    if let Some(parent) = &args.parent {
        body["parent"] = Value::String(parent.clone());
    }
    let moved = client
        .send(
            &format!("moving {} to {commit}", args.branch),
            client
                .request(reqwest::Method::POST, &format!("refs/{}", args.branch))
                .json(&body),
        )
        .await?;
    let published = match moved.get("snapshot").and_then(Value::as_i64) {
        Some(n) => format!("snapshot {n} published"),
        None => "the branch already named it".into(),
    };
    println!(
        "{repo} {} → {commit}: {} objects sent ({}) of {}, in {:.1}s; {published}",
        args.branch,
        to_send.len(),
        wharf_ostree::mirror::human_bytes(bytes_sent.load(Ordering::Relaxed)),
        objects.len(),
        started.elapsed().as_secs_f64(),
    );
    Ok(ExitCode::SUCCESS)
}
