//! Paginated lists shared by the tags list and the catalog: parsing a page, following `Link`
//! headers, and falling back to `last=` when a registry returns full pages without links.

use reqwest::Method;

use crate::assert;
use crate::client::Resp;
use crate::context::Ctx;
use crate::fixtures::next_link;
use crate::outcome::{ensure, fail, Failure, Outcome};

/// One page of a list.
#[derive(Debug)]
pub(super) struct Page {
    /// The names on this page, in response order.
    pub items: Vec<String>,
    /// The `rel="next"` link target, if any.
    pub next: Option<String>,
    /// The JSON key holding the names (`tags` or `repositories`).
    key: &'static str,
    /// The expected `name` field, for tag lists.
    name: Option<String>,
    /// The request and status, for messages.
    summary: String,
}

/// Parses a 200 list response whose names are under `key`.
pub(super) fn parse(resp: &Resp, key: &'static str, name: Option<&str>) -> Result<Page, Failure> {
    assert::status(resp, &[200])?;
    let value = resp.json()?;
    if let Some(expected) = name {
        let got = value.get("name").and_then(|it| it.as_str());
        ensure!(
            got == Some(expected),
            "{}: \"name\" is {got:?}, expected {expected:?}",
            resp.summary()
        );
    }
    // The response format is a JSON list; `null` or a missing key is not "an empty list".
    let Some(array) = value.get(key).and_then(|it| it.as_array()) else {
        fail!(
            "{}: \"{key}\" is not a JSON array: {}",
            resp.summary(),
            resp.snippet()
        );
    };
    let mut items = Vec::with_capacity(array.len());
    for entry in array {
        let Some(text) = entry.as_str() else {
            fail!("{}: non-string entry {entry} in \"{key}\"", resp.summary());
        };
        items.push(text.to_owned());
    }
    Ok(Page {
        items,
        next: next_link(resp)?,
        key,
        name: name.map(str::to_owned),
        summary: resp.summary(),
    })
}

/// GETs a `Link` target (relative or absolute) and parses it as the next page.
pub(super) async fn follow(
    ctx: &Ctx,
    link: &str,
    key: &'static str,
    name: Option<&str>,
) -> Result<Page, Failure> {
    let url = ctx.client.resolve(link)?;
    let resp = ctx
        .client
        .send(ctx.client.request_url(Method::GET, url))
        .await?;
    parse(&resp, key, name)
}

/// Every name from `first` on, following `Link` headers for at most `max_pages` pages.
pub(super) async fn collect(
    ctx: &Ctx,
    first: Page,
    max_pages: usize,
) -> Result<Vec<String>, Failure> {
    let mut all = first.items.clone();
    let mut page = first;
    for _ in 0..max_pages {
        let Some(next) = page.next.clone() else {
            return Ok(all);
        };
        page = follow(ctx, &next, page.key, page.name.as_deref()).await?;
        all.extend(page.items.iter().cloned());
    }
    fail!(
        "still paginating after {max_pages} pages (last: {})",
        page.summary
    )
}

/// Walks a list with `n` per page: through `Link` headers when given, and otherwise with
/// `last=<final name>` while pages come back full.
pub(super) async fn walk(
    ctx: &Ctx,
    base: &str,
    n: usize,
    key: &'static str,
    name: Option<&str>,
) -> Result<Vec<String>, Failure> {
    const MAX_PAGES: usize = 50;
    let first = ctx
        .client
        .call(Method::GET, &format!("{base}?n={n}"))
        .await?;
    let mut page = parse(&first, key, name)?;
    let mut all = Vec::new();
    for _ in 0..MAX_PAGES {
        ensure!(
            page.items.len() <= n,
            "{}: {} entries for n={n}",
            page.summary,
            page.items.len()
        );
        all.extend(page.items.iter().cloned());
        if let Some(next) = page.next.clone() {
            page = follow(ctx, &next, key, name).await?;
            continue;
        }
        let Some(last) = page.items.last() else {
            return Ok(all);
        };
        if page.items.len() < n {
            return Ok(all);
        }
        // The spec allows omitting Link; a full page then means "ask again after the last".
        let resp = ctx
            .client
            .call(Method::GET, &format!("{base}?n={n}&last={last}"))
            .await?;
        page = parse(&resp, key, name)?;
    }
    fail!("still paginating after {MAX_PAGES} pages")
}

/// "Lexical (i.e. case-insensitive alphanumeric order) or ASCIIbetical" order, as the spec
/// allows either.
pub(super) fn expect_sorted(items: &[String]) -> Outcome {
    let ascii = items.windows(2).all(|w| w[0] < w[1]);
    let lexical = items
        .windows(2)
        .all(|w| w[0].to_lowercase() <= w[1].to_lowercase());
    ensure!(
        ascii || lexical,
        "entries are neither in lexical nor in ASCII order: {items:?}"
    );
    Ok(())
}

/// A page requested with `n` when `rest` is what remains of the list: at most `n` entries,
/// a prefix of `rest`, and shorter than both only when a `Link` header is present.
pub(super) fn expect_page(page: &Page, rest: &[String], n: usize) -> Outcome {
    let got = &page.items;
    ensure!(
        got.len() <= n,
        "{}: {} entries for n={n}: {got:?}",
        page.summary,
        got.len()
    );
    ensure!(
        rest.starts_with(got),
        "{}: entries {got:?}, expected the start of {rest:?}",
        page.summary
    );
    ensure!(
        got.len() == n.min(rest.len()) || page.next.is_some(),
        "{}: {} entries without a Link header; expected {:?}",
        page.summary,
        got.len(),
        &rest[..n.min(rest.len())]
    );
    Ok(())
}

/// The page a `Link` led to must continue the list where the previous page stopped.
pub(super) fn expect_continuation(page: &Page, rest: &[String]) -> Outcome {
    ensure!(
        !page.items.is_empty() || page.next.is_some(),
        "{}: the next page is empty and has no further Link",
        page.summary
    );
    ensure!(
        rest.starts_with(&page.items),
        "{}: next page has {:?}, expected the start of {rest:?}",
        page.summary,
        page.items
    );
    Ok(())
}
