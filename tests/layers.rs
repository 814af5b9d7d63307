//! The crate's modules depend on each other one way only:
//! `http -> service -> cluster -> topology -> actors -> sinks -> db -> settings -> analytics -> detector ->
//! events -> ids`, with the foundation (supervision, telemetry, metrics, ...) below what uses it.
//!
//! Read from the source text: every `crate::a::b` and `super::x` path outside `#[cfg(test)]`
//! code (tests may compose modules freely) is an edge. Two rules:
//! 1. a top-level module imports only modules of lower layers (`LAYERS`);
//! 2. no cycle among the submodules of one module (`actors::camera` and `actors::gpu`, say).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Lowest first. A module may use any module of a lower layer, none of its own or a higher one.
const LAYERS: &[&[&str]] = &[
    &["ids", "objects", "overflow", "supervision", "telemetry", "redis_keys", "device_memory", "access", "tls"],
    &["events"],
    &["detector"],
    &["analytics"],
    &["camera_spec", "metrics"],
    &["settings", "pools"],
    &["db", "redis_conn"],
    &["sinks"],
    &["picture"],
    &["actors"],
    &["topology"],
    &["cluster"],
    &["service", "analyze"],
    &["evaluate"],
    &["http"],
];

type ModPath = Vec<String>;

/// Every module of the library (not `main.rs`, the binary on top of it) and its non-test text.
fn modules() -> BTreeMap<ModPath, String> {
    let mut out = BTreeMap::new();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut stack = vec![root.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().and_then(|e| e.to_str()) != Some("rs") {
                continue;
            }
            let rel = path.strip_prefix(&root).unwrap().with_extension("");
            let mut parts: ModPath = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
            if parts.last().map(String::as_str) == Some("mod") {
                parts.pop();
            }
            if parts == ["lib"] || parts == ["main"] {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let code = text.split("#[cfg(test)]").next().unwrap_or_default();
            let code: Vec<&str> = code.lines().filter(|l| !l.trim_start().starts_with("//")).collect();
            out.insert(parts, code.join("\n"));
        }
    }
    out
}

/// The identifiers after `prefix` in each `prefix::a::b::c` of `text`.
fn paths_after<'a>(text: &'a str, prefix: &str) -> Vec<Vec<&'a str>> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find(prefix) {
        let before = rest[..at].chars().next_back();
        rest = &rest[at + prefix.len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$') {
            continue;
        }
        let mut segments = Vec::new();
        let mut tail = rest;
        loop {
            let end = tail.find(|c: char| !(c.is_alphanumeric() || c == '_')).unwrap_or(tail.len());
            if end == 0 {
                break;
            }
            segments.push(&tail[..end]);
            match tail[end..].strip_prefix("::") {
                Some(next) => tail = next,
                None => break,
            }
        }
        out.push(segments);
    }
    out
}

/// Edges between modules: `(from, to)` where `to` is the longest known module prefix of a path.
fn edges(modules: &BTreeMap<ModPath, String>) -> BTreeSet<(ModPath, ModPath)> {
    let resolve = |path: Vec<String>| -> Option<ModPath> {
        (1..=path.len()).rev().map(|n| path[..n].to_vec()).find(|p| modules.contains_key(p))
    };
    let mut out = BTreeSet::new();
    for (module, text) in modules {
        let mut targets: Vec<ModPath> = Vec::new();
        for segments in paths_after(text, "crate::") {
            targets.push(segments.iter().map(|s| s.to_string()).collect());
        }
        for segments in paths_after(text, "super::") {
            let mut path = module[..module.len() - 1].to_vec();
            path.extend(segments.iter().filter(|s| **s != "super").map(|s| s.to_string()));
            targets.push(path);
        }
        for target in targets.into_iter().filter_map(resolve) {
            if &target != module {
                out.insert((module.clone(), target));
            }
        }
    }
    out
}

fn layer_of(top: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&top))
}

#[test]
fn every_module_has_a_layer() {
    let unplaced: BTreeSet<String> =
        modules().keys().map(|m| m[0].clone()).filter(|top| layer_of(top).is_none()).collect();
    assert!(unplaced.is_empty(), "modules missing from LAYERS in tests/layers.rs: {unplaced:?}");
}

#[test]
fn top_level_modules_depend_only_on_lower_layers() {
    let modules = modules();
    let mut violations = BTreeSet::new();
    for (from, to) in edges(&modules) {
        if from[0] == to[0] {
            continue;
        }
        let (Some(a), Some(b)) = (layer_of(&from[0]), layer_of(&to[0])) else { continue };
        if b >= a {
            violations.insert(format!("{} -> {}", from.join("::"), to.join("::")));
        }
    }
    assert!(
        violations.is_empty(),
        "imports of an equal or higher layer:\n  {}",
        Vec::from_iter(violations).join("\n  ")
    );
}

#[test]
fn sibling_submodules_form_no_cycle() {
    let modules = modules();
    // Between children of one parent: `actors::gpu::worker -> actors::camera::source` is the
    // edge `actors::gpu -> actors::camera`.
    let mut graph: BTreeMap<ModPath, BTreeSet<ModPath>> = BTreeMap::new();
    for (from, to) in edges(&modules) {
        let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
        if common == from.len() || common == to.len() || common == 0 {
            continue; // an ancestor or descendant, or two top-level modules (the layers' rule)
        }
        graph.entry(from[..=common].to_vec()).or_default().insert(to[..=common].to_vec());
    }
    let mut cycles = Vec::new();
    for start in graph.keys() {
        // Is `start` reachable from one of its own targets?
        let mut seen = BTreeSet::new();
        let mut stack: Vec<&ModPath> = graph[start].iter().collect();
        while let Some(node) = stack.pop() {
            if node == start {
                cycles.push(start.join("::"));
                break;
            }
            if seen.insert(node) {
                stack.extend(graph.get(node).into_iter().flatten());
            }
        }
    }
    assert!(cycles.is_empty(), "modules on a dependency cycle with a sibling: {cycles:?}");
}

#[test]
fn the_checks_see_a_violation() {
    let mut modules = BTreeMap::new();
    modules.insert(vec!["analytics".to_string()], "use crate::actors::messages::Frame;".to_string());
    modules.insert(vec!["actors".to_string()], "use crate::analytics::scene;".to_string());
    modules.insert(vec!["actors".to_string(), "messages".to_string()], String::new());
    let found = edges(&modules);
    assert!(found.contains(&(vec!["analytics".into()], vec!["actors".into(), "messages".into()])));
    assert!(layer_of("analytics") < layer_of("actors"));
}
