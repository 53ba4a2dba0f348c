//! rpm mirrors beyond byte-for-byte copies, as dnf sees them. Upstreams are built here with
//! rpmbuild, rpmsign (`%__gpg /usr/bin/gpg`) and createrepo_c and served by `python3 -m
//! http.server`:
//! - with `gpg_keys`, every mirrored package's header signature must verify: an unsigned
//!   package, or one another key signed, refuses the run, publishes nothing and leaves the
//!   previous snapshot served;
//! - a filtered remote (arches, include/exclude globs and regexes, newest N versions) serves
//!   exactly the chosen packages with metadata Wharf writes and signs with its own key, comps
//!   and updateinfo kept; dnf's repoquery shows exactly that set, and install works with
//!   `gpgcheck=1` and `repo_gpgcheck=1`;
//! - an additive remote keeps the packages upstream dropped in its metadata too, so dnf can
//!   still install them.

use std::fs;
use std::path::Path;
use std::process::Command;

use anyhow::{ensure, Context, Result};
use wharf_testkit::fixture::rpm::{
    build_rpm, comps_xml, createrepo, modifyrepo, updateinfo_xml, GpgKey, RpmSpec,
};
use wharf_testkit::{run, run_expect_failure, Tool, WharfServer};

use crate::rpm::{get_in, server_with_remote, sync, Dnf, Upstream};
use crate::support::wharf_cli;

const NEVRA: &str = "%{name}-%{epoch}:%{version}-%{release}.%{arch}\n";

/// Builds and signs each spec into `dir` (which becomes the upstream tree).
fn build_signed(dir: &Path, key: &GpgKey, specs: &[RpmSpec]) -> Result<()> {
    for spec in specs {
        let rpm = build_rpm(spec, dir)?;
        key.sign_rpm(&rpm)?;
    }
    Ok(())
}

/// (Re)writes upstream's metadata and signs repomd.xml with `key`.
fn publish_upstream(dir: &Path, key: &GpgKey, extra: &[&str]) -> Result<()> {
    let _ = fs::remove_dir_all(dir.join("repodata"));
    createrepo(dir, extra)?;
    let repomd = fs::read(dir.join("repodata/repomd.xml"))?;
    fs::write(
        dir.join("repodata/repomd.xml.asc"),
        key.detach_sign(&repomd)?,
    )?;
    Ok(())
}

/// Wharf's public key, fetched from the server as a user would.
fn wharf_key(server: &WharfServer, to: &Path) -> Result<()> {
    run(Command::new(Tool::find("curl").path())
        .args(["-sf", "-o"])
        .arg(to)
        .arg(format!("{}/keys/wharf.asc", server.url())))?;
    Ok(())
}

/// dnf for `repo` with gpgcheck=1, repo_gpgcheck=1 and `keys` as gpgkey=.
fn checked_dnf(work: &Path, server: &WharfServer, repo: &str, keys: &[&Path]) -> Result<Dnf> {
    let dnf = Dnf::for_repo(work, server, repo)?;
    let file = dnf.reposdir.join("wharf.repo");
    let keys: Vec<String> = keys
        .iter()
        .map(|k| format!("file://{}", k.display()))
        .collect();
    let text = fs::read_to_string(&file)?.replace(
        "gpgcheck=0\n",
        &format!("gpgcheck=1\nrepo_gpgcheck=1\ngpgkey={}\n", keys.join(" ")),
    );
    fs::write(&file, text)?;
    Ok(dnf)
}

fn available(dnf: &Dnf) -> Result<Vec<String>> {
    let out =
        run(&mut dnf.cmd_checking(true, &["repoquery", "--available", "--queryformat", NEVRA]))?
            .stdout;
    let mut listed: Vec<String> = out
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    listed.sort();
    Ok(listed)
}

fn installed(dnf: &Dnf, names: &[&str]) -> Result<String> {
    Ok(run(Command::new(Tool::find("rpm").path())
        .arg("--root")
        .arg(&dnf.root)
        .arg("-q")
        .args(names))?
    .stdout)
}

#[test]
fn mirrored_packages_must_be_signed_by_the_configured_keys() -> Result<()> {
    let work = tempfile::tempdir()?;
    let up = work.path().join("upstream");
    fs::create_dir_all(&up)?;
    let key = GpgKey::generate("upstream")?;
    let intruder = GpgKey::generate("intruder")?;
    let mut hello = RpmSpec::new("hello", "1.0");
    hello.requires = vec!["libdep".into()];
    let mut libdep = RpmSpec::new("libdep", "0.3");
    libdep.arch = "x86_64".into();
    build_signed(&up, &key, &[hello, libdep])?;
    publish_upstream(&up, &key, &[])?;
    let upstream = Upstream::serve(&up)?;
    let server = server_with_remote(
        work.path(),
        &upstream.url,
        &format!("gpg_keys = [\"{}\"]\n", key.public_key.display()),
    )?;
    let first = sync(&server)?;
    ensure!(first.contains("2 packages (2 fetched"), "{first}");
    let repomd = get_in(&server, "el/base", "repodata/repomd.xml")?.context("repomd.xml")?;
    ensure!(
        repomd == fs::read(up.join("repodata/repomd.xml"))?,
        "exact mirror"
    );

    // The exact mirror carries upstream's signatures: dnf checks both with upstream's key.
    let dnf = checked_dnf(
        &work.path().join("dnf"),
        &server,
        "el/base",
        &[&key.public_key],
    )?;
    run(&mut dnf.cmd_checking(true, &["install", "hello"]))?;
    let got = installed(&dnf, &["hello", "libdep"])?;
    ensure!(got.contains("hello-1.0-1.noarch"), "{got}");

    // An unsigned package, and one another key signed, each refuse the whole run (upstream's
    // repomd.xml itself being properly signed), naming the package; nothing is published.
    for (name, signer, why) in [
        ("plain", None, "plain-1.0-1.noarch) is not signed"),
        (
            "forged",
            Some(&intruder),
            "its signature is not one a configured key made",
        ),
    ] {
        let rpm = build_rpm(&RpmSpec::new(name, "1.0"), &up)?;
        if let Some(signer) = signer {
            signer.sign_rpm(&rpm)?;
        }
        publish_upstream(&up, &key, &[])?;
        let failed = run_expect_failure(&mut wharf_cli(&server, &["sync", "up"]))?;
        ensure!(
            failed.stderr.contains(why) && failed.stderr.contains(&format!("{name}-1.0-1")),
            "{name}: {failed}"
        );
        ensure!(failed.stdout.contains("nothing published"), "{failed}");
        ensure!(
            get_in(&server, "el/base", "repodata/repomd.xml")?.as_deref() == Some(&repomd[..]),
            "{name}: a refused run changed what is served"
        );
        ensure!(
            get_in(
                &server,
                "el/base",
                &format!("noarch/{name}-1.0-1.noarch.rpm")
            )?
            .is_none(),
            "{name} is served"
        );
        fs::remove_file(&rpm)?;
    }
    // Repaired upstream: published again.
    publish_upstream(&up, &key, &[])?;
    let repaired = sync(&server)?;
    ensure!(repaired.contains("published snapshot"), "{repaired}");
    Ok(())
}

/// hello in three versions (1.9 < 1.10 as rpm compares them), libdep for two arches,
/// hello-docs and extra (both excluded), comps naming hello and an advisory for libdep.
fn build_filter_upstream(dir: &Path, key: &GpgKey) -> Result<()> {
    let mut specs = Vec::new();
    for v in ["1.0", "1.9", "1.10"] {
        let mut hello = RpmSpec::new("hello", v);
        hello.requires = vec!["libdep".into()];
        specs.push(hello);
    }
    for arch in ["x86_64", "i686"] {
        let mut libdep = RpmSpec::new("libdep", "0.3");
        libdep.arch = arch.into();
        specs.push(libdep);
    }
    specs.push(RpmSpec::new("hello-docs", "1.10"));
    specs.push(RpmSpec::new("extra", "5"));
    build_signed(dir, key, &specs)?;
    let comps = dir.join("comps.xml");
    fs::write(&comps, comps_xml(&["hello"]))?;
    publish_upstream(dir, key, &["--groupfile", comps.to_str().context("path")?])?;
    let updateinfo = dir.join("updateinfo.xml");
    fs::write(&updateinfo, updateinfo_xml("libdep", "0.3", "1", "x86_64"))?;
    modifyrepo(&updateinfo, dir, "updateinfo")?;
    let repomd = fs::read(dir.join("repodata/repomd.xml"))?;
    fs::write(
        dir.join("repodata/repomd.xml.asc"),
        key.detach_sign(&repomd)?,
    )?;
    fs::remove_file(comps)?;
    fs::remove_file(updateinfo)?;
    Ok(())
}

#[test]
fn a_filtered_mirror_serves_exactly_the_chosen_packages_signed_by_wharf() -> Result<()> {
    let work = tempfile::tempdir()?;
    let up = work.path().join("upstream");
    fs::create_dir_all(&up)?;
    let key = GpgKey::generate("upstream")?;
    build_filter_upstream(&up, &key)?;
    let upstream = Upstream::serve(&up)?;
    let server = server_with_remote(
        work.path(),
        &upstream.url,
        &format!(
            "gpg_keys = [\"{}\"]\narches = [\"x86_64\", \"noarch\"]\n\
             include = [\"hello*\", \"re:lib(dep|other)\", \"extra\"]\n\
             exclude = [\"*-docs\", \"re:ext.*\"]\nnewest_versions = 2\n",
            key.public_key.display()
        ),
    )?;
    let first = sync(&server)?;
    ensure!(
        first.contains("3 packages (3 fetched")
            && first.contains("4 left out by the filter")
            && first.contains("metadata written by wharf"),
        "{first}"
    );
    let wharf_asc = work.path().join("wharf.asc");
    wharf_key(&server, &wharf_asc)?;

    // repomd.xml is Wharf's, signed by Wharf's key; the packages keep upstream's signatures.
    let dnf = checked_dnf(
        &work.path().join("dnf"),
        &server,
        "el/base",
        &[&wharf_asc, &key.public_key],
    )?;
    run(&mut dnf.cmd_checking(true, &["makecache"]))?;
    ensure!(
        available(&dnf)?
            == [
                "hello-0:1.10-1.noarch",
                "hello-0:1.9-1.noarch",
                "libdep-0:0.3-1.x86_64"
            ],
        "{:?}",
        available(&dnf)?
    );
    let groups = run(&mut dnf.cmd_checking(true, &["group", "list", "--hidden"]))?;
    ensure!(
        format!("{}{}", groups.stdout, groups.stderr).contains("Wharf Test"),
        "comps kept: {groups}"
    );
    run(&mut dnf.cmd_checking(true, &["install", "hello"]))?;
    let got = installed(&dnf, &["hello", "libdep"])?;
    ensure!(
        got.contains("hello-1.10-1.noarch") && got.contains("libdep-0.3-1.x86_64"),
        "{got}"
    );
    let advisories = run(&mut dnf.cmd_checking(true, &["updateinfo", "list", "--all"]))?;
    ensure!(
        advisories.stdout.contains("WHARF-2026-0001"),
        "updateinfo kept: {advisories}"
    );
    // Only Wharf's key verifies repomd.xml: with upstream's alone dnf refuses the metadata.
    let upstream_only = checked_dnf(
        &work.path().join("dnf-upstream-key"),
        &server,
        "el/base",
        &[&key.public_key],
    )?;
    run_expect_failure(&mut upstream_only.cmd_checking(true, &["makecache"]))?;
    // Left-out packages are not in the tree either.
    for path in [
        "noarch/hello-1.0-1.noarch.rpm",
        "i686/libdep-0.3-1.i686.rpm",
        "noarch/extra-5-1.noarch.rpm",
        "noarch/hello-docs-1.10-1.noarch.rpm",
    ] {
        ensure!(
            get_in(&server, "el/base", path)?.is_none(),
            "{path} is served"
        );
    }
    // client-config points to Wharf's key and says the packages need upstream's.
    let config = run(&mut wharf_cli(
        &server,
        &["client-config", "dnf", "--repo", "el/base"],
    ))?
    .stdout;
    ensure!(
        config.contains("/keys/wharf.asc") && config.contains("metadata wharf writes and signs"),
        "{config}"
    );

    // Unchanged upstream and settings: nothing is fetched or republished.
    let second = sync(&server)?;
    ensure!(second.contains("unchanged"), "{second}");
    Ok(())
}

#[test]
fn an_additive_mirror_keeps_dropped_packages_in_its_metadata() -> Result<()> {
    let work = tempfile::tempdir()?;
    let up = work.path().join("upstream");
    fs::create_dir_all(&up)?;
    let key = GpgKey::generate("upstream")?;
    build_signed(
        &up,
        &key,
        &[RpmSpec::new("old", "1"), RpmSpec::new("kept", "1")],
    )?;
    publish_upstream(&up, &key, &[])?;
    let upstream = Upstream::serve(&up)?;
    let server = server_with_remote(
        work.path(),
        &upstream.url,
        &format!(
            "policy = \"additive\"\ngpg_keys = [\"{}\"]\n",
            key.public_key.display()
        ),
    )?;
    let first = sync(&server)?;
    ensure!(first.contains("2 packages"), "{first}");

    // Upstream drops `old` and adds `new`.
    fs::remove_file(up.join("noarch/old-1-1.noarch.rpm"))?;
    build_signed(&up, &key, &[RpmSpec::new("new", "1")])?;
    publish_upstream(&up, &key, &[])?;
    let second = sync(&server)?;
    ensure!(
        second.contains("2 packages (1 fetched, 1 already stored)")
            && second.contains("1 dropped upstream and kept")
            && second.contains("metadata written by wharf"),
        "{second}"
    );
    let wharf_asc = work.path().join("wharf.asc");
    wharf_key(&server, &wharf_asc)?;
    let dnf = checked_dnf(
        &work.path().join("dnf"),
        &server,
        "el/base",
        &[&wharf_asc, &key.public_key],
    )?;
    ensure!(
        available(&dnf)? == ["kept-0:1-1.noarch", "new-0:1-1.noarch", "old-0:1-1.noarch"],
        "{:?}",
        available(&dnf)?
    );
    // The package upstream removed still installs, checked against upstream's key.
    run(&mut dnf.cmd_checking(true, &["install", "old", "new"]))?;
    let got = installed(&dnf, &["old", "new"])?;
    ensure!(
        got.contains("old-1-1.noarch") && got.contains("new-1-1.noarch"),
        "{got}"
    );
    let third = sync(&server)?;
    ensure!(third.contains("unchanged"), "{third}");
    Ok(())
}
