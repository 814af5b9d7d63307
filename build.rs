// Link-time settings for libtorch, which torch-sys publishes through its `links = "tch"` metadata:
// - its directory as an rpath, so the binary, tests and benches run without LD_LIBRARY_PATH;
// - libtorch_cuda kept as a dependency when the install has it: nothing references its symbols
//   directly, so `--as-needed` would drop it and libtorch would then never see a CUDA device.
fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    if let Ok(dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
        if std::path::Path::new(&dir).join("libtorch_cuda.so").exists() {
            println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
        }
    }
}
