//! No import cycles between the crate's modules: the tree is layered so the
//! data flows one way (store → catalog → ingest → query → engine → reports,
//! maintenance, fixtures → interfaces). Every `crate::…` and `super::…` path
//! in `src/` (test-only modules aside) is an edge from the module that names
//! it to the module it names; the test fails with each cycle it finds, at the
//! depth of top-level modules (`query`), of their children (`query::lineage`)
//! and one level below.
//!
//! `cargo test --test module_layers -- --nocapture` prints the layers.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use regex::Regex;

/// Module path of every non-test source file, with its text (test blocks cut).
fn sources() -> BTreeMap<Vec<String>, String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = BTreeMap::new();
    let mut test_only = BTreeSet::new();
    let declared =
        Regex::new(r"#\[cfg\(test\)\]\s*(?:pub(?:\([a-z]+\))?\s+)?mod\s+(\w+)\s*;").unwrap();
    let mut stack = vec![root.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(&root).unwrap().with_extension("");
            let mut module: Vec<String> = rel
                .iter()
                .map(|p| p.to_string_lossy().into_owned())
                .collect();
            if matches!(
                module.last().map(String::as_str),
                Some("mod" | "lib" | "main")
            ) {
                module.pop();
            }
            let text = std::fs::read_to_string(&path).unwrap();
            for m in declared.captures_iter(&text) {
                let mut child = module.clone();
                child.push(m[1].to_string());
                test_only.insert(child);
            }
            files.insert(module, cut_test_blocks(&text));
        }
    }
    files.retain(|m, _| !test_only.iter().any(|t| m.starts_with(t)));
    files
}

/// The text without `#[cfg(test)] mod … { … }` blocks.
fn cut_test_blocks(text: &str) -> String {
    let start = Regex::new(r"#\[cfg\(test\)\]\s*mod\s+\w+\s*\{").unwrap();
    let mut out = String::new();
    let mut rest = text;
    while let Some(m) = start.find(rest) {
        out.push_str(&rest[..m.start()]);
        let mut depth = 1;
        let mut end = rest.len();
        for (i, c) in rest[m.end()..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = m.end() + i + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// Every module path `text` (the source of `module`) names, resolved to
/// absolute paths: `crate::a::b`, `crate::{a::b, c}`, `super::x` (`self::…`
/// stays inside the module and is skipped).
fn named_paths(module: &[String], text: &str) -> Vec<Vec<String>> {
    let path = Regex::new(r"\b(crate|super)((?:::super)*)::(\{[^}]*\}|[A-Za-z_][A-Za-z0-9_]*(?:::[A-Za-z_][A-Za-z0-9_]*)*)").unwrap();
    let mut found = Vec::new();
    for m in path.captures_iter(text) {
        let base: Vec<String> = if &m[1] == "crate" {
            Vec::new()
        } else {
            // `super` is the parent module, whether the file is `x.rs` or `x/mod.rs`.
            let ups = 1 + m[2].matches("super").count();
            module[..module.len().saturating_sub(ups)].to_vec()
        };
        let tail = &m[3];
        let items: Vec<&str> = if let Some(group) = tail.strip_prefix('{') {
            group
                .trim_end_matches('}')
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty() && *s != "self")
                .collect()
        } else {
            vec![tail]
        };
        for item in items {
            let mut target = base.clone();
            for seg in item.split("::") {
                let seg = seg.trim().trim_start_matches('{');
                if seg.is_empty() || seg.chars().next().is_some_and(|c| c.is_uppercase()) {
                    break;
                }
                target.push(seg.to_string());
            }
            found.push(target);
        }
    }
    found
}

/// Edges between modules cut at `depth` segments; a module and its own
/// descendants are one node at that depth, so a parent naming its child is
/// no edge.
fn graph(depth: usize) -> BTreeMap<String, BTreeMap<String, BTreeSet<String>>> {
    let files = sources();
    let modules: BTreeSet<Vec<String>> = files.keys().cloned().collect();
    let mut edges: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for (module, text) in &files {
        if module.is_empty() {
            continue; // lib.rs and main.rs declare the tree
        }
        let from: Vec<String> = module.iter().take(depth).cloned().collect();
        for target in named_paths(module, text) {
            // The longest prefix of the named path that is a module.
            let Some(len) = (1..=target.len())
                .rev()
                .find(|n| modules.contains(&target[..*n]))
            else {
                continue;
            };
            let to: Vec<String> = target[..len].iter().take(depth).cloned().collect();
            if to.is_empty() || from.starts_with(&to) || to.starts_with(&from) {
                continue;
            }
            edges
                .entry(from.join("::"))
                .or_default()
                .entry(to.join("::"))
                .or_default()
                .insert(module.join("::"));
        }
    }
    edges
}

/// Strongly connected sets of more than one module (Tarjan).
fn cycles(edges: &BTreeMap<String, BTreeMap<String, BTreeSet<String>>>) -> Vec<Vec<String>> {
    struct State<'a> {
        edges: &'a BTreeMap<String, BTreeMap<String, BTreeSet<String>>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        found: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a str) {
        let i = s.index.len();
        s.index.insert(v, i);
        s.low.insert(v, i);
        s.stack.push(v);
        s.on_stack.insert(v);
        if let Some(targets) = s.edges.get(v) {
            for w in targets.keys() {
                let w = w.as_str();
                if !s.index.contains_key(w) {
                    visit(s, w);
                    let lw = s.low[w];
                    let lv = s.low.get_mut(v).unwrap();
                    *lv = (*lv).min(lw);
                } else if s.on_stack.contains(w) {
                    let iw = s.index[w];
                    let lv = s.low.get_mut(v).unwrap();
                    *lv = (*lv).min(iw);
                }
            }
        }
        if s.low[v] == s.index[v] {
            let mut set = Vec::new();
            loop {
                let w = s.stack.pop().unwrap();
                s.on_stack.remove(w);
                set.push(w.to_string());
                if w == v {
                    break;
                }
            }
            if set.len() > 1 {
                set.sort();
                s.found.push(set);
            }
        }
    }
    let mut state = State {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for v in edges.keys() {
        if !state.index.contains_key(v.as_str()) {
            visit(&mut state, v);
        }
    }
    state.found
}

fn describe(
    edges: &BTreeMap<String, BTreeMap<String, BTreeSet<String>>>,
    set: &[String],
) -> String {
    let mut out = format!("cycle {set:?}:\n");
    for from in set {
        for (to, files) in edges.get(from).into_iter().flatten() {
            if set.contains(to) {
                out.push_str(&format!("  {from} -> {to} (in {files:?})\n"));
            }
        }
    }
    out
}

#[test]
fn the_module_graph_has_no_cycle() {
    let mut report = String::new();
    for depth in 1..=3 {
        let edges = graph(depth);
        for set in cycles(&edges) {
            report.push_str(&format!("depth {depth}: {}", describe(&edges, &set)));
        }
    }
    assert!(report.is_empty(), "{report}");
}

/// The checker sees the edges it must: a known dependency in each direction
/// the layering allows is found, so an empty cycle list is not an empty graph.
#[test]
fn the_checker_sees_real_edges() {
    let edges = graph(1);
    for (from, to) in [
        ("query", "catalog"),
        ("engine", "query"),
        ("interfaces", "engine"),
        ("catalog", "store"),
        ("fixtures", "engine"),
    ] {
        assert!(
            edges.get(from).is_some_and(|t| t.contains_key(to)),
            "{from} -> {to} not found; edges: {edges:#?}"
        );
    }
    let deeper = graph(2);
    assert!(
        deeper
            .get("report::chart")
            .is_some_and(|t| t.keys().any(|k| k.starts_with("report::")))
            || deeper.get("query::lineage").is_some_and(|t| !t.is_empty()),
        "no edges between children: {deeper:#?}"
    );
    // Print the layers for `--nocapture` readers.
    for (from, to) in &edges {
        println!(
            "{from} -> {}",
            to.keys().cloned().collect::<Vec<_>>().join(", ")
        );
    }
}
