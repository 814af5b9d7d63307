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
        #[command(flatten)]
        framing: FramingOptions,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Pipeline frames/s against the model alone, per-stage times and latency on one clip;
    /// with --cameras, many live cameras at once; with --decode, decoding alone; with --viewers,
    /// frames/s with live viewers.
    Bench {
        #[arg(default_value = "../shared/assets/video/overpass_video03.avi")]
        video: PathBuf,
        #[arg(long = "line", default_value = "0,150,320,150")]
        lines: Vec<String>,
        /// A model timed alone beside the configured one, same input, device and threads ("none":
        /// skip). Default: the model as served before the ONNX Runtime backend.
        #[arg(long, default_value = "models/yolox_nano.reference.pt")]
        reference: String,
        #[arg(long)]
        json: bool,
        /// N live cameras (the clip looped in real time, each from its own start frame), or `max`:
        /// the most cameras without a drop and with capture-to-event p99 under 100 ms, per --fps.
        #[arg(long, conflicts_with = "decode")]
        cameras: Option<String>,
        /// Frames/s analysed per camera; with `--cameras max` a list, e.g. 5,10,15.
        #[arg(long, value_delimiter = ',', default_value = "10", requires = "cameras")]
        fps: Vec<f64>,
        /// Measured seconds per trial, after a warm-up (default 30; 20 with `--cameras max`).
        #[arg(long = "duration-s", requires = "cameras")]
        duration_s: Option<f64>,
        /// Warm-up seconds before each trial's window.
        #[arg(long = "warm-up-s", default_value = "5", requires = "cameras")]
        warm_up_s: f64,
        /// Camera URL instead of the clip (`rtsp://...`, `file://...`); a file loops.
        #[arg(long, requires = "cameras")]
        source: Option<String>,
        /// With `--cameras max`: the largest N tried.
        #[arg(long = "max-cameras", default_value = "256", requires = "cameras")]
        max_cameras: usize,
        /// Decode cost: native, 720p and 1080p H.264 copies, FFmpeg decode threads 1, 2 and
        /// auto, and hardware decoding where there is one.
        #[arg(long)]
        decode: bool,
        /// With --decode: where the H.264 copies are made (once).
        #[arg(long = "media-dir", default_value = "target/bench-media", requires = "decode")]
        media_dir: PathBuf,
        /// With --decode: frames decoded per measurement.
        #[arg(long, default_value = "600", requires = "decode")]
        frames: usize,
        /// Live viewers, e.g. 0,1,5: the clip's frames/s offline while that many viewers pull the
        /// overlay view at pictures.live_fps, one fresh pipeline per number; and one overlay
        /// snapshot timed.
        #[arg(long, value_delimiter = ',', conflicts_with_all = ["cameras", "decode"])]
        viewers: Option<Vec<usize>>,
        /// With --viewers: measured seconds per number of viewers, after a 3 s warm-up.
        #[arg(long = "viewer-window-s", default_value = "10", requires = "viewers")]
        viewer_window_s: f64,
        /// The clip's frame options (the plain bench: their cost shows in the decode stage).
        #[command(flatten)]
        framing: FramingOptions,
    },
    /// The model alone on the first device, per batch size: frames/s and, on a CUDA device, the
    /// device memory the batches take (NVML). No decoding: runs in a build without FFmpeg.
    ModelBench {
        /// Batch sizes, measured in increasing order (the allocator keeps what a batch took).
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
    /// Insert into PostgreSQL the events of the Redis events stream it lacks (after a restore or
    /// a failover lost its last events; docs/OPERATIONS.md). Idempotent; prints a JSON report.
    BackfillEvents {
        /// Only entries Redis added at or after this time (RFC 3339, e.g. the base backup's
        /// time); default: the whole stream.
        #[arg(long)]
        since: Option<chrono::DateTime<chrono::Utc>>,
    },
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

/// How the clip's frames are prepared for the model: the geometry's `crop` and `normalise`
/// (docs/PERFORMANCE.md, "Resolution and crop" and "Low light").
#[derive(clap::Args)]
struct FramingOptions {
    /// Crop each frame before letterboxing: `auto` (the lines and zones with a margin) or
    /// x,y,width,height in source pixels.
    #[arg(long)]
    crop: Option<String>,
    /// Stretch each frame's levels before the model (dark cameras).
    #[arg(long)]
    normalise: bool,
}

impl FramingOptions {
    /// Sets these options in `geometry` (over what its file says).
    fn apply(&self, geometry: &mut Geometry) -> anyhow::Result<()> {
        if let Some(text) = &self.crop {
            geometry.crop = Some(analyze::parse_crop(text).map_err(anyhow::Error::msg)?);
        }
        geometry.normalise |= self.normalise;
        Ok(())
    }
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
        Command::BackfillEvents { since } => {
            let db =
                its_analytics::db::Db::open(&its_analytics::db::DbOptions::from_settings(&settings.postgres)).await?;
            let redis = its_analytics::redis_conn::RedisPool::connect(&settings.redis).await?;
            let keys = its_analytics::redis_keys::RedisKeys::new(&settings.redis.key_prefix);
            let since_ms = since.map(|t| t.timestamp_millis().max(0) as u64);
            let report = its_analytics::sinks::backfill::events_from_stream(&redis, &keys, &db, since_ms).await?;
            println!("{}", serde_json::to_string(&report)?);
        }
        Command::Analyze { video, geometry, lines, fps, framing, json } => {
            let mut geometry = match geometry {
                Some(path) => analyze::read_geometry(&path)?,
                None => Geometry::default(),
            };
            let first = geometry.lines.len();
            for (i, text) in lines.iter().enumerate() {
                geometry.lines.push(parse_line(first + i + 1, text).map_err(anyhow::Error::msg)?);
            }
            framing.apply(&mut geometry)?;
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
            let report = analyze::model_bench(&settings, &batches, frames)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!("device {}, model {}", report.device, report.model);
                let mib = |m: Option<f64>| m.map_or("-".to_string(), |m| format!("{m:.1}"));
                for b in &report.batches {
                    println!(
                        "batch {:>3}: {:>8.1} frames/s, {:>7.2} ms/batch, device memory {} MiB ({} MiB/frame)",
                        b.batch,
                        b.frames_per_s,
                        b.ms_per_batch,
                        mib(b.memory_mib),
                        mib(b.memory_per_frame_mib)
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
        #[cfg(feature = "ffmpeg")]
        Command::Bench { video, json, decode: true, media_dir, frames, .. } => {
            let report = analyze::decode::run(&settings, &video, &media_dir, frames)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.table());
            }
        }
        #[cfg(not(feature = "ffmpeg"))]
        Command::Bench { decode: true, .. } => anyhow::bail!("bench --decode: this build has no FFmpeg"),
        Command::Bench {
            video,
            lines,
            json,
            cameras: Some(cameras),
            fps,
            duration_s,
            warm_up_s,
            source,
            max_cameras,
            ..
        } => {
            let geometry = Geometry { lines: parse_lines(&lines)?, ..Default::default() };
            let max = cameras == "max";
            let options = analyze::cameras::TrialOptions {
                cameras: if max {
                    1
                } else {
                    cameras.parse().map_err(|_| anyhow::anyhow!("--cameras: a number or max"))?
                },
                fps: fps.first().copied().unwrap_or(10.0),
                duration: seconds("--duration-s", duration_s.unwrap_or(if max { 20.0 } else { 30.0 }))?,
                warm_up: seconds("--warm-up-s", warm_up_s)?,
                source: source.unwrap_or_else(|| video.display().to_string()),
                geometry,
            };
            if max {
                let r = analyze::cameras::max_cameras(&settings, &fps, &options, max_cameras).await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&r)?);
                } else {
                    print!("{}", cameras_table(&r));
                }
            } else {
                anyhow::ensure!(fps.len() == 1, "--fps: one rate unless --cameras max");
                let r = analyze::cameras::trial(&settings, &options).await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&r)?);
                } else {
                    print!("{}", trial_text(&r));
                }
            }
        }
        Command::Bench { video, lines, json, viewers: Some(viewers), viewer_window_s, .. } => {
            let geometry = Geometry { lines: parse_lines(&lines)?, ..Default::default() };
            let window = seconds("--viewer-window-s", viewer_window_s)?;
            let warm_up = std::time::Duration::from_secs(3);
            let r = analyze::viewers::run(&settings, &video, geometry, &viewers, warm_up, window).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                print!("{}", r.table());
            }
        }
        Command::Bench { video, lines, reference, json, framing, .. } => {
            let mut geometry = Geometry { lines: parse_lines(&lines)?, ..Default::default() };
            framing.apply(&mut geometry)?;
            let errors = geometry.validate();
            anyhow::ensure!(errors.is_empty(), "{}", errors.join("; "));
            let reference = (reference != "none").then(|| PathBuf::from(reference));
            if let Some(path) = reference.as_deref().filter(|p| !p.is_file()) {
                anyhow::bail!(
                    "--reference {}: no such file (scripts/setup.sh writes it; \"none\" skips it)",
                    path.display()
                );
            }
            let r = analyze::bench(&settings, &video, geometry, reference.as_deref()).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                println!("clip            {}", r.video);
                println!("model           {} ({})", r.model, r.backend);
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
                if let Some(reference) = &r.reference {
                    println!(
                        "reference       {:.1} frames/s model only ({}): {:.2}x",
                        reference.model_only_fps, reference.model, reference.speedup
                    );
                }
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

fn seconds(flag: &str, value: f64) -> anyhow::Result<std::time::Duration> {
    anyhow::ensure!(value.is_finite() && (0.0..=3600.0).contains(&value), "{flag}: seconds in 0..=3600");
    Ok(std::time::Duration::from_secs_f64(value))
}

fn trial_text(r: &analyze::cameras::TrialReport) -> String {
    let l = &r.latency;
    let verdict = if r.passed() { "pass".to_string() } else { format!("FAIL: {}", r.failures.join(", ")) };
    format!(
        "cameras         {} at {} frames/s\n\
         analysed        {} frames in {:.1} s: {:.1} frames/s ({:.2} per camera), {} dropped\n\
         latency         capture->tracked p50 {:.1} / p99 {:.1} ms, capture->event p50 {:.1} / p99 {:.1} ms \
         ({} events)\n\
         cpu             {:.2} cores, {:.3} per camera\n\
         memory          {:.0} MiB before the cameras, {:.0} MiB after: {:.1} MiB per camera\n\
         verdict         {verdict} (judged on the {} p99, limit {} ms)\n",
        r.cameras,
        r.fps,
        r.frames,
        r.seconds,
        r.frames_per_s,
        r.frames_per_s_per_camera,
        r.frames_dropped,
        l.frame_ms_p50,
        l.frame_ms_p99,
        l.event_ms_p50,
        l.event_ms_p99,
        l.events,
        r.cpu_cores,
        r.cpu_per_camera,
        r.rss_mib_before,
        r.rss_mib_after,
        r.rss_mib_per_camera,
        r.judged_on,
        analyze::cameras::LATENCY_LIMIT_MS,
    )
}

fn cameras_table(r: &analyze::cameras::MaxReport) -> String {
    let mut out = format!(
        "{} on {}: most live cameras with no frame dropped and p99 under {} ms ({} s trials)\n\
         rate  max N  frames/s  frame p99  event p99 (events)  judged on  CPU/camera  MiB/camera\n",
        r.source, r.device, r.latency_limit_ms, r.trial_seconds
    );
    for rate in &r.rates {
        match &rate.at_max {
            Some(t) => {
                out += &format!(
                    "{:>4}  {:>5}  {:>8.1}  {:>9.1}  {:>9.1} ({:>5})  {:>9}  {:>10.3}  {:>10.1}
",
                    rate.fps,
                    rate.max_cameras,
                    t.frames_per_s,
                    t.latency.frame_ms_p99,
                    t.latency.event_ms_p99,
                    t.latency.events,
                    t.judged_on,
                    t.cpu_per_camera,
                    t.rss_mib_per_camera
                )
            }
            None => {
                out += &format!(
                    "{:>4}  {:>5}  (not even one camera passes)
",
                    rate.fps, 0
                )
            }
        }
    }
    out
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
