//! Pull times, which retention's "pulled within" reads: a manifest GET is remembered (a HEAD is
//! not), and the times reach the database by the server's periodic flush and on shutdown.

use std::path::Path;

use anyhow::{ensure, Result};
use wharf_core::{Digest, RepoName};
use wharf_testkit::fixture::ImageSpec;
use wharf_testkit::{http, WharfServer};

use crate::support::{layout, scratch, skopeo_copy};

fn last_pulled(
    rt: &tokio::runtime::Runtime,
    dir: &Path,
    repo: &str,
    digest: &str,
) -> Result<Option<i64>> {
    rt.block_on(async {
        let meta = wharf_meta::Meta::connect_existing(&format!(
            "sqlite:{}",
            dir.join("wharf.db").display()
        ))
        .await?;
        let at = meta
            .last_pulled(&RepoName::parse(repo)?, &Digest::parse(digest)?)
            .await?;
        meta.close().await;
        Ok(at)
    })
}

#[test]
fn manifest_gets_are_remembered_and_written_at_shutdown() -> Result<()> {
    let tmp = scratch()?;
    let mut server = WharfServer::start(env!("CARGO_BIN_EXE_wharf"))?;
    let mut src = layout(tmp.path(), "src")?;
    let image = src.add_image("v1", &ImageSpec::new(1, 4096))?;
    skopeo_copy(
        &src.reference("v1"),
        &format!("docker://{}/team/app:v1", server.host()),
        &[],
    )?;
    let auth = server.basic_auth_header();
    let digest = image.manifest.digest.clone();
    let rt = tokio::runtime::Runtime::new()?;
    let before = wharf_meta::unix_now();
    // A HEAD is a freshness check, not a pull.
    let head = http::request(
        server.addr(),
        "HEAD",
        "/v2/team/app/manifests/v1",
        &[("Authorization", &auth)],
        b"",
    )?;
    ensure!(head.status == 200);
    server.stop()?;
    ensure!(
        last_pulled(&rt, server.data_dir(), "team/app", &digest)?.is_none(),
        "a HEAD counted as a pull"
    );
    server.restart()?;
    let get = http::request(
        server.addr(),
        "GET",
        "/v2/team/app/manifests/v1",
        &[("Authorization", &auth)],
        b"",
    )?;
    ensure!(get.status == 200);
    // Stopping flushes what the periodic writer has not written yet.
    server.stop()?;
    let at = last_pulled(&rt, server.data_dir(), "team/app", &digest)?;
    ensure!(
        at.is_some_and(|t| t >= before),
        "the pull was not recorded: {at:?}"
    );
    Ok(())
}
