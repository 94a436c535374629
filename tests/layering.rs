//! `src/protocol/` is sans-IO: this test fails if any of its code (comments
//! aside) names the event loop, the channels, sockets, threads or the clock.

use std::path::Path;

const FORBIDDEN: &[&str] = &[
    "mio",
    "crossbeam",
    "socket2",
    "std::net",
    "std::thread",
    "Instant::now",
    "SystemTime",
    "std::fs",
    "libc",
];

#[test]
fn protocol_imports_no_io_threads_or_clock() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/protocol");
    let mut checked = 0;
    let mut violations = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            for word in FORBIDDEN {
                let hit = code.match_indices(word).any(|(i, _)| {
                    // Whole identifiers only: `mio` must not match inside `premiom`.
                    let before = code[..i].chars().next_back();
                    let after = code[i + word.len()..].chars().next();
                    let ident =
                        |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
                    !ident(before) && !ident(after)
                });
                if hit {
                    violations.push(format!("{}:{}: {}", path.display(), n + 1, line.trim()));
                }
            }
        }
        checked += 1;
    }
    assert!(
        checked >= 8,
        "expected the protocol modules, found {checked} files"
    );
    assert!(
        violations.is_empty(),
        "protocol/ must stay sans-IO:\n{}",
        violations.join("\n")
    );
}

/// `src/server/` has no import circle: each file depends on the ones below
/// it, so a concern can be read (and changed) without the ones above.
#[test]
fn server_modules_import_no_circle() {
    use std::collections::{BTreeMap, BTreeSet};
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/server");
    let code_of = |name: &str| -> String {
        let text = std::fs::read_to_string(dir.join(format!("{name}.rs"))).unwrap();
        let text = text.split("#[cfg(test)]").next().unwrap().to_string();
        text.lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let mut modules = BTreeSet::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let stem = path.file_stem().unwrap().to_str().unwrap().to_string();
        if stem != "mod" && path.extension().is_some_and(|e| e == "rs") {
            modules.insert(stem);
        }
    }
    // Names mod.rs re-exports, by the module that defines them.
    let mut reexported = BTreeMap::new();
    for line in code_of("mod").lines() {
        let Some(rest) = line.trim().strip_prefix("pub use ") else {
            continue;
        };
        let Some((module, names)) = rest.split_once("::") else {
            continue;
        };
        for name in names.split(|c: char| !c.is_alphanumeric() && c != '_') {
            if !name.is_empty() && modules.contains(module) {
                reexported.insert(name.to_string(), module.to_string());
            }
        }
    }
    let words = |s: &str| -> Vec<String> {
        s.split(|c: char| !c.is_alphanumeric() && c != '_')
            .filter(|w| !w.is_empty())
            .map(str::to_string)
            .collect()
    };
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for m in &modules {
        let code = code_of(m);
        let mut deps = BTreeSet::new();
        for (i, _) in code.match_indices("super::") {
            let rest = &code[i + "super::".len()..];
            let used = if let Some(group) = rest.strip_prefix('{') {
                words(&group[..group.find('}').unwrap()])
            } else {
                words(rest).into_iter().take(1).collect()
            };
            for w in used {
                if modules.contains(&w) {
                    deps.insert(w);
                } else if let Some(owner) = reexported.get(&w) {
                    deps.insert(owner.clone());
                }
            }
        }
        deps.remove(m);
        graph.insert(m.clone(), deps);
    }
    assert!(
        graph["event_loop"].contains("conn_table"),
        "the walk sees imports"
    );
    // Depth-first search for a back edge.
    fn visit(
        m: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(m.to_string(), 1);
        path.push(m.to_string());
        for d in &graph[m] {
            match state.get(d) {
                Some(1) => {
                    let at = path.iter().position(|p| p == d).unwrap();
                    let mut circle = path[at..].to_vec();
                    circle.push(d.clone());
                    return Some(circle);
                }
                Some(_) => {}
                None => {
                    if let Some(c) = visit(d, graph, state, path) {
                        return Some(c);
                    }
                }
            }
        }
        path.pop();
        state.insert(m.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for m in graph.keys() {
        if !state.contains_key(m) {
            if let Some(circle) = visit(m, &graph, &mut state, &mut Vec::new()) {
                panic!("import circle in src/server: {}", circle.join(" -> "));
            }
        }
    }
}
