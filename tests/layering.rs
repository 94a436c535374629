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
