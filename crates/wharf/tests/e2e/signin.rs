//! Sign-in under attack: bursts of concurrent password checks, throttling that
//! nobody can turn against another address, `wharf auth unlock`, trusted
//! proxies, unknown paths, and failing closed when the database fails.
//!
//! Clients bind their own loopback source address (127.0.0.2, 127.0.0.3, …),
//! the way separate hosts would reach the server, so the per-address model is
//! tested from the outside.

use std::net::{IpAddr, SocketAddr};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wharf_testkit::http::{basic_auth, request};
use wharf_testkit::{Registry, WharfServer};

const WHARF: &str = env!("CARGO_BIN_EXE_wharf");

/// The status line and head of one HTTP/1.1 exchange made from `source`.
async fn exchange(
    server: SocketAddr,
    source: IpAddr,
    path: &str,
    headers: &[(String, String)],
) -> Result<(u16, String)> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source, 0))?;
    let mut stream = tokio::time::timeout(Duration::from_secs(60), socket.connect(server))
        .await
        .context("connect timed out")??;
    let mut head = format!("GET {path} HTTP/1.1\r\nHost: {server}\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await?;
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(120), stream.read_to_end(&mut response))
        .await
        .context("response timed out")??;
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("no status line in {text:?}"))?;
    Ok((status, text))
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("a literal address")
}

fn auth(user: &str, password: &str) -> Vec<(String, String)> {
    vec![("Authorization".into(), basic_auth(user, password))]
}

/// Sends the requests concurrently and returns their statuses in order.
fn burst(server: SocketAddr, requests: Vec<(IpAddr, Vec<(String, String)>)>) -> Result<Vec<u16>> {
    runtime()?.block_on(async move {
        let tasks: Vec<_> = requests
            .into_iter()
            .map(|(source, headers)| {
                tokio::spawn(async move { exchange(server, source, "/v2/", &headers).await })
            })
            .collect();
        let mut statuses = Vec::new();
        for t in tasks {
            statuses.push(t.await??.0);
        }
        Ok(statuses)
    })
}

fn get_from(server: &WharfServer, source: &str, headers: &[(String, String)]) -> Result<u16> {
    let addr = server.addr();
    let headers = headers.to_vec();
    let source = ip(source);
    runtime()?.block_on(async move { Ok(exchange(addr, source, "/v2/", &headers).await?.0) })
}

struct Setup {
    server: WharfServer,
    _dir: tempfile::TempDir,
}

fn start(config: &str) -> Result<Setup> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("wharf.toml");
    std::fs::write(&path, config)?;
    let server = WharfServer::start_with_config(WHARF, Some(&path))?;
    Ok(Setup { server, _dir: dir })
}

fn wharf(server: &WharfServer, args: &[&str]) -> Result<std::process::Output> {
    Ok(Command::new(WHARF)
        .args(args)
        .arg("--data-dir")
        .arg(server.data_dir())
        .output()?)
}

const MIB: u64 = 1024 * 1024;

#[test]
fn a_burst_of_sign_ins_is_throttled_and_memory_stays_bounded() -> Result<()> {
    let setup = start("")?;
    let s = &setup.server;
    // 200 different wrong passwords for admin at once, from one address: the
    // attempts are counted before they are hashed, so most never get hashed.
    let wrong: Vec<_> = (0..200)
        .map(|i| (ip("127.0.0.2"), auth("admin", &format!("guess-{i}"))))
        .collect();
    let statuses = burst(s.addr(), wrong)?;
    let limited = statuses.iter().filter(|&&st| st == 429).count();
    let refused = statuses.iter().filter(|&&st| st == 401).count();
    assert_eq!(limited + refused, 200, "{statuses:?}");
    assert!(
        limited >= 180,
        "only {limited} of 200 got 429: {statuses:?}"
    );
    let peak = s.peak_rss_bytes()?;
    assert!(
        peak < 400 * MIB,
        "peak RSS {} MiB after the wrong burst",
        peak / MIB
    );

    // 200 valid sign-ins at once with a cold cache, from a clean address: one
    // verification serves them all, and the attack above does not lock them out.
    let (user, password) = s.credentials();
    let valid: Vec<_> = (0..200)
        .map(|_| (ip("127.0.0.3"), auth(&user, &password)))
        .collect();
    let statuses = burst(s.addr(), valid)?;
    assert!(statuses.iter().all(|&st| st == 200), "{statuses:?}");
    let peak = s.peak_rss_bytes()?;
    assert!(
        peak < 400 * MIB,
        "peak RSS {} MiB after the valid burst",
        peak / MIB
    );
    Ok(())
}

#[test]
fn guessing_from_one_address_never_locks_out_another() -> Result<()> {
    let setup = start("")?;
    let s = &setup.server;
    let (user, password) = s.credentials();
    let mut statuses = Vec::new();
    for i in 0..20 {
        statuses.push(get_from(
            s,
            "127.0.0.2",
            &auth("admin", &format!("wrong-{i}")),
        )?);
    }
    assert_eq!(&statuses[..10], &[401; 10], "{statuses:?}");
    assert_eq!(&statuses[10..], &[429; 10], "{statuses:?}");
    // The attacker's own address is throttled for admin, even with the right password...
    assert_eq!(get_from(s, "127.0.0.2", &auth(&user, &password))?, 429);
    // ...but the administrator signs in from anywhere else.
    assert_eq!(get_from(s, "127.0.0.3", &auth(&user, &password))?, 200);

    // Bad API tokens are throttled per address too, not on one key shared by
    // every token user.
    let token: serde_json::Value = serde_json::from_slice(
        &wharf(s, &["token", "create", "--user", "admin", "--json"])?.stdout,
    )?;
    let token = token["token"].as_str().context("token")?.to_owned();
    let bearer = |t: &str| vec![("Authorization".to_owned(), format!("Bearer {t}"))];
    let mut last = 0;
    for i in 0..40 {
        last = get_from(s, "127.0.0.4", &bearer(&format!("wharf_nosuch{i}_secret")))?;
    }
    assert_eq!(last, 429);
    assert_eq!(get_from(s, "127.0.0.5", &bearer(&token))?, 200);

    // `wharf auth unlock` acts on the data directory; the running server applies it.
    let out = wharf(s, &["auth", "unlock", "--address", "127.0.0.2"])?;
    assert!(out.status.success(), "{out:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = get_from(s, "127.0.0.2", &auth(&user, &password))?;
        if status == 200 {
            break;
        }
        if Instant::now() > deadline {
            bail!("127.0.0.2 still gets {status} after `wharf auth unlock`");
        }
        std::thread::sleep(Duration::from_millis(500));
    }

    // The management API unlocks too, at once on the server that answers.
    for i in 0..10 {
        get_from(s, "127.0.0.2", &auth("admin", &format!("again-{i}")))?;
    }
    assert_eq!(get_from(s, "127.0.0.2", &auth(&user, &password))?, 429);
    let res = request(
        s.addr(),
        "POST",
        "/api/v1/auth/unlock",
        &[
            ("Authorization", &s.basic_auth_header()),
            ("Content-Type", "application/json"),
        ],
        br#"{"account": "admin", "address": "127.0.0.2"}"#,
    )?;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(get_from(s, "127.0.0.2", &auth(&user, &password))?, 200);
    Ok(())
}

#[test]
fn forwarded_for_is_believed_only_from_trusted_proxies() -> Result<()> {
    let setup =
        start("[server]\ntrusted_proxies = [\"127.0.0.7/32\"]\n[auth]\nmax_failed_logins = 3\n")?;
    let s = &setup.server;
    let (user, password) = s.credentials();
    let via = |client: &str, user: &str, pw: &str| {
        let mut h = auth(user, pw);
        h.push(("X-Forwarded-For".into(), format!("6.6.6.6, {client}")));
        h
    };
    // Through the trusted proxy, the client is the right-most untrusted hop.
    for _ in 0..3 {
        assert_eq!(
            get_from(s, "127.0.0.7", &via("10.1.1.1", "admin", "x"))?,
            401
        );
    }
    assert_eq!(
        get_from(s, "127.0.0.7", &via("10.1.1.1", &user, &password))?,
        429
    );
    assert_eq!(
        get_from(s, "127.0.0.7", &via("10.1.1.2", &user, &password))?,
        200
    );
    // From anyone else the header is ignored: it cannot buy a fresh address.
    for i in 0..3 {
        let h = via(&format!("10.2.2.{i}"), "admin", "x");
        assert_eq!(get_from(s, "127.0.0.8", &h)?, 401);
    }
    assert_eq!(
        get_from(s, "127.0.0.8", &via("10.2.2.9", &user, &password))?,
        429
    );
    Ok(())
}

#[test]
fn an_unknown_path_is_a_plain_404() -> Result<()> {
    let setup = start("[auth]\nmax_failed_logins = 3\n")?;
    let s = &setup.server;
    let wrong = basic_auth("admin", "wrong");
    for path in ["/nope", "/api/v1/nope", "/v2/nope", "/favicon.ico"] {
        for headers in [vec![], vec![("Authorization", wrong.as_str())]] {
            let res = request(s.addr(), "GET", path, &headers, b"")?;
            assert_eq!(res.status, 404, "{path}: {}", res.text());
            assert!(
                res.header("www-authenticate").is_none(),
                "{path} challenged: {:?}",
                res.headers
            );
        }
        let res = request(
            s.addr(),
            "POST",
            path,
            &[("Authorization", wrong.as_str())],
            b"{}",
        )?;
        assert_eq!(res.status, 404, "POST {path}");
    }
    // None of the wrong passwords above counted as a failed sign-in.
    let res = request(
        s.addr(),
        "GET",
        "/v2/",
        &[("Authorization", &s.basic_auth_header())],
        b"",
    )?;
    assert_eq!(res.status, 200, "{}", res.text());
    // And none of them was audited.
    let out = wharf(s, &["audit", "--json"])?;
    let log = String::from_utf8_lossy(&out.stdout);
    assert!(!log.contains("nope"), "{log}");
    Ok(())
}

/// Runs SQL against the server's SQLite database.
fn sql(server: &WharfServer, statement: &str) -> Result<()> {
    let out = Command::new("sqlite3")
        .arg(server.data_dir().join("wharf.db"))
        .arg(statement)
        .output()
        .context("sqlite3 is required")?;
    if !out.status.success() {
        bail!("sqlite3: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

#[test]
fn unreadable_scopes_and_database_errors_fail_closed() -> Result<()> {
    let setup = start("")?;
    let s = &setup.server;
    let created: serde_json::Value = serde_json::from_slice(
        &wharf(
            s,
            &[
                "token",
                "create",
                "--user",
                "admin",
                "--scope",
                "ci/**:pull",
                "--json",
            ],
        )?
        .stdout,
    )?;
    let token = created["token"].as_str().context("token")?.to_owned();
    let id = created["id"].as_str().context("id")?.to_owned();
    let bearer = format!("Bearer {token}");
    let pull = |path: &str, auth: &str| -> Result<u16> {
        Ok(request(s.addr(), "GET", path, &[("Authorization", auth)], b"")?.status)
    };
    // Scoped to ci/**: another repository is out of reach.
    assert_eq!(pull("/v2/other/tags/list", &bearer)?, 403);
    sql(
        s,
        &format!("UPDATE api_tokens SET scopes = 'not json' WHERE id = '{id}'"),
    )?;
    // Unreadable scopes mean no rights at all, not the account's (administrator's) rights.
    assert_eq!(pull("/v2/other/tags/list", &bearer)?, 403);
    // Log lines are written by a writer thread: give it a moment.
    let logged = (0..50).any(|_| {
        let found = s.log().contains("stored token scopes are unreadable");
        if !found {
            std::thread::sleep(Duration::from_millis(100));
        }
        found
    });
    assert!(logged, "{}", s.log());

    // A database failure while authorizing is the server's fault: 500 UNKNOWN,
    // not a 401/403 that sends the client after other credentials.
    let mut child = Command::new(WHARF)
        .args(["user", "add", "bob", "--password-stdin", "--data-dir"])
        .arg(s.data_dir())
        .stdin(std::process::Stdio::piped())
        .spawn()?;
    std::io::Write::write_all(&mut child.stdin.take().context("stdin")?, b"bob-pw\n")?;
    assert!(child.wait()?.success());
    let bob = basic_auth("bob", "bob-pw");
    assert_eq!(pull("/v2/other/tags/list", &bob)?, 403);
    sql(s, "ALTER TABLE grants RENAME TO grants_gone")?;
    // Past the grants cache's lifetime, so the next decision asks the database.
    std::thread::sleep(Duration::from_secs(4));
    let res = request(
        s.addr(),
        "GET",
        "/v2/other/tags/list",
        &[("Authorization", &bob)],
        b"",
    )?;
    assert_eq!(res.status, 500, "{}", res.text());
    assert!(res.text().contains("UNKNOWN"), "{}", res.text());
    sql(s, "ALTER TABLE grants_gone RENAME TO grants")?;
    Ok(())
}

/// The `WWW-Authenticate` header of an anonymous `GET /v2/` sent with `host` as its Host.
fn challenge_for_host(server: SocketAddr, host: &[u8]) -> Result<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(server)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    stream.write_all(b"GET /v2/ HTTP/1.1\r\nHost: ")?;
    stream.write_all(host)?;
    stream.write_all(b"\r\nConnection: close\r\n\r\n")?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let text = String::from_utf8_lossy(&response).into_owned();
    text.lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .starts_with("www-authenticate:")
                .then(|| l.to_owned())
        })
        .with_context(|| format!("no challenge in {text}"))
}

#[test]
fn the_realm_is_never_built_from_unchecked_header_bytes() -> Result<()> {
    let setup = start("")?;
    let s = &setup.server;
    let good = challenge_for_host(s.addr(), b"registry.test:8443")?;
    assert!(
        good.contains("realm=\"http://registry.test:8443/token\""),
        "{good}"
    );
    for bad in [
        &b"evil\",error=\"x"[..],
        b"a b",
        b"user@host",
        b"host:99999",
        b"host/path",
    ] {
        let challenge = challenge_for_host(s.addr(), bad)?;
        assert!(
            challenge.contains("realm=\"http://127.0.0.1:0/token\""),
            "Host {:?} gave {challenge}",
            String::from_utf8_lossy(bad)
        );
        assert_eq!(challenge.matches('"').count(), 4, "{challenge}");
    }
    drop(setup);

    // A configured external URL wins over whatever the request says.
    let setup = start("[server]\nexternal_url = \"https://registry.example:8443/\"\n")?;
    let c = challenge_for_host(setup.server.addr(), b"other.test")?;
    assert!(
        c.contains("realm=\"https://registry.example:8443/token\""),
        "{c}"
    );
    Ok(())
}
