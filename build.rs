//! Generates the C header from src/ffi/ with cbindgen into $OUT_DIR/sockwave.h.
//! The checked-in include/sockwave.h is compared with it by tests/header.rs;
//! `SW_UPDATE_HEADER=1 cargo build` copies it over.

use std::env;
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=src/ffi");
    println!("cargo:rerun-if-changed=cbindgen.toml");
    println!("cargo:rerun-if-env-changed=SW_UPDATE_HEADER");
    let crate_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let out = PathBuf::from(env::var("OUT_DIR").unwrap()).join("sockwave.h");
    let mut config =
        cbindgen::Config::from_file(crate_dir.join("cbindgen.toml")).expect("cbindgen.toml");
    let v = |k: &str| env::var(k).unwrap();
    config.after_includes = Some(format!(
        "\n#define SW_VERSION_MAJOR {}\n#define SW_VERSION_MINOR {}\n#define SW_VERSION_PATCH {}\n#define SW_VERSION_STRING \"{}\"\n\
         /* MAJOR * 10000 + MINOR * 100 + PATCH */\n#define SW_VERSION_NUMBER ({} * 10000 + {} * 100 + {})",
        v("CARGO_PKG_VERSION_MAJOR"),
        v("CARGO_PKG_VERSION_MINOR"),
        v("CARGO_PKG_VERSION_PATCH"),
        v("CARGO_PKG_VERSION"),
        v("CARGO_PKG_VERSION_MAJOR"),
        v("CARGO_PKG_VERSION_MINOR"),
        v("CARGO_PKG_VERSION_PATCH"),
    ));
    // Only the C API's module (cbindgen follows its `mod` declarations):
    // public items elsewhere in the crate (protocol constants, say) must not
    // leak into the C namespace.
    cbindgen::Builder::new()
        .with_config(config)
        .with_src(crate_dir.join("src/ffi/mod.rs"))
        .generate()
        .expect("cbindgen could not generate the header")
        .write_to_file(&out);
    if env::var("SW_UPDATE_HEADER").as_deref() == Ok("1") {
        std::fs::copy(&out, crate_dir.join("include/sockwave.h")).expect("copy header");
    }
}
