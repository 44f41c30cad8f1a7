//! Link settings that torch-sys cannot give to the final executables.
//!
//! 1. torch-sys compiles its C++ shim with `-Wl,-rpath=$LIBTORCH/lib`, but that rpath only reaches its own
//!    static archive, not the binaries and test executables that link it. Without it every run would need
//!    `LD_LIBRARY_PATH`. torch-sys publishes the directory it linked against as `DEP_TCH_LIBTORCH_LIB`
//!    (its manifest says `links = "tch"`), so we bake exactly that directory into our executables.
//! 2. With the `cuda` feature: rustc links with `--as-needed`, and since no Rust symbol refers to
//!    `libtorch_cuda.so`, the linker drops it and `tch::Cuda::is_available()` is silently false. Forcing
//!    `--no-as-needed` around `-ltorch_cuda -ltorch` keeps the CUDA backend's static initialisers.
//!
//! `cargo:rustc-link-arg` applies to this package's binaries, tests, examples and benches only; another crate
//! that links the trainer into its own executables needs the same rpath line in its own build script.

use std::env;
use std::path::Path;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    let target_os = env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let Ok(lib_dir) = env::var("DEP_TCH_LIBTORCH_LIB") else {
        println!(
            "cargo:warning=torch-sys did not report its libtorch lib directory; binaries will need LD_LIBRARY_PATH"
        );
        return;
    };
    if target_os == "linux" || target_os == "macos" {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib_dir}");
    }
    if env::var_os("CARGO_FEATURE_CUDA").is_some() {
        if target_os != "linux" {
            panic!("the `cuda` feature is only supported on Linux (target os: {target_os})");
        }
        if !Path::new(&lib_dir).join("libtorch_cuda.so").exists() {
            panic!(
                "the `cuda` feature needs libtorch_cuda.so in {lib_dir}; build against a CUDA libtorch \
                 (LIBTORCH_USE_PYTORCH=1 with a CUDA torch install) or drop the feature"
            );
        }
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,-ltorch,--as-needed");
    }
}
