//! Static deltas Wharf generates itself, as stock `ostree` (Debian's 2022.7) uses them: a
//! hosted repository filled by `wharf ostree commit --generate-deltas`, and a mirror of a subset
//! of an upstream's refs (made with the `ostree` CLI) with `generate_deltas = true`. A client at
//! commit A pulls commit B with `--require-static-deltas` (it refuses to update without one),
//! `ostree fsck` is clean, the checkout equals the tree, and Wharf's access log shows the
//! superblock and parts fetched, and no object fetched alone but the delta's fallbacks and (as
//! stock ostree's scan of the new commit races the parts being applied) objects the parts
//! declare; the delta's files cost less than the update without it. The same
//! update without deltas (`--disable-static-deltas`) is measured beside it, and `ostree
//! static-delta show` reads the delta as ostree's own.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use wharf_ostree::delta::read_superblock;
use wharf_ostree::extras::DeltaName;
use wharf_ostree::summary::Summary;
use wharf_ostree::{Checksum, ObjectName, ObjectType};
use wharf_testkit::run;

use crate::ostree::{commit, curl_bytes, gpg_key, ostree, serve_dir, summary_update, LoggedWharf};
use crate::support::scratch;

/// A tree of text files (some shared between versions, some only in some versions), a symlink,
/// an empty directory and one file large enough to be a fallback.
fn tree(dir: &Path, version: u32) -> Result<()> {
    if dir.exists() {
        std::fs::remove_dir_all(dir)?;
    }
    std::fs::create_dir_all(dir.join("usr/share/doc"))?;
    std::fs::create_dir_all(dir.join("usr/lib/modules"))?;
    std::fs::create_dir_all(dir.join("var/empty"))?;
    // Text of a shared vocabulary, as in real trees: each file deflates on its own, a
    // delta part compresses them together.
    const WORDS: [&str; 16] = [
        "ostree", "commit", "delta", "object", "summary", "mirror", "wharf", "static", "content",
        "dirtree", "checksum", "archive", "client", "server", "update", "tree",
    ];
    let text = |seed: u32, lines: usize| -> String {
        let mut x = seed.wrapping_mul(2654435761) | 1;
        let mut out = String::new();
        for _ in 0..lines {
            for _ in 0..10 {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                out.push_str(WORDS[(x >> 7) as usize % WORDS.len()]);
                out.push(' ');
            }
            out.push('\n');
        }
        out
    };
    for i in 0..40u32 {
        // Files below 30 change with every version, the others stay (shared objects).
        let changes = i < 30;
        let text = if changes {
            text(version * 1000 + i, 40 + i as usize)
        } else {
            text(i, 40)
        };
        std::fs::write(dir.join(format!("usr/share/doc/file{i}.txt")), text)?;
    }
    // Files that only some versions have.
    for i in 0..(3 + version) {
        std::fs::write(
            dir.join(format!("usr/lib/modules/m{i}.ko")),
            format!("module {i} of {version}\n").repeat(200),
        )?;
    }
    std::os::unix::fs::symlink("share/doc/file0.txt", dir.join("usr/readme"))?;
    // The same in every version: a fallback of the deltas from scratch, shared by the others.
    let mut x = 0x9e37_79b9u32;
    let big: Vec<u8> = (0..4_600_000u32)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect();
    std::fs::write(dir.join("usr/lib/big.bin"), big)?;
    Ok(())
}

/// Every path below `dir` with what it holds (file bytes, or `-> target`).
fn contents(dir: &Path) -> Result<BTreeMap<PathBuf, Vec<u8>>> {
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d)? {
            let e = e?;
            let p = e.path();
            let rel = p.strip_prefix(dir)?.to_path_buf();
            let t = e.file_type()?;
            if t.is_symlink() {
                let target = std::fs::read_link(&p)?;
                out.insert(rel, format!("-> {}", target.display()).into_bytes());
            } else if t.is_dir() {
                out.insert(rel, b"dir".to_vec());
                todo.push(p);
            } else {
                out.insert(rel, std::fs::read(&p)?);
            }
        }
    }
    Ok(out)
}

/// (path, status, bytes) of Wharf's access lines from `since` on, once they stop growing.
fn settled(wharf: &LoggedWharf, since: usize) -> Result<Vec<(String, u64, u64)>> {
    let read = || -> Vec<(String, u64, u64)> {
        wharf
            .server
            .stderr()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|e| e["message"] == "access")
            .map(|e| {
                (
                    e["path"].as_str().unwrap_or_default().to_owned(),
                    e["status"].as_u64().unwrap_or_default(),
                    e["bytes"].as_u64().unwrap_or_default(),
                )
            })
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = read().len();
    loop {
        std::thread::sleep(Duration::from_millis(400));
        let now = read();
        if now.len() == last || Instant::now() > deadline {
            return Ok(now.get(since..).unwrap_or_default().to_vec());
        }
        last = now.len();
    }
}

fn access_count(wharf: &LoggedWharf) -> usize {
    wharf
        .server
        .stderr()
        .lines()
        .filter(|l| l.contains("\"access\""))
        .count()
}

/// A bare-user client repository with remote `wharf` at `url`, verifying Wharf's GPG key
/// (`key`, when given) on commits and the summary.
fn client(dir: &Path, url: &str, key: Option<&Path>) -> Result<PathBuf> {
    run(ostree(dir).args(["init", "--mode=bare-user"]))?;
    let mut add = ostree(dir);
    add.args(["remote", "add"]);
    match key {
        Some(key) => {
            add.args(["--set=gpg-verify=true", "--set=gpg-verify-summary=true"])
                .arg(format!("--gpg-import={}", key.display()));
        }
        None => {
            add.arg("--no-gpg-verify");
        }
    }
    run(add.args(["wharf", url]))?;
    Ok(dir.to_path_buf())
}

fn rev(client: &Path, branch: &str) -> Result<String> {
    Ok(
        std::fs::read_to_string(client.join(format!("refs/remotes/wharf/{branch}")))?
            .trim()
            .to_owned(),
    )
}

/// The delta's files fetched as served into a scratch archive repository, where
/// `ostree static-delta show` reads them as its own.
fn show_delta(dir: &Path, base: &str, name: &DeltaName) -> Result<String> {
    let repo = dir.join(format!("show-{}", name.to.to_hex()));
    run(ostree(&repo).args(["init", "--mode=archive"]))?;
    let sb = curl_bytes(&format!("{base}/{}/superblock", name.dir()))?;
    let info = read_superblock(&sb)?;
    let d = repo.join(name.dir());
    std::fs::create_dir_all(&d)?;
    std::fs::write(d.join("superblock"), &sb)?;
    for i in 0..info.parts.len() {
        std::fs::write(
            d.join(i.to_string()),
            curl_bytes(&format!("{base}/{}/{i}", name.dir()))?,
        )?;
    }
    Ok(run(ostree(&repo).args(["static-delta", "show", &name.to_string()]))?.stdout)
}

struct Measured {
    requests: Vec<(String, u64, u64)>,
    bytes: u64,
}

/// Runs an `ostree pull` and collects the requests Wharf answered for it.
fn pull(wharf: &LoggedWharf, client: &Path, args: &[&str]) -> Result<Measured> {
    let before = access_count(wharf);
    run(ostree(client).arg("pull").args(args))?;
    let requests = settled(wharf, before)?;
    let bytes = requests.iter().map(|r| r.2).sum();
    Ok(Measured { requests, bytes })
}

/// Pulls `to` through the delta (client at `from`), checks the repository and the checkout,
/// and that nothing but the declared fallbacks was fetched as `.filez`; then the same update
/// without deltas into a second client. Returns (bytes through the delta, bytes without).
#[allow(clippy::too_many_arguments)]
fn update_through_delta(
    dir: &Path,
    wharf: &LoggedWharf,
    url: &str,
    prefix: &str,
    key: Option<&Path>,
    branch: &str,
    from: &str,
    to: &str,
    tree_to: &Path,
) -> Result<(u64, u64)> {
    let base = url.trim_end_matches('/');
    let summary = Summary::parse(&curl_bytes(&format!("{base}/summary"))?)?;
    let name = DeltaName {
        from: Some(Checksum::from_hex(from)?),
        to: Checksum::from_hex(to)?,
    };
    ensure!(
        summary
            .metadata
            .iter()
            .any(|(k, v)| k == "ostree.static-deltas"
                && format!("{v:?}").contains(&name.to_string())),
        "the summary does not list {name}: {:?}",
        summary.metadata
    );
    let sb = curl_bytes(&format!("{base}/{}/superblock", name.dir()))?;
    let info = read_superblock(&sb)?;
    ensure!(info.from == name.from && info.to == name.to);
    ensure!(!info.parts.is_empty(), "no parts");
    ensure!(
        info.metadata_keys.iter().any(|k| k == "ostree.endianness"),
        "{:?}",
        info.metadata_keys
    );
    // ostree reads it as one of its own: parts, objects and opcodes.
    let shown = show_delta(dir, base, &name)?;
    ensure!(shown.contains("Endianness: little"), "{shown}");
    ensure!(
        shown.contains(&format!("Number of parts: {}", info.parts.len()))
            && shown.contains(&format!(
                "Number of fallback entries: {}",
                info.fallbacks.len()
            ))
            && shown.contains(&format!("PartMeta0: nobjects={}", info.parts[0].3.len()))
            && shown.contains(&format!(
                "PartPayloadOps0: openspliceclose={} ",
                info.parts[0].3.len()
            )),
        "{shown}"
    );

    // The client at `from` takes `to` through the delta (it refuses to go without one).
    let c = dir.join(format!("{prefix}-client-delta"));
    client(&c, url, key)?;
    run(ostree(&c)
        .args(["pull", "--disable-static-deltas", "wharf"])
        .arg(format!("{branch}@{from}")))?;
    ensure!(rev(&c, branch)? == from);
    let through = pull(wharf, &c, &["--require-static-deltas", "wharf", branch])?;
    run(ostree(&c).arg("fsck"))?;
    ensure!(rev(&c, branch)? == to);
    let checkout = dir.join(format!("{prefix}-checkout"));
    run(ostree(&c)
        .args(["checkout", "-U", &format!("wharf:{branch}")])
        .arg(&checkout))?;
    ensure!(
        contents(&checkout)? == contents(tree_to)?,
        "the checkout differs from the tree"
    );
    let r = &through.requests;
    ensure!(
        r.iter()
            .any(|(p, s, _)| p.ends_with(&format!("{}/superblock", name.dir())) && *s == 200),
        "no superblock fetched: {r:?}"
    );
    ensure!(
        r.iter()
            .any(|(p, s, _)| p.ends_with(&format!("{}/0", name.dir())) && *s == 200),
        "no part fetched: {r:?}"
    );
    let fallbacks: Vec<String> = info
        .fallbacks
        .iter()
        .map(|c| ObjectName::new(*c, ObjectType::File).path())
        .collect();
    let declared: Vec<String> = info
        .parts
        .iter()
        .flat_map(|p| p.3.iter().map(ObjectName::path))
        .collect();
    // Stock ostree 2022.7 writes the commit from the superblock and scans it while the parts
    // are still being fetched and applied, fetching one by one what it does not find yet: a
    // race inside the client, which the delta narrows (children are written before the
    // dirtrees naming them) but no server can close. So: every object fetched alone is a
    // fallback or one of the parts' declared objects, never anything else; the delta's own
    // files cost less than the objects; and the race's extra requests are reported.
    let alone: Vec<&String> = r
        .iter()
        .map(|(p, _, _)| p)
        .filter(|p| p.contains("/objects/") && !p.ends_with(".commitmeta"))
        .filter(|p| !fallbacks.iter().any(|f| p.ends_with(f)))
        .collect();
    let undeclared: Vec<&&String> = alone
        .iter()
        .filter(|p| !declared.iter().any(|d| p.ends_with(d.as_str())))
        .collect();
    ensure!(
        undeclared.is_empty(),
        "objects fetched that the delta does not declare: {undeclared:?}"
    );
    let delta_files: u64 = r
        .iter()
        .filter(|(p, _, _)| p.contains("/deltas/") || fallbacks.iter().any(|f| p.ends_with(f)))
        .map(|x| x.2)
        .sum();
    let metadata_alone = alone.len();

    // The same update without deltas.
    let c2 = dir.join(format!("{prefix}-client-objects"));
    client(&c2, url, key)?;
    run(ostree(&c2)
        .args(["pull", "--disable-static-deltas", "wharf"])
        .arg(format!("{branch}@{from}")))?;
    let without = pull(wharf, &c2, &["--disable-static-deltas", "wharf", branch])?;
    run(ostree(&c2).arg("fsck"))?;
    ensure!(rev(&c2, branch)? == to);
    ensure!(
        without
            .requests
            .iter()
            .any(|(p, _, _)| p.ends_with(".filez"))
            && !without
                .requests
                .iter()
                .any(|(p, _, _)| p.contains("/deltas/")),
        "{:?}",
        without.requests
    );
    ensure!(
        delta_files < without.bytes,
        "the delta saved nothing: its files are {delta_files} bytes, the update without it {}",
        without.bytes
    );
    println!(
        "{prefix}: update {from:.8}→{to:.8}: {} bytes in {} requests through the delta \
         (its files {delta_files} bytes; {metadata_alone} objects fetched alone by the client's \
         scan), {} bytes in {} requests without ({:.2}×, delta files {:.2}×)",
        through.bytes,
        through.requests.len(),
        without.bytes,
        without.requests.len(),
        through.bytes as f64 / without.bytes as f64,
        delta_files as f64 / without.bytes as f64
    );
    Ok((delta_files, without.bytes))
}

#[test]
fn wharf_ostree_commit_generates_deltas_that_stock_ostree_pulls() -> Result<()> {
    let tmp = scratch()?;
    let dir = tmp.path();
    let wharf = LoggedWharf::start(dir, "")?;
    let url = format!("{}/ostree/os/hosted/", wharf.base);
    let tree_a = dir.join("tree-a");
    tree(&tree_a, 1)?;
    let commit_tree = |tree: &Path| -> Result<(String, String)> {
        let out = run(&mut wharf.cli(&[
            "ostree",
            "commit",
            "--repo",
            "os/hosted",
            "--branch",
            "os/main",
            "--tree",
            &tree.display().to_string(),
            "--generate-deltas",
            "--delta-from-scratch",
        ]))?
        .stdout;
        let checksum = out.lines().next().context("no checksum")?.to_owned();
        Ok((checksum, out))
    };
    let (a, out) = commit_tree(&tree_a)?;
    // The first commit has no parent: only the delta from scratch.
    ensure!(
        out.contains(&format!("static delta {a} generated")) && out.contains("1 fallback(s)"),
        "{out}"
    );
    let key = dir.join("wharf.asc");
    std::fs::write(&key, curl_bytes(&format!("{}/keys/wharf.asc", wharf.base))?)?;

    // A first pull through the delta from scratch, signatures verified.
    let first = dir.join("first");
    client(&first, &url, Some(&key))?;
    let m = pull(
        &wharf,
        &first,
        &["--require-static-deltas", "wharf", "os/main"],
    )?;
    run(ostree(&first).arg("fsck"))?;
    ensure!(rev(&first, "os/main")? == a);
    // Through the delta from scratch: superblock, part and the fallback (big.bin). Stock
    // ostree 2022.7 also scans the commit while the part is applied and may fetch what is
    // not written yet one by one, which a large fallback fetched first makes likely here; so
    // only the update below is held to "no content object alone".
    let scratch = DeltaName {
        from: None,
        to: Checksum::from_hex(&a)?,
    };
    ensure!(
        m.requests
            .iter()
            .any(|(p, s, _)| p.ends_with(&format!("{}/0", scratch.dir())) && *s == 200)
            && m.requests
                .iter()
                .any(|(p, _, b)| p.ends_with(".filez") && *b > 4_000_000),
        "the delta from scratch and its fallback were not fetched: {:?}",
        m.requests
    );

    let tree_b = dir.join("tree-b");
    tree(&tree_b, 2)?;
    let (b, out) = commit_tree(&tree_b)?;
    ensure!(
        out.contains(&format!("static delta {a}-{b} generated"))
            && out.contains(&format!("static delta {b} generated")),
        "{out}"
    );
    let (through, without) = update_through_delta(
        dir,
        &wharf,
        &url,
        "hosted",
        Some(&key),
        "os/main",
        &a,
        &b,
        &tree_b,
    )?;
    ensure!(through < without);

    // Deltas to a commit no ref is at any longer are dropped with the next commit; the
    // summary lists exactly the new ones.
    let tree_c = dir.join("tree-c");
    tree(&tree_c, 3)?;
    let (c, _) = commit_tree(&tree_c)?;
    let summary = Summary::parse(&curl_bytes(&format!("{url}summary"))?)?;
    let listed = format!("{:?}", summary.metadata);
    ensure!(
        listed.contains(&format!("{b}-{c}")) && !listed.contains(&format!("{a}-{b}")),
        "{listed}"
    );
    // (Its files stay served for the grace period of the snapshot it was published in.)
    ensure!(
        !listed.contains(&format!("\"{b}\"")),
        "the delta from scratch to {b} is still listed: {listed}"
    );
    Ok(())
}

#[test]
fn a_subset_mirror_generates_deltas_when_its_ref_moves() -> Result<()> {
    let tmp = scratch()?;
    let dir = tmp.path();
    let gpg = gpg_key(dir)?;
    let up = dir.join("upstream");
    run(ostree(&up).args(["init", "--mode=archive"]))?;
    let tree_a = dir.join("tree-a");
    tree(&tree_a, 1)?;
    let a = commit(&up, &gpg, "main", &tree_a)?;
    // A second ref upstream, which the mirror does not take: Wharf writes its own summary.
    commit(&up, &gpg, "other", &tree_a)?;
    summary_update(&up, &gpg)?;
    let (_http, upstream_url) = serve_dir(&up)?;
    let wharf = LoggedWharf::start(
        dir,
        &format!(
            "[[ostree.remotes]]\nname = \"up\"\nurl = \"{upstream_url}\"\ninsecure_http = true\n\
             repository = \"os/subset\"\nrefs = [\"main\"]\ngenerate_deltas = true\n"
        ),
    )?;
    let out = run(&mut wharf.cli(&["sync", "up"]))?.stdout;
    ensure!(out.contains("published"), "{out}");
    let tree_b = dir.join("tree-b");
    tree(&tree_b, 2)?;
    let b = commit(&up, &gpg, "main", &tree_b)?;
    summary_update(&up, &gpg)?;
    let out = run(&mut wharf.cli(&["sync", "up"]))?.stdout;
    ensure!(
        out.contains(&format!("static delta {a}-{b} generated")),
        "{out}"
    );
    let url = format!("{}/ostree/os/subset/", wharf.base);
    let key = dir.join("wharf.asc");
    std::fs::write(&key, curl_bytes(&format!("{}/keys/wharf.asc", wharf.base))?)?;
    // The summary is Wharf's (signed with its key); the commits are upstream's, and upstream's
    // signatures travel in the superblock: the client trusts both keys.
    let both = dir.join("both.asc");
    let mut keys = std::fs::read(&key)?;
    keys.extend(std::fs::read(&gpg.public)?);
    std::fs::write(&both, keys)?;
    update_through_delta(
        dir,
        &wharf,
        &url,
        "subset",
        Some(&both),
        "main",
        &a,
        &b,
        &tree_b,
    )?;
    Ok(())
}
