//! `wharf serve`: stores → registry → router → listener, plus the background
//! scheduler, all stopped by one cancellation token on SIGTERM/SIGINT.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use wharf_auth::{AuthService, AuthSettings};
use wharf_config::Config;
use wharf_oci::{Registry, RegistryLimits};

pub(crate) async fn serve(config: Config) -> anyhow::Result<()> {
    let (blobs, meta) = crate::open_stores(&config).await?;
    let registry = Registry::new(
        blobs.clone(),
        meta.clone(),
        RegistryLimits {
            max_manifest_bytes: config.oci.max_manifest_bytes,
            manifest_cache_bytes: config.oci.manifest_cache_bytes,
        },
    );
    warn_loose_modes(&config);
    // Background work — the scheduler, certificate reloads, audit writes of
    // finished requests — that shutdown waits for before closing the database.
    let tracker = TaskTracker::new();
    let auth = Arc::new(AuthService::new(
        meta.clone(),
        AuthSettings {
            service: config.auth.service.clone(),
            token_ttl: Duration::from_secs(config.auth.token_ttl_secs),
            refresh_token_ttl: Duration::from_secs(config.auth.refresh_token_ttl_secs),
            max_failed_logins: config.auth.max_failed_logins,
            max_failed_logins_per_address: config.auth.max_failed_logins_per_address,
            failure_window: Duration::from_secs(config.auth.failed_login_window_secs),
            max_concurrent_password_checks: config.auth.max_concurrent_password_checks as usize,
            password_check_wait: Duration::from_secs(5),
        },
    ));
    let trusted_proxies = config
        .server
        .trusted_proxies
        .iter()
        .map(|p| wharf_config::parse_network(p).map_err(anyhow::Error::msg))
        .collect::<anyhow::Result<Vec<_>>>()
        .context("server.trusted_proxies")?;
    let app = wharf_http::router(wharf_http::AppState {
        registry,
        auth,
        realm: (!config.auth.realm.is_empty()).then(|| config.auth.realm.clone()),
        tls: config.tls.enabled(),
        health: wharf_http::Health {
            meta: meta.clone(),
            data_dir: config.storage.data_dir.clone(),
        },
        background: tracker.clone(),
        external_url: (!config.server.external_url.is_empty())
            .then(|| config.server.external_url.trim_end_matches('/').to_owned()),
        listen: config.server.listen.clone(),
        trusted_proxies: wharf_http::TrustedProxies::new(trusted_proxies),
    });
    let listener = tokio::net::TcpListener::bind(&config.server.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.server.listen))?;
    let addr = listener.local_addr()?;

    let cancel = CancellationToken::new();
    // TLS is set up before the ready line so that a bad certificate fails the start.
    let acme = (!config.tls.acme.directory_url.is_empty()).then(|| acme_settings(&config));
    let challenges = acme
        .as_ref()
        .map(|_| Arc::new(wharf_tls::AcmeChallenges::default()));
    let tls = if config.tls.enabled() {
        let mut files: Vec<_> = config
            .tls
            .certificates
            .iter()
            .map(|c| wharf_tls::CertificateFiles {
                hostnames: c.hostnames.clone(),
                cert: c.cert.clone(),
                key: c.key.clone(),
            })
            .collect();
        if let Some(acme) = &acme {
            wharf_tls::acme::ensure_placeholder(acme).context("tls.acme")?;
            let (cert, key) = wharf_tls::acme::cert_paths(&acme.state_dir);
            files.push(wharf_tls::CertificateFiles {
                hostnames: acme.domains.clone(),
                cert,
                key,
            });
        }
        let store =
            wharf_tls::CertStore::load(files, challenges.clone()).context("tls.certificates")?;
        tracker.spawn(store.clone().watch(
            Duration::from_secs(config.tls.reload_interval_secs),
            cancel.clone(),
        ));
        if let (Some(acme), Some(challenges)) = (acme.clone(), challenges.clone()) {
            tracker.spawn(wharf_tls::acme::run(
                acme,
                challenges,
                store.clone(),
                cancel.clone(),
            ));
        }
        let client_ca = (!config.tls.client_ca.as_os_str().is_empty())
            .then_some(config.tls.client_ca.as_path());
        Some(wharf_tls::server_config(store, client_ca).context("tls.client_ca")?)
    } else {
        None
    };
    if !config.tls.redirect_listen.is_empty() {
        let redirect = tokio::net::TcpListener::bind(&config.tls.redirect_listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.tls.redirect_listen))?;
        tracing::info!(listen = %redirect.local_addr()?, "redirecting plain HTTP to HTTPS");
        let app =
            wharf_tls::redirect::app(addr.port(), redirect_hostnames(&config), challenges.clone());
        tracker.spawn(wharf_http::listener::serve(
            redirect,
            app,
            None,
            connection_limits(&config),
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
            gc: wharf_jobs::GcPolicy {
                full: false,
                ..crate::gc_policy(&config)
            },
            id: process_id.clone(),
        }
        .run(cancel.clone()),
    );
    tracker.spawn(wharf_jobs::run_scheduler(
        meta.clone(),
        schedules(&config),
        process_id,
        cancel.clone(),
    ));

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
    let grace = Duration::from_secs(config.server.shutdown_grace_secs);
    wharf_http::listener::serve(
        listener,
        app,
        tls,
        connection_limits(&config),
        cancel.clone(),
        grace,
    )
    .await;
    tracker.close();
    tracker.wait().await;
    meta.close().await;
    tracing::info!("wharf stopped");
    Ok(())
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

/// The permission bits of `path` if group or others may access it.
fn loose_mode(path: &std::path::Path) -> Option<u32> {
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

fn connection_limits(config: &Config) -> wharf_http::listener::ConnectionLimits {
    let server = &config.server;
    wharf_http::listener::ConnectionLimits {
        max_connections: usize::try_from(server.max_connections).unwrap_or(usize::MAX),
        header_read_timeout: Duration::from_secs(server.header_read_timeout_secs),
        idle_timeout: Duration::from_secs(server.idle_timeout_secs),
        min_body_bytes: server.min_body_rate_bytes,
        min_body_window: Duration::from_secs(server.min_body_rate_window_secs),
    }
}

fn acme_settings(config: &Config) -> wharf_tls::acme::AcmeSettings {
    let acme = &config.tls.acme;
    wharf_tls::acme::AcmeSettings {
        directory_url: acme.directory_url.clone(),
        domains: acme.domains.clone(),
        contact: acme.contact.clone(),
        ca_bundle: (!acme.ca_bundle.as_os_str().is_empty()).then(|| acme.ca_bundle.clone()),
        challenge: if acme.challenge == "tls-alpn-01" {
            wharf_tls::acme::Challenge::TlsAlpn01
        } else {
            wharf_tls::acme::Challenge::Http01
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
    schedules
}

/// A cron expression when one is set (validated with the configuration), else
/// the interval, else nothing.
fn cadence(interval_secs: u64, cron: &str) -> Option<wharf_jobs::Cadence> {
    if !cron.is_empty() {
        return wharf_core::CronExpr::parse(cron)
            .ok()
            .map(wharf_jobs::Cadence::Cron);
    }
    (interval_secs > 0).then(|| wharf_jobs::Cadence::Every(Duration::from_secs(interval_secs)))
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
