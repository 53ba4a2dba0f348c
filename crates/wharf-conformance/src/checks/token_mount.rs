//! Cross-repository mounts under Docker token authentication: a token scoped to
//! the target alone must get a challenge that also names pull on `from`.
//!
//! The OCI text says nothing of authentication; this is distribution's
//! behaviour (its `requiredAccess` for a mount includes pull on the source),
//! which clients rely on: containerd and docker fetch a wider token on such a
//! challenge and retry, so the mount succeeds instead of re-uploading the layer.

use reqwest::header::{AUTHORIZATION, CONTENT_LENGTH};
use reqwest::Method;

use super::blob_push::verify_pullable;
use crate::assert;
use crate::client::Resp;
use crate::content::{media, Blob};
use crate::context::Ctx;
use crate::fixtures::{push_blob, repo_path};
use crate::outcome::{ensure, fail, Failure, Feature, Outcome};
use crate::runner::{check, Check};

pub(super) fn checks() -> Vec<Check> {
    vec![check!(
        "auth.token-mount.challenge",
        "a mount with a token scoped to the target alone answers 401 naming pull on `from`; the wider token mounts",
        challenge_names_the_source
    )]
}

/// The parameters of a `WWW-Authenticate: Bearer k="v",…` challenge.
fn bearer_params(challenge: &str) -> Option<Vec<(String, String)>> {
    let rest = challenge.trim().strip_prefix("Bearer ")?;
    let mut params = Vec::new();
    let mut rest = rest.trim();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=')?;
        let after = after.strip_prefix('"')?;
        let end = after.find('"')?;
        params.push((key.trim().to_owned(), after[..end].to_owned()));
        rest = after[end + 1..].trim_start_matches(',').trim();
    }
    Some(params)
}

fn param<'a>(params: &'a [(String, String)], key: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// A registry token for `scopes` from the realm, signed in with the run's credentials.
async fn token(
    ctx: &Ctx,
    realm: &str,
    service: &str,
    scopes: &[String],
) -> Result<String, Failure> {
    let mut url = ctx.client.resolve(realm)?;
    url.query_pairs_mut().append_pair("service", service);
    for scope in scopes {
        url.query_pairs_mut().append_pair("scope", scope);
    }
    let resp = ctx
        .client
        .send(ctx.client.request_url(Method::GET, url))
        .await?;
    assert::status(&resp, &[200]).map_err(|it| it.context("fetching a token"))?;
    let body = resp.json()?;
    match body["token"].as_str().or(body["access_token"].as_str()) {
        Some(token) => Ok(token.to_owned()),
        None => fail!("token response without a token: {}", resp.snippet()),
    }
}

async fn mount_with(ctx: &Ctx, token: &str, blob: &Blob) -> Result<Resp, Failure> {
    let path = repo_path(
        &ctx.repo,
        &format!(
            "blobs/uploads/?mount={}&from={}",
            blob.digest, ctx.cross_repo
        ),
    );
    let builder = ctx
        .client
        .request_anonymous(Method::POST, &path)?
        .header(AUTHORIZATION, format!("Bearer {token}"))
        .header(CONTENT_LENGTH, "0");
    ctx.client.send(builder).await
}

async fn challenge_names_the_source(ctx: &Ctx) -> Outcome {
    let probe = ctx
        .client
        .send(ctx.client.request_anonymous(Method::GET, "/v2/")?)
        .await?;
    let params = probe
        .header("www-authenticate")
        .and_then(bearer_params)
        .filter(|_| probe.status == 401 && ctx.client.has_auth());
    let Some(params) = params else {
        return ctx.missing(
            Feature::TokenMount,
            format!(
                "{}: no Bearer challenge on /v2/, or no --basic-auth to fetch tokens with",
                probe.summary()
            ),
        );
    };
    let (Some(realm), Some(service)) = (param(&params, "realm"), param(&params, "service")) else {
        fail!("Bearer challenge without realm or service: {params:?}");
    };
    let blob = Blob::layer(media::OCI_LAYER, 700);
    push_blob(ctx, &ctx.cross_repo, &blob).await?;
    let target = format!("repository:{}:pull,push", ctx.repo);
    let source = format!("repository:{}:pull", ctx.cross_repo);

    let narrow = token(ctx, realm, service, std::slice::from_ref(&target)).await?;
    let resp = mount_with(ctx, &narrow, &blob).await?;
    ensure!(
        resp.status == 401,
        "a mount with a token lacking pull on `from` answered {} instead of a 401 challenge naming {source}",
        resp.summary()
    );
    let challenge = resp.header("www-authenticate").unwrap_or_default();
    let scopes = bearer_params(challenge)
        .and_then(|p| param(&p, "scope").map(str::to_owned))
        .unwrap_or_default();
    ensure!(
        scopes.split(' ').any(|s| s == source) && scopes.split(' ').any(|s| s == target),
        "the challenge should name {target} and {source}, got {challenge:?}"
    );

    let wide = token(ctx, realm, service, &[target, source]).await?;
    let resp = mount_with(ctx, &wide, &blob).await?;
    assert::status(&resp, &[201]).map_err(|it| it.context("mounting with the wider token"))?;
    let location = assert::location(&resp)?;
    verify_pullable(ctx, &ctx.repo, &location, &blob).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_are_parsed() {
        let p = bearer_params(
            r#"Bearer realm="http://h:5000/token",service="wharf",scope="repository:a:pull,push repository:b:pull",error="insufficient_scope""#,
        )
        .unwrap();
        assert_eq!(param(&p, "realm"), Some("http://h:5000/token"));
        assert_eq!(param(&p, "service"), Some("wharf"));
        assert_eq!(
            param(&p, "scope"),
            Some("repository:a:pull,push repository:b:pull")
        );
        assert_eq!(param(&p, "error"), Some("insufficient_scope"));
        assert!(bearer_params(r#"Basic realm="x""#).is_none());
    }
}
