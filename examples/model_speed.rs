//! Measures the model alone at batch 1 and 4 on one thread: `cargo run --release --example model_speed`.
fn run(label: &str, d: &its_analytics::detector::Detector, bs: usize) {
    let grey = vec![114u8; 3 * 416 * 416];
    let input = d.input_tensor(&vec![grey.as_slice(); bs]).unwrap();
    for _ in 0..3 {
        let _ = d.forward_tensor(&input).unwrap();
    }
    let t = std::time::Instant::now();
    let mut n = 0;
    while t.elapsed().as_secs_f64() < 6.0 {
        let _ = d.forward_tensor(&input).unwrap();
        n += bs;
    }
    println!("{label} bs {bs}: {:.1} fps", n as f64 / t.elapsed().as_secs_f64());
}

fn main() {
    let settings = its_analytics::settings::Settings::load(None).unwrap();
    let mode = std::env::args().nth(1).unwrap_or_default();
    if mode.contains("noprof") {
        tch::jit::set_profiling_mode(false);
    }
    if mode.contains("noopt") {
        tch::jit::set_graph_executor_optimize(false);
    }
    tch::set_num_threads(2);
    let d = its_analytics::detector::Detector::load(&settings.model, tch::Device::Cpu).unwrap();
    run(&mode, &d, 4);
    run(&mode, &d, 1);
}
