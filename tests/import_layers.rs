//! The import graph of `src/` runs one way, with no exception:
//!
//! proto (wire vocabulary) → core → auth / metrics / config / shutdown →
//! source → shell → main / cli / dev / load / fuzzing.
//!
//! A module may name its own layer and the layers below it, never one above.
//! Within a layer, no two files may import each other, directly or round a
//! longer loop: a type two files share goes in a third file both import.
//!
//! The check reads the source text: every `crate::<module>` path outside a
//! comment (in `use` lines and inline paths alike) and every `super::` path.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// The layers, bottom first. A top-level module missing here fails the test,
/// so a new module is placed deliberately.
const LAYERS: &[&[&str]] = &[
    &["proto"],
    &["core"],
    &["auth", "metrics", "config", "shutdown"],
    &["source"],
    &["shell"],
    &["lib", "main", "cli", "dev", "load", "fuzzing", "bin"],
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

/// Every `.rs` file under `dir`, sorted.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).expect("src/ is readable") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// A file's module path: `src/shell/driver.rs` → `["shell", "driver"]`,
/// `src/core/mod.rs` → `["core"]`, `src/lib.rs` → `[]`.
fn module_path(src: &Path, file: &Path) -> Vec<String> {
    let relative = file.strip_prefix(src).expect("a file under src/");
    let mut parts: Vec<String> = relative
        .iter()
        .map(|part| part.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().expect("a file name");
    let stem = last.trim_end_matches(".rs");
    if parts.is_empty() && (stem == "lib" || stem == "main") {
        return Vec::new();
    }
    if stem != "mod" {
        parts.push(stem.to_owned());
    }
    parts
}

/// The top-level module a file belongs to, for its layer.
fn top_module(src: &Path, file: &Path) -> String {
    let relative = file.strip_prefix(src).expect("a file under src/");
    let first = relative
        .iter()
        .next()
        .expect("a non-empty path")
        .to_string_lossy();
    first.trim_end_matches(".rs").to_owned()
}

/// The file that defines the deepest existing prefix of `path`.
fn resolve(src: &Path, path: &[String]) -> Option<PathBuf> {
    for len in (0..=path.len()).rev() {
        let prefix = &path[..len];
        if prefix.is_empty() {
            return Some(src.join("lib.rs"));
        }
        let dir = prefix
            .iter()
            .fold(src.to_path_buf(), |p, part| p.join(part));
        let as_file = dir.with_extension("rs");
        if as_file.is_file() {
            return Some(as_file);
        }
        let as_mod = dir.join("mod.rs");
        if as_mod.is_file() {
            return Some(as_mod);
        }
    }
    None
}

/// The code of a line, without a trailing `//` comment (string literals
/// containing `//` only cut a line short, which can hide nothing relevant:
/// paths do not follow a URL on the same line in this code base).
fn code_of(line: &str) -> &str {
    match line.find("//") {
        Some(at) => &line[..at],
        None => line,
    }
}

/// One path that a line names: `crate::a::b` or `super::a::b`.
#[derive(Debug)]
struct Named {
    line: usize,
    text: String,
    /// `true` for `crate::…`, `false` for `super::…`.
    absolute: bool,
    segments: Vec<String>,
}

/// Every `crate::…` and `super::…` path in a file's code.
fn named_paths(source: &str) -> Vec<Named> {
    let mut named = Vec::new();
    for (index, line) in source.lines().enumerate() {
        let code = code_of(line);
        for (absolute, root) in [(true, "crate::"), (false, "super::")] {
            let mut from = 0;
            while let Some(at) = code[from..].find(root) {
                let start = from + at;
                from = start + root.len();
                // `$crate::` in macros and `ws_crate::` are not this crate.
                let before = code[..start].chars().next_back();
                if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$' || c == ':') {
                    continue;
                }
                let rest = &code[from..];
                let mut segments = Vec::new();
                let mut tail = rest;
                loop {
                    let ident: String = tail
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    if ident.is_empty() {
                        break;
                    }
                    tail = &tail[ident.len()..];
                    segments.push(ident);
                    match tail.strip_prefix("::") {
                        Some(next) => tail = next,
                        None => break,
                    }
                }
                named.push(Named {
                    line: index + 1,
                    text: format!("{root}{}", rest.trim_end().trim_end_matches(';')),
                    absolute,
                    segments,
                });
            }
        }
    }
    named
}

/// Every file-to-file import: (importer, imported, line, text).
struct Edge {
    from: PathBuf,
    to: PathBuf,
    line: usize,
    text: String,
}

fn edges(src: &Path, files: &[PathBuf]) -> (Vec<Edge>, Vec<String>) {
    let mut edges = Vec::new();
    let mut problems = Vec::new();
    for file in files {
        let source = fs::read_to_string(file).expect("a readable source file");
        let here = module_path(src, file);
        for named in named_paths(&source) {
            let target: Vec<String> = if named.absolute {
                if named.text.starts_with("crate::{") {
                    problems.push(format!(
                        "{}:{}: `{}`: write one `use crate::<module>::…` per module, \
                         so this check can read it",
                        file.display(),
                        named.line,
                        named.text
                    ));
                    continue;
                }
                named.segments.clone()
            } else {
                // `super::` from a file is its parent module; from an inline
                // `mod tests` it is the file itself, which resolves to an
                // ancestor or the file and is never a cycle or a layer jump.
                let mut base = here.clone();
                base.pop();
                base.extend(named.segments.iter().cloned());
                base
            };
            if let Some(to) = resolve(src, &target) {
                edges.push(Edge {
                    from: file.clone(),
                    to,
                    line: named.line,
                    text: named.text,
                });
            }
        }
    }
    (edges, problems)
}

/// Whether `ancestor` (a `mod.rs` or `lib.rs`) declares `file`, directly or
/// not: a module and its submodules may name each other's items.
fn is_ancestor(src: &Path, ancestor: &Path, file: &Path) -> bool {
    let a = module_path(src, ancestor);
    let f = module_path(src, file);
    let is_module_root = ancestor.ends_with("mod.rs") || ancestor.ends_with("lib.rs");
    is_module_root && f.len() > a.len() && f.starts_with(&a)
}

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

#[test]
fn no_module_imports_from_a_layer_above_its_own() {
    let src = src_dir();
    let files = rust_files(&src);
    let (edges, mut problems) = edges(&src, &files);
    for file in &files {
        let module = top_module(&src, file);
        if layer_of(&module).is_none() {
            problems.push(format!(
                "{}: top-level module `{module}` has no layer: add it to LAYERS in {}",
                file.display(),
                file!()
            ));
        }
    }
    for edge in &edges {
        let from = top_module(&src, &edge.from);
        let to = top_module(&src, &edge.to);
        if let (Some(from_layer), Some(to_layer)) = (layer_of(&from), layer_of(&to))
            && to_layer > from_layer
        {
            problems.push(format!(
                "{}:{}: `{}` makes `{from}` (layer {from_layer}) import `{to}` (layer \
                 {to_layer}); move the shared item down to `{from}` or below",
                edge.from.display(),
                edge.line,
                edge.text
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "imports that run back up the layer order:\n{}",
        problems.join("\n")
    );
}

#[test]
fn no_two_files_import_each_other_even_round_a_loop() {
    let src = src_dir();
    let files = rust_files(&src);
    let (edges, _) = edges(&src, &files);
    let mut graph: BTreeMap<PathBuf, BTreeSet<PathBuf>> = BTreeMap::new();
    let mut example: BTreeMap<(PathBuf, PathBuf), String> = BTreeMap::new();
    for edge in edges {
        if edge.from == edge.to
            || is_ancestor(&src, &edge.to, &edge.from)
            || is_ancestor(&src, &edge.from, &edge.to)
        {
            continue;
        }
        example
            .entry((edge.from.clone(), edge.to.clone()))
            .or_insert_with(|| format!("{}:{}: `{}`", edge.from.display(), edge.line, edge.text));
        graph.entry(edge.from).or_default().insert(edge.to);
    }
    // Depth-first search for a back edge; report the loop it closes.
    let mut state: BTreeMap<PathBuf, u8> = BTreeMap::new(); // 1 = on stack, 2 = done
    let mut loops = Vec::new();
    fn visit(
        node: &PathBuf,
        graph: &BTreeMap<PathBuf, BTreeSet<PathBuf>>,
        state: &mut BTreeMap<PathBuf, u8>,
        stack: &mut Vec<PathBuf>,
        loops: &mut Vec<Vec<PathBuf>>,
    ) {
        state.insert(node.clone(), 1);
        stack.push(node.clone());
        for next in graph.get(node).into_iter().flatten() {
            match state.get(next) {
                Some(1) => {
                    let at = stack.iter().position(|n| n == next).expect("on the stack");
                    let mut cycle = stack[at..].to_vec();
                    cycle.push(next.clone());
                    loops.push(cycle);
                }
                Some(_) => {}
                None => visit(next, graph, state, stack, loops),
            }
        }
        stack.pop();
        state.insert(node.clone(), 2);
    }
    for node in graph.keys() {
        if !state.contains_key(node) {
            visit(node, &graph, &mut state, &mut Vec::new(), &mut loops);
        }
    }
    let report: Vec<String> = loops
        .iter()
        .map(|cycle| {
            cycle
                .windows(2)
                .map(|pair| example[&(pair[0].clone(), pair[1].clone())].clone())
                .collect::<Vec<_>>()
                .join("\n  then ")
        })
        .collect();
    assert!(
        report.is_empty(),
        "files that import each other (put what they share in a third file):\n  {}",
        report.join("\n\n  ")
    );
}

#[test]
fn the_reader_sees_paths_in_use_lines_inline_paths_and_super() {
    let source = "use crate::core::{Core, Event};\n\
                  // use crate::shell::x;\n\
                  fn f(s: crate::shutdown::Shutdown) { $crate::x(); }\n\
                  use super::link::Link;\n";
    let named = named_paths(source);
    let texts: Vec<(&str, usize)> = named.iter().map(|n| (n.text.as_str(), n.line)).collect();
    assert_eq!(
        texts,
        [
            ("crate::core::{Core, Event}", 1),
            ("crate::shutdown::Shutdown) { $crate::x(); }", 3),
            ("super::link::Link", 4),
        ]
    );
    assert_eq!(named[0].segments, ["core"]);
    assert_eq!(named[1].segments, ["shutdown", "Shutdown"]);
    assert_eq!(named[2].segments, ["link", "Link"]);
}
