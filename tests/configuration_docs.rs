//! `docs/configuration.md` is generated from the settings catalog
//! (`src/config/catalog.rs`), and the catalog names every `WS_*` variable the
//! code reads, so the reference can neither drift nor miss a setting.
//!
//! Regenerate the document with
//! `UPDATE_DOCS=1 cargo test --test configuration_docs`.

use std::fs;
use std::path::{Path, PathBuf};

use ws_realtime::config::catalog;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn configuration_doc_is_the_catalog_rendered() {
    let path = root().join("docs/configuration.md");
    let generated = catalog::markdown();
    if std::env::var_os("UPDATE_DOCS").is_some() {
        fs::write(&path, &generated).expect("docs/configuration.md is writable");
        return;
    }
    let committed = fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "docs/configuration.md differs from src/config/catalog.rs; regenerate it with\n\
         \n    UPDATE_DOCS=1 cargo test --test configuration_docs\n"
    );
}

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).expect("a readable directory") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every `"WS_…` string literal in the server's code (the load tool's own
/// flags are documented in docs/load-tool.md, not here), with where it is.
fn names_in_code() -> Vec<(String, String)> {
    let src = root().join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut names = Vec::new();
    for file in files {
        let relative = file.strip_prefix(root()).expect("under the root");
        if relative.starts_with("src/load")
            || relative.starts_with("src/bin")
            || relative.ends_with("config/catalog.rs")
        {
            continue;
        }
        let text = fs::read_to_string(&file).expect("a readable file");
        for (index, line) in text.lines().enumerate() {
            let mut rest = line;
            while let Some(at) = rest.find("\"WS_") {
                let name: String = rest[at + 1..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                names.push((name, format!("{}:{}", relative.display(), index + 1)));
                rest = &rest[at + 1..];
            }
        }
    }
    names
}

/// `WS_*` spellings in code that are not variables a user sets.
const NOT_VARIABLES: &[&str] = &[
    // The flattened path of the `[kafka.properties]` TOML table, whose keys
    // become `WS_KAFKA_PROPERTY_<NAME>` (config/settings.rs).
    "WS_KAFKA_PROPERTIES",
];

#[test]
fn every_ws_variable_the_code_reads_is_in_the_catalog() {
    let names = names_in_code();
    assert!(
        names.iter().any(|(name, _)| name == "WS_CLIENT_BUFFER"),
        "the scan finds the variables config/server.rs reads"
    );
    let missing: Vec<String> = names
        .iter()
        .filter(|(name, _)| !catalog::knows(name) && !NOT_VARIABLES.contains(&name.as_str()))
        .map(|(name, at)| format!("{at}: {name}"))
        .collect();
    assert!(
        missing.is_empty(),
        "WS_* names read in code but missing from src/config/catalog.rs SETTINGS:\n{}",
        missing.join("\n")
    );
}

#[test]
fn every_catalog_variable_is_read_somewhere() {
    let names = names_in_code();
    let stale: Vec<&str> = catalog::SETTINGS
        .iter()
        .map(|setting| setting.name)
        .filter(|name| name.starts_with("WS_"))
        .filter(|name| {
            let family = name.strip_suffix("<NAME>");
            !names.iter().any(|(code, _)| match family {
                Some(family) => code.starts_with(family),
                None => code == name,
            })
        })
        .collect();
    assert!(
        stale.is_empty(),
        "settings in the catalog that no code reads: {stale:?}"
    );
}

#[test]
fn each_setting_is_listed_once() {
    let mut names: Vec<&str> = catalog::SETTINGS.iter().map(|s| s.name).collect();
    names.sort_unstable();
    let before = names.len();
    names.dedup();
    assert_eq!(before, names.len(), "a setting listed twice in the catalog");
}
