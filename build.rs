// Link-time settings for libtorch, which torch-sys publishes through its `links = "tch"` metadata:
// - its directory as an rpath, so the binary, tests and benches run without LD_LIBRARY_PATH;
// - libtorch_cuda kept as a dependency when the install has it: nothing references its symbols
//   directly, so `--as-needed` would drop it and libtorch would then never see a CUDA device.
// And the default ONNX Runtime library (`ITS_ONNXRUNTIME_LIB`, loaded at run time): the one the
// `onnxruntime` wheel installed beside that torch, else whatever the loader finds by name.
fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    let mut onnxruntime = "libonnxruntime.so".to_string();
    if let Ok(dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
        if std::path::Path::new(&dir).join("libtorch_cuda.so").exists() {
            println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
        }
        let capi = std::path::Path::new(&dir).join("../../onnxruntime/capi");
        if capi.is_dir() {
            println!("cargo:rerun-if-changed={}", capi.display());
        }
        if let Some(lib) = std::fs::read_dir(&capi)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .find(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("libonnxruntime.so.")))
        {
            onnxruntime = lib.canonicalize().unwrap_or(lib).display().to_string();
        }
    }
    println!("cargo:rustc-env=ITS_ONNXRUNTIME_LIB={onnxruntime}");
}
