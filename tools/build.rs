//! With the `verify` feature the tools link the trainer, hence libtorch: bake the directory torch-sys linked against
//! into the rpath of this package's executables, as trainer/build.rs does for the trainer's.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    if std::env::var_os("CARGO_FEATURE_VERIFY").is_none() {
        return;
    }
    let target_os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    match std::env::var("DEP_TCH_LIBTORCH_LIB") {
        Ok(lib_dir) if target_os == "linux" || target_os == "macos" => {
            println!("cargo:rustc-link-arg=-Wl,-rpath,{lib_dir}");
        }
        Ok(_) => {}
        Err(_) => println!(
            "cargo:warning=torch-sys did not report its libtorch lib directory; `verify` needs LD_LIBRARY_PATH"
        ),
    }
}
