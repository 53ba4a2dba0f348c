//! Holds the crate's place in the layout against the source text, which the
//! compiler alone would let drift: its modules import one way (no cycle comes
//! back), and `wharf-http` takes from it only what a request carries. Which
//! Wharf crates it may depend on (`wharf-core` alone) is the workspace-wide
//! table in `crates/wharf/src/tidy.rs`.

use std::path::Path;

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The `crate::<module>` names a source file mentions.
fn crate_modules(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for (i, _) in text.match_indices("crate::") {
        let preceded_by_ident = text[..i]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_alphanumeric() || c == '_');
        if preceded_by_ident {
            continue;
        }
        let name: String = text[i + "crate::".len()..]
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        found.push(name);
    }
    found
}

#[test]
fn modules_import_one_way() {
    // Each module may use only those of a lower rank; the crate root (`lib.rs`)
    // only re-exports. Rank: challenges, client_cert < store < server_config, acme, redirect.
    let rank = |module: &str| match module {
        "challenges" | "client_cert" => 0,
        "store" => 1,
        "server_config" | "acme" | "redirect" => 2,
        other => panic!("a module the layout does not know: {other}"),
    };
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    for module in [
        "challenges",
        "client_cert",
        "store",
        "server_config",
        "acme",
        "redirect",
    ] {
        let text = read(&src.join(format!("{module}.rs")));
        for used in crate_modules(&text) {
            // A path to a re-export at the root (docs name `crate::CertStore`) is no module.
            if used.starts_with(char::is_uppercase) {
                continue;
            }
            assert!(
                rank(&used) < rank(module),
                "{module}.rs uses crate::{used}, which ranks no lower"
            );
        }
    }
}

#[test]
fn wharf_http_takes_only_the_client_certificate_subject_and_the_alpn_name() {
    let http_src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../wharf-http/src");
    let mut files = vec![http_src.clone()];
    let mut checked = 0;
    while let Some(path) = files.pop() {
        if path.is_dir() {
            for entry in std::fs::read_dir(&path).unwrap() {
                files.push(entry.unwrap().path());
            }
            continue;
        }
        let text = read(&path);
        for (i, _) in text.match_indices("wharf_tls::") {
            let rest = &text[i + "wharf_tls::".len()..];
            let named: String = if let Some(list) = rest.strip_prefix('{') {
                list.split('}').next().unwrap_or_default().to_owned()
            } else {
                rest.chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect()
            };
            for name in named.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                assert!(
                    name == "ClientCertSubject" || name == "ACME_TLS_ALPN",
                    "{} uses wharf_tls::{name}",
                    path.display()
                );
            }
            checked += 1;
        }
    }
    assert!(checked > 0, "wharf-http no longer names wharf_tls at all");
}
