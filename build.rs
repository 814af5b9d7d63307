// Embeds libtorch's directory as an rpath so the binary, tests and benches run without
// LD_LIBRARY_PATH. torch-sys publishes the directory through its `links = "tch"` metadata.
fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    if let Ok(dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
    }
}
