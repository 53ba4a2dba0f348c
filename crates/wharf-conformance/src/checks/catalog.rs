//! `GET /v2/_catalog`, the repository list with `n`, `last` and `Link` pagination.
//!
//! The catalog is Docker heritage, not part of the OCI spec, so a registry without it (404) is
//! reported under the `catalog` feature. Its pagination is judged by the same rules as the
//! spec's tag list. The registry may hold any number of other repositories, so the checks only
//! look at the neighbourhood of this run's three `cat-*` repositories, reached through `last`.

use reqwest::Method;

use super::paging::{self, Page};
use crate::context::Ctx;
use crate::fixtures::push_image;
use crate::outcome::{ensure, Failure, Feature, Outcome};
use crate::runner::{check, Check};

const NAMES: [&str; 3] = ["cat-a", "cat-b", "cat-c"];

pub(super) fn checks() -> Vec<Check> {
    vec![
        check!(
            "catalog.list",
            "GET /v2/_catalog answers 200 with repositories in lexical order",
            list
        ),
        check!(
            "catalog.n",
            "?n=1 returns at most one repository, with a Link header when it returns none",
            n_one
        ),
        check!(
            "catalog.n-last",
            "?n=2&last=<repo> returns the two repositories after it",
            n_last
        ),
        check!(
            "catalog.paginate",
            "n=1 pages from `last` continue through Link (or last=) in order",
            paginate
        ),
    ]
}

/// Pushes one image into each `cat-*` repository; returns their full names, sorted.
async fn setup(ctx: &Ctx) -> Result<Vec<String>, Failure> {
    let mut repos = Vec::new();
    for name in NAMES {
        let repo = ctx.sub_repo(name);
        push_image(ctx, &repo, Some("latest")).await?;
        repos.push(repo);
    }
    Ok(repos)
}

/// GETs a catalog page; `None` when the registry has no catalog and that is allowed.
async fn get_page(ctx: &Ctx, query: &str) -> Result<Option<Page>, Failure> {
    let resp = ctx
        .client
        .call(Method::GET, &format!("/v2/_catalog{query}"))
        .await?;
    if resp.status == 404 || resp.status == 405 {
        ctx.missing(
            Feature::Catalog,
            format!("{}: {}", resp.summary(), resp.snippet()),
        )?;
        return Ok(None);
    }
    paging::parse(&resp, "repositories", None).map(Some)
}

async fn list(ctx: &Ctx) -> Outcome {
    setup(ctx).await?;
    let Some(page) = get_page(ctx, "").await? else {
        return Ok(());
    };
    paging::expect_sorted(&page.items)
}

async fn n_one(ctx: &Ctx) -> Outcome {
    setup(ctx).await?;
    let Some(page) = get_page(ctx, "?n=1").await? else {
        return Ok(());
    };
    // At least three repositories exist, so an empty page must point onwards.
    paging::expect_page(&page, &page.items, 1)?;
    ensure!(
        !page.items.is_empty() || page.next.is_some(),
        "empty first page without a Link header"
    );
    Ok(())
}

async fn n_last(ctx: &Ctx) -> Outcome {
    let repos = setup(ctx).await?;
    let Some(page) = get_page(ctx, &format!("?n=2&last={}", repos[0])).await? else {
        return Ok(());
    };
    paging::expect_page(&page, &repos[1..], 2)
}

async fn paginate(ctx: &Ctx) -> Outcome {
    let repos = setup(ctx).await?;
    let Some(mut page) = get_page(ctx, &format!("?n=1&last={}", repos[0])).await? else {
        return Ok(());
    };
    let mut seen = Vec::new();
    // Two repositories follow `cat-a` directly; later ones (other checks' repositories, other
    // tenants) are not ours to judge.
    for _ in 0..4 {
        ensure!(
            page.items.len() <= 1,
            "{} entries for n=1: {:?}",
            page.items.len(),
            page.items
        );
        seen.extend(page.items.iter().cloned());
        if seen.len() >= 2 {
            break;
        }
        page = match (&page.next, seen.last()) {
            (Some(next), _) => paging::follow(ctx, next, "repositories", None).await?,
            (None, Some(last)) => match get_page(ctx, &format!("?n=1&last={last}")).await? {
                Some(it) => it,
                None => return Ok(()),
            },
            (None, None) => break,
        };
    }
    ensure!(
        seen.len() >= 2 && seen[..2] == repos[1..],
        "pages after {} are {seen:?}, expected {:?} first",
        repos[0],
        &repos[1..]
    );
    Ok(())
}
