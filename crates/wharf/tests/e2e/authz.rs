//! The authorization matrix: every role × every operation, asserting the exact
//! status and OCI error code, plus the token endpoint's scope intersection,
//! the 401-versus-403 rule, rate limiting and refused configurations.
//!
//! Roles come from the configuration file (grants) and the admin CLI (users,
//! teams, tokens), exactly as an operator would set them up.

use std::io::Write;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use serde_json::Value;
use wharf_testkit::http::{basic_auth, request, Response};
use wharf_testkit::WharfServer;

const WHARF: &str = env!("CARGO_BIN_EXE_wharf");
const EMPTY_CONFIG: &[u8] = b"{}";
const EMPTY_DIGEST: &str =
    "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";

fn basic(user: &str, password: &str) -> String {
    basic_auth(user, password)
}

/// Runs `wharf ARGS --data-dir DIR`, feeding `stdin`, and returns stdout.
fn cli(server: &WharfServer, args: &[&str], stdin: &str) -> Result<String> {
    let mut child = Command::new(WHARF)
        .args(args)
        .arg("--data-dir")
        .arg(server.data_dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(stdin.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "wharf {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn code(res: &Response) -> String {
    serde_json::from_slice::<Value>(&res.body)
        .ok()
        .and_then(|v| v["errors"][0]["code"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

struct Setup {
    server: WharfServer,
    _config_dir: tempfile::TempDir,
}

fn start(config: &str) -> Result<Setup> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("wharf.toml");
    std::fs::write(&path, config)?;
    let server = WharfServer::start_with_config(WHARF, Some(&path))?;
    Ok(Setup {
        server,
        _config_dir: dir,
    })
}

fn push_manifest(
    server: &WharfServer,
    auth: &str,
    repo: &str,
    tag: &str,
    note: &str,
) -> Result<(u16, String)> {
    let addr = server.addr();
    let hdr = [("Authorization", auth)];
    let up = request(
        addr,
        "POST",
        &format!("/v2/{repo}/blobs/uploads/?digest={EMPTY_DIGEST}"),
        &hdr,
        EMPTY_CONFIG,
    )?;
    if up.status != 201 {
        return Ok((up.status, String::new()));
    }
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": EMPTY_DIGEST, "size": 2},
        "layers": [],
        "annotations": {"note": note},
    })
    .to_string();
    let res = request(
        addr,
        "PUT",
        &format!("/v2/{repo}/manifests/{tag}"),
        &[
            ("Authorization", auth),
            ("Content-Type", "application/vnd.oci.image.manifest.v1+json"),
        ],
        manifest.as_bytes(),
    )?;
    Ok((
        res.status,
        res.header("docker-content-digest").unwrap_or("").to_owned(),
    ))
}

const MATRIX_CONFIG: &str = r#"
[auth]
max_failed_logins = 10000
max_failed_logins_per_address = 10000

[[auth.grants]]
subject = "anonymous"
repositories = "public/**"
actions = ["pull"]

[[auth.grants]]
subject = "user:reader"
repositories = "team/**"
actions = ["pull"]

[[auth.grants]]
subject = "team:pushers"
repositories = "team/**"
actions = ["pull", "push"]

[[auth.grants]]
subject = "user:deleter"
repositories = "team/**"
actions = ["pull", "delete"]

[[auth.grants]]
subject = "user:ci"
repositories = "team/**"
actions = ["pull", "push"]
"#;

#[test]
fn authorization_matrix() -> Result<()> {
    let setup = start(MATRIX_CONFIG)?;
    let s = &setup.server;
    let admin = basic("admin", s.admin_password());
    for user in ["reader", "pusher", "deleter"] {
        cli(
            s,
            &["user", "add", user, "--password-stdin"],
            &format!("{user}-pw\n"),
        )?;
    }
    cli(s, &["user", "add", "ci", "--robot"], "")?;
    cli(s, &["team", "add", "pushers"], "")?;
    cli(s, &["team", "add-member", "pushers", "pusher"], "")?;
    let scoped: Value = serde_json::from_str(&cli(
        s,
        &[
            "token",
            "create",
            "--user",
            "ci",
            "--scope",
            "team/ci/**:pull,push",
            "--json",
        ],
        "",
    )?)?;
    let revoked: Value =
        serde_json::from_str(&cli(s, &["token", "create", "--user", "ci", "--json"], "")?)?;
    cli(
        s,
        &["token", "revoke", revoked["id"].as_str().context("id")?],
        "",
    )?;
    let expired: Value = serde_json::from_str(&cli(
        s,
        &[
            "token",
            "create",
            "--user",
            "ci",
            "--expires-in-secs",
            "1",
            "--json",
        ],
        "",
    )?)?;

    // Content every role will try to read, and one manifest per role to try to delete.
    assert_eq!(push_manifest(s, &admin, "team/app", "v1", "base")?.0, 201);
    assert_eq!(
        push_manifest(s, &admin, "public/base", "v1", "base")?.0,
        201
    );
    assert_eq!(
        push_manifest(s, &admin, "team/ci/build", "v1", "base")?.0,
        201
    );
    std::thread::sleep(std::time::Duration::from_millis(1500)); // let the 1-second token expire

    let roles: Vec<(&str, Option<String>)> = vec![
        ("anonymous", None),
        ("reader", Some(basic("reader", "reader-pw"))),
        ("pusher", Some(basic("pusher", "pusher-pw"))),
        ("deleter", Some(basic("deleter", "deleter-pw"))),
        ("admin", Some(admin.clone())),
        (
            "robot-scoped",
            Some(basic("ci", scoped["token"].as_str().context("token")?)),
        ),
        (
            "robot-revoked",
            Some(basic("ci", revoked["token"].as_str().context("token")?)),
        ),
        (
            "robot-expired",
            Some(basic("ci", expired["token"].as_str().context("token")?)),
        ),
        ("wrong-password", Some(basic("reader", "nope"))),
    ];
    let mut to_delete = std::collections::HashMap::new();
    for (role, _) in &roles {
        let (status, digest) = push_manifest(s, &admin, "team/app", &format!("del-{role}"), role)?;
        assert_eq!(status, 201);
        to_delete.insert(*role, digest);
    }

    // (operation, method, path) and the expected status per role, in `roles` order.
    // 401 = UNAUTHORIZED (no or bad credentials), 403 = DENIED (signed in, not allowed).
    type Row<'a> = (&'a str, &'a str, String, [u16; 9]);
    let rows: Vec<Row> = vec![
        ("api root", "GET", "/v2/".into(), [401, 200, 200, 200, 200, 200, 401, 401, 401]),
        ("pull team manifest", "GET", "/v2/team/app/manifests/v1".into(), [401, 200, 200, 200, 200, 403, 401, 401, 401]),
        ("head team blob", "HEAD", format!("/v2/team/app/blobs/{EMPTY_DIGEST}"), [401, 200, 200, 200, 200, 403, 401, 401, 401]),
        ("list team tags", "GET", "/v2/team/app/tags/list".into(), [401, 200, 200, 200, 200, 403, 401, 401, 401]),
        ("team referrers", "GET", format!("/v2/team/app/referrers/{EMPTY_DIGEST}"), [401, 200, 200, 200, 200, 403, 401, 401, 401]),
        ("pull public manifest", "GET", "/v2/public/base/manifests/v1".into(), [200, 200, 200, 200, 200, 403, 401, 401, 401]),
        ("pull ci manifest", "GET", "/v2/team/ci/build/manifests/v1".into(), [401, 200, 200, 200, 200, 200, 401, 401, 401]),
        ("start team upload", "POST", "/v2/team/app/blobs/uploads/".into(), [401, 403, 202, 403, 202, 403, 401, 401, 401]),
        ("start ci upload", "POST", "/v2/team/ci/build/blobs/uploads/".into(), [401, 403, 202, 403, 202, 202, 401, 401, 401]),
        ("start public upload", "POST", "/v2/public/base/blobs/uploads/".into(), [401, 403, 403, 403, 202, 403, 401, 401, 401]),
        ("delete team blob", "DELETE", "/v2/team/app/blobs/sha256:0000000000000000000000000000000000000000000000000000000000000000".into(), [401, 403, 403, 404, 404, 403, 401, 401, 401]),
    ];
    let mut failures = Vec::new();
    for (op, method, path, expected) in &rows {
        for ((role, auth), want) in roles.iter().zip(expected) {
            let headers: Vec<(&str, &str)> =
                auth.iter().map(|a| ("Authorization", a.as_str())).collect();
            let res = request(s.addr(), method, path, &headers, b"")?;
            let want_code = match want {
                401 => "UNAUTHORIZED",
                403 => "DENIED",
                _ => "",
            };
            let got_code = if res.status == 401 || res.status == 403 {
                code(&res)
            } else {
                String::new()
            };
            if res.status != *want
                || (!want_code.is_empty() && method != &"HEAD" && got_code != want_code)
            {
                failures.push(format!(
                    "{op} as {role}: expected {want} {want_code}, got {} {got_code}",
                    res.status
                ));
            }
            if res.status == 401
                && res
                    .header("www-authenticate")
                    .is_none_or(|h| !h.starts_with("Bearer realm="))
            {
                failures.push(format!("{op} as {role}: 401 without a Bearer challenge"));
            }
        }
    }
    // Deleting: each role tries its own manifest, so earlier deletions do not interfere.
    let delete_expect = [401, 403, 403, 202, 202, 403, 401, 401, 401];
    for ((role, auth), want) in roles.iter().zip(delete_expect) {
        let headers: Vec<(&str, &str)> =
            auth.iter().map(|a| ("Authorization", a.as_str())).collect();
        let path = format!("/v2/team/app/manifests/{}", to_delete[role]);
        let res = request(s.addr(), "DELETE", &path, &headers, b"")?;
        if res.status != want {
            failures.push(format!(
                "delete manifest as {role}: expected {want}, got {}",
                res.status
            ));
        }
    }
    // Pushing a manifest is the write that moves a tag.
    for ((role, auth), want) in roles
        .iter()
        .zip([401, 403, 201, 403, 201, 403, 401, 401, 401])
    {
        let Some(auth) = auth else {
            let res = request(
                s.addr(),
                "PUT",
                "/v2/team/app/manifests/anon",
                &[("Content-Type", "application/vnd.oci.image.manifest.v1+json")],
                b"{}",
            )?;
            if res.status != want {
                failures.push(format!(
                    "push manifest as {role}: expected {want}, got {}",
                    res.status
                ));
            }
            continue;
        };
        let (status, _) = push_manifest(s, auth, "team/app", &format!("by-{role}"), role)?;
        if status != want {
            failures.push(format!(
                "push manifest as {role}: expected {want}, got {status}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "authorization matrix mismatches:\n{}",
        failures.join("\n")
    );

    // The catalog lists exactly what the caller may pull.
    let catalog = |auth: Option<&str>| -> Result<Vec<String>> {
        let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", *a)).collect();
        let res = request(s.addr(), "GET", "/v2/_catalog", &headers, b"")?;
        let v: Value = serde_json::from_slice(&res.body)?;
        Ok(v["repositories"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r.as_str().map(str::to_owned))
            .collect())
    };
    assert_eq!(catalog(None)?, vec!["public/base"]);
    // A bearer token asked for the catalog lists by its subject's grants too.
    let res = request(
        s.addr(),
        "GET",
        "/token?service=wharf&scope=registry:catalog:*",
        &[("Authorization", &basic("reader", "reader-pw"))],
        b"",
    )?;
    let token: Value = serde_json::from_slice(&res.body)?;
    let bearer = format!("Bearer {}", token["token"].as_str().context("token")?);
    assert_eq!(
        catalog(Some(&bearer))?,
        vec!["public/base", "team/app", "team/ci/build"]
    );
    assert_eq!(
        catalog(Some(&basic("reader", "reader-pw")))?,
        vec!["public/base", "team/app", "team/ci/build"]
    );
    assert_eq!(
        catalog(Some(&basic(
            "ci",
            scoped["token"].as_str().unwrap_or_default()
        )))?,
        vec!["team/ci/build"]
    );
    Ok(())
}

fn token_for(s: &WharfServer, auth: Option<&str>, scope: &str) -> Result<Value> {
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", *a)).collect();
    let res = request(
        s.addr(),
        "GET",
        &format!("/token?service=wharf&scope={scope}"),
        &headers,
        b"",
    )?;
    if res.status != 200 {
        bail!("token endpoint answered {}: {}", res.status, res.text());
    }
    let v: Value = serde_json::from_slice(&res.body)?;
    let token = v["token"].as_str().context("no token")?;
    // The middle part of the JWT is the claims.
    let claims = token.split('.').nth(1).context("not a JWT")?;
    let claims = base64_url_decode(claims)?;
    Ok(serde_json::from_slice(&claims)?)
}

fn base64_url_decode(s: &str) -> Result<Vec<u8>> {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = Vec::new();
    for c in s.bytes() {
        let v = A.iter().position(|&x| x == c).context("bad base64url")? as u32;
        bits = (bits << 6) | v;
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
            bits &= (1 << n) - 1;
        }
    }
    Ok(out)
}

#[test]
fn token_endpoint_grants_the_intersection_and_401_asks_for_more() -> Result<()> {
    let setup = start(MATRIX_CONFIG)?;
    let s = &setup.server;
    cli(
        s,
        &["user", "add", "reader", "--password-stdin"],
        "reader-pw\n",
    )?;
    let scope = "repository:team/app:pull,push";
    let actions = |claims: &Value| -> Vec<String> {
        claims["access"][0]["actions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a.as_str().map(str::to_owned))
            .collect()
    };
    let reader = token_for(s, Some(&basic("reader", "reader-pw")), scope)?;
    assert_eq!(actions(&reader), vec!["pull"]);
    let admin = token_for(s, Some(&basic("admin", s.admin_password())), scope)?;
    assert_eq!(actions(&admin), vec!["pull", "push"]);
    let anon = token_for(s, None, "repository:public/x:pull,push")?;
    assert_eq!(actions(&anon), vec!["pull"]);
    // Wrong credentials at the token endpoint are a 401, not an anonymous token.
    let res = request(
        s.addr(),
        "GET",
        &format!("/token?service=wharf&scope={scope}"),
        &[("Authorization", &basic("reader", "x"))],
        b"",
    )?;
    assert_eq!(res.status, 401);
    // A token for another service is refused.
    let res = request(
        s.addr(),
        "GET",
        "/token?service=elsewhere",
        &[("Authorization", &basic("reader", "reader-pw"))],
        b"",
    )?;
    assert_eq!(res.status, 400);

    // A bearer token without push gets 401 with the scope to ask for, not 403.
    let res = request(
        s.addr(),
        "GET",
        &format!("/token?service=wharf&scope={scope}"),
        &[("Authorization", &basic("reader", "reader-pw"))],
        b"",
    )?;
    let token: Value = serde_json::from_slice(&res.body)?;
    let bearer = format!("Bearer {}", token["token"].as_str().context("token")?);
    let res = request(s.addr(), "GET", "/v2/", &[("Authorization", &bearer)], b"")?;
    assert_eq!(res.status, 200);
    // Rotating the signing key does not invalidate tokens already issued.
    // The server re-reads keys every 10 s; wait so the rotation is in force.
    cli(s, &["rotate-signing-key"], "")?;
    std::thread::sleep(std::time::Duration::from_secs(11));
    let res = request(s.addr(), "GET", "/v2/", &[("Authorization", &bearer)], b"")?;
    assert_eq!(
        res.status, 200,
        "a token signed by the retired key was refused"
    );
    let kid = |jwt: &str| -> Result<String> {
        let header: Value =
            serde_json::from_slice(&base64_url_decode(jwt.split('.').next().context("JWT")?)?)?;
        Ok(header["kid"].as_str().context("kid")?.to_owned())
    };
    let res = request(
        s.addr(),
        "GET",
        &format!("/token?service=wharf&scope={scope}"),
        &[("Authorization", &basic("reader", "reader-pw"))],
        b"",
    )?;
    let fresh: Value = serde_json::from_slice(&res.body)?;
    let fresh = fresh["token"].as_str().context("token")?;
    assert_ne!(
        kid(fresh)?,
        kid(token["token"].as_str().context("token")?)?,
        "new tokens are signed by the new key"
    );
    let res = request(
        s.addr(),
        "POST",
        "/v2/team/app/blobs/uploads/",
        &[("Authorization", &bearer)],
        b"",
    )?;
    assert_eq!(res.status, 401);
    let challenge = res.header("www-authenticate").context("challenge")?;
    assert!(
        challenge.contains("scope=\"repository:team/app:pull,push\"")
            && challenge.contains("insufficient_scope"),
        "{challenge}"
    );
    // Forged and garbage bearer tokens: 401, never 500.
    // Forge by changing a character in the middle of the signature: the last
    // base64url character carries padding bits and may decode to the same bytes.
    let original = token["token"].as_str().context("token")?.to_owned();
    let sig_start = original.rfind('.').context("signature")? + 1;
    let mid = sig_start + 10;
    let flipped = if &original[mid..mid + 1] == "A" {
        "B"
    } else {
        "A"
    };
    let forged = format!("{}{}{}", &original[..mid], flipped, &original[mid + 1..]);
    for bad in [
        format!("Bearer {forged}"),
        "Bearer a.b.c".into(),
        "Bearer".into(),
        "Basic !!!".into(),
        format!("Basic {}", "A".repeat(20_000)),
    ] {
        let res = request(
            s.addr(),
            "GET",
            "/v2/team/app/tags/list",
            &[("Authorization", &bad)],
            b"",
        )?;
        assert_eq!(res.status, 401, "{bad:.40}");
    }
    // Offline (refresh) tokens, as `docker login` asks for them.
    let form = format!("grant_type=password&username=reader&password=reader-pw&service=wharf&access_type=offline&scope={scope}");
    let res = request(
        s.addr(),
        "POST",
        "/token",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        form.as_bytes(),
    )?;
    assert_eq!(res.status, 200, "{}", res.text());
    let v: Value = serde_json::from_slice(&res.body)?;
    let refresh = v["refresh_token"].as_str().context("refresh token")?;
    let form =
        format!("grant_type=refresh_token&refresh_token={refresh}&service=wharf&scope={scope}");
    let res = request(
        s.addr(),
        "POST",
        "/token",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        form.as_bytes(),
    )?;
    assert_eq!(res.status, 200, "{}", res.text());
    let form = "grant_type=refresh_token&refresh_token=nonsense&service=wharf";
    let res = request(
        s.addr(),
        "POST",
        "/token",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        form.as_bytes(),
    )?;
    assert_eq!(res.status, 401);
    Ok(())
}

#[test]
fn failed_logins_are_rate_limited_per_account_and_address() -> Result<()> {
    let setup = start(
        "[auth]\nmax_failed_logins = 3\nmax_failed_logins_per_address = 5\nfailed_login_window_secs = 60\n",
    )?;
    let s = &setup.server;
    cli(s, &["user", "add", "victim", "--password-stdin"], "right\n")?;
    let get = |user: &str, password: &str| -> Result<Response> {
        request(
            s.addr(),
            "GET",
            "/v2/",
            &[("Authorization", &basic(user, password))],
            b"",
        )
    };
    for _ in 0..3 {
        assert_eq!(get("victim", "wrong")?.status, 401);
    }
    // This address has used up its budget for this account, the right password included.
    let res = get("victim", "right")?;
    assert_eq!(res.status, 429);
    assert_eq!(code(&res), "TOOMANYREQUESTS");
    assert!(res.header("retry-after").is_some());

    // Another account from the same address is still fine...
    assert_eq!(get("admin", s.admin_password())?.status, 200);
    // ...until the address's own budget, across accounts, is spent: spraying
    // passwords across accounts stops too.
    for name in ["x1", "x2"] {
        assert_eq!(get(name, "wrong")?.status, 401);
    }
    assert_eq!(get("admin", s.admin_password())?.status, 429);
    Ok(())
}

#[test]
fn audit_log_records_pushes_and_denials() -> Result<()> {
    let setup = start("")?;
    let s = &setup.server;
    cli(s, &["user", "add", "nobody", "--password-stdin"], "pw\n")?;
    let admin = basic("admin", s.admin_password());
    let (status, digest) = push_manifest(s, &admin, "audited/app", "v1", "x")?;
    assert_eq!(status, 201);
    // Tags moved by `?tag=` on a push by digest are in the audit line too.
    let manifest = request(
        s.addr(),
        "GET",
        "/v2/audited/app/manifests/v1",
        &[
            ("Authorization", &admin),
            ("Accept", "application/vnd.oci.image.manifest.v1+json"),
        ],
        b"",
    )?;
    let res = request(
        s.addr(),
        "PUT",
        &format!("/v2/audited/app/manifests/{digest}?tag=stable"),
        &[
            ("Authorization", &admin),
            ("Content-Type", "application/vnd.oci.image.manifest.v1+json"),
        ],
        &manifest.body,
    )?;
    assert_eq!(res.status, 201, "{}", res.text());
    let res = request(
        s.addr(),
        "DELETE",
        "/v2/audited/app/manifests/v1",
        &[("Authorization", &basic("nobody", "pw"))],
        b"",
    )?;
    assert_eq!(res.status, 403);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let log = cli(s, &["audit", "--json"], "")?;
    assert!(
        log.lines().any(|l| l.contains("\"account\":\"admin\"")
            && l.contains("PUT /v2/audited/app/manifests/v1")
            && l.contains("\"ok\"")),
        "{log}"
    );
    assert!(
        log.lines().any(|l| l.contains(&format!(
            "PUT /v2/audited/app/manifests/{digest}?tag=stable"
        ))),
        "{log}"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("\"account\":\"nobody\"") && l.contains("denied")),
        "{log}"
    );
    Ok(())
}

#[test]
fn anonymous_write_cannot_be_configured() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[[auth.grants]]\nsubject = \"anonymous\"\nrepositories = \"**\"\nactions = [\"pull\", \"push\"]\n")?;
    let out = Command::new(WHARF)
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&path)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .output()?;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("auth.grants[0]") && stderr.contains("anonymous may only pull"),
        "{stderr}"
    );
    // Nor through the CLI.
    let out = Command::new(WHARF)
        .args(["grant", "add", "anonymous", "**", "push", "--data-dir"])
        .arg(dir.path().join("data"))
        .output()?;
    assert!(!out.status.success());
    Ok(())
}

#[test]
fn htpasswd_users_keep_their_passwords() -> Result<()> {
    let setup = start("")?;
    let s = &setup.server;
    let bcrypt = Command::new("htpasswd")
        .args(["-nbB", "olduser", "old-secret"])
        .output()?;
    assert!(
        bcrypt.status.success(),
        "htpasswd (apache2-utils) is required"
    );
    let md5 = Command::new("htpasswd")
        .args(["-nbm", "weakuser", "pw"])
        .output()?;
    let file = s.data_dir().join("registry.htpasswd");
    let mut text = String::from_utf8(bcrypt.stdout)?.trim().to_owned() + "\n";
    text += String::from_utf8(md5.stdout)?.trim();
    std::fs::write(&file, text + "\n")?;
    let out = Command::new(WHARF)
        .args(["user", "import-htpasswd"])
        .arg(&file)
        .arg("--data-dir")
        .arg(s.data_dir())
        .output()?;
    // The weak MD5 entry is refused, so the command reports failure, but the bcrypt user is in.
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("imported 1") && stdout.contains("skipped 1"),
        "{stdout}"
    );
    let res = request(
        s.addr(),
        "GET",
        "/v2/",
        &[("Authorization", &basic("olduser", "old-secret"))],
        b"",
    )?;
    assert_eq!(res.status, 200);
    let res = request(
        s.addr(),
        "GET",
        "/v2/",
        &[("Authorization", &basic("olduser", "wrong"))],
        b"",
    )?;
    assert_eq!(res.status, 401);
    let res = request(
        s.addr(),
        "GET",
        "/v2/",
        &[("Authorization", &basic("weakuser", "pw"))],
        b"",
    )?;
    assert_eq!(res.status, 401);
    Ok(())
}

/// Runs `wharf ARGS --data-dir DIR` and returns (success, stdout + stderr).
fn cli_outcome(server: &WharfServer, args: &[&str]) -> Result<(bool, String)> {
    let out = Command::new(WHARF)
        .args(args)
        .arg("--data-dir")
        .arg(server.data_dir())
        .output()?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    ))
}

#[test]
fn grants_are_validated_by_one_grammar_everywhere() -> Result<()> {
    let setup = start("")?;
    let s = &setup.server;
    cli(s, &["user", "add", "dev", "--password-stdin"], "dev-pw\n")?;
    cli(s, &["team", "add", "ops"], "")?;

    // The CLI refuses malformed patterns and subjects that do not exist, saying why.
    for (subject, pattern, why) in [
        ("user:dev", "Team/App", "invalid repository pattern"),
        ("user:dev", "team//x", "empty path component"),
        ("user:dev", "..", "invalid repository pattern"),
        ("user:dev", "team/***", "whole path component"),
        ("user:ghost", "team/**", "no account named \"ghost\""),
        ("team:nobody", "team/**", "no team named \"nobody\""),
    ] {
        let (ok, out) = cli_outcome(s, &["grant", "add", subject, pattern, "pull"])?;
        assert!(!ok, "grant add {subject} {pattern} was accepted: {out}");
        assert!(out.contains(why), "grant add {subject} {pattern}: {out}");
    }
    let (ok, out) = cli_outcome(s, &["grant", "add", "user:dev", "team/*", "pull,*"])?;
    assert!(!ok && out.contains("unknown action"), "{out}");
    cli(s, &["grant", "add", "team:ops", "team/**", "pull"], "")?;
    cli(
        s,
        &["grant", "add", "user:dev", "team/*-dev", "pull,push"],
        "",
    )?;

    // The API refuses the same things with its INVALID / NOT_FOUND envelope.
    let admin = basic("admin", s.admin_password());
    let post = |body: serde_json::Value| -> Result<(u16, String)> {
        let res = request(
            s.addr(),
            "POST",
            "/api/v1/grants",
            &[
                ("Authorization", &admin),
                ("Content-Type", "application/json"),
            ],
            body.to_string().as_bytes(),
        )?;
        Ok((res.status, res.text()))
    };
    let (status, body) = post(
        serde_json::json!({"subject": "user:dev", "pattern": "team/***", "actions": ["pull"]}),
    )?;
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("INVALID") && body.contains("team/***"),
        "{body}"
    );
    let (status, body) = post(
        serde_json::json!({"subject": "user:ghost", "pattern": "team/**", "actions": ["pull"]}),
    )?;
    assert_eq!(status, 404, "{body}");
    let (status, body) = post(
        serde_json::json!({"subject": "user:dev", "pattern": "team/app", "actions": ["pull"]}),
    )?;
    assert_eq!(status, 201, "{body}");

    // The token endpoint validates scope names the same way before matching them.
    for scope in [
        "repository:Team/App:pull",
        "repository:team//x:pull",
        "repository:team/app:fly",
    ] {
        let res = request(
            s.addr(),
            "GET",
            &format!("/token?service=wharf&scope={scope}"),
            &[("Authorization", &basic("dev", "dev-pw"))],
            b"",
        )?;
        assert_eq!(res.status, 400, "{scope}: {}", res.text());
        assert!(res.text().contains("invalid_scope"), "{}", res.text());
    }
    drop(setup);

    // And so does the configuration file, naming the entry.
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[[auth.grants]]\nsubject = \"team:ops\"\nrepositories = \"team//x\"\nactions = [\"pull\"]\n",
    )?;
    let out = Command::new(WHARF)
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&path)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .output()?;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("auth.grants[0]") && stderr.contains("empty path component"),
        "{stderr}"
    );
    Ok(())
}

/// A registry token for `scopes` (each a `scope=` parameter), as a client gets one.
fn bearer_for(s: &WharfServer, auth: &str, scopes: &[&str]) -> Result<String> {
    let query: String = scopes.iter().map(|sc| format!("&scope={sc}")).collect();
    let res = request(
        s.addr(),
        "GET",
        &format!("/token?service=wharf{query}"),
        &[("Authorization", auth)],
        b"",
    )?;
    if res.status != 200 {
        bail!("token endpoint answered {}: {}", res.status, res.text());
    }
    let v: Value = serde_json::from_slice(&res.body)?;
    Ok(format!(
        "Bearer {}",
        v["token"].as_str().context("no token")?
    ))
}

/// Pushes `bytes` as a blob of `repo` in one request.
fn push_blob(s: &WharfServer, auth: &str, repo: &str, bytes: &[u8]) -> Result<String> {
    let digest = wharf_testkit::fixture::sha256_digest(bytes);
    let res = request(
        s.addr(),
        "POST",
        &format!("/v2/{repo}/blobs/uploads/?digest={digest}"),
        &[("Authorization", auth)],
        bytes,
    )?;
    if res.status != 201 {
        bail!(
            "blob push to {repo} answered {}: {}",
            res.status,
            res.text()
        );
    }
    Ok(digest)
}

#[test]
fn a_mount_with_a_token_for_the_target_alone_is_challenged_for_the_source() -> Result<()> {
    let setup = start(MATRIX_CONFIG)?;
    let s = &setup.server;
    cli(s, &["user", "add", "ci", "--password-stdin"], "ci-pw\n")?;
    let ci = basic("ci", "ci-pw");
    let admin = basic("admin", s.admin_password());
    let shared = push_blob(s, &ci, "team/src", b"a layer ci may read")?;
    let secret = push_blob(s, &admin, "secret/src", b"a layer ci may not read")?;
    let mount = |auth: &str, digest: &str, from: &str| {
        request(
            s.addr(),
            "POST",
            &format!("/v2/team/dst/blobs/uploads/?mount={digest}&from={from}"),
            &[("Authorization", auth), ("Content-Length", "0")],
            b"",
        )
    };

    // A token scoped to the target alone: 401 naming pull on the source as
    // well, so the client asks for a wider token instead of uploading again.
    let narrow = bearer_for(s, &ci, &["repository:team/dst:pull,push"])?;
    let res = mount(&narrow, &shared, "team/src")?;
    assert_eq!(res.status, 401, "{}", res.text());
    let challenge = res
        .header("www-authenticate")
        .unwrap_or_default()
        .to_owned();
    assert!(
        challenge.contains("repository:team/dst:pull,push")
            && challenge.contains("repository:team/src:pull")
            && challenge.contains("error=\"insufficient_scope\""),
        "{challenge}"
    );
    // The token the challenge asks for mounts.
    let wide = bearer_for(
        s,
        &ci,
        &["repository:team/dst:pull,push", "repository:team/src:pull"],
    )?;
    let res = mount(&wide, &shared, "team/src")?;
    assert_eq!(res.status, 201, "{}", res.text());
    let res = request(
        s.addr(),
        "HEAD",
        &format!("/v2/team/dst/blobs/{shared}"),
        &[("Authorization", &ci)],
        b"",
    )?;
    assert_eq!(res.status, 200);

    // A source the account may not read: no challenge (a new token would not
    // help, and the client would go round in circles), but an upload session.
    let res = mount(&narrow, &secret, "secret/src")?;
    assert_eq!(res.status, 202, "{}", res.text());
    assert!(res.header("location").is_some());
    let res = mount(&ci, &secret, "secret/src")?;
    assert_eq!(res.status, 202, "{}", res.text());
    let res = request(
        s.addr(),
        "HEAD",
        &format!("/v2/team/dst/blobs/{secret}"),
        &[("Authorization", &ci)],
        b"",
    )?;
    assert_eq!(res.status, 404, "a blob ci may not read leaked by mount");
    Ok(())
}
