//! The module graph of a crate, read from its source files, and the cycles
//! in it.
//!
//! **The rule.** Inside a crate, the modules that share a parent (the
//! top-level modules of `lib.rs`, the files of one folder) must not import
//! each other in a circle: `raw_to_lake ⇄ consume` hid that the
//! consumer-handling code was a runtime below the jobs. A module may use its
//! ancestors (the folder's `mod.rs` is its namespace) and its own
//! descendants freely; only edges between different siblings' subtrees
//! count. Test modules (`#[cfg(test)] mod …`) are left out: a test may
//! import anything.
//!
//! **How.** Textual, like `cargo modules` but without compiling: each `.rs`
//! file is a module (`foo.rs`, `foo/mod.rs` → `foo`); every path that starts
//! with `crate::`, `super::`, `self::` or a child module's name is resolved
//! to the longest module prefix it names, following `pub use` re-exports.
//! Comments, strings and attributes are not parsed specially, which the
//! house style (no paths in strings) makes good enough; a false edge shows
//! up as a cycle to look at, never as a silent pass.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A module path from the crate root (`[]` is the root).
type ModulePath = Vec<String>;

/// A crate's source: each module's code (tests left out), the modules it
/// declares, and the names it re-exports.
struct Crate {
    code: BTreeMap<ModulePath, String>,
    /// (module, name) → the path a `pub use` gives that name.
    reexports: BTreeMap<(ModulePath, String), Vec<String>>,
}

/// Each cycle among sibling modules of the crate whose `src` directory is
/// `src`, as module paths in order (`["raw", "runtime", "raw"]`).
pub fn module_cycles(src: &Path) -> Vec<Vec<String>> {
    let krate = read_crate(src);
    let modules: BTreeSet<ModulePath> = krate.code.keys().cloned().collect();
    // Sibling edges: (parent, child a, child b).
    let mut edges: BTreeMap<ModulePath, BTreeSet<(String, String)>> = BTreeMap::new();
    for (module, code) in &krate.code {
        for path in referenced_paths(module, code, &modules) {
            let Some(target) = resolve(&krate, &modules, path) else {
                continue;
            };
            // The deepest common ancestor, and the children of it on each side.
            let common = module
                .iter()
                .zip(&target)
                .take_while(|(a, b)| a == b)
                .count();
            if common >= module.len() || common >= target.len() {
                continue; // an ancestor or a descendant
            }
            edges
                .entry(module[..common].to_vec())
                .or_default()
                .insert((module[common].clone(), target[common].clone()));
        }
    }
    let mut cycles = Vec::new();
    for (parent, pairs) in edges {
        for cycle in find_cycles(&pairs) {
            cycles.push(
                cycle
                    .into_iter()
                    .map(|child| {
                        let mut path = parent.clone();
                        path.push(child);
                        path.join("::")
                    })
                    .collect(),
            );
        }
    }
    cycles
}

fn read_crate(src: &Path) -> Crate {
    let mut files = Vec::new();
    collect_files(src, &mut files);
    let mut code = BTreeMap::new();
    let mut reexports = BTreeMap::new();
    for file in files {
        let Some(module) = module_of(src, &file) else {
            continue;
        };
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        let text = without_tests(&text);
        for (name, target) in pub_uses(&text) {
            reexports.insert((module.clone(), name), target);
        }
        code.insert(module, text);
    }
    Crate { code, reexports }
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `lib.rs`/`main.rs` → root, `a/b.rs` and `a/b/mod.rs` → `a::b`.
fn module_of(src: &Path, file: &Path) -> Option<ModulePath> {
    let relative = file.strip_prefix(src).ok()?;
    let mut parts: Vec<String> = relative
        .iter()
        .map(|part| part.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    match parts.last().map(String::as_str) {
        Some("mod") => {
            parts.pop();
        }
        Some("lib" | "main") if parts.len() == 1 => parts.clear(),
        _ => {}
    }
    Some(parts)
}

/// The file without its test module(s) and line comments.
fn without_tests(text: &str) -> String {
    let mut out = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        if line.trim() == "#[cfg(test)]" && lines.peek().is_some_and(|next| next.contains("mod ")) {
            // Skip the module: to the end of its braces, or a `mod x;` line.
            let declaration = lines.next().unwrap_or_default();
            if declaration.trim_end().ends_with(';') {
                continue;
            }
            let mut depth = brace_depth(declaration);
            while depth > 0 {
                match lines.next() {
                    Some(line) => depth += brace_depth(line),
                    None => break,
                }
            }
            continue;
        }
        let code = match line.find("//") {
            Some(at) => &line[..at],
            None => line,
        };
        out.push_str(code);
        out.push('\n');
    }
    out
}

fn brace_depth(line: &str) -> i64 {
    line.matches('{').count() as i64 - line.matches('}').count() as i64
}

/// Every `pub use` in `text`: (the name it gives, the path it names).
fn pub_uses(text: &str) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    for statement in statements(text, "pub use ") {
        for path in expand_use(&statement) {
            if let Some(name) = path.last() {
                let name = name.clone();
                out.push((name, path));
            }
        }
    }
    out
}

/// The bodies of the statements starting with `keyword` (up to `;`).
fn statements(text: &str, keyword: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find(keyword) {
        let before = &rest[..at];
        let starts_line = before.is_empty() || before.ends_with('\n') || before.ends_with(' ');
        rest = &rest[at + keyword.len()..];
        if !starts_line {
            continue;
        }
        if let Some(end) = rest.find(';') {
            let body = rest[..end].split_whitespace().collect::<Vec<_>>().join(" ");
            // A use tree has only paths, braces, commas, `*` and `as`;
            // anything else is the word "use" in a string or a comment.
            let is_tree = body
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_:{}, *".contains(c));
            let balanced = body.matches('{').count() == body.matches('}').count();
            if is_tree && balanced {
                out.push(body);
            }
            rest = &rest[end..];
        }
    }
    out
}

/// `a::{b, c::{d, e as f}}` → `a::b`, `a::c::d`, `a::c::e` (the original
/// names: a rename does not change the module an edge goes to).
fn expand_use(tree: &str) -> Vec<Vec<String>> {
    fn expand(prefix: &[String], tree: &str, out: &mut Vec<Vec<String>>) {
        let tree = tree.trim();
        if let Some(open) = tree.find('{') {
            let mut path = prefix.to_vec();
            path.extend(split_path(tree[..open].trim_end_matches("::")));
            let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
            for part in split_top_level(inner) {
                expand(&path, part, out);
            }
        } else {
            let tree = tree.split(" as ").next().unwrap_or(tree).trim();
            let mut path = prefix.to_vec();
            path.extend(split_path(tree));
            // `a::{self, b}`: `self` is `a` itself.
            if path.len() > 1 && path.last().is_some_and(|last| last == "self") {
                path.pop();
            }
            if !path.is_empty() {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    expand(&[], tree, &mut out);
    out
}

fn split_path(text: &str) -> Vec<String> {
    text.split("::")
        .map(str::trim)
        .filter(|part| !part.is_empty() && *part != "*")
        .map(str::to_string)
        .collect()
}

/// Splits `a, b::{c, d}, e` at the commas outside braces.
fn split_top_level(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in text.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts.into_iter().filter(|p| !p.trim().is_empty()).collect()
}

/// The paths `module`'s code names, made absolute (from the crate root).
fn referenced_paths(
    module: &ModulePath,
    code: &str,
    modules: &BTreeSet<ModulePath>,
) -> Vec<ModulePath> {
    let mut out = Vec::new();
    let children: BTreeSet<&str> = modules
        .iter()
        .filter(|m| m.len() == module.len() + 1 && m.starts_with(module))
        .map(|m| m[module.len()].as_str())
        .collect();
    // `use` statements (their trees), and any other `crate::`/`super::` path.
    for statement in statements(code, "use ") {
        for path in expand_use(&statement) {
            if let Some(absolute) = absolute(module, &path, &children) {
                out.push(absolute);
            }
        }
    }
    let bytes = code.as_bytes();
    for start in ["crate::", "super::", "self::"] {
        for (at, _) in code.match_indices(start) {
            let boundary = at == 0
                || !(bytes[at - 1].is_ascii_alphanumeric()
                    || bytes[at - 1] == b'_'
                    || bytes[at - 1] == b':');
            if !boundary {
                continue;
            }
            let path: String = code[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            if let Some(absolute) = absolute(module, &split_path(&path), &children) {
                out.push(absolute);
            }
        }
    }
    out
}

/// `path` as written in `module`, from the crate root; `None` for paths
/// into other crates.
fn absolute(module: &ModulePath, path: &[String], children: &BTreeSet<&str>) -> Option<ModulePath> {
    let first = path.first()?;
    match first.as_str() {
        "crate" => Some(path[1..].to_vec()),
        "self" => Some([module.as_slice(), &path[1..]].concat()),
        "super" => {
            let mut base = module.clone();
            let mut rest = path;
            while rest.first().is_some_and(|p| p == "super") {
                base.pop()?;
                rest = &rest[1..];
            }
            Some([base.as_slice(), rest].concat())
        }
        name if children.contains(name) => Some([module.as_slice(), path].concat()),
        _ => None,
    }
}

/// The module `path` lands in: its longest prefix that is a module,
/// following a `pub use` when the next name is re-exported there.
fn resolve(krate: &Crate, modules: &BTreeSet<ModulePath>, path: ModulePath) -> Option<ModulePath> {
    let mut path = path;
    for _ in 0..8 {
        let mut depth = path.len();
        while depth > 0 && !modules.contains(&path[..depth].to_vec()) {
            depth -= 1;
        }
        let module = path[..depth].to_vec();
        let Some(name) = path.get(depth) else {
            return Some(module);
        };
        match krate.reexports.get(&(module.clone(), name.clone())) {
            Some(target) => {
                let children: BTreeSet<&str> = modules
                    .iter()
                    .filter(|m| m.len() == module.len() + 1 && m.starts_with(&module))
                    .map(|m| m[module.len()].as_str())
                    .collect();
                let Some(next) = absolute(&module, target, &children) else {
                    return Some(module); // a re-export from another crate
                };
                if next == path {
                    return Some(module);
                }
                path = [next, path[depth + 1..].to_vec()].concat();
            }
            None => return Some(module),
        }
    }
    None
}

/// The elementary cycles of a small directed graph, each listed from its
/// smallest node and closed (`a → b → a`).
fn find_cycles(edges: &BTreeSet<(String, String)>) -> Vec<Vec<String>> {
    let mut next: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (from, to) in edges {
        if from != to {
            next.entry(from).or_default().push(to);
        }
    }
    let mut cycles = BTreeSet::new();
    fn walk<'a>(
        start: &'a str,
        at: &'a str,
        path: &mut Vec<&'a str>,
        next: &BTreeMap<&'a str, Vec<&'a str>>,
        cycles: &mut BTreeSet<Vec<String>>,
    ) {
        for &to in next.get(at).map(Vec::as_slice).unwrap_or_default() {
            if to == start {
                let mut cycle: Vec<String> = path.iter().map(|s| s.to_string()).collect();
                cycle.push(start.to_string());
                cycles.insert(cycle);
            } else if to > start && !path.contains(&to) {
                path.push(to);
                walk(start, to, path, next, cycles);
                path.pop();
            }
        }
    }
    for &start in next.keys() {
        walk(start, start, &mut vec![start], &next, &mut cycles);
    }
    cycles.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (path, text) in files {
            let path = dir.path().join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        dir
    }

    #[test]
    fn a_cycle_between_siblings_is_found_through_a_reexport() {
        let dir = tree(&[
            (
                "lib.rs",
                "mod consume;\nmod raw;\npub use raw::StreamError;\n",
            ),
            (
                "raw.rs",
                "use crate::consume::Poller;\npub struct StreamError;\n",
            ),
            (
                "consume.rs",
                "use crate::StreamError;\npub struct Poller;\n",
            ),
        ]);
        assert_eq!(module_cycles(dir.path()), [["consume", "raw", "consume"]]);
    }

    #[test]
    fn parents_children_tests_and_other_crates_are_not_edges() {
        let dir = tree(&[
            (
                "lib.rs",
                "pub mod runtime;\npub mod raw;\npub use raw::Job;\n",
            ),
            (
                "runtime/mod.rs",
                "pub mod poller;\nuse poller::Poller;\npub use logpipe_core::job::Job;\n",
            ),
            (
                "runtime/poller.rs",
                "use super::Job;\nuse crate::runtime::Job as J;\npub struct Poller;\n",
            ),
            (
                "raw/mod.rs",
                "mod buffer;\nuse crate::runtime::poller::Poller;\nuse buffer::Buffer;\npub struct Job;\n\
                 #[cfg(test)]\nmod tests {\n    use crate::runtime::*;\n}\n",
            ),
            (
                "raw/buffer.rs",
                "use super::Job;\nuse crate::runtime::Job;\npub struct Buffer;\n",
            ),
        ]);
        assert!(
            module_cycles(dir.path()).is_empty(),
            "{:?}",
            module_cycles(dir.path())
        );
    }

    #[test]
    fn a_cycle_inside_a_folder_is_named_with_its_parent() {
        let dir = tree(&[
            ("lib.rs", "mod bus;\n"),
            ("bus/mod.rs", "mod a;\nmod b;\n"),
            ("bus/a.rs", "use super::b::B;\npub struct A;\n"),
            (
                "bus/b.rs",
                "fn f() -> crate::bus::a::A { todo() }\npub struct B;\n",
            ),
        ]);
        assert_eq!(module_cycles(dir.path()), [["bus::a", "bus::b", "bus::a"]]);
    }
}
