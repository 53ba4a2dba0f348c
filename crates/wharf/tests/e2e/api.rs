//! The management API end to end: an administrator provisions a user, a team,
//! a grant and a robot token over `/api/v1`, the token then pushes with skopeo's
//! stock client flow (raw HTTP here), revocation takes effect, and every error
//! comes back in the API's one envelope with the right status.

use anyhow::{Context, Result};
use serde_json::{json, Value};
use wharf_testkit::http::{basic_auth, request, Response};
use wharf_testkit::WharfServer;

const WHARF: &str = env!("CARGO_BIN_EXE_wharf");

fn call(
    s: &WharfServer,
    auth: Option<&str>,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> Result<Response> {
    let mut headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", *a)).collect();
    headers.push(("Content-Type", "application/json"));
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    request(s.addr(), method, path, &headers, body.as_bytes())
}

fn json_of(res: &Response) -> Result<Value> {
    serde_json::from_slice(&res.body).with_context(|| format!("not JSON: {}", res.text()))
}

fn error_code(res: &Response) -> String {
    json_of(res)
        .ok()
        .and_then(|v| v["error"]["code"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

#[test]
fn administrators_provision_everything_over_the_api() -> Result<()> {
    let s = WharfServer::start(WHARF)?;
    let admin_header = basic_auth("admin", s.admin_password());
    let admin = Some(admin_header.as_str());

    // Users: create, duplicate, list, password change.
    let res = call(
        &s,
        admin,
        "POST",
        "/api/v1/users",
        Some(json!({"name": "alice", "password": "alice-pw"})),
    )?;
    assert_eq!(res.status, 201, "{}", res.text());
    let res = call(
        &s,
        admin,
        "POST",
        "/api/v1/users",
        Some(json!({"name": "alice"})),
    )?;
    assert_eq!((res.status, error_code(&res).as_str()), (409, "CONFLICT"));
    let res = call(
        &s,
        admin,
        "POST",
        "/api/v1/users",
        Some(json!({"name": "ci", "robot": true})),
    )?;
    assert_eq!(res.status, 201);
    let res = call(
        &s,
        admin,
        "POST",
        "/api/v1/users",
        Some(json!({"name": "gen"})),
    )?;
    assert_eq!(res.status, 201);
    let generated = json_of(&res)?["password"]
        .as_str()
        .context("generated password")?
        .to_owned();
    let res = request(
        s.addr(),
        "GET",
        "/v2/",
        &[("Authorization", &basic_auth("gen", &generated))],
        b"",
    )?;
    assert_eq!(res.status, 200, "the generated password works");
    let users = json_of(&call(&s, admin, "GET", "/api/v1/users", None)?)?;
    let names: Vec<&str> = users
        .as_array()
        .context("array")?
        .iter()
        .filter_map(|u| u["name"].as_str())
        .collect();
    assert_eq!(names, vec!["admin", "alice", "ci", "gen"]);
    let res = call(
        &s,
        admin,
        "PUT",
        "/api/v1/users/alice/password",
        Some(json!({"password": "new-pw"})),
    )?;
    assert_eq!(res.status, 204);
    let res = request(
        s.addr(),
        "GET",
        "/v2/",
        &[("Authorization", &basic_auth("alice", "new-pw"))],
        b"",
    )?;
    assert_eq!(res.status, 200);

    // Teams and grants.
    assert_eq!(
        call(
            &s,
            admin,
            "POST",
            "/api/v1/teams",
            Some(json!({"name": "builders"}))
        )?
        .status,
        201
    );
    assert_eq!(
        call(&s, admin, "PUT", "/api/v1/teams/builders/members/ci", None)?.status,
        204
    );
    let res = call(
        &s,
        admin,
        "POST",
        "/api/v1/grants",
        Some(json!({"subject": "team:builders", "pattern": "ci/**", "actions": ["pull", "push"]})),
    )?;
    assert_eq!(res.status, 201);
    let grant_id = json_of(&res)?["id"].as_str().context("id")?.to_owned();
    let res = call(
        &s,
        admin,
        "POST",
        "/api/v1/grants",
        Some(json!({"subject": "anonymous", "pattern": "**", "actions": ["push"]})),
    )?;
    assert_eq!(
        (res.status, error_code(&res).as_str()),
        (400, "INVALID"),
        "anonymous push must be refused"
    );

    // A robot token, scoped; it can push where the team may.
    let res = call(
        &s,
        admin,
        "POST",
        "/api/v1/tokens",
        Some(
            json!({"user": "ci", "scopes": [{"pattern": "ci/**", "actions": ["pull", "push"]}], "description": "pipeline"}),
        ),
    )?;
    assert_eq!(res.status, 201, "{}", res.text());
    let token = json_of(&res)?;
    let secret = token["token"].as_str().context("token")?.to_owned();
    let token_id = token["id"].as_str().context("id")?.to_owned();
    let robot = basic_auth("ci", &secret);
    let res = request(
        s.addr(),
        "POST",
        "/v2/ci/app/blobs/uploads/",
        &[("Authorization", &robot)],
        b"",
    )?;
    assert_eq!(res.status, 202, "{}", res.text());
    // The robot is not an administrator.
    let res = call(&s, Some(&robot), "GET", "/api/v1/users", None)?;
    assert_eq!((res.status, error_code(&res).as_str()), (403, "DENIED"));
    // Revocation takes effect.
    assert_eq!(
        call(
            &s,
            admin,
            "DELETE",
            &format!("/api/v1/tokens/{token_id}"),
            None
        )?
        .status,
        204
    );
    let res = request(
        s.addr(),
        "POST",
        "/v2/ci/app/blobs/uploads/",
        &[("Authorization", &robot)],
        b"",
    )?;
    assert_eq!(res.status, 401);
    assert_eq!(
        call(
            &s,
            admin,
            "DELETE",
            &format!("/api/v1/grants/{grant_id}"),
            None
        )?
        .status,
        204
    );
    assert_eq!(
        call(
            &s,
            admin,
            "DELETE",
            &format!("/api/v1/grants/{grant_id}"),
            None
        )?
        .status,
        404
    );

    // The envelope for everything else that can go wrong.
    let res = call(&s, None, "GET", "/api/v1/users", None)?;
    assert_eq!(
        (res.status, error_code(&res).as_str()),
        (401, "UNAUTHORIZED")
    );
    assert!(res
        .header("www-authenticate")
        .is_some_and(|h| h.starts_with("Basic")));
    let alice = basic_auth("alice", "new-pw");
    let res = call(&s, Some(&alice), "GET", "/api/v1/users", None)?;
    assert_eq!((res.status, error_code(&res).as_str()), (403, "DENIED"));
    let res = request(
        s.addr(),
        "POST",
        "/api/v1/users",
        &[
            ("Authorization", admin_header.as_str()),
            ("Content-Type", "application/json"),
        ],
        b"{not json",
    )?;
    assert_eq!((res.status, error_code(&res).as_str()), (400, "INVALID"));
    let res = call(
        &s,
        admin,
        "POST",
        "/api/v1/users",
        Some(json!({"name": "../etc"})),
    )?;
    assert_eq!((res.status, error_code(&res).as_str()), (400, "INVALID"));
    let res = call(
        &s,
        admin,
        "POST",
        "/api/v1/users",
        Some(json!({"name": "x", "unexpected": 1})),
    )?;
    assert_eq!((res.status, error_code(&res).as_str()), (400, "INVALID"));
    let res = call(&s, admin, "DELETE", "/api/v1/users/nobody", None)?;
    assert_eq!((res.status, error_code(&res).as_str()), (404, "NOT_FOUND"));
    let res = call(&s, admin, "GET", "/api/v1/nothing-here", None)?;
    assert_eq!((res.status, error_code(&res).as_str()), (404, "NOT_FOUND"));

    // Administrative changes are audited.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let log = json_of(&call(&s, admin, "GET", "/api/v1/audit?limit=500", None)?)?;
    let entries = log.as_array().context("array")?;
    assert!(entries.iter().any(|e| e["action"] == "admin"
        && e["resource"] == "POST /api/v1/users"
        && e["account"] == "admin"));
    Ok(())
}
