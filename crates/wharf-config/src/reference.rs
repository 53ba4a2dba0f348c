//! The configuration reference: every key, its default and its meaning.
//!
//! `docs/configuration.md` is rendered from this table; the crate's tests fail
//! when a key is missing here, when a default here disagrees with the code, or
//! when the document is stale.

/// One documented key.
#[derive(Debug, Clone, Copy)]
pub struct ConfigKey {
    /// Dotted TOML path.
    pub key: &'static str,
    /// Default, as TOML.
    pub default: &'static str,
    /// What it means.
    pub doc: &'static str,
}

/// Every configuration key.
pub const REFERENCE: &[ConfigKey] = &[
    ConfigKey { key: "server.listen", default: "\"127.0.0.1:5000\"", doc: "Address and port of the listener. A non-loopback address is refused without TLS (`tls.certificates` or `tls.acme`), unless `server.allow_plaintext_public` is set." },
    ConfigKey { key: "server.shutdown_grace_secs", default: "30", doc: "On SIGTERM or SIGINT, seconds to let in-flight requests finish before the process exits. Upload sessions stay resumable across the restart." },
    ConfigKey { key: "server.allow_plaintext_public", default: "false", doc: "Allow a non-loopback `server.listen` without `tls.certificates`, which sends passwords and tokens in clear text. Leave it off unless a TLS-terminating proxy sits in front on the same host." },
    ConfigKey { key: "server.external_url", default: "\"\"", doc: "The URL clients reach this server at, `http(s)://HOST[:PORT]` (behind a proxy or NAT). It names the token endpoint in challenges (`<external_url>/token`, unless `auth.realm` is set), and its host is one the TLS redirect listener redirects to. Empty: derived from each request." },
    ConfigKey { key: "server.trusted_proxies", default: "[]", doc: "Reverse proxies, as `ADDR/PREFIX` networks (e.g. `[\"127.0.0.1/32\"]`), whose `X-Forwarded-For` and `X-Forwarded-Proto` are believed. The client address (for sign-in throttling and the audit log) is then the right-most `X-Forwarded-For` hop that is not a trusted proxy. Empty: the headers are ignored and the client address is the connection's peer." },
    ConfigKey { key: "server.max_connections", default: "4096", doc: "Connections served at once on each listener. Further clients wait in the operating system's accept queue until one closes." },
    ConfigKey { key: "server.header_read_timeout_secs", default: "30", doc: "Seconds a client may take to send a request head; slower clients are disconnected. Over HTTP/1.1 the clock starts when the server begins waiting for the next request, so it also closes keep-alive connections idle this long." },
    ConfigKey { key: "server.idle_timeout_secs", default: "120", doc: "Seconds a connection may sit with no byte moving while the server waits on the client, for a next request or for the client to read a response; then it is closed. A long upload or download that keeps moving is never cut." },
    ConfigKey { key: "server.min_body_rate_bytes", default: "1024", doc: "Bytes a request body must deliver in every `server.min_body_rate_window_secs`, or the request is cut and the connection closed. An upload session keeps what arrived, is unlocked at once and can be resumed. 0 disables the check." },
    ConfigKey { key: "server.min_body_rate_window_secs", default: "30", doc: "The window of `server.min_body_rate_bytes`, in seconds." },
    ConfigKey { key: "storage.data_dir", default: "\"./wharf-data\"", doc: "Directory for everything Wharf stores: `blobs/` (the content-addressed blob store) and, by default, the SQLite database `wharf.db`." },
    ConfigKey { key: "database.url", default: "\"\"", doc: "Metadata database: `sqlite:PATH` or `postgres://USER:PASSWORD@HOST:PORT/DB`. Empty means `sqlite:<data_dir>/wharf.db`." },
    ConfigKey { key: "oci.max_manifest_bytes", default: "4194304", doc: "Largest manifest accepted; larger pushes get `413 MANIFEST_INVALID`. The distribution spec asks registries to accept at least 4 MiB." },
    ConfigKey { key: "oci.manifest_cache_bytes", default: "67108864", doc: "Memory for caching manifest bytes by digest (safe: a digest always names the same bytes)." },
    ConfigKey { key: "gc.interval_secs", default: "3600", doc: "Seconds between the server's online garbage collections; 0 disables them, and the full ones with them, unless `gc.schedule` is set (`wharf gc` still works). Every schedule is enqueued by one process at a time (a lease in the database), so replicas never collect twice." },
    ConfigKey { key: "gc.schedule", default: "\"\"", doc: "A cron expression for the collections, in UTC, used instead of `gc.interval_secs`: five fields `minute hour day-of-month month day-of-week` with `*`, `a-b`, `*/n`, lists, `jan` and `mon` style names, or `@hourly`, `@daily`, `@weekly`, `@monthly`, `@yearly`; e.g. `\"0 3 * * *\"` for 03:00 UTC daily. When both day fields are restricted, a day matching either runs (crontab(5)). Empty: `gc.interval_secs`." },
    ConfigKey { key: "gc.jitter_secs", default: "300", doc: "Up to this many seconds of random delay added to each scheduled collection, so several registries' timers do not hit shared storage at once. Capped at half the time to the next run. 0: exactly on time." },
    ConfigKey { key: "gc.full_interval_secs", default: "86400", doc: "Seconds between full collections, which also walk the whole store for bytes a crash left unrecorded; 0 disables them. They run only while quick collections are scheduled." },
    ConfigKey { key: "gc.full_schedule", default: "\"\"", doc: "A cron expression (UTC, as `gc.schedule`) for full collections, used instead of `gc.full_interval_secs`. Empty: `gc.full_interval_secs`." },
    ConfigKey { key: "gc.full_jitter_secs", default: "600", doc: "Up to this many seconds of random delay added to each full collection; capped at half the time to the next one." },
    ConfigKey { key: "gc.grace_period_secs", default: "86400", doc: "Unreferenced blobs younger than this are kept, so a push that has uploaded its layers but not yet its manifest never loses them." },
    ConfigKey { key: "gc.upload_expiry_secs", default: "86400", doc: "Upload sessions idle this long are expired and their bytes reclaimed." },
    ConfigKey { key: "check.interval_secs", default: "0", doc: "Seconds between scheduled verifications of the store (`wharf check` as a job: every blob re-hashed, every record cross-checked; problems are logged and fail the job); 0 disables them." },
    ConfigKey { key: "check.schedule", default: "\"\"", doc: "A cron expression (UTC, as `gc.schedule`) for verifications, used instead of `check.interval_secs`; e.g. `\"30 4 * * sun\"` for Sundays at 04:30 UTC. Empty: `check.interval_secs`." },
    ConfigKey { key: "check.jitter_secs", default: "0", doc: "Up to this many seconds of random delay added to each scheduled verification; capped at half the time to the next one." },
    ConfigKey { key: "auth.service", default: "\"wharf\"", doc: "Name of this registry in `WWW-Authenticate` challenges (`service=`) and in the audience of the tokens it issues; tokens for another service are refused." },
    ConfigKey { key: "auth.realm", default: "\"\"", doc: "Token endpoint URL announced in challenges. Empty: `server.external_url` + `/token`, or else `http(s)://<authority>/token` from each request (the HTTP/2 `:authority` or the HTTP/1.1 `Host`, used only when it is a valid `host[:port]`, else `server.listen`; `X-Forwarded-Proto` is honoured only from `server.trusted_proxies`)." },
    ConfigKey { key: "auth.token_ttl_secs", default: "300", doc: "Lifetime of registry access tokens issued by `/token`, in seconds (30 to 86400)." },
    ConfigKey { key: "auth.refresh_token_ttl_secs", default: "7776000", doc: "Lifetime of refresh tokens (`docker login`-style offline tokens), in seconds." },
    ConfigKey { key: "auth.admin_password_file", default: "\"\"", doc: "On first start, when no administrator exists, create `admin` with the password in this file. Empty: generate a password and print it once on standard error." },
    ConfigKey { key: "auth.max_failed_logins", default: "10", doc: "Failed sign-ins allowed for one account from one client address within `auth.failed_login_window_secs`; beyond that, that address gets `429 TOOMANYREQUESTS` with `Retry-After` for that account. Other addresses can still sign in (attempts on an account with ten times this many failures from anywhere are slowed by a second). `wharf auth unlock` clears the counts." },
    ConfigKey { key: "auth.max_failed_logins_per_address", default: "30", doc: "Failed sign-ins allowed from one client address, whatever the accounts, within `auth.failed_login_window_secs`; beyond that, that address gets `429 TOOMANYREQUESTS`. Other addresses are never affected." },
    ConfigKey { key: "auth.max_concurrent_password_checks", default: "4", doc: "Password verifications (argon2id, 19 MiB each) allowed to run at once; a sign-in that finds every slot busy for 5 s gets `429 TOOMANYREQUESTS`. Concurrent requests with the same credentials share one verification." },
    ConfigKey { key: "auth.failed_login_window_secs", default: "300", doc: "The sliding window of `auth.max_failed_logins`, in seconds." },
    ConfigKey { key: "auth.grants", default: "[]", doc: "Grants declared in the file, as `[[auth.grants]]` tables with `subject` (`anonymous`, `user:NAME`, `team:NAME`), `repositories` (a pattern: `*` within a path component, `**` across) and `actions` (`pull`, `push`, `delete`, `admin`). They replace the previous file's grants at every start; grants made with `wharf grant` are kept. `anonymous` may only be granted `pull`." },
    ConfigKey { key: "tls.certificates", default: "[]", doc: "HTTPS certificates as `[[tls.certificates]]` tables with `cert` (PEM chain, leaf first), `key` (PEM private key) and `hostnames` (names that select it by SNI, exact or `*.domain`). The first is served to clients that send no or an unknown name. Empty: plain HTTP. Files are re-read when they change, without a restart. TLS 1.3 and 1.2 only, AEAD suites only." },
    ConfigKey { key: "tls.redirect_listen", default: "\"\"", doc: "Address of an optional plain-HTTP listener that answers every request with a permanent redirect to HTTPS on `server.listen`'s port. Empty: none." },
    ConfigKey { key: "tls.reload_interval_secs", default: "10", doc: "Seconds between checks of the certificate files for changes. A broken new file is logged and the previous certificates stay in force." },
    ConfigKey { key: "tls.client_ca", default: "\"\"", doc: "PEM bundle of certificate authorities for client certificates (mutual TLS). A client presenting a certificate signed by one of them signs in as the account named by the certificate's subject common name (the account must exist); clients without a certificate still connect and use passwords or tokens, and an `Authorization` header takes precedence. Empty: client certificates are not requested." },
    ConfigKey { key: "tls.acme.directory_url", default: "\"\"", doc: "ACME directory of the certificate authority (any RFC 8555 CA, public or private). Set it to get and renew the HTTPS certificate automatically; the account key and certificate are kept in `<data_dir>/acme/`. Empty: no ACME." },
    ConfigKey { key: "tls.acme.domains", default: "[]", doc: "Names the ACME certificate covers; they also select it by SNI." },
    ConfigKey { key: "tls.acme.contact", default: "[]", doc: "Account contact URLs, e.g. `[\"mailto:ops@example.com\"]`." },
    ConfigKey { key: "tls.acme.ca_bundle", default: "\"\"", doc: "PEM bundle trusted for the ACME directory's own TLS, for a private CA in an air-gapped site. Empty: the public web roots." },
    ConfigKey { key: "tls.acme.challenge", default: "\"http-01\"", doc: "`http-01`, answered on `tls.redirect_listen` (port 80 for a public CA), or `tls-alpn-01`, answered on `server.listen` (port 443) itself." },
    ConfigKey { key: "tls.acme.renew_before_secs", default: "0", doc: "Renew when less than this many seconds of validity remain. 0: when a third of the certificate's lifetime remains." },
    ConfigKey { key: "tls.acme.check_interval_secs", default: "3600", doc: "Longest wait between two checks of the certificate's expiry. Failed requests are retried sooner, with backoff." },
    ConfigKey { key: "mirror.remotes", default: "[]", doc: "Upstream registries to mirror, as `[[mirror.remotes]]` tables. `name` (required): what `[[mirror.sync]]` and `wharf sync REMOTE` call it. `url` (required): `https://HOST[:PORT]`; `http://` only with `insecure_http = true`. A host of `docker.io` or `registry-1.docker.io` is Docker Hub: requests go to `registry-1.docker.io` and a one-component name such as `alpine` means `library/alpine`. `username` and `password_file` (both or neither; the file holds the password or token, a trailing newline is dropped, and a file readable by group or others gets a warning): credentials, sent to the upstream's token service when it asks for Bearer tokens, or as Basic credentials when it asks for Basic. `ca_bundle`: PEM bundle of CAs trusted for the upstream instead of the system roots. `concurrency` (default 4, 1 to 64): tags copied at once by a sync run, and blobs transferred at once within each. `prefix`: where mirrored repositories go locally, `PREFIX/UPSTREAM-NAME`; default the upstream's host (`docker.io` for Docker Hub), with `:PORT` written `_PORT` because a repository name may not hold a colon (`127.0.0.1_5000/team/app`); `\"\"` stores under the upstream name itself. `interval_secs` (default 0: none) or `schedule` (a cron expression in UTC, as `gc.schedule`, used instead): the server syncs the remote's `[[mirror.sync]]` definitions as a `sync:NAME` job on that cadence, one run at a time per remote across replicas; `jitter_secs` (default 60, capped at half the time to the next run) delays each run at random. `requests_per_second` (default 0: no budget): the most requests sent to the upstream per second, spaced evenly (token service requests included); 429 and 503 answers are waited out after their `Retry-After`, and other 5xx answers and dropped connections are retried with backoff, up to 5 attempts per request. `pull_through` (a table, `[mirror.remotes.pull_through]`; absent: off): the pull-through cache. A pull of a repository under `PREFIX/` (or with `?ns=HOST`, as containerd and containers-registries.conf mirrors send) that is not stored yet is fetched from the upstream, stored exactly as `wharf sync` stores it, and answered; its keys: `repositories` (required): the allow-list, upstream repository patterns (`*` within a path component, `**` across, e.g. `[\"coreos/*\"]`; Docker Hub official images are `library/NAME`), and nothing outside it is ever fetched; `tag_ttl_secs` (default 300): a cached tag is served this long before it is revalidated with a HEAD request (digests never are); `upstream_timeout_secs` (default 10, 1 to 300): how long to wait for the upstream before serving what is cached (serve-stale, logged as a warning) or, for content never cached, answering `503 UNAVAILABLE`." },
    ConfigKey { key: "mirror.sync", default: "[]", doc: "What `wharf sync` copies, as `[[mirror.sync]]` tables. `remote` (required): a `[[mirror.remotes]]` name. `repositories` (required): upstream repository names. `tags`: an explicit list; when empty, every tag the upstream lists, kept when it matches the regex `include` (if set) and does not match the regex `exclude` (if set). Regexes are unanchored, as in skopeo sync: write `^v1\\.` to anchor. A tag whose upstream digest equals the local tag's is left alone without fetching its manifest." },
    ConfigKey { key: "log.level", default: "\"info\"", doc: "Log filter in `RUST_LOG` syntax; the `RUST_LOG` environment variable overrides it." },
    ConfigKey { key: "log.format", default: "\"text\"", doc: "`text`: one line per event for people, without colour codes unless standard error is a terminal (and `NO_COLOR` is unset). `json`: one JSON object per line for log collectors, with the event's fields at the top level. Either way every HTTP request gets one access line (`message` `access`, target `wharf::access`) with `method`, `path`, `status`, `bytes` (body bytes sent), `duration_ms` (until the body was sent), `principal` (the signed-in account, `-` if none) and `request_id` (the `X-Request-Id` echoed to the client)." },
];

/// Renders `docs/configuration.md`.
pub fn render_reference() -> String {
    let mut out = String::from(
        "# Configuration reference\n\n\
         <!-- Generated from crates/wharf-config/src/reference.rs; do not edit by hand. -->\n\n\
         Wharf reads one TOML file: `--config FILE`, else `$WHARF_CONFIG`, else the first of `./wharf.toml` and `/etc/wharf/wharf.toml` that exists.\n\
         Every key is optional; with no file at all Wharf serves from `./wharf-data` on `127.0.0.1:5000`.\n\
         Unknown keys are errors that name the key.\n\
         Command-line flags (`--listen`, `--data-dir`) override the file.\n\n\
         | key | default | meaning |\n|---|---|---|\n",
    );
    for k in REFERENCE {
        out.push_str(&format!("| `{}` | `{}` | {} |\n", k.key, k.default, k.doc));
    }
    out.push_str("\n## Example\n\n```toml\n[server]\nlisten = \"127.0.0.1:5000\"\n\n[storage]\ndata_dir = \"/var/lib/wharf\"\n\n[database]\nurl = \"postgres://wharf@db.internal:5432/wharf\"\n\n[gc]\ngrace_period_secs = 86400\n\n[[auth.grants]]\nsubject = \"anonymous\"\nrepositories = \"public/**\"\nactions = [\"pull\"]\n\n[[auth.grants]]\nsubject = \"team:ci\"\nrepositories = \"team/**\"\nactions = [\"pull\", \"push\"]\n```\n");
    out
}
