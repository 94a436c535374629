//! The checked-in C header is exactly what cbindgen generates now, and its
//! version macros are Cargo.toml's version (by value, compiled by a C compiler).

use std::path::Path;
use std::process::Command;

fn checked_in() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("include/sockwave.h"))
        .unwrap()
}

#[test]
fn checked_in_header_matches_a_fresh_cbindgen_run() {
    let fresh = std::fs::read_to_string(Path::new(env!("OUT_DIR")).join("sockwave.h")).unwrap();
    assert!(
        fresh == checked_in(),
        "include/sockwave.h is stale: run `SW_UPDATE_HEADER=1 cargo build` and commit it"
    );
}

fn macro_value(header: &str, name: &str) -> String {
    header
        .lines()
        .find_map(|l| l.strip_prefix(&format!("#define {name} ")))
        .unwrap_or_else(|| panic!("{name} missing"))
        .trim()
        .to_string()
}

#[test]
fn version_macros_equal_cargo_version() {
    let h = checked_in();
    assert_eq!(
        macro_value(&h, "SW_VERSION_MAJOR"),
        env!("CARGO_PKG_VERSION_MAJOR")
    );
    assert_eq!(
        macro_value(&h, "SW_VERSION_MINOR"),
        env!("CARGO_PKG_VERSION_MINOR")
    );
    assert_eq!(
        macro_value(&h, "SW_VERSION_PATCH"),
        env!("CARGO_PKG_VERSION_PATCH")
    );
    assert_eq!(
        macro_value(&h, "SW_VERSION_STRING"),
        format!("\"{}\"", env!("CARGO_PKG_VERSION"))
    );

    // And by value, as a C compiler computes them (SW_VERSION_NUMBER included).
    let dir = std::env::temp_dir().join(format!("sw-version-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let src = dir.join("v.c");
    std::fs::write(
        &src,
        "#include <stdio.h>\n#include \"sockwave.h\"\nint main(void){printf(\"%d %d %d %d %s\", SW_VERSION_MAJOR, SW_VERSION_MINOR, SW_VERSION_PATCH, SW_VERSION_NUMBER, SW_VERSION_STRING);return 0;}\n",
    )
    .unwrap();
    let exe = dir.join("v");
    let include = Path::new(env!("CARGO_MANIFEST_DIR")).join("include");
    let cc = Command::new("cc")
        .args(["-std=c11", "-Wall", "-Werror", "-I"])
        .arg(&include)
        .arg(&src)
        .arg("-o")
        .arg(&exe)
        .status()
        .unwrap();
    assert!(cc.success());
    let out = String::from_utf8(Command::new(&exe).output().unwrap().stdout).unwrap();
    let major: u32 = env!("CARGO_PKG_VERSION_MAJOR").parse().unwrap();
    let minor: u32 = env!("CARGO_PKG_VERSION_MINOR").parse().unwrap();
    let patch: u32 = env!("CARGO_PKG_VERSION_PATCH").parse().unwrap();
    assert_eq!(
        out,
        format!(
            "{major} {minor} {patch} {} {}",
            major * 10000 + minor * 100 + patch,
            env!("CARGO_PKG_VERSION")
        )
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_header_compiles_as_c_and_cpp_and_names_only_sw_symbols() {
    let h = checked_in();
    for line in h.lines() {
        if let Some(rest) = line.strip_prefix("#define ") {
            let name = rest.split_whitespace().next().unwrap();
            assert!(
                name.starts_with("SW_") || name == "SOCKWAVE_H",
                "macro {name} lacks the SW_ prefix"
            );
        }
        if line.starts_with("typedef")
            || (line.contains('(')
                && !line.starts_with(' ')
                && !line.starts_with("//")
                && !line.starts_with('#'))
        {
            assert!(
                line.contains("sw_"),
                "declaration without the sw_ prefix: {line}"
            );
        }
    }
    let include = Path::new(env!("CARGO_MANIFEST_DIR")).join("include/sockwave.h");
    for (compiler, lang) in [("cc", "c"), ("c++", "c++")] {
        let ok = Command::new(compiler)
            .args([
                "-fsyntax-only",
                "-Wall",
                "-Wextra",
                "-Werror",
                "-Wpedantic",
                "-x",
                lang,
            ])
            .arg(&include)
            .status()
            .unwrap();
        assert!(ok.success(), "{compiler} rejects the header");
    }
}

#[test]
fn pkg_config_install_builds_a_c_program() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let prefix = std::env::temp_dir().join(format!("sw-prefix-{}", std::process::id()));
    let ok = Command::new(root.join("scripts/install-c.sh"))
        .arg(&prefix)
        .status()
        .unwrap();
    assert!(ok.success());
    let flags = Command::new("pkg-config")
        .args(["--cflags", "--libs", "sockwave"])
        .env("PKG_CONFIG_PATH", prefix.join("lib/pkgconfig"))
        .output()
        .unwrap();
    assert!(
        flags.status.success(),
        "pkg-config: {}",
        String::from_utf8_lossy(&flags.stderr)
    );
    let flags = String::from_utf8(flags.stdout).unwrap();
    let exe = prefix.join("echo_server");
    let cc = Command::new("cc")
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror"])
        .arg(root.join("ffi-examples/c/echo_server.c"))
        .arg("-o")
        .arg(&exe)
        .args(flags.split_whitespace())
        .status()
        .unwrap();
    assert!(cc.success());
    let out = Command::new(&exe).arg("--version").output().unwrap();
    let v = env!("CARGO_PKG_VERSION");
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        format!("header {v} library {v}\n")
    );
    // The C++ wrapper's example through pkg-config too.
    let rooms = prefix.join("rooms");
    let cxx = Command::new("c++")
        .args(["-std=c++17", "-Wall", "-Wextra", "-Werror"])
        .arg(root.join("ffi-examples/cpp/rooms.cpp"))
        .arg("-o")
        .arg(&rooms)
        .args(flags.split_whitespace())
        .arg("-lpthread")
        .status()
        .unwrap();
    assert!(cxx.success());
    check_installed_library(&prefix);
    build_with_cmake(root, &prefix);
    let _ = std::fs::remove_dir_all(&prefix);
}

/// The installed shared library: a SONAME with the ABI version, and the C
/// API the only symbols it exports.
fn check_installed_library(prefix: &Path) {
    let lib = prefix.join(format!("lib/libsockwave.so.{}", env!("CARGO_PKG_VERSION")));
    let abi = match env!("CARGO_PKG_VERSION_MAJOR") {
        "0" => format!("0.{}", env!("CARGO_PKG_VERSION_MINOR")),
        major => major.to_string(),
    };
    let dynamic = Command::new("readelf")
        .arg("-d")
        .arg(&lib)
        .output()
        .unwrap();
    let dynamic = String::from_utf8(dynamic.stdout).unwrap();
    assert!(
        dynamic.contains(&format!("Library soname: [libsockwave.so.{abi}]")),
        "{dynamic}"
    );
    let symbols = Command::new("nm")
        .args(["-D", "--defined-only"])
        .arg(&lib)
        .output()
        .unwrap();
    let symbols = String::from_utf8(symbols.stdout).unwrap();
    let names: Vec<&str> = symbols
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2))
        .collect();
    assert!(names.len() > 40, "{symbols}");
    let foreign: Vec<&&str> = names.iter().filter(|n| !n.starts_with("sw_")).collect();
    assert!(foreign.is_empty(), "exported beyond the C API: {foreign:?}");
}

/// find_package(sockwave) from a CMake project, for a C program on the
/// shared library and the C++ wrapper's example on the static one, both
/// with -Wall -Wextra -Werror, then run.
fn build_with_cmake(root: &Path, prefix: &Path) {
    let project = prefix.join("cmake-project");
    std::fs::create_dir_all(&project).unwrap();
    let examples = root.join("ffi-examples");
    std::fs::write(
        project.join("CMakeLists.txt"),
        format!(
            "cmake_minimum_required(VERSION 3.16)\n\
             project(uses_sockwave C CXX)\n\
             find_package(sockwave {major}.{minor} REQUIRED)\n\
             set(CMAKE_C_STANDARD 11)\nset(CMAKE_CXX_STANDARD 17)\n\
             add_compile_options(-Wall -Wextra -Werror)\n\
             add_executable(echo_server {echo})\n\
             target_link_libraries(echo_server PRIVATE sockwave::sockwave)\n\
             add_executable(rooms {rooms})\n\
             target_link_libraries(rooms PRIVATE sockwave::sockwave_static)\n",
            major = env!("CARGO_PKG_VERSION_MAJOR"),
            minor = env!("CARGO_PKG_VERSION_MINOR"),
            echo = examples.join("c/echo_server.c").display(),
            rooms = examples.join("cpp/rooms.cpp").display(),
        ),
    )
    .unwrap();
    let build = project.join("build");
    let configure = Command::new("cmake")
        .arg("-S")
        .arg(&project)
        .arg("-B")
        .arg(&build)
        .arg(format!("-DCMAKE_PREFIX_PATH={}", prefix.display()))
        .output()
        .expect("cmake not found: run scripts/setup-c.sh (scripts/test.sh does)");
    assert!(
        configure.status.success(),
        "cmake: {}{}",
        String::from_utf8_lossy(&configure.stdout),
        String::from_utf8_lossy(&configure.stderr)
    );
    let made = Command::new("cmake")
        .arg("--build")
        .arg(&build)
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "build: {}{}",
        String::from_utf8_lossy(&made.stdout),
        String::from_utf8_lossy(&made.stderr)
    );
    let v = env!("CARGO_PKG_VERSION");
    let out = Command::new(build.join("echo_server"))
        .arg("--version")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        format!("header {v} library {v}\n")
    );
    // An incompatible version is not found.
    std::fs::write(
        project.join("CMakeLists.txt"),
        "cmake_minimum_required(VERSION 3.16)\nproject(too_new C)\nfind_package(sockwave 99.0 REQUIRED)\n",
    )
    .unwrap();
    let refused = Command::new("cmake")
        .arg("-S")
        .arg(&project)
        .arg("-B")
        .arg(project.join("build-new"))
        .arg(format!("-DCMAKE_PREFIX_PATH={}", prefix.display()))
        .output()
        .unwrap();
    assert!(!refused.status.success(), "sockwave 99.0 must not be found");
}
