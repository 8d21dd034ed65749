//! The dependency rule of docs/architecture.md, checked on the source: every `crate::<module>`
//! path in `src/` is an edge between top-level modules; forbidden edges and circles fail the test,
//! naming the file. Also: the repository stands on its own (no comment cites notes kept outside it).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Modules that only the HTTP edge (and start-up, which wires everything) may import.
const HTTP_EDGE: &[&str] = &["routes", "state", "error"];
/// Who may import the HTTP edge.
const HTTP_EDGE_USERS: &[&str] = &["routes", "state", "error", "startup"];
/// Modules with no business knowing about use cases above them.
const LOWER: &[(&str, &[&str])] = &[
    (
        "store",
        &[
            "intake",
            "routes",
            "dispatch",
            "sync",
            "resolve",
            "provision",
            "auth",
            "admission",
        ],
    ),
    (
        "provision",
        &["dispatch", "sync", "resolve", "intake", "routes"],
    ),
    (
        "scim",
        &[
            "store",
            "provision",
            "dispatch",
            "sync",
            "resolve",
            "intake",
            "graph",
        ],
    ),
    (
        "graph",
        &[
            "store",
            "provision",
            "dispatch",
            "sync",
            "resolve",
            "intake",
            "scim",
        ],
    ),
    (
        "intake",
        &["dispatch", "sync", "resolve", "provision", "routes"],
    ),
    ("config", &["auth", "routes", "store", "intake"]),
    (
        "replica",
        &[
            "dispatch",
            "sync",
            "resolve",
            "provision",
            "intake",
            "routes",
            "scim",
            "graph",
        ],
    ),
];
/// Workers: they reach AWS only through `provision`.
const WORKERS: &[&str] = &["dispatch", "sync", "resolve"];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Top-level module → (imported module → first file that imports it).
fn module_graph() -> BTreeMap<String, BTreeMap<String, String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut graph: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for file in files {
        let relative = file
            .strip_prefix(&src)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let top = relative
            .split('/')
            .next()
            .unwrap()
            .trim_end_matches(".rs")
            .to_owned();
        if matches!(top.as_str(), "main" | "lib" | "bin") {
            continue;
        }
        // Code only: a doc link to another module is not a dependency.
        let text: String = std::fs::read_to_string(&file)
            .unwrap()
            .lines()
            .filter(|line| !line.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        for (i, _) in text.match_indices("crate::") {
            let rest = &text[i + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() && name != top {
                graph
                    .entry(top.clone())
                    .or_default()
                    .entry(name)
                    .or_insert_with(|| relative.clone());
            }
        }
    }
    graph
}

#[test]
fn imports_follow_the_dependency_rule() {
    let graph = module_graph();
    let mut broken = Vec::new();
    for (module, imports) in &graph {
        for (imported, file) in imports {
            let edge_forbidden = HTTP_EDGE.contains(&imported.as_str())
                && !HTTP_EDGE_USERS.contains(&module.as_str());
            let lower_forbidden = LOWER
                .iter()
                .any(|(m, banned)| m == module && banned.contains(&imported.as_str()));
            let worker_forbidden = WORKERS.contains(&module.as_str())
                && (imported == "scim" || HTTP_EDGE.contains(&imported.as_str()));
            if edge_forbidden || lower_forbidden || worker_forbidden {
                broken.push(format!("{file}: `{module}` imports `{imported}`"));
            }
        }
    }
    assert!(
        broken.is_empty(),
        "imports against docs/architecture.md:\n{}",
        broken.join("\n")
    );
}

#[test]
fn no_circle_between_modules() {
    let graph = module_graph();
    let mut circles = BTreeSet::new();
    // A depth-first search from every module; any path back to it is a circle.
    for start in graph.keys() {
        let mut stack = vec![(start.clone(), vec![start.clone()])];
        let mut seen = BTreeSet::new();
        while let Some((node, path)) = stack.pop() {
            for next in graph.get(&node).map(|m| m.keys()).into_iter().flatten() {
                if next == start {
                    let mut circle = path.clone();
                    circle.push(start.clone());
                    circles.insert(circle.join(" → "));
                } else if seen.insert(next.clone()) {
                    let mut longer = path.clone();
                    longer.push(next.clone());
                    stack.push((next.clone(), longer));
                }
            }
        }
    }
    assert!(
        circles.is_empty(),
        "circles between modules:\n{}",
        circles.into_iter().collect::<Vec<_>>().join("\n")
    );
}

#[test]
fn the_repository_cites_nothing_outside_itself() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in ["src", "tests", "benches", "crates", "docs"] {
        if root.join(dir).is_dir() {
            collect(&root.join(dir), &mut files);
        }
    }
    files.push(root.join("README.md"));
    // Written in pieces so that this file does not cite them itself.
    let needles = [
        concat!("DESIGN", ".md"),
        concat!("../", "shared"),
        concat!("facts/", "aws-scim"),
        concat!("facts/", "entra-graph"),
        concat!("facts/", "tooling"),
    ];
    let mut found = Vec::new();
    for file in files {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        for needle in needles {
            if text.contains(needle) {
                found.push(format!("{}: {needle}", file.display()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "references outside the repository:\n{}",
        found.join("\n")
    );
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            if !path.ends_with("target") {
                collect(&path, out);
            }
        } else if path
            .extension()
            .is_some_and(|e| e == "rs" || e == "md" || e == "toml")
        {
            out.push(path);
        }
    }
}
