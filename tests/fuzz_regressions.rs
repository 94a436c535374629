//! Replays every saved fuzz input (the seeds and each crash ever found, kept
//! in fuzz/regressions/<target>/) through the same harness the fuzzer runs.

#[path = "../fuzz/harness.rs"]
mod harness;

use std::path::Path;

fn replay(target: &str, run: fn(&[u8])) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut count = 0;
    for dir in ["seeds", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            let data = std::fs::read(&path).unwrap();
            run(&data);
            count += 1;
        }
    }
    assert!(count > 0, "no inputs for {target}");
}

#[test]
fn handshake_inputs() {
    replay("handshake", harness::handshake);
}

#[test]
fn frame_inputs() {
    replay("frame", harness::frame);
}

#[test]
fn conn_inputs() {
    replay("conn", harness::conn);
}

#[test]
fn conn_deflate_inputs() {
    replay("conn_deflate", harness::conn_deflate);
}

#[test]
fn out_queue_inputs() {
    replay("out_queue", harness::out_queue);
}

#[test]
fn upgrade_inputs() {
    replay("upgrade", harness::upgrade);
}

#[cfg(feature = "tls")]
#[test]
fn tls_transport_inputs() {
    replay("tls_transport", harness::tls_transport);
}
