//! Workspace hygiene checks that run under `cargo test`, so CI needs nothing extra:
//! every Rust file opens with a `//!` comment saying what it owns, and modules
//! use `foo.rs` + `foo/` rather than `mod.rs`.

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
