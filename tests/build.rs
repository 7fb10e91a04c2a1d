//! The bench's reference programs (`empty`, the one-lookup hash, drop-all and the lab's
//! packet generator: edge-ebpf's `baseline` binary), built by edge-user's build script beside
//! the filter and embedded here, where they are used, not in the production library.
fn main() {
    let object = std::env::var("DEP_EDGE_PROGRAMS_BASELINE")
        .expect("edge-user's build script names the baseline object (links = \"edge-programs\")");
    println!("cargo:rerun-if-changed={object}");
    println!("cargo:rustc-env=EDGE_BASELINE_OBJECT={object}");
}
