use which::which;

/// Rebuild the program when bpf-linker changes (it is the linker, not a cargo dependency).
fn main() {
    let bpf_linker = which("bpf-linker").expect("bpf-linker not found: run `cargo xtask setup`");
    println!("cargo:rerun-if-changed={}", bpf_linker.display());
}
