//! What the server's log looks like to an operator and to a log collector: one access line per
//! request, JSON that parses when asked for, and no colour codes in a file.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use serde_json::Value;
use wharf_testkit::http::{self, basic_auth};

use crate::raw_server::{config_with_password, serve_command, RawServer};
use crate::support::scratch;

/// Waits for the access line of `request_id` (written once the response body is done).
fn access_line(server: &RawServer, request_id: &str) -> Result<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = server.stderr();
        for line in log.lines() {
            let event: Value = serde_json::from_str(line)
                .with_context(|| format!("a log line is not JSON: {line:?}"))?;
            if event["message"] == "access" && event["request_id"] == request_id {
                return Ok(event);
            }
        }
        ensure!(
            Instant::now() < deadline,
            "no access line for {request_id}:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn json_logs_carry_one_access_line_per_request() -> Result<()> {
    let tmp = scratch()?;
    let (config, password) = config_with_password(tmp.path(), "[log]\nformat = \"json\"\n")?;
    let data = tmp.path().join("data");
    let server = RawServer::start_ready(serve_command(
        tmp.path(),
        Some(&config),
        "127.0.0.1:0",
        &data,
    ))?;
    let auth = basic_auth("admin", &password);
    let signed_in = http::request(
        server.addr(),
        "GET",
        "/v2/",
        &[("Authorization", &auth), ("X-Request-Id", "op-signed-in")],
        b"",
    )?;
    ensure!(signed_in.status == 200, "GET /v2/: {}", signed_in.status);
    let anonymous = http::request(
        server.addr(),
        "GET",
        "/v2/ops/logs/tags/list",
        &[("X-Request-Id", "op-anonymous")],
        b"",
    )?;
    ensure!(anonymous.status == 401, "anonymous: {}", anonymous.status);
    // The token endpoint and the management API name their caller too.
    for (path, id) in [
        ("/token?service=wharf", "op-token"),
        ("/api/v1/users", "op-api"),
    ] {
        let res = http::request(
            server.addr(),
            "GET",
            path,
            &[("Authorization", &auth), ("X-Request-Id", id)],
            b"",
        )?;
        ensure!(res.status == 200, "GET {path}: {}", res.status);
    }
    let health = http::request(server.addr(), "GET", "/healthz", &[], b"")?;
    let health_id = health
        .header("x-request-id")
        .context("no X-Request-Id on /healthz")?
        .to_owned();

    let line = access_line(&server, "op-signed-in")?;
    ensure!(line["method"] == "GET", "{line}");
    ensure!(line["path"] == "/v2/", "{line}");
    ensure!(line["status"] == 200, "{line}");
    ensure!(line["principal"] == "admin", "{line}");
    ensure!(
        line["bytes"].as_u64() == Some(signed_in.body.len() as u64),
        "bytes vs a {}-byte body: {line}",
        signed_in.body.len()
    );
    ensure!(line["duration_ms"].as_f64().is_some(), "{line}");
    ensure!(line["level"] == "INFO", "{line}");

    let line = access_line(&server, "op-anonymous")?;
    ensure!(line["path"] == "/v2/ops/logs/tags/list", "{line}");
    ensure!(line["status"] == 401, "{line}");
    ensure!(line["principal"] == "-", "{line}");
    ensure!(
        line["bytes"].as_u64() == Some(anonymous.body.len() as u64),
        "{line}"
    );

    for id in ["op-token", "op-api"] {
        let line = access_line(&server, id)?;
        ensure!(line["principal"] == "admin", "{line}");
    }

    // A generated id is the one the client got back.
    let line = access_line(&server, &health_id)?;
    ensure!(
        line["path"] == "/healthz" && line["status"] == 200,
        "{line}"
    );
    Ok(())
}

#[test]
fn text_logs_to_a_file_have_no_colour_codes() -> Result<()> {
    let tmp = scratch()?;
    let (config, password) = config_with_password(tmp.path(), "")?;
    let data = tmp.path().join("data");
    let server = RawServer::start_ready(serve_command(
        tmp.path(),
        Some(&config),
        "127.0.0.1:0",
        &data,
    ))?;
    let root = http::request(
        server.addr(),
        "GET",
        "/v2/",
        &[
            ("Authorization", &basic_auth("admin", &password)),
            ("X-Request-Id", "op-text"),
        ],
        b"",
    )?;
    ensure!(root.status == 200, "GET /v2/: {}", root.status);
    let deadline = Instant::now() + Duration::from_secs(10);
    let line = loop {
        let log = server.stderr();
        if let Some(line) = log
            .lines()
            .find(|l| l.contains("access") && l.contains("op-text"))
        {
            break line.to_owned();
        }
        ensure!(Instant::now() < deadline, "no access line:\n{log}");
        std::thread::sleep(Duration::from_millis(100));
    };
    for field in [
        "method=GET",
        "path=/v2/",
        "status=200",
        "principal=admin",
        "request_id=op-text",
    ] {
        ensure!(line.contains(field), "{field} missing from {line:?}");
    }
    let log = server.stderr();
    ensure!(
        !log.contains('\u{1b}'),
        "colour codes in a log file:\n{log}"
    );
    Ok(())
}
