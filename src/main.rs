//! `its-analytics`: serve the control API and pipeline, analyse a clip, evaluate against ground
//! truth, or benchmark.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use its_analytics::analytics::geometry::Geometry;
use its_analytics::analyze::{self, parse_line};
use its_analytics::settings::Settings;
use its_analytics::topology::CameraMode;

#[derive(Parser)]
#[command(name = "its-analytics", version, about = "Real-time traffic-camera analytics")]
struct Cli {
    /// Configuration file (TOML) layered over the defaults; ITS__SECTION__KEY variables override both.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service: control API, cameras from PostgreSQL, events to Redis and PostgreSQL.
    Serve,
    /// Analyse a recorded clip through the live code path, as fast as possible: counts, every
    /// measure per element and minute, incidents.
    Analyze {
        video: PathBuf,
        /// Camera geometry JSON (lines, zones, lanes, exclusions, calibration), as in the API.
        #[arg(long)]
        geometry: Option<PathBuf>,
        /// A counting line x1,y1,x2,y2 in source pixels (added to the geometry's); repeatable.
        #[arg(long = "line")]
        lines: Vec<String>,
        /// Frames per second to analyse (default: every frame).
        #[arg(long)]
        fps: Option<f64>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Pipeline frames/s against the model alone, per-stage times and latency on one clip.
    Bench {
        #[arg(default_value = "../shared/assets/video/overpass_video03.avi")]
        video: PathBuf,
        #[arg(long = "line", default_value = "0,150,320,150")]
        lines: Vec<String>,
        #[arg(long)]
        json: bool,
    },
    /// The model alone on the first device, per batch size: frames/s and, on a CUDA device, the
    /// device memory the batches take (NVML). No decoding: runs in a build without FFmpeg.
    ModelBench {
        /// Batch sizes, measured in this order.
        #[arg(long = "batch", value_delimiter = ',', default_values_t = [8, 16, 32, 64])]
        batches: Vec<usize>,
        /// Frames timed per batch size.
        #[arg(long, default_value_t = 640)]
        frames: usize,
        #[arg(long)]
        json: bool,
    },
    /// Hand this node's cameras to the other nodes and wait until they hold them (the
    /// Kubernetes `preStop` hook): marks `node.id` as draining in PostgreSQL; the running node
    /// stops its cameras and gives their leases up. Exits 0 when no lease is left to this node.
    Drain,
    /// Make a bearer token for the control API. Prints the token (shown once: only its SHA-256 is
    /// kept) and, unless --append names the tokens file to add it to, its `[[tokens]]` entry.
    Token {
        /// Who or what uses it (letters, digits, `_.-`); shown in logs instead of the token.
        #[arg(long)]
        name: String,
        /// viewer (reads), operator (+ cameras and geometry) or admin (+ system and models).
        #[arg(long)]
        role: its_analytics::access::Role,
        /// Tokens file (`auth.tokens_file`) to append the entry to; created with mode 0600.
        #[arg(long)]
        append: Option<PathBuf>,
    },
    /// Run the clips of a manifest with ground-truth counts; per-clip error and an AI City
    /// Challenge style score (`docs/ANALYTICS.md`, Evaluation).
    Evaluate {
        #[arg(default_value = "configs/evaluate/assets.toml")]
        manifest: PathBuf,
        /// Directory the manifest's video paths are relative to.
        #[arg(long, default_value = "../shared/assets")]
        assets: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let settings = match Settings::load(cli.config.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return std::process::ExitCode::from(2);
        }
    };
    // Logs to stderr and, for `serve` with an OTLP endpoint, traces; flushed when dropped at exit.
    let tracing_config = match cli.command {
        Command::Serve => settings.tracing.clone(),
        _ => Default::default(),
    };
    let _telemetry = match its_analytics::telemetry::init(&tracing_config, log_filter()) {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!("{e}");
            return std::process::ExitCode::from(2);
        }
    };
    // Without the `ffmpeg` feature only raw:// and sim:// cameras run (the rest is refused at validation).
    #[cfg(feature = "ffmpeg")]
    {
        ffmpeg_next::init().expect("FFmpeg initialises");
        // FFmpeg's own log lines can quote stream URLs (with their credentials) and bypass our
        // scrubbing, so it stays silent; its errors reach operators through each camera's last_error.
        ffmpeg_next::util::log::set_level(ffmpeg_next::util::log::Level::Quiet);
    }
    let result = actix::System::new().block_on(run(cli.command, settings));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            // A node id in use by a live node is a configuration mistake, like a bad setting.
            let id_taken = e
                .chain()
                .any(|cause| matches!(cause.downcast_ref(), Some(its_analytics::cluster::ClusterError::IdTaken(_))));
            std::process::ExitCode::from(if id_taken { 2 } else { 1 })
        }
    }
}

/// `RUST_LOG`, default `info` (the telemetry layer keeps the database driver's statement
/// parameters out whatever it says).
fn log_filter() -> tracing_subscriber::EnvFilter {
    tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,actix_server=warn".into())
}

async fn run(command: Command, settings: Settings) -> anyhow::Result<()> {
    match command {
        Command::Serve => {
            // Before anything starts: a service nobody may call is a misconfiguration.
            let tokens = its_analytics::http::auth::TokenStore::load(&settings.auth)?;
            let service = its_analytics::service::Service::start(settings).await?;
            // Returns on SIGINT / SIGTERM, after in-flight requests finish.
            its_analytics::http::serve(service.clone(), tokens).await?;
            service.shutdown().await;
            if let Some(reason) = service.escalation() {
                anyhow::bail!("stopped: a supervised child crash-looped ({reason})");
            }
        }
        Command::Token { name, role, append } => make_token(&name, role, append.as_deref())?,
        Command::Drain => its_analytics::cluster::drain_node(&settings).await?,
        Command::Analyze { video, geometry, lines, fps, json } => {
            let mut geometry = match geometry {
                Some(path) => analyze::read_geometry(&path)?,
                None => Geometry::default(),
            };
            let first = geometry.lines.len();
            for (i, text) in lines.iter().enumerate() {
                geometry.lines.push(parse_line(first + i + 1, text).map_err(anyhow::Error::msg)?);
            }
            let errors = geometry.validate();
            anyhow::ensure!(errors.is_empty(), "{}", errors.join("; "));
            anyhow::ensure!(
                !geometry.lines.is_empty() || !geometry.zones.is_empty(),
                "nothing to measure: give --geometry with lines or zones, or --line"
            );
            let run = analyze::analyze(&settings, &video, geometry, fps, CameraMode::Offline).await?;
            let r = run.report;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                println!(
                    "{}: {} frames in {:.2} s ({:.1} frames/s), {} dropped",
                    r.video, r.frames, r.seconds, r.fps, r.frames_dropped
                );
                for line in &r.lines {
                    let classes: Vec<String> =
                        line.by_class.iter().map(|(c, d)| format!("{c} {}/{}", d.in_, d.out)).collect();
                    println!("  {}: in {} out {}  [{}]", line.id, line.in_, line.out, classes.join(", "));
                }
                for element in r.elements.iter().filter(|e| e.kind != "line") {
                    println!("  {} {}: {}", element.kind, element.id, serde_json::to_string(&element.total)?);
                }
                for incident in &r.incidents {
                    println!("  {}", serde_json::to_string(incident)?);
                }
            }
        }
        Command::ModelBench { batches, frames, json } => {
            let report = model_bench(&settings, &batches, frames)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!("device {}, model {}", report["device"], report["model"]);
                for b in report["batches"].as_array().into_iter().flatten() {
                    println!(
                        "batch {:>3}: {:>8.1} frames/s, {:>7.2} ms/batch, device memory {} MiB ({} MiB/frame)",
                        b["batch"],
                        b["frames_per_s"].as_f64().unwrap_or(0.0),
                        b["ms_per_batch"].as_f64().unwrap_or(0.0),
                        b["memory_mib"],
                        b["memory_per_frame_mib"]
                    );
                }
            }
        }
        Command::Evaluate { manifest, assets, json } => {
            let report = its_analytics::evaluate::run(&settings, &manifest, &assets).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.table());
            }
        }
        Command::Bench { video, lines, json } => {
            let geometry = Geometry { lines: parse_lines(&lines)?, ..Default::default() };
            let r = analyze::bench(&settings, &video, geometry).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                println!("clip            {}", r.video);
                println!(
                    "device          {} ({} threads), batch {} (mean {:.2})",
                    r.device, r.threads, r.batch_size, r.mean_batch
                );
                println!("frames          {}", r.frames);
                println!("pipeline        {:.1} frames/s", r.pipeline_fps);
                println!(
                    "model only      {:.1} frames/s (before {:.1}, after {:.1})",
                    r.model_only_fps, r.model_only_fps_before, r.model_only_fps_after
                );
                println!("ratio           {:.3}", r.ratio);
                println!(
                    "stages (ms)     decode {:.2}/frame, inference {:.2}/batch ({:.2}/frame), tracking {:.3}/frame",
                    r.stage_ms.decode_per_frame,
                    r.stage_ms.inference_per_batch,
                    r.stage_ms.inference_per_frame,
                    r.stage_ms.tracking_per_frame
                );
                let l = &r.offline_latency;
                println!(
                    "offline latency frame p50 {:.1} / p99 {:.1} ms, event p50 {:.1} / p99 {:.1} ms ({} events; \
                     includes the wait in the full queue)",
                    l.frame_ms_p50, l.frame_ms_p99, l.event_ms_p50, l.event_ms_p99, l.events
                );
                let l = &r.live.latency;
                println!(
                    "live            {} frames at {:.1} frames/s, {} dropped; capture->tracked p50 {:.1} / p99 \
                     {:.1} ms, capture->event p50 {:.1} / p99 {:.1} ms ({} events)",
                    r.live.frames,
                    r.live.source_fps,
                    r.live.frames_dropped,
                    l.frame_ms_p50,
                    l.frame_ms_p99,
                    l.event_ms_p50,
                    l.event_ms_p99,
                    l.events
                );
            }
        }
    }
    Ok(())
}

fn parse_lines(texts: &[String]) -> anyhow::Result<Vec<its_analytics::analytics::lines::LineSpec>> {
    texts.iter().enumerate().map(|(i, t)| parse_line(i + 1, t).map_err(anyhow::Error::msg)).collect()
}

fn make_token(name: &str, role: its_analytics::access::Role, append: Option<&std::path::Path>) -> anyhow::Result<()> {
    use std::io::Write;
    let (token, sha256) = its_analytics::http::auth::new_token()?;
    let entry = format!("[[tokens]]\nname = {name:?}\nrole = \"{role}\"\nsha256 = \"{sha256}\"\n");
    let config = its_analytics::access::AuthConfig {
        tokens: vec![its_analytics::access::TokenEntry { name: name.to_string(), role, sha256 }],
        ..Default::default()
    };
    let problems = config.validate();
    anyhow::ensure!(problems.is_empty(), "{}", problems.join("; "));
    println!("{token}");
    match append {
        Some(path) => {
            let mut file = std::fs::OpenOptions::new();
            std::os::unix::fs::OpenOptionsExt::mode(file.create(true).append(true), 0o600);
            let mut file = file.open(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            writeln!(file, "\n{entry}")?;
        }
        None => print!("\n# Add to the tokens file (auth.tokens_file) or as [[auth.tokens]]:\n{entry}"),
    }
    Ok(())
}

/// `model-bench`: one input of grey frames per batch size, forward passes only (no decode, no NMS,
/// no copies back), waited for on a CUDA device. Memory: what NVML sees the device lose between one
/// frame's forward pass and each batch's (libtorch's allocator keeps what it took, so batch sizes
/// are measured in increasing order); `null` where NVML cannot be read (the CPU, no driver).
fn model_bench(settings: &Settings, batches: &[usize], frames: usize) -> anyhow::Result<serde_json::Value> {
    use its_analytics::detector::model::{device_name, select_devices, Detector};
    const MIB: f64 = (1u64 << 20) as f64;
    let device = select_devices(settings.device.kind).map_err(anyhow::Error::msg)?[0];
    its_analytics::actors::gpu::worker::set_up_thread(device, settings.device.cpu_threads);
    let name = device_name(device);
    let free = || its_analytics::device_memory::free_bytes(&name, None);
    let detector = Detector::load(&settings.model, device)?;
    let grey = vec![its_analytics::detector::input::PAD_VALUE; 3 * (settings.model.input_size as usize).pow(2)];
    let run = |input: &tch::Tensor| -> anyhow::Result<()> {
        let out = detector.forward_tensor(input)?;
        if device != tch::Device::Cpu {
            out.sum(tch::Kind::Float).double_value(&[]); // wait for the device
        }
        Ok(())
    };
    run(&detector.input_tensor(&[grey.as_slice()])?)?;
    let base = free();
    let mut rows = Vec::new();
    for &batch in batches.iter().filter(|&&b| b > 0) {
        let input = detector.input_tensor(&vec![grey.as_slice(); batch])?;
        run(&input)?; // warm-up, and the allocator's growth for this size
        let used = base.zip(free()).map(|(base, now)| base.saturating_sub(now) as f64 / MIB);
        let calls = frames.div_ceil(batch).max(1);
        let started = std::time::Instant::now();
        for _ in 0..calls {
            run(&input)?;
        }
        let seconds = started.elapsed().as_secs_f64().max(1e-9);
        rows.push(serde_json::json!({
            "batch": batch,
            "frames_per_s": (calls * batch) as f64 / seconds,
            "ms_per_batch": seconds * 1e3 / calls as f64,
            "memory_mib": used.map(|m| (m * 10.0).round() / 10.0),
            "memory_per_frame_mib": used.map(|m| (m / batch as f64 * 100.0).round() / 100.0),
        }));
    }
    Ok(serde_json::json!({ "device": name, "model": settings.model.path.display().to_string(), "batches": rows }))
}
