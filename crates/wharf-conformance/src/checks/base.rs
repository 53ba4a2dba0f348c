//! The API version check, end-1 `GET /v2/`.

use reqwest::Method;

use crate::assert;
use crate::context::Ctx;
use crate::outcome::{ensure, Feature, Outcome};
use crate::runner::{check, Check};

pub(super) fn checks() -> Vec<Check> {
    vec![
        check!(
            "base.v2",
            "GET /v2/ answers 200 (401 only without credentials)",
            v2
        ),
        check!(
            "base.v2.api-version",
            "GET /v2/ sets Docker-Distribution-API-Version: registry/2.0",
            api_version
        ),
        check!(
            "base.v2.anonymous",
            "GET /v2/ without credentials answers 200, or 401 with WWW-Authenticate",
            anonymous
        ),
    ]
}

async fn v2(ctx: &Ctx) -> Outcome {
    let resp = ctx.client.call(Method::GET, "/v2/").await?;
    if ctx.client.has_auth() {
        // With credentials the spec's "200 OK ... the registry implements this specification"
        // is the only acceptable answer.
        assert::status(&resp, &[200])
    } else {
        // Without credentials an auth-protected registry answers 401 (end-1 lists it).
        assert::status(&resp, &[200, 401])?;
        if resp.status == 401 {
            assert::header(&resp, "WWW-Authenticate")?;
        }
        Ok(())
    }
}

async fn api_version(ctx: &Ctx) -> Outcome {
    let resp = ctx.client.call(Method::GET, "/v2/").await?;
    assert::status(&resp, &[200, 401])?;
    // The v1.1 text lists this as a legacy Docker header that is OPTIONAL for registries (the
    // Docker-era text said SHOULD), hence the feature rather than a hard failure.
    match resp.header("Docker-Distribution-API-Version") {
        Some("registry/2.0") => Ok(()),
        Some(other) => ctx.missing(
            Feature::DockerHeaders,
            format!(
                "{}: Docker-Distribution-API-Version is {other:?}",
                resp.summary()
            ),
        ),
        None => ctx.missing(
            Feature::DockerHeaders,
            format!(
                "{}: no Docker-Distribution-API-Version header",
                resp.summary()
            ),
        ),
    }
}

async fn anonymous(ctx: &Ctx) -> Outcome {
    let builder = ctx.client.request_anonymous(Method::GET, "/v2/")?;
    let resp = ctx.client.send(builder).await?;
    assert::status(&resp, &[200, 401])?;
    if resp.status == 401 {
        // RFC 9110 section 11.6.1: a 401 MUST carry WWW-Authenticate, and the spec tells clients
        // to act on it.
        let challenge = assert::header(&resp, "WWW-Authenticate")?;
        ensure!(
            !challenge.trim().is_empty(),
            "{}: empty WWW-Authenticate",
            resp.summary()
        );
    }
    Ok(())
}
