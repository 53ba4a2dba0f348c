//! Listing tags (end-8a, end-8b): order, `n`, `last` and `Link` pagination.
//!
//! All checks use one sub-repository holding exactly [`TAGS`], pushed out of order, so every
//! expected page is known. Pages may be shorter than `n` only when a `Link` header follows
//! ("MAY return fewer than <int> results, but only when the total number of tags ... is less
//! than <int> or a Link header is provided"), and the `Link` target is treated as opaque.

use reqwest::Method;

use super::paging::{self, Page};
use crate::assert;
use crate::content;
use crate::context::Ctx;
use crate::fixtures::{push_image, push_manifest, repo_path};
use crate::outcome::{ensure, Failure, Outcome};
use crate::runner::{check, Check};

/// Pushed in this order; listed sorted.
const TAGS: [&str; 5] = ["delta", "alpha", "echo", "bravo", "charlie"];

pub(super) fn checks() -> Vec<Check> {
    vec![
        check!(
            "tags.list",
            "GET tags/list answers 200 with the repository name and every tag in lexical order",
            list
        ),
        check!(
            "tags.list.n",
            "?n=2 returns the first two tags, and a Link header if present leads to the next ones",
            first_page
        ),
        check!(
            "tags.list.n-last",
            "?n=2&last=bravo returns the two tags after bravo",
            n_last
        ),
        check!(
            "tags.list.last",
            "?last=charlie without n returns the tags after charlie",
            last_only
        ),
        check!(
            "tags.list.n-zero",
            "?n=0 returns an empty list and no Link header",
            n_zero
        ),
        check!(
            "tags.list.paginate",
            "following Link (or last=) page by page with n=2 yields every tag once, in order",
            paginate
        ),
        check!(
            "tags.list.unknown-repo",
            "tags/list of a repository that does not exist answers 404 NAME_UNKNOWN",
            unknown_repo
        ),
    ]
}

fn sorted_tags() -> Vec<String> {
    let mut tags: Vec<String> = TAGS.iter().map(|it| (*it).to_owned()).collect();
    tags.sort();
    tags
}

/// Creates the tag repository (idempotently: rerunning only moves the same tags).
async fn setup(ctx: &Ctx) -> Result<String, Failure> {
    let repo = ctx.sub_repo("tags");
    let image = push_image(ctx, &repo, None).await?;
    for tag in TAGS {
        push_manifest(ctx, &repo, tag, &image.manifest).await?;
    }
    Ok(repo)
}

async fn get_page(ctx: &Ctx, repo: &str, query: &str) -> Result<Page, Failure> {
    let resp = ctx
        .client
        .call(Method::GET, &repo_path(repo, &format!("tags/list{query}")))
        .await?;
    paging::parse(&resp, "tags", Some(repo))
}

async fn list(ctx: &Ctx) -> Outcome {
    let repo = setup(ctx).await?;
    let page = get_page(ctx, &repo, "").await?;
    // Without `n` a registry may still paginate; collect through any Link it sends.
    let all = paging::collect(ctx, page, 10).await?;
    paging::expect_sorted(&all)?;
    ensure!(
        all == sorted_tags(),
        "tags are {all:?}, expected {:?}",
        sorted_tags()
    );
    Ok(())
}

async fn first_page(ctx: &Ctx) -> Outcome {
    let repo = setup(ctx).await?;
    let page = get_page(ctx, &repo, "?n=2").await?;
    paging::expect_page(&page, &sorted_tags(), 2)?;
    if let Some(next) = &page.next {
        let next = paging::follow(ctx, next, "tags", Some(&repo)).await?;
        paging::expect_continuation(&next, &sorted_tags()[page.items.len()..])?;
    }
    Ok(())
}

async fn n_last(ctx: &Ctx) -> Outcome {
    let repo = setup(ctx).await?;
    let page = get_page(ctx, &repo, "?n=2&last=bravo").await?;
    paging::expect_page(&page, &sorted_tags()[2..], 2)
}

async fn last_only(ctx: &Ctx) -> Outcome {
    let repo = setup(ctx).await?;
    let page = get_page(ctx, &repo, "?last=charlie").await?;
    let all = paging::collect(ctx, page, 10).await?;
    let expected = &sorted_tags()[3..];
    ensure!(
        all == expected,
        "tags after charlie are {all:?}, expected {expected:?}"
    );
    Ok(())
}

async fn n_zero(ctx: &Ctx) -> Outcome {
    let repo = setup(ctx).await?;
    let resp = ctx
        .client
        .call(Method::GET, &repo_path(&repo, "tags/list?n=0"))
        .await?;
    // "When n is zero, this endpoint MUST return an empty list, and MUST NOT include a Link
    // header."
    let page = paging::parse(&resp, "tags", Some(&repo))?;
    ensure!(
        page.items.is_empty(),
        "{}: {} tags for n=0",
        resp.summary(),
        page.items.len()
    );
    ensure!(
        resp.header("Link").is_none(),
        "{}: Link header present for n=0",
        resp.summary()
    );
    Ok(())
}

async fn paginate(ctx: &Ctx) -> Outcome {
    let repo = setup(ctx).await?;
    let base = repo_path(&repo, "tags/list");
    let all = paging::walk(ctx, &base, 2, "tags", Some(&repo)).await?;
    ensure!(
        all == sorted_tags(),
        "paged tags are {all:?}, expected {:?}",
        sorted_tags()
    );
    Ok(())
}

async fn unknown_repo(ctx: &Ctx) -> Outcome {
    let repo = ctx.sub_repo(&format!("never-pushed-{}", content::unique_token()));
    let resp = ctx
        .client
        .call(Method::GET, &repo_path(&repo, "tags/list"))
        .await?;
    // end-8a fails with 404; NAME_UNKNOWN is "repository name not known to registry".
    assert::error(ctx, &resp, &[404], &["NAME_UNKNOWN"])
}
