//! Workspace hygiene checks that run under `cargo test`, so CI needs nothing extra:
//! every Rust file opens with a `//!` comment saying what it owns, modules use
//! `foo.rs` + `foo/` rather than `mod.rs`, and crates depend only on the layers
//! below them.

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        if name == "target" || name.to_string_lossy().starts_with('.') {
            continue;
        }
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_rust_file_has_a_module_comment_and_no_mod_rs() {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = Vec::new();
    rust_files(&crates, &mut files);
    assert!(
        files.len() > 20,
        "found only {} files under {}",
        files.len(),
        crates.display()
    );
    let mut offenders = Vec::new();
    for file in &files {
        if file.file_name().is_some_and(|n| n == "mod.rs") {
            offenders.push(format!(
                "{}: use foo.rs + foo/ instead of mod.rs",
                file.display()
            ));
        }
        let text = std::fs::read_to_string(file).unwrap_or_default();
        if !text.trim_start().starts_with("//!") {
            offenders.push(format!(
                "{}: missing the leading //! module comment",
                file.display()
            ));
        }
    }
    assert!(offenders.is_empty(), "tidy:\n{}", offenders.join("\n"));
}

/// Which workspace crates each library crate may depend on: the layering of
/// ARCHITECTURE.md, as a test. Formats (`wharf-oci`, and the OSTree, RPM and
/// files crates to come) never import each other; `wharf-auth` and `wharf-jobs`
/// know no format; the blob store knows no metadata; nothing below `wharf-http`
/// speaks HTTP to clients. A new crate must be added here, with its place.
const ALLOWED_WORKSPACE_DEPENDENCIES: &[(&str, &[&str])] = &[
    ("wharf-core", &[]),
    ("wharf-config", &["wharf-core"]),
    ("wharf-tls", &["wharf-core"]),
    ("wharf-meta", &["wharf-core"]),
    ("wharf-blob", &["wharf-core"]),
    // Shared infrastructure of the tree formats, like the blob store: OpenPGP
    // and ed25519 keys and signatures over bytes; it knows no format.
    ("wharf-sign", &[]),
    ("wharf-auth", &["wharf-core", "wharf-meta"]),
    ("wharf-oci", &["wharf-core", "wharf-meta", "wharf-blob"]),
    ("wharf-jobs", &["wharf-core", "wharf-meta", "wharf-blob"]),
    // Beside the formats: mirrored OCI content enters through wharf-oci's Registry.
    (
        "wharf-mirror",
        &["wharf-core", "wharf-meta", "wharf-blob", "wharf-oci"],
    ),
    // Beside the formats too: imported content enters through wharf-oci's Registry.
    (
        "wharf-bundle",
        &["wharf-core", "wharf-meta", "wharf-blob", "wharf-oci"],
    ),
    // The one seam of the tree formats (OSTree, RPM, files): they import it, it imports no format.
    (
        "wharf-snapshot",
        &["wharf-core", "wharf-meta", "wharf-blob"],
    ),
    // A format: file trees (through wharf-snapshot) and the lookaside cache.
    (
        "wharf-files",
        &["wharf-core", "wharf-meta", "wharf-blob", "wharf-snapshot"],
    ),
    // A tree format: OSTree's objects, verified, into snapshots.
    (
        "wharf-ostree",
        &[
            "wharf-core",
            "wharf-meta",
            "wharf-blob",
            "wharf-snapshot",
            "wharf-sign",
        ],
    ),
    (
        "wharf-http",
        &[
            "wharf-core",
            "wharf-meta",
            "wharf-blob",
            "wharf-auth",
            "wharf-oci",
            "wharf-jobs",
            "wharf-tls",
            "wharf-snapshot",
            // The pull-through cache a /v2 miss falls back to.
            "wharf-mirror",
            // The lookaside cache and file-repository writes.
            "wharf-files",
            // Hosted RPM repositories' uploads (/api/v1/rpm).
            "wharf-rpm",
            // OSTree pushes (/api/v1/ostree).
            "wharf-ostree",
        ],
    ),
    // A format: rpm-md trees become snapshots through wharf-snapshot.
    (
        "wharf-rpm",
        &[
            "wharf-core",
            "wharf-meta",
            "wharf-blob",
            "wharf-snapshot",
            "wharf-sign",
        ],
    ),
    ("wharf-testkit", &[]),
    ("wharf-conformance", &[]),
];

/// External crates that would give `wharf-core` I/O or async: it holds values only.
const FORBIDDEN_IN_CORE: &[&str] = &["tokio", "sqlx", "axum", "hyper", "reqwest", "rustls"];

/// The names under `[dependencies]` of a Cargo.toml (dev-dependencies are free).
fn dependencies(manifest: &str) -> Vec<String> {
    let mut in_section = false;
    let mut names = Vec::new();
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_section = line == "[dependencies]";
            continue;
        }
        if !in_section || line.is_empty() || line.starts_with('#') {
            continue;
        }
        // `name = …`, `name.workspace = true`, `"name" = …`
        if let Some((key, _)) = line.split_once('=') {
            let key = key.trim().trim_matches('"');
            names.push(key.split('.').next().unwrap_or(key).to_owned());
        }
    }
    names
}

#[test]
fn crates_depend_only_on_the_layers_below_them() {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut offenders = Vec::new();
    let mut seen = 0;
    for entry in std::fs::read_dir(&crates).expect("crates/").flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Ok(manifest) = std::fs::read_to_string(entry.path().join("Cargo.toml")) else {
            continue;
        };
        if name == "wharf" {
            continue; // the binary wires everything together
        }
        seen += 1;
        let deps = dependencies(&manifest);
        let Some((_, allowed)) = ALLOWED_WORKSPACE_DEPENDENCIES
            .iter()
            .find(|(crate_name, _)| *crate_name == name)
        else {
            offenders.push(format!(
                "{name}: not in ALLOWED_WORKSPACE_DEPENDENCIES; give it its place in the layering"
            ));
            continue;
        };
        for dep in deps.iter().filter(|d| d.starts_with("wharf-")) {
            if !allowed.contains(&dep.as_str()) {
                offenders.push(format!("{name} depends on {dep}, which is not below it"));
            }
        }
        if name == "wharf-core" {
            for dep in deps
                .iter()
                .filter(|d| FORBIDDEN_IN_CORE.contains(&d.as_str()))
            {
                offenders.push(format!(
                    "wharf-core depends on {dep}: it must stay free of I/O"
                ));
            }
        }
    }
    assert!(
        seen >= 10,
        "found only {seen} crates under {}",
        crates.display()
    );
    assert!(offenders.is_empty(), "layering:\n{}", offenders.join("\n"));
}
