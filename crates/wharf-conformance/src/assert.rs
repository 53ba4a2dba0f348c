//! Assertions on responses, each worded after the spec sentence it enforces.
//!
//! Failure messages always quote the request and the status, and for unexpected statuses the
//! start of the body, so a FAIL line is enough to tell what the registry said.

use crate::client::Resp;
use crate::content;
use crate::context::Ctx;
use crate::outcome::{ensure, fail, Failure, Feature, Outcome};

/// The status must be one of `expected`.
pub fn status(resp: &Resp, expected: &[u16]) -> Outcome {
    let got = resp.status.as_u16();
    ensure!(
        expected.contains(&got),
        "{}: expected {}: {}",
        resp.summary(),
        join_codes(expected),
        resp.snippet()
    );
    Ok(())
}

/// A header that the spec says MUST be present.
pub fn header<'a>(resp: &'a Resp, name: &str) -> Result<&'a str, Failure> {
    match resp.header(name) {
        Some(value) => Ok(value),
        None => fail!("{}: missing {name} header", resp.summary()),
    }
}

/// The `Location` header, which the spec requires on every 201 and 202 of the push flow.
pub fn location(resp: &Resp) -> Result<String, Failure> {
    let value = header(resp, "Location")?;
    ensure!(
        !value.is_empty(),
        "{}: empty Location header",
        resp.summary()
    );
    Ok(value.to_owned())
}

/// `Docker-Content-Digest`: when present it MUST equal the content's digest; its presence is
/// only a SHOULD in the v1.1.1 text (a MUST on pulls in the spec's later revision), so absence
/// is reported under the `docker-headers` feature.
pub fn digest_header(ctx: &Ctx, resp: &Resp, expected: &str) -> Outcome {
    match resp.header("Docker-Content-Digest") {
        Some(got) => {
            ensure!(
                got == expected,
                "{}: Docker-Content-Digest is {got}, expected {expected}",
                resp.summary()
            );
            Ok(())
        }
        None => ctx.missing(
            Feature::DockerHeaders,
            format!("{}: no Docker-Content-Digest header", resp.summary()),
        ),
    }
}

/// `Docker-Content-Digest` on a pull: "If present, the value of this header MUST be a digest
/// matching that of the response body"; it "MAY differ from the provided digest" when the
/// registry uses another algorithm, so sha256 and sha512 of the content are both accepted.
/// HEAD responses are checked against the content that a GET would return.
pub fn content_digest(ctx: &Ctx, resp: &Resp, content: &[u8]) -> Outcome {
    let Some(got) = resp.header("Docker-Content-Digest") else {
        return ctx.missing(
            Feature::DockerHeaders,
            format!("{}: no Docker-Content-Digest header", resp.summary()),
        );
    };
    let candidates = [content::sha256(content), content::sha512(content)];
    ensure!(
        candidates.iter().any(|it| it == got),
        "{}: Docker-Content-Digest {got} does not match the content",
        resp.summary()
    );
    Ok(())
}

/// The upload `Range` header, which the spec spells `0-<end-of-range>` with an inclusive end.
pub fn upload_range(resp: &Resp, end: u64) -> Outcome {
    let got = header(resp, "Range")?;
    let expected = format!("0-{end}");
    ensure!(
        got == expected,
        "{}: Range is {got:?}, expected {expected:?}",
        resp.summary()
    );
    Ok(())
}

/// The body must equal the expected bytes exactly.
pub fn body(resp: &Resp, expected: &[u8]) -> Outcome {
    if let Some(err) = &resp.body_error {
        fail!("{}: body unreadable: {err}", resp.summary());
    }
    if resp.body.as_ref() != expected {
        fail!(
            "{}: body differs from what was pushed ({} bytes received, {} expected{})",
            resp.summary(),
            resp.body.len(),
            expected.len(),
            first_difference(&resp.body, expected)
                .map(|idx| format!(", first difference at byte {idx}"))
                .unwrap_or_default()
        );
    }
    Ok(())
}

/// `Content-Length`, when the spec requires it to carry the content's size.
pub fn content_length(resp: &Resp, expected: usize) -> Outcome {
    let got = header(resp, "Content-Length")?;
    ensure!(
        got.trim() == expected.to_string(),
        "{}: Content-Length is {got}, expected {expected}",
        resp.summary()
    );
    Ok(())
}

/// An error response: the status must be one of `statuses`, and a JSON body must follow the
/// spec's `{"errors":[{"code": ...}]}` shape with one of `codes`.
///
/// The spec lets a 4xx body be "in any format", but "if the response body is in JSON format, it
/// MUST have the following format"; a non-JSON body is therefore reported under the
/// `error-body` feature rather than failed outright.
/// HEAD responses have no body, so only their status is checked.
pub fn error(ctx: &Ctx, resp: &Resp, statuses: &[u16], codes: &[&str]) -> Outcome {
    status(resp, statuses)?;
    if resp.method == reqwest::Method::HEAD {
        return Ok(());
    }
    let value: serde_json::Value = match serde_json::from_slice(&resp.body) {
        Ok(value) => value,
        Err(_) => {
            return ctx.missing(
                Feature::ErrorBody,
                format!(
                    "{}: error body is not JSON, so no code {} to check: {}",
                    resp.summary(),
                    codes.join("/"),
                    resp.snippet()
                ),
            )
        }
    };
    let found = error_codes(resp, &value)?;
    ensure!(
        found.iter().any(|it| codes.contains(&it.as_str())),
        "{}: error codes {found:?}, expected {}",
        resp.summary(),
        codes.join(" or ")
    );
    Ok(())
}

/// The codes of a spec error envelope, checking its shape on the way.
pub fn error_codes(resp: &Resp, value: &serde_json::Value) -> Result<Vec<String>, Failure> {
    let Some(errors) = value.get("errors").and_then(|it| it.as_array()) else {
        fail!(
            "{}: JSON error body has no \"errors\" array: {}",
            resp.summary(),
            resp.snippet()
        );
    };
    ensure!(
        !errors.is_empty(),
        "{}: \"errors\" array is empty",
        resp.summary()
    );
    let mut codes = Vec::with_capacity(errors.len());
    for entry in errors {
        let Some(code) = entry.get("code").and_then(|it| it.as_str()) else {
            fail!(
                "{}: error entry without a string \"code\": {entry}",
                resp.summary()
            );
        };
        // Spec: "The code field MUST be a unique identifier, containing only uppercase
        // alphabetic characters and underscores."
        ensure!(
            !code.is_empty() && code.chars().all(|c| c.is_ascii_uppercase() || c == '_'),
            "{}: error code {code:?} is not uppercase letters and underscores",
            resp.summary()
        );
        if let Some(message) = entry.get("message") {
            ensure!(
                message.is_string(),
                "{}: error \"message\" is not a string: {message}",
                resp.summary()
            );
        }
        codes.push(code.to_owned());
    }
    Ok(codes)
}

/// Neither a server error nor a success: for requests the registry must refuse, where the spec
/// does not fix which 4xx (or redirect) it uses.
pub fn refused(resp: &Resp) -> Outcome {
    let got = resp.status;
    ensure!(
        !got.is_server_error(),
        "{}: server error for invalid input: {}",
        resp.summary(),
        resp.snippet()
    );
    ensure!(
        !got.is_success(),
        "{}: invalid input was accepted: {}",
        resp.summary(),
        resp.snippet()
    );
    Ok(())
}

fn join_codes(codes: &[u16]) -> String {
    codes
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(" or ")
}

fn first_difference(a: &[u8], b: &[u8]) -> Option<usize> {
    a.iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .or_else(|| (a.len() != b.len()).then(|| a.len().min(b.len())))
}
