//! The configuration file: one TOML document, every default in this file.
//!
//! Flow: TOML → [`Config`] (serde, unknown keys refused with their path) →
//! [`Config::validate`] (every problem reported at once, each with its TOML
//! path) → lowered by the `wharf` binary into each crate's own settings.
//! Nothing else reads the configuration.
//!
//! [`REFERENCE`] documents every key; `docs/configuration.md` is generated from
//! it and a test keeps the two, and the defaults below, in agreement.

mod files;
mod mirror;
mod ostree;
mod reference;
mod retention;
mod rpm;
mod skopeo;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use files::{
    FilesConfig, FilesRemoteConfig, LookasideConfig, DEFAULT_FILES_MAX_UPLOAD_BYTES,
    DEFAULT_LOOKASIDE_MAX_UPLOAD_BYTES,
};
pub use mirror::{remote_authority, MirrorConfig, PullThroughConfig, RemoteConfig, SyncConfig};
pub use ostree::{OstreeConfig, OstreeDeltasConfig, OstreeRemoteConfig, OstreeRetentionConfig};
pub use reference::{render_reference, ConfigKey, REFERENCE};
pub use retention::{QuotaConfig, RetentionConfig, RetentionRuleConfig};
pub use rpm::{RpmComposedConfig, RpmConfig, RpmHostedConfig, RpmPolicy, RpmRemoteConfig};
pub use skopeo::skopeo_remote_name;

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Not valid TOML, or a key that does not exist, or a value of the wrong type.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// The parser's message, which names the offending key.
        message: String,
    },
    /// Well-formed but invalid values; every problem, one per line.
    #[error("invalid configuration:\n{}", .0.join("\n"))]
    Invalid(Vec<String>),
}

/// The whole configuration.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Listener settings.
    pub server: ServerConfig,
    /// Where blobs and other data live.
    pub storage: StorageConfig,
    /// The metadata database.
    pub database: DatabaseConfig,
    /// The OCI registry.
    pub oci: OciConfig,
    /// Garbage collection and upload expiry.
    pub gc: GcConfig,
    /// Scheduled verification of the store.
    pub check: CheckConfig,
    /// Logging.
    pub log: LogConfig,
    /// Identities, grants and registry tokens.
    pub auth: AuthConfig,
    /// HTTPS.
    pub tls: TlsConfig,
    /// Upstream registries and what to copy from them.
    pub mirror: MirrorConfig,
    /// Which OCI tags and untagged manifests are deleted, and when.
    pub retention: RetentionConfig,
    /// Byte limits per namespace of OCI repositories, as `[[quota]]`.
    pub quota: Vec<QuotaConfig>,
    /// rpm-md upstreams mirrored into rpm repositories.
    pub rpm: RpmConfig,
    /// dist-git's source cache at `/lookaside`.
    pub lookaside: LookasideConfig,
    /// File repositories: upload limit and mirrored upstream trees.
    pub files: FilesConfig,
    /// OSTree repositories mirrored from upstreams.
    pub ostree: OstreeConfig,
    /// Snapshots of OSTree, RPM and file repositories.
    pub publish: PublishConfig,
    /// Wharf's own signing keys.
    pub signing: SigningConfig,
}

/// `[signing]`: the keys Wharf signs with (its own OSTree summaries, hosted
/// metadata). Unset: keys generated on first use in `<data_dir>/keys/`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SigningConfig {
    /// An unprotected OpenPGP secret key (`gpg --export-secret-keys --armor`); empty: generated.
    pub openpgp_key_file: PathBuf,
    /// An ed25519 secret key, base64 of the 64-byte key as `ostree sign --keys-file` takes; empty: generated.
    pub ed25519_key_file: PathBuf,
}

impl SigningConfig {
    /// The configured OpenPGP key file, if one is.
    pub fn openpgp_key(&self) -> Option<&std::path::Path> {
        (!self.openpgp_key_file.as_os_str().is_empty()).then_some(self.openpgp_key_file.as_path())
    }

    /// The configured ed25519 key file, if one is.
    pub fn ed25519_key(&self) -> Option<&std::path::Path> {
        (!self.ed25519_key_file.as_os_str().is_empty()).then_some(self.ed25519_key_file.as_path())
    }

    fn validate(&self, problems: &mut Vec<String>) {
        if let Some(p) = self.openpgp_key() {
            problems.extend(key_file_problem("signing.openpgp_key_file", p));
        }
        if let Some(p) = self.ed25519_key() {
            problems.extend(key_file_problem("signing.ed25519_key_file", p));
        }
    }
}

/// `[publish]`
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct PublishConfig {
    /// Seconds a replaced snapshot keeps answering for paths the published one lacks.
    pub grace_secs: u64,
    /// Retired snapshots kept per repository for rollback (beyond the grace period).
    pub keep_retired: u32,
}

impl Default for PublishConfig {
    fn default() -> Self {
        PublishConfig {
            grace_secs: 3600,
            keep_retired: 3,
        }
    }
}

/// `[tls]`
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// Certificates served by SNI; the first is the default. Empty: plain HTTP.
    pub certificates: Vec<CertificateConfig>,
    /// Plain-HTTP listener that redirects to HTTPS; empty: none.
    pub redirect_listen: String,
    /// Seconds between checks of the certificate files for changes.
    pub reload_interval_secs: u64,
    /// PEM bundle of CAs whose client certificates sign in as the account named
    /// by the certificate's subject common name; empty: no client certificates.
    pub client_ca: PathBuf,
    /// Automatic certificates.
    pub acme: AcmeConfig,
}

impl TlsConfig {
    /// Whether the listener speaks HTTPS (static certificates or ACME).
    pub fn enabled(&self) -> bool {
        !self.certificates.is_empty() || !self.acme.directory_url.is_empty()
    }
}

/// `[tls.acme]`
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct AcmeConfig {
    /// The CA's ACME directory URL; empty disables ACME.
    pub directory_url: String,
    /// Names the certificate covers.
    pub domains: Vec<String>,
    /// Account contacts, e.g. `mailto:ops@example.com`.
    pub contact: Vec<String>,
    /// PEM bundle trusted for the directory's TLS (a private CA); empty: public roots.
    pub ca_bundle: PathBuf,
    /// How the CA checks that we hold the names.
    pub challenge: AcmeChallenge,
    /// Renew when less than this many seconds remain; 0: when a third of the lifetime remains.
    pub renew_before_secs: u64,
    /// Seconds between certificate checks.
    pub check_interval_secs: u64,
}

/// The ACME challenge the CA uses to check that this server holds the names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AcmeChallenge {
    /// Answered over plain HTTP on `tls.redirect_listen` (port 80 for a public CA).
    #[serde(rename = "http-01")]
    Http01,
    /// Answered in the TLS handshake on `server.listen` (port 443) itself.
    #[serde(rename = "tls-alpn-01")]
    TlsAlpn01,
}

impl Default for AcmeConfig {
    fn default() -> Self {
        AcmeConfig {
            directory_url: String::new(),
            domains: Vec::new(),
            contact: Vec::new(),
            ca_bundle: PathBuf::new(),
            challenge: AcmeChallenge::Http01,
            renew_before_secs: 0,
            check_interval_secs: 3600,
        }
    }
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            certificates: Vec::new(),
            redirect_listen: String::new(),
            reload_interval_secs: 10,
            client_ca: PathBuf::new(),
            acme: AcmeConfig::default(),
        }
    }
}

/// One `[[tls.certificates]]` entry.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateConfig {
    /// Host names (exact or `*.domain`) that select this certificate.
    #[serde(default)]
    pub hostnames: Vec<String>,
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// `[server]`
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address and port to listen on.
    pub listen: String,
    /// Seconds to let in-flight requests finish after SIGTERM/SIGINT.
    pub shutdown_grace_secs: u64,
    /// Permit listening on a non-loopback address without TLS, which sends
    /// passwords and tokens in clear text.
    pub allow_plaintext_public: bool,
    /// The URL clients use to reach this server (`https://host[:port]`), for
    /// the token realm; empty derives it from each request.
    pub external_url: String,
    /// Networks (`ADDR/PREFIX` or `ADDR`) of reverse proxies whose
    /// `X-Forwarded-For` and `X-Forwarded-Proto` are believed; empty: none.
    pub trusted_proxies: Vec<String>,
    /// Connections served at once, per listener.
    pub max_connections: u64,
    /// Seconds a client may take to send a request head.
    pub header_read_timeout_secs: u64,
    /// Seconds a connection may sit with nothing moving while the server waits on the client.
    pub idle_timeout_secs: u64,
    /// Bytes a request body must deliver in every `min_body_rate_window_secs`.
    pub min_body_rate_bytes: u64,
    /// The window of `min_body_rate_bytes`, in seconds.
    pub min_body_rate_window_secs: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:5000".into(),
            shutdown_grace_secs: 30,
            allow_plaintext_public: false,
            external_url: String::new(),
            trusted_proxies: Vec::new(),
            max_connections: 4096,
            header_read_timeout_secs: 30,
            idle_timeout_secs: 120,
            min_body_rate_bytes: 1024,
            min_body_rate_window_secs: 30,
        }
    }
}

/// Parses `ADDR/PREFIX` (or a bare `ADDR`, a single host) into the network
/// address and prefix length.
pub fn parse_network(s: &str) -> Result<(std::net::IpAddr, u8), String> {
    let (addr, prefix) = match s.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (s, None),
    };
    let addr: std::net::IpAddr = addr
        .parse()
        .map_err(|_| format!("{s:?} is not ADDRESS/PREFIX"))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix {
        None => max,
        Some(p) => p
            .parse::<u8>()
            .ok()
            .filter(|p| *p <= max)
            .ok_or_else(|| format!("{s:?}: the prefix length must be 0 to {max}"))?,
    };
    Ok((addr, prefix))
}

/// The scheme and authority of `server.external_url`, if it is exactly
/// `http(s)://host[:port]` (an optional trailing `/` allowed).
pub fn external_url_host(url: &str) -> Option<&str> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))?;
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    let ok = !authority.is_empty()
        && authority
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b));
    ok.then_some(authority)
}

/// `[storage]`
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// Directory holding everything Wharf stores (blobs, the SQLite database).
    pub data_dir: PathBuf,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            data_dir: PathBuf::from("./wharf-data"),
        }
    }
}

/// `[database]`
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `sqlite:PATH` or `postgres://USER@HOST:PORT/DB`; empty means
    /// `sqlite:<data_dir>/wharf.db`.
    pub url: String,
}

/// `[oci]`
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct OciConfig {
    /// Largest manifest accepted, in bytes.
    pub max_manifest_bytes: u64,
    /// Memory for cached manifest bytes, in bytes.
    pub manifest_cache_bytes: u64,
}

impl Default for OciConfig {
    fn default() -> Self {
        OciConfig {
            max_manifest_bytes: 4 * 1024 * 1024,
            manifest_cache_bytes: 64 * 1024 * 1024,
        }
    }
}

/// `[gc]`
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct GcConfig {
    /// Seconds between online garbage collections by the server; 0 disables them.
    pub interval_secs: u64,
    /// A cron expression (UTC) for the collections instead of `interval_secs`; empty: none.
    pub schedule: String,
    /// Up to this many seconds of random delay added to each scheduled collection.
    pub jitter_secs: u64,
    /// Seconds between full collections (a walk of the whole store); 0 disables them.
    pub full_interval_secs: u64,
    /// A cron expression (UTC) for full collections instead of `full_interval_secs`.
    pub full_schedule: String,
    /// Up to this many seconds of random delay added to each full collection.
    pub full_jitter_secs: u64,
    /// Unreferenced blobs younger than this many seconds are kept.
    pub grace_period_secs: u64,
    /// Upload sessions idle this many seconds are expired.
    pub upload_expiry_secs: u64,
}

impl Default for GcConfig {
    fn default() -> Self {
        GcConfig {
            interval_secs: 3600,
            schedule: String::new(),
            jitter_secs: 300,
            full_interval_secs: 86400,
            full_schedule: String::new(),
            full_jitter_secs: 600,
            grace_period_secs: 86400,
            upload_expiry_secs: 86400,
        }
    }
}

impl GcConfig {
    /// Whether the server collects garbage on its own at all: full collections run only
    /// beside quick ones, so `interval_secs = 0` without a `schedule` stops both.
    pub fn scheduled(&self) -> bool {
        self.interval_secs > 0 || !self.schedule.is_empty()
    }
}

/// `[check]`
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct CheckConfig {
    /// Seconds between scheduled verifications; 0 (the default) disables them.
    pub interval_secs: u64,
    /// A cron expression (UTC) for verifications instead of `interval_secs`; empty: none.
    pub schedule: String,
    /// Up to this many seconds of random delay added to each scheduled verification.
    pub jitter_secs: u64,
}

/// A key file named by the configuration that cannot be read is refused at
/// load, naming the key, rather than at the first sync hours later. Whether
/// its content is a key is checked by `wharf-sign` when it is used.
fn key_file_problem(key: &str, path: &std::path::Path) -> Option<String> {
    if path.as_os_str().is_empty() {
        return Some(format!("{key}: must name a file"));
    }
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => match std::fs::File::open(path) {
            Ok(_) => None,
            Err(e) => Some(format!("{key}: cannot read {}: {e}", path.display())),
        },
        Ok(_) => Some(format!("{key}: {} is not a file", path.display())),
        Err(e) => Some(format!("{key}: cannot read {}: {e}", path.display())),
    }
}

/// `key_file_problem` for each file of a list, as `key[N]`.
/// A remote's `name` (at `at`) checked: letters, digits, `-`, `_`, `.`, and
/// unique among `seen` (this section's earlier remotes) and `taken` (other
/// kinds' remotes), since `wharf sync NAME` and the job keys take any kind.
fn remote_name_problems(
    at: &str,
    name: &str,
    seen: &[&str],
    taken: &[&str],
    problems: &mut Vec<String>,
) {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        problems.push(format!(
            "{at}.name: {name:?} must be non-empty letters, digits, '-', '_' or '.'"
        ));
    }
    if seen.contains(&name) || taken.contains(&name) {
        problems.push(format!(
            "{at}.name: {name:?} is used twice (remote names are unique across every kind)"
        ));
    }
}

fn key_files_problems(key: &str, paths: &[PathBuf], problems: &mut Vec<String>) {
    for (i, p) in paths.iter().enumerate() {
        problems.extend(key_file_problem(&format!("{key}[{i}]"), p));
    }
}

/// The problem with a `schedule` key's cron expression, if any, as one line naming the key.
fn schedule_problem(key: &str, expr: &str) -> Option<String> {
    if expr.is_empty() {
        return None;
    }
    wharf_core::CronExpr::parse(expr)
        .err()
        .map(|e| format!("{key}: {expr:?} is not a cron expression: {e}"))
}

/// `[log]`
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// Filter in `RUST_LOG` syntax, e.g. `info` or `wharf_http=debug,info`.
    pub level: String,
    /// `text` (one human-readable line per event) or `json` (one JSON object per line).
    pub format: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            format: "text".into(),
        }
    }
}

/// `[auth]`
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Name of this registry in token challenges (`service`) and tokens (`aud`).
    pub service: String,
    /// Token endpoint URL announced to clients; empty derives it from the request.
    pub realm: String,
    /// Lifetime of registry access tokens, in seconds.
    pub token_ttl_secs: u64,
    /// Lifetime of refresh (offline) tokens, in seconds.
    pub refresh_token_ttl_secs: u64,
    /// File holding the first administrator's password; empty generates one.
    pub admin_password_file: String,
    /// Failed sign-ins allowed per account from one client address per window.
    pub max_failed_logins: u32,
    /// Failed sign-ins allowed from one client address, whatever the accounts, per window.
    pub max_failed_logins_per_address: u32,
    /// Password verifications allowed to run at once.
    pub max_concurrent_password_checks: u32,
    /// The window of `max_failed_logins`, in seconds.
    pub failed_login_window_secs: u64,
    /// Grants declared in the file; they replace earlier file grants at start.
    pub grants: Vec<GrantConfig>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            service: "wharf".into(),
            realm: String::new(),
            token_ttl_secs: 300,
            refresh_token_ttl_secs: 90 * 86400,
            admin_password_file: String::new(),
            max_failed_logins: 10,
            max_failed_logins_per_address: 30,
            max_concurrent_password_checks: 4,
            failed_login_window_secs: 300,
            grants: Vec::new(),
        }
    }
}

/// One `[[auth.grants]]` entry.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GrantConfig {
    /// `anonymous`, `user:NAME` (users and robots) or `team:NAME`.
    pub subject: String,
    /// Repository name pattern: `*` within a path component, `**` across them.
    pub repositories: String,
    /// Any of `pull`, `push`, `delete`, `admin`.
    pub actions: Vec<String>,
}

impl Config {
    /// Parses TOML text; `origin` names the source in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_owned(),
            message: e.to_string(),
        })
    }

    /// Reads and parses a file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut config = Config::parse(&text, &path.display().to_string())?;
        // skopeo sync files become remotes and sync definitions here, so every
        // later step (validation, `wharf sync`) sees one configuration.
        let base = path.parent().unwrap_or(Path::new("."));
        config.mirror.lower_skopeo_files(base)?;
        Ok(config)
    }

    /// Checks values; reports every problem with its TOML path.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        match self.server.listen.parse::<SocketAddr>() {
            Ok(addr) => {
                let plaintext = !self.tls.enabled();
                if plaintext && !addr.ip().is_loopback() && !self.server.allow_plaintext_public {
                    problems.push(format!(
                        "server.listen: {addr} is reachable from other hosts over plain HTTP, \
                         which exposes passwords and tokens; listen on a loopback address behind \
                         a TLS proxy, or set server.allow_plaintext_public = true"
                    ));
                }
            }
            Err(e) => problems.push(format!(
                "server.listen: {:?} is not an address:port ({e})",
                self.server.listen
            )),
        }
        for (key, value) in [
            ("server.max_connections", self.server.max_connections),
            (
                "server.header_read_timeout_secs",
                self.server.header_read_timeout_secs,
            ),
            ("server.idle_timeout_secs", self.server.idle_timeout_secs),
            (
                "server.min_body_rate_window_secs",
                self.server.min_body_rate_window_secs,
            ),
        ] {
            if value == 0 {
                problems.push(format!("{key}: must be at least 1"));
            }
        }
        if self.storage.data_dir.as_os_str().is_empty() {
            problems.push("storage.data_dir: must not be empty".into());
        }
        let url = &self.database.url;
        if !(url.is_empty()
            || url.starts_with("sqlite:")
            || url.starts_with("postgres://")
            || url.starts_with("postgresql://"))
        {
            problems.push(format!(
                "database.url: {url:?} is neither sqlite:PATH nor postgres://…"
            ));
        }
        if self.oci.max_manifest_bytes < 1024 {
            problems.push("oci.max_manifest_bytes: must be at least 1024".into());
        }
        if self.gc.grace_period_secs < 60 {
            problems.push("gc.grace_period_secs: must be at least 60".into());
        }
        if self.gc.upload_expiry_secs < 60 {
            problems.push("gc.upload_expiry_secs: must be at least 60".into());
        }
        for (key, expr) in [
            ("gc.schedule", &self.gc.schedule),
            ("gc.full_schedule", &self.gc.full_schedule),
            ("check.schedule", &self.check.schedule),
        ] {
            problems.extend(schedule_problem(key, expr));
        }
        for (i, c) in self.tls.certificates.iter().enumerate() {
            if c.cert.as_os_str().is_empty() || c.key.as_os_str().is_empty() {
                problems.push(format!(
                    "tls.certificates[{i}]: cert and key are both required"
                ));
            }
        }
        if !self.tls.redirect_listen.is_empty() {
            if !self.tls.enabled() {
                problems.push(
                    "tls.redirect_listen: needs tls.certificates or tls.acme (nothing to redirect to)"
                        .into(),
                );
            }
            if self.tls.redirect_listen.parse::<SocketAddr>().is_err() {
                problems.push(format!(
                    "tls.redirect_listen: {:?} is not an address:port",
                    self.tls.redirect_listen
                ));
            }
        }
        let acme = &self.tls.acme;
        if !acme.directory_url.is_empty() {
            if !(acme.directory_url.starts_with("https://")
                || acme.directory_url.starts_with("http://"))
            {
                problems.push(format!(
                    "tls.acme.directory_url: {:?} is not a URL",
                    acme.directory_url
                ));
            }
            if acme.domains.is_empty() {
                problems.push("tls.acme.domains: at least one name is required".into());
            }
            if acme.challenge == AcmeChallenge::Http01 && self.tls.redirect_listen.is_empty() {
                problems.push(
                    "tls.acme.challenge: http-01 is answered on tls.redirect_listen, which is not set"
                        .into(),
                );
            }
            if acme.check_interval_secs == 0 {
                problems.push("tls.acme.check_interval_secs: must be at least 1".into());
            }
        }
        if !self.tls.client_ca.as_os_str().is_empty() && !self.tls.enabled() {
            problems.push(
                "tls.client_ca: needs tls.certificates (client certificates need TLS)".into(),
            );
        }
        if self.tls.reload_interval_secs == 0 {
            problems.push("tls.reload_interval_secs: must be at least 1".into());
        }
        if !matches!(self.log.format.as_str(), "text" | "json") {
            problems.push(format!(
                "log.format: {:?} is neither \"text\" nor \"json\"",
                self.log.format
            ));
        }
        if self.auth.service.is_empty() {
            problems.push("auth.service: must not be empty".into());
        }
        if self.auth.token_ttl_secs < 30 || self.auth.token_ttl_secs > 86400 {
            problems.push("auth.token_ttl_secs: must be between 30 and 86400".into());
        }
        if self.auth.max_failed_logins == 0 {
            problems.push("auth.max_failed_logins: must be at least 1".into());
        }
        if self.auth.max_failed_logins_per_address == 0 {
            problems.push("auth.max_failed_logins_per_address: must be at least 1".into());
        }
        if self.auth.max_concurrent_password_checks == 0 {
            problems.push("auth.max_concurrent_password_checks: must be at least 1".into());
        }
        if !self.server.external_url.is_empty()
            && external_url_host(&self.server.external_url).is_none()
        {
            problems.push(format!(
                "server.external_url: {:?} is not http(s)://HOST[:PORT]",
                self.server.external_url
            ));
        }
        for (i, p) in self.server.trusted_proxies.iter().enumerate() {
            if let Err(e) = parse_network(p) {
                problems.push(format!("server.trusted_proxies[{i}]: {e}"));
            }
        }
        self.mirror.validate(&mut problems);
        // Remote names are one namespace across kinds (`wharf sync NAME`, job keys):
        // OSTree remotes are checked against OCI ones, RPM remotes against both.
        let mirror_names: Vec<&str> = self
            .mirror
            .remotes
            .iter()
            .map(|r| r.name.as_str())
            .collect();
        self.ostree.validate(&mirror_names, &mut problems);
        let other_remotes: Vec<&str> = mirror_names
            .iter()
            .copied()
            .chain(self.ostree.remotes.iter().map(|r| r.name.as_str()))
            .collect();
        self.rpm.validate(&other_remotes, &mut problems);
        let all_remotes: Vec<&str> = other_remotes
            .iter()
            .copied()
            .chain(self.rpm.remotes.iter().map(|r| r.name.as_str()))
            .collect();
        // A repository is filled by one remote, whatever the kinds.
        let filled: Vec<&str> = self
            .ostree
            .remotes
            .iter()
            .map(|r| r.repository.as_str())
            .chain(self.rpm.remotes.iter().map(|r| r.repository.as_str()))
            .collect();
        self.files.validate(&all_remotes, &filled, &mut problems);
        self.lookaside.validate(&mut problems);
        self.signing.validate(&mut problems);
        self.retention.validate(&mut problems);
        retention::validate_quotas(&self.quota, &mut problems);
        // Grants are checked by wharf-auth's one grammar when the server
        // applies them (`auth.grants[N]: …`), not by a second copy here.
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }

    /// The database URL, with the embedded default filled in.
    pub fn database_url(&self) -> String {
        if self.database.url.is_empty() {
            format!(
                "sqlite:{}",
                self.storage.data_dir.join("wharf.db").display()
            )
        } else {
            self.database.url.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_named() {
        let err = Config::parse("[server]\nlisten = \"127.0.0.1:1\"\nlistne = 1\n", "x.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("listne"), "{err}");
        let err = Config::parse("[nope]\n", "x.toml").unwrap_err().to_string();
        assert!(err.contains("nope"), "{err}");
    }

    #[test]
    fn acme_challenges_are_a_closed_set() {
        let cfg = Config::parse("[tls.acme]\nchallenge = \"tls-alpn-01\"\n", "x.toml").unwrap();
        assert_eq!(cfg.tls.acme.challenge, AcmeChallenge::TlsAlpn01);
        let err = Config::parse("[tls.acme]\nchallenge = \"dns-01\"\n", "x.toml")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("challenge") && err.contains("http-01") && err.contains("tls-alpn-01"),
            "{err}"
        );
    }

    #[test]
    fn every_problem_is_reported() {
        let cfg = Config::parse(
            "[server]\nlisten = \"0.0.0.0:80\"\n[database]\nurl = \"mysql://x\"\n[gc]\ngrace_period_secs = 1\n",
            "x.toml",
        )
        .unwrap();
        let err = cfg.validate().unwrap_err().to_string();
        for key in ["server.listen", "database.url", "gc.grace_period_secs"] {
            assert!(err.contains(key), "{key} missing from {err}");
        }
        assert!(Config::default().validate().is_ok());
    }

    /// One bad expression per kind of refusal: each message names the key, quotes the
    /// expression and says what is wrong with it.
    #[test]
    fn bad_schedules_are_refused_with_their_reason() {
        let cases = [
            ("gc", "schedule", "0 3 * *", "expected 5 fields (minute hour day-of-month month day-of-week), or one of @hourly @daily @weekly @monthly @yearly; found 4 field(s)"),
            ("gc", "full_schedule", "@often", "unknown shorthand \"@often\""),
            ("check", "schedule", "x 3 * * *", "minute field: \"x\" is not a number"),
            ("check", "schedule", "0 3 * smarch *", "month field: \"smarch\" is not a number, nor a month name like jan"),
            ("check", "schedule", "0 24 * * *", "hour field: 24 is outside 0-23"),
            ("gc", "schedule", "0 3 * * fri-mon", "day-of-week field: range 5-1 runs backwards; write the smaller value first"),
            ("gc", "schedule", "*/0 * * * *", "minute field: step \"0\" must be a whole number of at least 1"),
            ("gc", "schedule", "0 0 30 2 *", "never fires: day-of-month \"30\" does not occur in month \"2\""),
        ];
        for (section, key, expr, reason) in cases {
            let toml = format!("[{section}]\n{key} = \"{expr}\"\n");
            let cfg = Config::parse(&toml, "x.toml").unwrap();
            let err = cfg.validate().unwrap_err().to_string();
            let expected =
                format!("{section}.{key}: \"{expr}\" is not a cron expression: {reason}");
            assert!(err.contains(&expected), "expected {expected:?} in {err:?}");
        }
        let good = "[gc]\nschedule = \"0 3 * * *\"\nfull_schedule = \"@weekly\"\n[check]\nschedule = \"30 4 * * sun\"\njitter_secs = 0\n";
        let cfg = Config::parse(good, "x.toml").unwrap();
        assert!(cfg.validate().is_ok());
        assert!(cfg.gc.scheduled());
        let off = Config::parse("[gc]\ninterval_secs = 0\n", "x.toml").unwrap();
        assert!(!off.gc.scheduled());
    }

    #[test]
    fn key_files_must_be_readable_files() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("k.asc");
        std::fs::write(&key, "key").unwrap();
        let missing = dir.path().join("missing.asc");
        let text = format!(
            "[signing]\nopenpgp_key_file = {missing:?}\ned25519_key_file = {dir:?}\n\
             [[ostree.remotes]]\nname = \"o\"\nurl = \"/srv/o\"\nrepository = \"os/o\"\n\
             gpg_keys = [{key:?}, {missing:?}]\ned25519_keys = [{missing:?}]\n\
             [[rpm.remotes]]\nname = \"r\"\nurl = \"/srv/r\"\nrepository = \"r\"\ngpg_keys = [{missing:?}]\n",
            dir = dir.path(),
        );
        let err = Config::parse(&text, "x.toml")
            .unwrap()
            .validate()
            .unwrap_err()
            .to_string();
        for expected in [
            "signing.openpgp_key_file: cannot read",
            "signing.ed25519_key_file:",
            "is not a file",
            "ostree.remotes[0].gpg_keys[1]: cannot read",
            "ostree.remotes[0].ed25519_keys[0]",
            "rpm.remotes[0].gpg_keys[0]",
        ] {
            assert!(err.contains(expected), "{expected:?} not in {err}");
        }
        assert!(!err.contains("ostree.remotes[0].gpg_keys[0]"), "{err}");
        let ok = format!("[signing]\nopenpgp_key_file = {key:?}\n");
        let cfg = Config::parse(&ok, "x.toml").unwrap();
        cfg.validate().unwrap();
        assert_eq!(cfg.signing.openpgp_key(), Some(key.as_path()));
        assert_eq!(cfg.signing.ed25519_key(), None);
    }

    #[test]
    fn reference_doc_is_current_and_matches_defaults() {
        let defaults = toml::Value::try_from(Config::default()).unwrap();
        let mut leaves = Vec::new();
        collect_leaves(&defaults, String::new(), &mut leaves);
        let documented: Vec<&str> = REFERENCE.iter().map(|k| k.key).collect();
        for (key, value) in &leaves {
            let entry = REFERENCE
                .iter()
                .find(|k| k.key == key)
                .unwrap_or_else(|| panic!("{key} is not documented in REFERENCE"));
            assert_eq!(entry.default, value, "default of {key}");
        }
        for key in &documented {
            let is_leaf = leaves.iter().any(|(k, _)| k == key);
            // Keys whose default is "unset" serialize as empty strings and are leaves too.
            assert!(
                is_leaf,
                "REFERENCE documents {key}, which is not a config key"
            );
        }
        let doc_path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/configuration.md");
        let rendered = render_reference();
        if std::env::var_os("WHARF_UPDATE_DOCS").is_some() {
            std::fs::write(doc_path, &rendered).unwrap();
        }
        let on_disk = std::fs::read_to_string(doc_path).unwrap_or_default();
        assert!(
            on_disk == rendered,
            "docs/configuration.md is stale; regenerate with WHARF_UPDATE_DOCS=1 cargo test -p wharf-config"
        );
    }

    #[test]
    fn docs_name_only_keys_that_exist() {
        // Backticked dotted names under a known section, e.g. `server.listen`.
        let sections = [
            "server",
            "storage",
            "database",
            "oci",
            "gc",
            "check",
            "log",
            "auth",
            "tls",
            "lookaside",
            "files",
            "retention",
            "signing",
        ];
        let guide = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/guide.md");
        let readme = concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md");
        let mut texts: Vec<(String, String)> = REFERENCE
            .iter()
            .map(|k| (format!("REFERENCE {}", k.key), k.doc.to_owned()))
            .collect();
        for path in [guide, readme] {
            texts.push((path.to_owned(), std::fs::read_to_string(path).unwrap()));
        }
        let mut unknown = Vec::new();
        for (origin, text) in &texts {
            for quoted in text.split('`').skip(1).step_by(2) {
                let Some((section, _)) = quoted.split_once('.') else {
                    continue;
                };
                let is_key_like = sections.contains(&section)
                    && quoted
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c == '_' || c == '.');
                // A table such as `tls.acme` is named by the keys under it.
                let exists = REFERENCE.iter().any(|k| {
                    k.key == quoted
                        || k.key
                            .strip_prefix(quoted)
                            .is_some_and(|rest| rest.starts_with('.'))
                });
                if is_key_like && !exists {
                    unknown.push(format!("{origin}: `{quoted}`"));
                }
            }
        }
        assert!(
            unknown.is_empty(),
            "keys that do not exist:\n{}",
            unknown.join("\n")
        );
    }

    fn collect_leaves(v: &toml::Value, prefix: String, out: &mut Vec<(String, String)>) {
        match v {
            toml::Value::Table(t) => {
                for (k, v) in t {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    collect_leaves(v, key, out);
                }
            }
            other => out.push((prefix, other.to_string())),
        }
    }
}
