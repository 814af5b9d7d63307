//! Builds the running pipeline from settings: devices (one GpuActor each, whose inference thread
//! is a supervised child), supervised connector shards, and cameras on demand (each a CameraActor
//! on the cameras' arbiter, whose decode thread is a child of the camera supervisor). The one
//! place that knows how actors are wired and how each supervised child is rebuilt.

use std::sync::Arc;

use actix::{Actor, Addr, Arbiter};
use dashmap::DashMap;

use crate::actors::camera::source::{Source, SourceConfig};
use crate::actors::camera::{CameraActor, StopCamera};
use crate::actors::connector::{
    restart_shard, shard_for, start_shard, AddCamera, Registration, RemoveCamera, SetGeometry, ShardConfig, ShardSlot,
    HANDOVER_WAIT,
};
use crate::actors::gpu::candidate::Candidates;
use crate::actors::gpu::registry::{ModelRegistry, StartPlan, Started};
use crate::actors::gpu::shadow::CounterStart;
use crate::actors::gpu::transitions::ModelTransitions;
use crate::actors::gpu::worker::{DeviceParts, DeviceState, FaultInjector, WorkerConfig};
use crate::actors::gpu::{AttachCamera, CameraRoute, DetachCamera, DeviceView, GetDeviceView, GpuActor, StopDevice};
use crate::actors::status::{CameraStatus, StreamState};
use crate::analytics::geometry::Geometry;
use crate::camera_spec::{CameraSpec, SourceKind};
use crate::detector::drift::DriftConfig;
use crate::detector::model::{check_model_file, file_loader, inference_devices};
use crate::detector::simulated;
use crate::ids::CameraId;
use crate::metrics::Metrics;
use crate::overflow::WhenFull;
use crate::settings::Settings;
use crate::sinks::EventSink;
use crate::supervision::supervisor::EscalationHook;
use crate::supervision::{stop_signal, ChildView, Generation, Reporter, Supervisor, SystemClock};

#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    #[error("{0}")]
    Device(String),
    #[error("camera {0} is already running")]
    AlreadyRunning(String),
    #[error("the pipeline is shutting down")]
    Stopped,
}

/// How a camera's frames are treated when its device is saturated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CameraMode {
    /// Live: drop the oldest frame, never wait.
    Live,
    /// Offline analysis of a file: never drop; give up on the first stream failure.
    Offline,
}

struct Device {
    name: String,
    actor: Addr<GpuActor>,
}

struct RunningCamera {
    spec: CameraSpec,
    /// The version of `spec.geometry`.
    geometry_version: u32,
    status: Arc<CameraStatus>,
    actor: Addr<CameraActor>,
    device: usize,
    shard: usize,
}

impl RunningCamera {
    /// What a restarted shard rebuilds this camera from.
    fn registration(&self) -> Registration {
        Registration {
            status: self.status.clone(),
            geometry: self.spec.geometry.clone(),
            geometry_version: self.geometry_version,
        }
    }
}

pub struct Pipeline {
    settings: Settings,
    metrics: Arc<Metrics>,
    devices: Vec<Device>,
    shards: Vec<Arc<ShardSlot>>,
    cameras: Arc<DashMap<String, RunningCamera>>,
    supervisor: Supervisor,
    /// Supervises the cameras' decode threads; a crash-looping one fails its camera, not the
    /// process.
    camera_supervisor: Supervisor,
    /// Where every CameraActor runs (not on whichever arbiter registered it: an HTTP worker).
    camera_arbiter: Arbiter,
    models: Arc<ModelRegistry>,
    /// The model's name in metrics (`ml_model_*{model}`) and the API.
    model_name: Arc<str>,
    candidates: Arc<Candidates>,
}

impl Pipeline {
    /// Loads the configured model on every selected device (in memory: version 1, no registry
    /// in PostgreSQL), starts the shards and the supervisor that restarts them and the inference
    /// threads. `escalate` is called when a child crash-loops. Must run inside an actix system.
    pub fn start(
        settings: Settings,
        metrics: Arc<Metrics>,
        sink: Arc<dyn EventSink>,
        escalate: EscalationHook,
    ) -> Result<Self, TopologyError> {
        let simulated = settings.simulator.enabled;
        // The simulator's synthetic detector reads no model file.
        if !simulated {
            check_model_file(&settings.model.path).map_err(TopologyError::Device)?;
        }
        let plan = StartPlan::configured(&settings.model);
        Self::start_from(settings, metrics, sink, escalate, plan)
    }

    /// As `start`, serving the first version of `plan` that loads on every device (the registry's
    /// serving version, else a fallback); `TopologyError::Device` with every reason when none does.
    pub fn start_from(
        settings: Settings,
        metrics: Arc<Metrics>,
        sink: Arc<dyn EventSink>,
        escalate: EscalationHook,
        plan: StartPlan,
    ) -> Result<Self, TopologyError> {
        let simulated = settings.simulator.enabled;
        let system = actix::System::current();
        let observer = metrics.clone();
        let supervisor = Supervisor::spawn(
            "pipeline",
            settings.supervisor.policy(),
            escalate,
            Box::new(move |view: &ChildView| observer.observe_child(view)),
            // Factories start arbiters, which belong to this actix system.
            move || actix::System::set_current(system),
        );
        let heartbeat = Some(settings.supervisor.heartbeat_timeout());
        let model_name = if simulated { simulated::MODEL_NAME.to_string() } else { settings.model.name() };
        let store = if simulated { None } else { plan.store() };
        let transitions = ModelTransitions::new(model_name.clone(), metrics.clone(), sink.clone(), store);
        let faults = Arc::new(FaultInjector::new(settings.faults.clone()));
        let breaker = settings.breakers.config();
        let loader = if simulated { simulated::loader() } else { file_loader() };
        let named = inference_devices(settings.device.kind, settings.model.backend(), settings.device.cpu_workers)
            .map_err(TopologyError::Device)?;
        // Each candidate in turn, on every device; the first that loads everywhere serves.
        let registry = plan.store().is_some();
        let mut failures = plan.unavailable.clone();
        let mut loaded = None;
        for candidate in &plan.candidates {
            let what = format!("version {} ({}, {})", candidate.version, candidate.file, candidate.role);
            let model = match plan.settings_for(&settings.model, candidate) {
                Ok(model) => model,
                Err(error) => {
                    tracing::error!(model = %model_name, candidate = %what, %error, "model version cannot load");
                    failures.push(format!("{what}: {error}"));
                    continue;
                }
            };
            let mut states = Vec::new();
            for (device, name) in &named {
                let parts = DeviceParts {
                    device: *device,
                    name: name.clone(),
                    config: WorkerConfig::from_settings(&settings, *device),
                    model: model.clone(),
                    version: candidate.version,
                    loader: loader.clone(),
                    metrics: metrics.clone(),
                    breaker: metrics.breaker(&format!("model:{model_name}:{name}"), &breaker),
                    transitions: transitions.clone(),
                    faults: faults.clone(),
                };
                match DeviceState::load(parts) {
                    Ok(state) => states.push((name.clone(), state)),
                    Err(error) => {
                        tracing::error!(model = %model_name, candidate = %what, device = %name, %error,
                            "model version does not load");
                        failures.push(if !registry {
                            format!("{name}: {error}")
                        } else {
                            format!("{what}: {name}: {error}")
                        });
                        states.clear();
                        break;
                    }
                }
            }
            if !states.is_empty() {
                loaded = Some((candidate.clone(), states));
                break;
            }
        }
        let Some((candidate, states)) = loaded else {
            return Err(TopologyError::Device(match failures.as_slice() {
                [one] if !registry => one.clone(),
                _ => format!("no model version loads: {}", failures.join("; ")),
            }));
        };
        let mut devices = Vec::new();
        for (name, state) in states {
            let actor = GpuActor::new(state, supervisor.clone(), settings.supervisor.heartbeat_timeout()).start();
            devices.push(Device { name, actor });
        }
        let device_actors = devices.iter().map(|d| d.actor.clone()).collect();
        let models = Arc::new(if simulated {
            ModelRegistry::simulated(settings.model.clone(), device_actors, transitions.clone())
        } else {
            let started = Started { candidate, failures };
            ModelRegistry::new(settings.model.clone(), device_actors, transitions.clone(), &plan, started)
                .map_err(|e| TopologyError::Device(format!("model file: {e}")))?
        });
        let cameras: Arc<DashMap<String, RunningCamera>> = Arc::default();
        let candidates = {
            let cameras = cameras.clone();
            let counters = CounterStart {
                tracker: settings.tracker,
                lines: Arc::new(move |id: &CameraId| cameras.get(id.as_ref()).map(|c| c.spec.geometry.lines.clone())),
            };
            let devices = devices.iter().map(|d| d.actor.clone()).collect();
            let candidates = Candidates::new(
                settings.model.clone(),
                devices,
                models.clone(),
                transitions,
                metrics.clone(),
                counters,
            );
            Arc::new(candidates)
        };
        judge_candidates(&candidates, settings.model.lifecycle.check_interval());
        let camera_supervisor = {
            let (observer, cameras) = (metrics.clone(), cameras.clone());
            Supervisor::spawn(
                "cameras",
                settings.supervisor.policy(),
                Box::new(move |child: &str, error: &str| fail_camera(&cameras, child, error)),
                Box::new(move |view: &ChildView| observer.observe_child(view)),
                || {},
            )
        };
        let model: Arc<str> = model_name.into();
        let mut shards = Vec::new();
        let panic_fired = Arc::default();
        for shard in 0..settings.connector.shards {
            let config = ShardConfig {
                shard,
                model: model.clone(),
                drift: DriftConfig::of(settings.model.drift, settings.model.score_threshold),
                mailbox: settings.connector.mailbox,
                tracker: settings.tracker,
                analytics: settings.analytics.clone(),
                sink: sink.clone(),
                metrics: metrics.clone(),
                panic_at_frame: settings.faults.shard_panic_at_frame,
                panic_fired: Arc::clone(&panic_fired),
                live: Arc::default(),
                handover_wait: HANDOVER_WAIT,
            };
            let slot: Arc<std::sync::OnceLock<Arc<ShardSlot>>> = Arc::default();
            let factory = {
                let (config, cameras, slot) = (config.clone(), cameras.clone(), slot.clone());
                move |_: Generation, reporter: Reporter| {
                    let slot = slot.get().ok_or("the shard has no slot yet")?;
                    let registrations =
                        cameras.iter().filter(|c| c.shard == config.shard).map(|c| c.registration()).collect();
                    restart_shard(&config, reporter, registrations, slot);
                    Ok(())
                }
            };
            let reporter = supervisor.add(&format!("shard-{shard}"), heartbeat, factory);
            let _ = slot.set(start_shard(config, reporter));
            shards.push(slot.get().expect("just set").clone());
        }
        let camera_arbiter = Arbiter::new();
        Ok(Self {
            settings,
            metrics,
            devices,
            shards,
            cameras,
            supervisor,
            camera_supervisor,
            camera_arbiter,
            models,
            model_name: model,
            candidates,
        })
    }

    /// The supervised children: shards and inference threads, with restarts and last errors.
    pub fn children(&self) -> Vec<ChildView> {
        self.supervisor.children()
    }

    /// Why the supervisor gave up, once it has.
    pub fn escalated(&self) -> Option<String> {
        self.supervisor.escalated()
    }

    pub fn models(&self) -> &ModelRegistry {
        &self.models
    }

    /// The model's name in metrics and the API (the simulator's own under the simulator).
    pub fn model_name(&self) -> &str {
        &self.model_name
    }

    pub fn candidates(&self) -> &Candidates {
        &self.candidates
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Each device: whether its inference thread runs, its batch limit, its model and breaker.
    pub async fn devices(&self) -> Vec<DeviceView> {
        let mut views = Vec::with_capacity(self.devices.len());
        for device in &self.devices {
            if let Ok(view) = device.actor.send(GetDeviceView).await {
                views.push(view);
            }
        }
        views
    }

    /// The devices' names (`cpu`, `cuda:0`, ...).
    pub fn device_names(&self) -> impl Iterator<Item = &str> {
        self.devices.iter().map(|d| d.name.as_str())
    }

    /// The camera supervisor's children: one decode thread per running camera.
    pub fn camera_children(&self) -> Vec<ChildView> {
        self.camera_supervisor.children()
    }

    /// Starts a validated camera: attach to the least-loaded device, register on its shard, then
    /// start its decode thread (so no frame can arrive before its tracker exists).
    /// `registered_ms` is when the camera was registered: a file camera's event ids derive from
    /// it, so replaying the same file after a restart writes nothing twice; a live camera's
    /// derive from its start, since its frame numbers start again from 0 with new content.
    /// `geometry_version` names `spec.geometry` in events and aggregates.
    pub async fn start_camera(
        &self,
        spec: CameraSpec,
        mode: CameraMode,
        registered_ms: u64,
        geometry_version: u32,
    ) -> Result<Arc<CameraStatus>, TopologyError> {
        if self.cameras.contains_key(&spec.id) {
            return Err(TopologyError::AlreadyRunning(spec.id));
        }
        let camera_id: CameraId = spec.id.as_str().into();
        let is_file = spec.source_kind() == Ok(SourceKind::File);
        let epoch_ms = if is_file { registered_ms } else { crate::actors::status::now_ms() };
        let status = Arc::new(CameraStatus::new(
            camera_id.clone(),
            epoch_ms,
            geometry_version,
            &self.metrics,
            &self.settings.breakers.config(),
        ));
        status.frame_plan.set(spec.geometry.frame_plan());
        let device = self.least_loaded_device();
        let shard = shard_for(&spec.id, self.shards.len());
        // Network cameras have no replay options; their default (`realtime`) makes them live.
        let when_full = if mode == CameraMode::Live && spec.replay_options().realtime {
            WhenFull::DropOldest
        } else {
            WhenFull::Wait
        };
        let registration = Registration { status: status.clone(), geometry: spec.geometry.clone(), geometry_version };
        self.shards[shard].addr().send(AddCamera(registration)).await.map_err(|_| TopologyError::Stopped)?;
        let route = CameraRoute { connector: self.shards[shard].clone(), status: status.clone(), when_full };
        let intake = self.devices[device]
            .actor
            .send(AttachCamera {
                camera_id: camera_id.clone(),
                capacity: self.settings.batching.queue_per_camera,
                route,
            })
            .await
            .map_err(|_| TopologyError::Stopped)?;
        let config = self.source_config(&spec, camera_id, mode, epoch_ms);
        let (stop, signal) = stop_signal();
        let source =
            Source::new(config, status.clone(), Arc::new(intake), self.metrics.clone(), Arc::new(SystemClock), signal);
        let supervisor = self.camera_supervisor.clone();
        let actor = CameraActor::start_in_arbiter(&self.camera_arbiter.handle(), move |_| {
            CameraActor::new(source, stop, supervisor)
        });
        self.cameras.insert(
            spec.id.clone(),
            RunningCamera { spec, geometry_version, status: status.clone(), actor, device, shard },
        );
        Ok(status)
    }

    /// Makes a validated geometry the one a running camera is analysed with; `false` when the
    /// camera is not running. The connector closes the old version's intervals and incidents.
    pub async fn set_geometry(&self, id: &str, geometry: Geometry, version: u32) -> Result<bool, TopologyError> {
        let shard = {
            let Some(mut camera) = self.cameras.get_mut(id) else { return Ok(false) };
            // Two quick changes may get here out of order: the newest version wins.
            if version <= camera.geometry_version {
                return Ok(true);
            }
            camera.spec.geometry = geometry.clone();
            camera.geometry_version = version;
            // The decode thread crops and stretches by the new geometry from its next frame.
            camera.status.frame_plan.set(geometry.frame_plan());
            camera.shard
        };
        self.shards[shard]
            .addr()
            .send(SetGeometry { camera_id: id.into(), geometry, version })
            .await
            .map_err(|_| TopologyError::Stopped)?;
        Ok(true)
    }

    /// Stops a camera and forgets its live state; `false` when it was not running.
    pub async fn stop_camera(&self, id: &str) -> bool {
        let Some((_, camera)) = self.cameras.remove(id) else { return false };
        let _ = camera.actor.send(StopCamera).await;
        let camera_id: CameraId = id.into();
        let _ = self.devices[camera.device].actor.send(DetachCamera(camera_id.clone())).await;
        let _ = self.shards[camera.shard].addr().send(RemoveCamera(camera_id)).await;
        self.metrics.remove_camera(id);
        true
    }

    /// Stops every camera, then each device's inference thread once it has finished its batch,
    /// and waits for those threads: libtorch must not be mid-call while the process exits.
    pub async fn shutdown(&self) {
        for (spec, _) in self.cameras() {
            self.stop_camera(&spec.id).await;
        }
        self.supervisor.stop();
        self.camera_supervisor.stop();
        for device in &self.devices {
            if let Ok(stopped) = device.actor.send(StopDevice).await {
                let _ = tokio::task::spawn_blocking(move || stopped.wait(std::time::Duration::from_secs(10))).await;
            }
        }
        self.camera_arbiter.stop();
    }

    pub fn camera(&self, id: &str) -> Option<(CameraSpec, Arc<CameraStatus>)> {
        self.cameras.get(id).map(|c| (c.spec.clone(), c.status.clone()))
    }

    pub fn cameras(&self) -> Vec<(CameraSpec, Arc<CameraStatus>)> {
        let mut all: Vec<_> = self.cameras.iter().map(|c| (c.spec.clone(), c.status.clone())).collect();
        all.sort_by(|a, b| a.0.id.cmp(&b.0.id));
        all
    }

    fn least_loaded_device(&self) -> usize {
        (0..self.devices.len()).min_by_key(|&d| self.cameras.iter().filter(|c| c.device == d).count()).unwrap_or(0)
    }

    fn source_config(&self, spec: &CameraSpec, camera_id: CameraId, mode: CameraMode, epoch_ms: u64) -> SourceConfig {
        let cams = &self.settings.cameras;
        let replay = spec.replay_options();
        let is_file = spec.source_kind() == Ok(SourceKind::File);
        SourceConfig {
            camera_id,
            // FFmpeg opens local files by their real path, the one the media directory check
            // admitted: a link swapped in later is not followed.
            url: spec
                .file_path()
                .filter(|_| is_file)
                .map(|p| p.canonicalize().unwrap_or(p).display().to_string())
                .unwrap_or_else(|| spec.url.clone()),
            is_file,
            fps: spec.fps.unwrap_or(cams.default_fps),
            looping: replay.looping && mode == CameraMode::Live,
            realtime: replay.realtime && mode == CameraMode::Live,
            rtsp_transport: spec.rtsp_transport.unwrap_or_default(),
            input_size: self.settings.model.input_size,
            overview: self.settings.model.overview,
            read_timeout: std::time::Duration::from_millis(cams.read_timeout_ms),
            reconnect_initial: std::time::Duration::from_millis(cams.reconnect_initial_ms),
            reconnect_max: std::time::Duration::from_millis(cams.reconnect_max_ms),
            max_retries: (mode == CameraMode::Offline).then_some(0),
            clock_origin: std::time::UNIX_EPOCH + std::time::Duration::from_millis(epoch_ms),
            panic_at_frame: self.settings.faults.decode_panic_at_frame,
            panic_repeats: self.settings.faults.decode_panic_repeats,
            decode_threads: cams.decode_threads,
            hwaccel: cams.hwaccel,
            start_frame: replay.start_frame,
        }
    }
}

/// The camera supervisor's escalation: a decode thread that keeps crashing fails its camera
/// (shown in its status, `CameraDown` fires) and stops it; the rest of the service runs on.
fn fail_camera(cameras: &DashMap<String, RunningCamera>, child: &str, error: &str) {
    let Some(camera) = CameraActor::camera_of(child).and_then(|id| cameras.get(id)) else { return };
    camera.status.set_state(StreamState::Failed, Some(format!("decode thread crash-looping: {error}")));
    camera.actor.do_send(StopCamera);
}

/// Judges the active candidate every `every` for as long as the pipeline holds the candidates.
fn judge_candidates(candidates: &Arc<Candidates>, every: std::time::Duration) {
    let candidates = Arc::downgrade(candidates);
    actix::spawn(async move {
        let mut interval = tokio::time::interval(every);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            let Some(candidates) = candidates.upgrade() else { break };
            candidates.tick().await;
        }
    });
}
