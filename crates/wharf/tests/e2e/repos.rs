//! Repositories of several kinds share one namespace: a container push into a name that an
//! OSTree repository holds is refused with the OCI error `DENIED`, never merged into it.

use anyhow::{ensure, Result};
use wharf_testkit::fixture::ImageSpec;
use wharf_testkit::{run, run_expect_failure, WharfServer};

use crate::support::{layout, scratch, skopeo, skopeo_copy, wharf_cli};

#[test]
fn a_push_into_a_repository_of_another_kind_is_refused() -> Result<()> {
    let server = WharfServer::start(env!("CARGO_BIN_EXE_wharf"))?;
    run(&mut wharf_cli(
        &server,
        &["repo", "create", "fedora/iot", "--kind", "ostree"],
    ))?;
    let tmp = scratch()?;
    let mut src = layout(tmp.path(), "src")?;
    src.add_image("v1", &ImageSpec::new(1, 4096))?;

    // skopeo is refused, and says why.
    let mut push = skopeo();
    push.args(["copy", "--src-tls-verify=false", "--dest-tls-verify=false"])
        .arg(src.reference("v1"))
        .arg(format!("docker://{}/fedora/iot:v1", server.host()));
    let refused = run_expect_failure(&mut push)?;
    ensure!(
        refused.stderr.contains("denied") || refused.stderr.contains("DENIED"),
        "skopeo should report the refusal: {refused}"
    );
    // The same push to a container repository beside it works.
    skopeo_copy(
        &src.reference("v1"),
        &format!("docker://{}/fedora/app:v1", server.host()),
        &[],
    )?;
    // Raw protocol: the upload is refused before any byte is taken.
    let res = wharf_testkit::http::request(
        server.addr(),
        "POST",
        "/v2/fedora/iot/blobs/uploads/",
        &[("Authorization", &server.basic_auth_header())],
        b"",
    )?;
    ensure!(
        res.status == 403 && res.text().contains("DENIED"),
        "{} {}",
        res.status,
        res.text()
    );
    let res = wharf_testkit::http::request(
        server.addr(),
        "GET",
        "/v2/fedora/iot/tags/list",
        &[("Authorization", &server.basic_auth_header())],
        b"",
    )?;
    ensure!(
        res.status == 404 && res.text().contains("NAME_UNKNOWN"),
        "{} {}",
        res.status,
        res.text()
    );

    let listed = run(&mut wharf_cli(&server, &["repo", "list"]))?;
    ensure!(
        listed.stdout.lines().collect::<Vec<_>>() == ["oci     fedora/app", "ostree  fedora/iot"],
        "wharf repo list: {listed}"
    );
    let other_kind = run_expect_failure(&mut wharf_cli(
        &server,
        &["repo", "create", "fedora/iot", "--kind", "rpm"],
    ))?;
    ensure!(other_kind.stderr.contains("ostree"), "{other_kind}");
    Ok(())
}
