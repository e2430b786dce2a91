//! Compiles the mesh classifier (bpf/mesh.bpf.c) with `clang -target bpf` when the `ebpf`
//! feature is on; without it nothing is built and the control plane needs no clang.

use std::{env, path::PathBuf, process::Command};

fn main() {
    println!("cargo:rerun-if-changed=bpf/mesh.bpf.c");
    if env::var_os("CARGO_FEATURE_EBPF").is_none() {
        return;
    }
    let out = PathBuf::from(env::var_os("OUT_DIR").unwrap_or_default()).join("mesh.bpf.o");
    let arch = match env::var("CARGO_CFG_TARGET_ARCH").as_deref() {
        Ok("x86_64") => "x86_64-linux-gnu",
        Ok("aarch64") => "aarch64-linux-gnu",
        _ => "",
    };
    let manifest = env::var("CARGO_MANIFEST_DIR").unwrap_or_default();
    // -g keeps the BTF that describes the maps; the prefix map keeps paths out of it, so
    // the object is the same wherever the tree is checked out.
    let status = Command::new("clang")
        .args(["-target", "bpf", "-O2", "-g", "-Wall", "-Werror"])
        .arg(format!("-fdebug-prefix-map={manifest}=."))
        .arg(format!("-I/usr/include/{arch}"))
        .args(["-c", "bpf/mesh.bpf.c", "-o"])
        .arg(&out)
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => fail(&format!("clang exited with {s} compiling bpf/mesh.bpf.c")),
        Err(e) => fail(&format!(
            "cannot run clang ({e}): the `ebpf` feature needs Debian's clang (scripts/install-test-deps.sh installs it)"
        )),
    }
}

fn fail(message: &str) -> ! {
    println!("cargo:warning={message}");
    eprintln!("{message}");
    std::process::exit(1)
}
