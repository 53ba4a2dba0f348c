//! `wharf serve`, in two halves. [`ServePlan::lower`] turns the configuration
//! into typed settings — pure: no file, socket or database is touched, so each
//! rule is unit-tested below. [`serve`] wires them: stores → registry → router
//! → listeners, the certificate and ACME tasks, the job worker and scheduler,
//! all stopped by one cancellation token on SIGTERM/SIGINT and shut down in
//! order (listeners, then background work, then the database).

use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use wharf_auth::{AuthService, AuthSettings};
use wharf_config::Config;
use wharf_http::listener::ConnectionLimits;
use wharf_oci::{Registry, RegistryLimits};
use wharf_tls::acme::{AcmeSettings, Challenge};
use wharf_tls::{AcmeChallenges, CertStore, CertificateFiles};

/// What `wharf serve` runs, lowered from the configuration.
#[derive(Debug)]
pub(crate) struct ServePlan {
    /// The main listener's address (`server.listen`).
    listen: String,
    registry: RegistryLimits,
    auth: AuthSettings,
    /// `auth.realm`, if set.
    realm: Option<String>,
    /// `server.external_url` without its trailing `/`, if set.
    external_url: Option<String>,
    /// `server.trusted_proxies`, parsed.
    trusted_proxies: Vec<(IpAddr, u8)>,
    /// Limits of every listener, the redirect listener's too.
    limits: ConnectionLimits,
    /// How long in-flight requests may run on after shutdown is asked for.
    shutdown_grace: Duration,
    /// HTTPS on the main listener, or `None` for plain HTTP.
    tls: Option<TlsPlan>,
    /// The plain-HTTP redirect (and HTTP-01) listener, if one is configured.
    redirect: Option<RedirectPlan>,
    gc: wharf_jobs::GcPolicy,
    schedules: Vec<wharf_jobs::Schedule>,
}

/// The HTTPS side of the main listener.
#[derive(Debug, PartialEq, Eq)]
struct TlsPlan {
    /// Every certificate served: the configured ones first (the first is the
    /// default for clients without SNI), then the ACME-managed one.
    certificates: Vec<CertificateFiles>,
    acme: Option<AcmeSettings>,
    /// The bundle client certificates are verified against, if any.
    client_ca: Option<PathBuf>,
    /// How often certificate files are checked for changes.
    reload_interval: Duration,
}

/// The plain-HTTP listener.
#[derive(Debug, PartialEq, Eq)]
struct RedirectPlan {
    listen: String,
    /// The only hosts it redirects to.
    hostnames: Vec<String>,
}

impl ServePlan {
    /// Lowers `config`; fails only on values the configuration's own
    /// validation lets through unparsed.
    pub(crate) fn lower(config: &Config) -> anyhow::Result<ServePlan> {
        let trusted_proxies = config
            .server
            .trusted_proxies
            .iter()
            .map(|p| wharf_config::parse_network(p).map_err(anyhow::Error::msg))
            .collect::<anyhow::Result<Vec<_>>>()
            .context("server.trusted_proxies")?;
        Ok(ServePlan {
            listen: config.server.listen.clone(),
            registry: RegistryLimits {
                max_manifest_bytes: config.oci.max_manifest_bytes,
                manifest_cache_bytes: config.oci.manifest_cache_bytes,
            },
            auth: auth_settings(config),
            realm: (!config.auth.realm.is_empty()).then(|| config.auth.realm.clone()),
            external_url: (!config.server.external_url.is_empty())
                .then(|| config.server.external_url.trim_end_matches('/').to_owned()),
            trusted_proxies,
            limits: connection_limits(config),
            shutdown_grace: Duration::from_secs(config.server.shutdown_grace_secs),
            tls: tls_plan(config),
            redirect: (!config.tls.redirect_listen.is_empty()).then(|| RedirectPlan {
                listen: config.tls.redirect_listen.clone(),
                hostnames: redirect_hostnames(config),
            }),
            gc: wharf_jobs::GcPolicy {
                full: false,
                ..crate::gc_policy(config)
            },
            schedules: schedules(config),
        })
    }
}

pub(crate) async fn serve(
    config: Config,
    access_log: Option<wharf_http::AccessLogOutput>,
) -> anyhow::Result<()> {
    let plan = ServePlan::lower(&config)?;
    let (blobs, meta) = crate::open_stores(&config).await?;
    let registry = Registry::new(blobs.clone(), meta.clone(), plan.registry.clone())
        .with_quotas(crate::retention::quotas(&config)?);
    let snapshots = crate::snapshot::snapshots(&config, &blobs, &meta);
    let ostree_push = crate::ostree::push_surface(&config, &snapshots)?;
    let handlers = wharf_jobs::Handlers::new()
        .with(
            "sync",
            Arc::new(crate::sync::SyncJobHandler {
                config: Arc::new(config.clone()),
                registry: registry.clone(),
            }),
        )
        .with(
            crate::rpm::JOB_KIND,
            Arc::new(crate::rpm::RpmSyncJobHandler {
                config: Arc::new(config.clone()),
                snapshots: snapshots.clone(),
            }),
        )
        .with(
            "ostree-sync",
            Arc::new(crate::ostree::OstreeSyncJobHandler {
                config: Arc::new(config.clone()),
                snapshots: snapshots.clone(),
            }),
        )
        .with(
            crate::files::JOB_KIND,
            Arc::new(crate::files::FilesSyncJobHandler {
                config: Arc::new(config.clone()),
                snapshots: snapshots.clone(),
            }),
        )
        .with(
            crate::ostree::DELTAS_JOB_KIND,
            Arc::new(crate::ostree::OstreeDeltasJobHandler {
                config: Arc::new(config.clone()),
                snapshots: snapshots.clone(),
            }),
        )
        .with(
            crate::ostree::SESSIONS_JOB_KIND,
            Arc::new(crate::ostree::PushSessionsJobHandler {
                push: ostree_push.clone(),
                ttl_secs: config.ostree.push_session_ttl_secs,
            }),
        )
        .with(
            "retention",
            Arc::new(crate::retention::RetentionJobHandler {
                config: Arc::new(config.clone()),
                registry: registry.clone(),
            }),
        );
    warn_loose_modes(&config);
    // Background work — the scheduler, certificate reloads, audit writes of
    // finished requests — that shutdown waits for before closing the database.
    let tracker = TaskTracker::new();
    let pull_through = crate::pull_through::build(&config, &registry, &meta)?;
    let pulls = registry.clone();
    let app = wharf_http::router(wharf_http::AppState {
        registry,
        auth: Arc::new(AuthService::new(meta.clone(), plan.auth.clone())),
        realm: plan.realm.clone(),
        tls: plan.tls.is_some(),
        health: wharf_http::Health {
            meta: meta.clone(),
            data_dir: config.storage.data_dir.clone(),
        },
        background: tracker.clone(),
        external_url: plan.external_url.clone(),
        listen: plan.listen.clone(),
        trusted_proxies: wharf_http::TrustedProxies::new(plan.trusted_proxies.clone()),
        access_log,
        jobs: crate::sync::job_catalog(&config),
        pull_through,
        rpm: crate::rpm::hosted(&config, &snapshots)?,
        files: crate::files::surface(&config, &meta, &blobs, &snapshots),
        ostree: ostree_push,
        snapshots,
        public_keys: crate::signing::public_keys(&*crate::signing::keys(&config)?)?,
    });
    let listener = tokio::net::TcpListener::bind(&plan.listen)
        .await
        .with_context(|| format!("cannot listen on {}", plan.listen))?;
    let addr = listener.local_addr()?;

    let cancel = CancellationToken::new();
    // TLS is set up before the ready line so that a bad certificate fails the start.
    let (tls, challenges) = match &plan.tls {
        Some(tls) => {
            let (config, challenges) = start_tls(tls, &tracker, &cancel)?;
            (Some(config), challenges)
        }
        None => (None, None),
    };
    if let Some(redirect) = &plan.redirect {
        let listener = tokio::net::TcpListener::bind(&redirect.listen)
            .await
            .with_context(|| format!("cannot listen on {}", redirect.listen))?;
        tracing::info!(listen = %listener.local_addr()?, "redirecting plain HTTP to HTTPS");
        let app = wharf_tls::redirect::app(addr.port(), redirect.hostnames.clone(), challenges);
        tracker.spawn(wharf_http::listener::serve(
            listener,
            app,
            None,
            plan.limits.clone(),
            cancel.clone(),
            Duration::from_secs(1),
        ));
    }

    // Only now that every listener is bound and the TLS material loads: a first
    // start that fails on a busy port or a bad key must not use up the one-time
    // administrator password, which would then never be shown.
    crate::admin::bootstrap_admin(&meta, &config.auth.admin_password_file).await?;
    crate::admin::sync_config_grants(&meta, &config.auth.grants).await?;

    // Every process works the shared job queue; one at a time schedules it.
    // Started only once the listeners and TLS are ready, so a failed start claims no job.
    let process_id = format!("{}-{}", std::process::id(), uuid_like());
    tracker.spawn(
        wharf_jobs::Worker {
            blobs,
            meta: meta.clone(),
            gc: plan.gc,
            id: process_id.clone(),
            handlers,
        }
        .run(cancel.clone()),
    );
    tracker.spawn(wharf_jobs::run_scheduler(
        meta.clone(),
        plan.schedules.clone(),
        process_id,
        cancel.clone(),
    ));

    tracker.spawn(flush_pulls(pulls.clone(), cancel.clone()));

    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(listen = %addr, data_dir = %config.storage.data_dir.display(), "wharf serving");
    // The one line on stdout: scripts and tests wait for it and read the port.
    println!("wharf listening on {scheme}://{addr}");
    let _ = std::io::stdout().flush();

    let shutdown = cancel.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown requested; finishing in-flight requests");
        shutdown.cancel();
    });
    wharf_http::listener::serve(
        listener,
        app,
        tls,
        plan.limits.clone(),
        cancel.clone(),
        plan.shutdown_grace,
    )
    .await;
    tracker.close();
    tracker.wait().await;
    // The pulls of the last requests, which finished after the flusher stopped.
    if let Err(e) = pulls.flush_pulls().await {
        tracing::warn!(error = %e, "could not record the last pull times");
    }
    meta.close().await;
    tracing::info!("wharf stopped");
    Ok(())
}

/// How often pull times are written (retention's "pulled within" is in days).
const PULL_FLUSH_INTERVAL: Duration = Duration::from_secs(10);

/// Writes the registry's pull times every [`PULL_FLUSH_INTERVAL`] until shutdown.
async fn flush_pulls(registry: Registry, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(PULL_FLUSH_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = cancel.cancelled() => return,
        }
        if let Err(e) = registry.flush_pulls().await {
            tracing::warn!(error = %e, "could not record pull times; keeping them for the next try");
        }
    }
}

/// Loads the certificates (writing the ACME placeholder first, so there is
/// one to load), starts their reload and the ACME task, and returns the
/// rustls configuration with the challenges the redirect listener answers.
fn start_tls(
    plan: &TlsPlan,
    tracker: &TaskTracker,
    cancel: &CancellationToken,
) -> anyhow::Result<(Arc<rustls::ServerConfig>, Option<Arc<AcmeChallenges>>)> {
    let challenges = plan
        .acme
        .as_ref()
        .map(|_| Arc::new(AcmeChallenges::default()));
    if let Some(acme) = &plan.acme {
        wharf_tls::acme::ensure_placeholder(acme).context("tls.acme")?;
    }
    let store = CertStore::load(plan.certificates.clone(), challenges.clone())
        .context("tls.certificates")?;
    tracker.spawn(store.clone().watch(plan.reload_interval, cancel.clone()));
    if let (Some(acme), Some(challenges)) = (&plan.acme, &challenges) {
        tracker.spawn(wharf_tls::acme::run(
            acme.clone(),
            challenges.clone(),
            store.clone(),
            cancel.clone(),
        ));
    }
    let config =
        wharf_tls::server_config(store, plan.client_ca.as_deref()).context("tls.client_ca")?;
    Ok((config, challenges))
}

/// Warns, one line per path, about secrets that other local users can read: the
/// data directory, the database (it holds the token signing keys) and private
/// keys. Like OpenSSH's check of key files, but a warning: the operator may
/// have reasons (a group-shared backup account), and the fix is one `chmod`.
fn warn_loose_modes(config: &Config) {
    let dir = &config.storage.data_dir;
    let mut paths = vec![(dir.clone(), 0o700)];
    if let Some(db) = wharf_meta::sqlite_file(&config.database_url()) {
        for suffix in ["", "-wal", "-shm"] {
            let mut name = db.clone().into_os_string();
            name.push(suffix);
            paths.push((name.into(), 0o600));
        }
    }
    let acme = dir.join("acme");
    paths.push((acme.clone(), 0o700));
    for name in ["account.json", "key.pem"] {
        paths.push((acme.join(name), 0o600));
    }
    for cert in &config.tls.certificates {
        paths.push((cert.key.clone(), 0o600));
    }
    let keys = dir.join(wharf_sign::KEYS_DIR);
    paths.push((keys.clone(), 0o700));
    for name in [wharf_sign::OPENPGP_KEY_FILE, wharf_sign::ED25519_KEY_FILE] {
        paths.push((keys.join(name), 0o600));
    }
    for (path, wanted) in paths {
        if let Some(mode) = loose_mode(&path) {
            tracing::warn!(
                path = %path.display(),
                mode = %format!("{mode:04o}"),
                "other local users can read this; run `chmod {wanted:o} {}`",
                path.display()
            );
        }
    }
}

/// The permission bits of `path` if group or others may access it (secrets
/// `serve` and `sync` warn about).
pub(crate) fn loose_mode(path: &std::path::Path) -> Option<u32> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
        (mode & 0o077 != 0).then_some(mode)
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

fn auth_settings(config: &Config) -> AuthSettings {
    let auth = &config.auth;
    AuthSettings {
        service: auth.service.clone(),
        token_ttl: Duration::from_secs(auth.token_ttl_secs),
        refresh_token_ttl: Duration::from_secs(auth.refresh_token_ttl_secs),
        max_failed_logins: auth.max_failed_logins,
        max_failed_logins_per_address: auth.max_failed_logins_per_address,
        failure_window: Duration::from_secs(auth.failed_login_window_secs),
        max_concurrent_password_checks: auth.max_concurrent_password_checks as usize,
        password_check_wait: Duration::from_secs(5),
    }
}

fn connection_limits(config: &Config) -> ConnectionLimits {
    let server = &config.server;
    ConnectionLimits {
        // A limit beyond what this platform can count is no limit.
        max_connections: usize::try_from(server.max_connections).unwrap_or(usize::MAX),
        header_read_timeout: Duration::from_secs(server.header_read_timeout_secs),
        idle_timeout: Duration::from_secs(server.idle_timeout_secs),
        min_body_bytes: server.min_body_rate_bytes,
        min_body_window: Duration::from_secs(server.min_body_rate_window_secs),
    }
}

/// `None` unless certificates or ACME are configured.
fn tls_plan(config: &Config) -> Option<TlsPlan> {
    if !config.tls.enabled() {
        return None;
    }
    let acme = (!config.tls.acme.directory_url.is_empty()).then(|| acme_settings(config));
    let mut certificates: Vec<_> = config
        .tls
        .certificates
        .iter()
        .map(|c| CertificateFiles {
            hostnames: c.hostnames.clone(),
            cert: c.cert.clone(),
            key: c.key.clone(),
        })
        .collect();
    if let Some(acme) = &acme {
        let (cert, key) = wharf_tls::acme::cert_paths(&acme.state_dir);
        certificates.push(CertificateFiles {
            hostnames: acme.domains.clone(),
            cert,
            key,
        });
    }
    Some(TlsPlan {
        certificates,
        acme,
        client_ca: (!config.tls.client_ca.as_os_str().is_empty())
            .then(|| config.tls.client_ca.clone()),
        reload_interval: Duration::from_secs(config.tls.reload_interval_secs),
    })
}

fn acme_settings(config: &Config) -> AcmeSettings {
    let acme = &config.tls.acme;
    AcmeSettings {
        directory_url: acme.directory_url.clone(),
        domains: acme.domains.clone(),
        contact: acme.contact.clone(),
        ca_bundle: (!acme.ca_bundle.as_os_str().is_empty()).then(|| acme.ca_bundle.clone()),
        challenge: match acme.challenge {
            wharf_config::AcmeChallenge::Http01 => Challenge::Http01,
            wharf_config::AcmeChallenge::TlsAlpn01 => Challenge::TlsAlpn01,
        },
        renew_before: (acme.renew_before_secs > 0)
            .then(|| Duration::from_secs(acme.renew_before_secs)),
        check_interval: Duration::from_secs(acme.check_interval_secs),
        state_dir: config.storage.data_dir.join("acme"),
    }
}

/// The scheduled jobs the configuration asks for.
fn schedules(config: &Config) -> Vec<wharf_jobs::Schedule> {
    use wharf_jobs::{JobKind, Schedule};
    let mut schedules = Vec::new();
    let mut add = |name: &str, job: JobKind, interval_secs: u64, cron: &str, jitter_secs: u64| {
        if let Some(cadence) = cadence(interval_secs, cron) {
            schedules.push(Schedule {
                name: name.into(),
                job,
                cadence,
                jitter: Duration::from_secs(jitter_secs),
            });
        }
    };
    let gc = &config.gc;
    if gc.scheduled() {
        add(
            "gc",
            JobKind::Gc { full: false },
            gc.interval_secs,
            &gc.schedule,
            gc.jitter_secs,
        );
        // Orphaned bytes (a crash between storing and recording) are found only
        // by walking the whole store, which the full collection does.
        add(
            "gc-full",
            JobKind::Gc { full: true },
            gc.full_interval_secs,
            &gc.full_schedule,
            gc.full_jitter_secs,
        );
    }
    let check = &config.check;
    add(
        "check",
        JobKind::Check,
        check.interval_secs,
        &check.schedule,
        check.jitter_secs,
    );
    schedules.extend(crate::sync::schedules(config));
    schedules.extend(crate::retention::schedule(config));
    schedules
}

/// A cron expression when one is set (validated with the configuration), else
/// the interval, else nothing.
pub(crate) fn cadence(interval_secs: u64, cron: &str) -> Option<wharf_jobs::Cadence> {
    if !cron.is_empty() {
        return wharf_core::CronExpr::parse(cron)
            .ok()
            .map(wharf_jobs::Cadence::Cron);
    }
    (interval_secs > 0).then(|| wharf_jobs::Cadence::Every(Duration::from_secs(interval_secs)))
}

/// The schedule of a remote's sync job `KIND:NAME` (a `JobKind::Handled`
/// with the remote as its target), when the remote has a cadence.
pub(crate) fn remote_schedule(
    kind: &str,
    name: &str,
    interval_secs: u64,
    cron: &str,
    jitter_secs: u64,
) -> Option<wharf_jobs::Schedule> {
    Some(wharf_jobs::Schedule {
        name: format!("{kind}:{name}"),
        job: wharf_jobs::JobKind::Handled {
            kind: kind.into(),
            target: name.into(),
        },
        cadence: cadence(interval_secs, cron)?,
        jitter: Duration::from_secs(jitter_secs),
    })
}

/// A short random suffix that tells two processes with the same pid apart
/// (containers), for lease ownership.
fn uuid_like() -> String {
    wharf_auth::secret::random_hex(6).unwrap_or_else(|_| "0".into())
}

/// The host names the redirect listener may send clients to: those of the
/// certificates, the ACME domains and `server.external_url`.
fn redirect_hostnames(config: &Config) -> Vec<String> {
    let mut names: Vec<String> = config
        .tls
        .certificates
        .iter()
        .flat_map(|c| c.hostnames.iter().cloned())
        .chain(config.tls.acme.domains.iter().cloned())
        .collect();
    if let Some(authority) = wharf_config::external_url_host(&config.server.external_url) {
        let host = match authority.strip_prefix('[') {
            Some(v6) => v6.split(']').next().unwrap_or(v6),
            None => authority.split(':').next().unwrap_or(authority),
        };
        names.push(host.to_owned());
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(toml_text: &str) -> Config {
        let mut config = Config::parse(toml_text, "test").unwrap();
        config.storage.data_dir = "/srv/wharf".into();
        config
    }

    #[test]
    fn connection_limits_are_lowered_and_an_uncountable_limit_is_none() {
        let plan = ServePlan::lower(&config(
            "[server]\nmax_connections = 10\nheader_read_timeout_secs = 3\nidle_timeout_secs = 7\n\
             min_body_rate_bytes = 100\nmin_body_rate_window_secs = 9\nshutdown_grace_secs = 4\n",
        ))
        .unwrap();
        assert_eq!(plan.limits.max_connections, 10);
        assert_eq!(plan.limits.header_read_timeout, Duration::from_secs(3));
        assert_eq!(plan.limits.idle_timeout, Duration::from_secs(7));
        assert_eq!(plan.limits.min_body_bytes, 100);
        assert_eq!(plan.limits.min_body_window, Duration::from_secs(9));
        assert_eq!(plan.shutdown_grace, Duration::from_secs(4));

        let mut huge = Config::default();
        huge.server.max_connections = u64::MAX;
        let limits = connection_limits(&huge);
        assert_eq!(
            limits.max_connections,
            usize::try_from(u64::MAX).unwrap_or(usize::MAX)
        );
    }

    #[test]
    fn acme_settings_are_lowered_and_serve_their_own_certificate_after_the_configured_ones() {
        let plan = ServePlan::lower(&config(
            r#"
            [[tls.certificates]]
            hostnames = ["static.test"]
            cert = "/etc/wharf/static.crt"
            key = "/etc/wharf/static.key"
            [tls.acme]
            directory_url = "https://ca.test/directory"
            domains = ["registry.test"]
            contact = ["mailto:ops@registry.test"]
            challenge = "tls-alpn-01"
            renew_before_secs = 86400
            check_interval_secs = 600
            "#,
        ))
        .unwrap();
        let tls = plan.tls.unwrap();
        let acme = tls.acme.clone().unwrap();
        assert_eq!(
            acme,
            AcmeSettings {
                directory_url: "https://ca.test/directory".into(),
                domains: vec!["registry.test".into()],
                contact: vec!["mailto:ops@registry.test".into()],
                ca_bundle: None,
                challenge: Challenge::TlsAlpn01,
                renew_before: Some(Duration::from_secs(86400)),
                check_interval: Duration::from_secs(600),
                state_dir: "/srv/wharf/acme".into(),
            }
        );
        let served: Vec<_> = tls.certificates.iter().map(|c| c.cert.clone()).collect();
        assert_eq!(
            served,
            [
                PathBuf::from("/etc/wharf/static.crt"),
                PathBuf::from("/srv/wharf/acme/cert.pem")
            ]
        );
        assert_eq!(tls.certificates[1].hostnames, ["registry.test"]);
        assert_eq!(
            tls.certificates[1].key,
            PathBuf::from("/srv/wharf/acme/key.pem")
        );

        // The defaults: HTTP-01, a third of the lifetime, public roots.
        let plan = ServePlan::lower(&config(
            "[tls]\nredirect_listen = \"[::]:80\"\n[tls.acme]\ndirectory_url = \"https://ca.test/d\"\n\
             domains = [\"registry.test\"]\n",
        ))
        .unwrap();
        let acme = plan.tls.unwrap().acme.unwrap();
        assert_eq!(acme.challenge, Challenge::Http01);
        assert_eq!(acme.renew_before, None);
        assert_eq!(acme.ca_bundle, None);
    }

    #[test]
    fn trusted_proxies_are_parsed_and_a_bad_one_names_the_key() {
        let plan = ServePlan::lower(&config(
            "[server]\ntrusted_proxies = [\"10.0.0.0/8\", \"::1\"]\n",
        ))
        .unwrap();
        assert_eq!(
            plan.trusted_proxies,
            [
                ("10.0.0.0".parse().unwrap(), 8),
                ("::1".parse().unwrap(), 128)
            ]
        );
        let err = ServePlan::lower(&config("[server]\ntrusted_proxies = [\"10.0.0.0/99\"]\n"))
            .unwrap_err();
        assert!(
            format!("{err:#}").contains("server.trusted_proxies"),
            "{err:#}"
        );
    }

    #[test]
    fn listeners_are_plain_http_until_tls_is_configured_and_redirect_only_to_served_names() {
        let plain = ServePlan::lower(&config("[server]\nlisten = \"127.0.0.1:5000\"\n")).unwrap();
        assert_eq!(plain.listen, "127.0.0.1:5000");
        assert_eq!(plain.tls, None);
        assert_eq!(plain.redirect, None);
        assert_eq!(plain.external_url, None);
        assert_eq!(plain.realm, None);

        let plan = ServePlan::lower(&config(
            r#"
            [server]
            external_url = "https://[2001:db8::1]:8443/"
            [auth]
            realm = "https://auth.test/token"
            [tls]
            redirect_listen = "127.0.0.1:8080"
            client_ca = "/etc/wharf/clients.pem"
            reload_interval_secs = 30
            [[tls.certificates]]
            hostnames = ["a.test", "*.b.test"]
            cert = "/etc/wharf/a.crt"
            key = "/etc/wharf/a.key"
            "#,
        ))
        .unwrap();
        assert_eq!(
            plan.external_url.as_deref(),
            Some("https://[2001:db8::1]:8443")
        );
        assert_eq!(plan.realm.as_deref(), Some("https://auth.test/token"));
        let tls = plan.tls.unwrap();
        assert_eq!(tls.acme, None);
        assert_eq!(tls.client_ca, Some(PathBuf::from("/etc/wharf/clients.pem")));
        assert_eq!(tls.reload_interval, Duration::from_secs(30));
        assert_eq!(
            plan.redirect,
            Some(RedirectPlan {
                listen: "127.0.0.1:8080".into(),
                hostnames: vec!["a.test".into(), "*.b.test".into(), "2001:db8::1".into()],
            })
        );
    }
}
