//! The module graph points one way: no top-level module of the library reaches, through
//! `crate::` paths in its non-test code, a module that reaches back to it. A newcomer can
//! then read the layers bottom up (`envelope`, `smtp`, `telemetry`, `queue`, `filter`,
//! `policy`, `delivery`, `ingress`, `admin`, `roles`) and a change low in the graph cannot
//! depend on one above it.
//!
//! Nodes are the top-level modules under `src/`, except `smtp::address`, which is its own
//! node: the leaf `envelope` (what every layer shares) is built on mail addresses and
//! nothing else of `smtp`. Test code (`*tests.rs`, `tests/` and `testing/` directories,
//! `#[cfg(test)] mod … {` blocks, the queue's conformance suite) and comments do not
//! count: tests may reach anywhere.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

type Graph = BTreeMap<String, BTreeMap<String, BTreeSet<String>>>;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).expect("read src") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if name != "tests" && name != "testing" {
                rust_files(&path, out);
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            let name = path.file_stem().unwrap().to_string_lossy().into_owned();
            if !name.ends_with("tests") && name != "testing" && name != "conformance" {
                out.push(path);
            }
        }
    }
}

/// The node a file of `src/` belongs to; `None` for the crate roots and the binary's CLI.
fn node_of(relative: &Path) -> Option<String> {
    let parts: Vec<String> = relative
        .with_extension("")
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    match parts.as_slice() {
        [root] if root == "lib" || root == "main" => None,
        [cli, ..] if cli == "cli" => None,
        [smtp, address, ..] if smtp == "smtp" && address == "address" => {
            Some("smtp::address".into())
        }
        [top, ..] => Some(top.clone()),
        [] => None,
    }
}

/// The code of a file without comments and without its trailing `#[cfg(test)]` module.
fn production_code(text: &str) -> String {
    // Only an inline block (`mod tests {`) ends the production code; `mod tests;` names
    // a file of its own, which `rust_files` leaves out.
    let inline_tests = text
        .match_indices("#[cfg(test)]\nmod ")
        .find(|(at, marker)| {
            let rest = &text[at + marker.len()..];
            let name_end = rest
                .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            rest[name_end..].starts_with(" {")
        });
    let text = match inline_tests {
        Some((at, _)) => &text[..at],
        None => text,
    };
    text.lines()
        .map(|line| match line.find("//") {
            Some(at) => &line[..at],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The nodes a piece of code names through `crate::…`.
fn targets(code: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for (at, _) in code.match_indices("crate::") {
        // `sluice_crate::` or `$crate::` are not ours.
        if code[..at]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$')
        {
            continue;
        }
        let rest = &code[at + "crate::".len()..];
        let module: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        if module == "smtp" && rest["smtp".len()..].starts_with("::address") {
            found.insert("smtp::address".into());
        } else if !module.is_empty() && module != "testing" {
            found.insert(module);
        }
    }
    found
}

/// node -> target -> files that make the edge.
fn graph() -> Graph {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut graph = Graph::new();
    for file in files {
        let relative = file.strip_prefix(&src).unwrap().to_path_buf();
        let Some(node) = node_of(&relative) else {
            continue;
        };
        let code = production_code(&fs::read_to_string(&file).expect("read source"));
        let edges = graph.entry(node.clone()).or_default();
        for target in targets(&code) {
            if target != node {
                edges
                    .entry(target)
                    .or_default()
                    .insert(relative.display().to_string());
            }
        }
    }
    graph
}

/// One cycle, as a path of nodes that starts and ends at the same node, if any.
fn find_cycle(graph: &Graph) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &Graph,
        done: &mut BTreeSet<String>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        if let Some(start) = path.iter().position(|n| n == node) {
            let mut cycle = path[start..].to_vec();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for target in graph.get(node).into_iter().flat_map(|t| t.keys()) {
            if let Some(cycle) = visit(target, graph, done, path) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|node| visit(node, graph, &mut done, &mut Vec::new()))
}

#[test]
fn the_module_graph_has_no_cycle() {
    let graph = graph();
    if let Some(cycle) = find_cycle(&graph) {
        let edges: Vec<String> = cycle
            .windows(2)
            .map(|pair| {
                let files = &graph[&pair[0]][&pair[1]];
                format!("{} -> {} ({:?})", pair[0], pair[1], files)
            })
            .collect();
        panic!("module cycle:\n{}", edges.join("\n"));
    }
}

#[test]
fn the_protocol_and_the_shared_types_sit_below_everything_else() {
    let graph = graph();
    let reaches = |node: &str| -> BTreeSet<String> {
        graph
            .get(node)
            .map(|t| t.keys().cloned().collect())
            .unwrap_or_default()
    };
    assert_eq!(
        reaches("envelope"),
        BTreeSet::from(["smtp::address".to_string()]),
        "envelope depends on mail addresses only"
    );
    assert!(reaches("smtp::address").is_empty());
    let smtp = reaches("smtp");
    for forbidden in ["queue", "policy", "filter", "telemetry", "config"] {
        assert!(!smtp.contains(forbidden), "smtp imports {forbidden}");
    }
    let queue = reaches("queue");
    for forbidden in ["telemetry", "config", "events", "policy"] {
        assert!(!queue.contains(forbidden), "queue imports {forbidden}");
    }
    let telemetry = reaches("telemetry");
    for forbidden in ["config", "queue", "policy", "delivery", "ingress"] {
        assert!(
            !telemetry.contains(forbidden),
            "telemetry imports {forbidden}"
        );
    }
}

/// The modules in the order of the map in `src/lib.rs`.
fn map_order() -> Vec<String> {
    let lib = fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs"))
        .expect("read lib.rs");
    lib.lines()
        .filter_map(|line| line.strip_prefix("//! | [`"))
        .filter_map(|rest| rest.split_once('`').map(|(name, _)| name.to_string()))
        .collect()
}

/// The library's top-level modules, as `src/lib.rs` declares them.
fn declared_modules() -> BTreeSet<String> {
    let lib = fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs"))
        .expect("read lib.rs");
    lib.lines()
        .filter_map(|line| line.strip_prefix("pub mod "))
        .map(|rest| rest.trim_end_matches(';').to_string())
        .collect()
}

/// The map in `src/lib.rs` lists every module once, bottom up: each module uses only
/// modules listed above it (mail addresses, `smtp::address`, are below everything). So
/// the map is also the order to read the code in.
#[test]
fn the_module_map_lists_every_module_bottom_up() {
    let order = map_order();
    let listed: BTreeSet<String> = order.iter().cloned().collect();
    assert_eq!(
        listed.len(),
        order.len(),
        "a module listed twice: {order:?}"
    );
    assert_eq!(listed, declared_modules(), "the map and `pub mod`s differ");
    let position = |node: &str| -> Option<usize> {
        if node == "smtp::address" {
            return None;
        }
        order.iter().position(|m| m == node)
    };
    for (node, targets) in graph() {
        let Some(at) = position(&node) else { continue };
        for (target, files) in targets {
            if let Some(target_at) = position(&target) {
                assert!(
                    target_at < at,
                    "{node} uses {target} ({files:?}), listed below it in the map"
                );
            }
        }
    }
}

/// The README's layout line names every module of `src/`, in the order of the map.
#[test]
fn the_readme_layout_line_names_every_module_in_the_order_of_the_map() {
    let readme = fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("read README");
    let layout = readme
        .split("\n- Layout")
        .nth(1)
        .expect("a layout line in the README")
        .split("\n- ")
        .next()
        .unwrap();
    let named: Vec<String> = layout
        .split("`src/")
        .skip(1)
        .filter(|rest| !rest.starts_with("lib.rs"))
        .map(|rest| {
            rest.chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect()
        })
        .collect();
    assert_eq!(
        named,
        map_order(),
        "the README's layout line and the map differ"
    );
}

/// The cycle finder itself finds a planted cycle and its files.
#[test]
fn a_planted_cycle_is_found() {
    let mut graph = Graph::new();
    for (from, to) in [("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")] {
        graph
            .entry(from.into())
            .or_default()
            .entry(to.into())
            .or_default()
            .insert(format!("{from}.rs"));
    }
    let cycle = find_cycle(&graph).expect("a cycle");
    assert_eq!(cycle.first(), cycle.last());
    assert_eq!(cycle.len(), 4);
    graph.get_mut("c").unwrap().remove("a");
    assert_eq!(find_cycle(&graph), None);
    assert_eq!(
        targets("use crate::smtp::address::Mailbox; my_crate::no; $crate::no; crate::queue::Q"),
        BTreeSet::from(["smtp::address".to_string(), "queue".to_string()])
    );
}
