//! Builds the running pipeline from settings: devices (one GpuActor + inference thread each),
//! connector shards, and cameras on demand. The one place that knows how actors are wired.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use actix::{Actor, Addr};
use dashmap::DashMap;
use parking_lot::Mutex;

use crate::actors::camera::source::SourceConfig;
use crate::actors::camera::{CameraActor, CameraSpec, CameraStatus, SourceKind, StopCamera};
use crate::actors::connector::{shard_for, AddCamera, ConnectorActor, RemoveCamera, SetGeometry};
use crate::actors::gpu::batch::{FrameQueue, WhenFull};
use crate::actors::gpu::{worker, AttachCamera, CameraRoute, DetachCamera, DeviceQueue, GpuActor};
use crate::actors::messages::CameraId;
use crate::analytics::geometry::Geometry;
use crate::detector::model::{check_model_file, device_name, select_devices};
use crate::metrics::Metrics;
use crate::settings::Settings;
use crate::sinks::EventSink;

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
    queue: Arc<DeviceQueue>,
    /// False once the inference thread has ended.
    alive: Arc<AtomicBool>,
    /// Taken by `shutdown`, which waits for the thread.
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
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

pub struct Pipeline {
    settings: Settings,
    metrics: Arc<Metrics>,
    devices: Vec<Device>,
    shards: Vec<Addr<ConnectorActor>>,
    cameras: DashMap<String, RunningCamera>,
}

impl Pipeline {
    /// Loads the model on every selected device and starts the shards. Must run inside an actix system.
    pub fn start(settings: Settings, metrics: Arc<Metrics>, sink: Arc<dyn EventSink>) -> Result<Self, TopologyError> {
        check_model_file(&settings.model.path).map_err(TopologyError::Device)?;
        let mut devices = Vec::new();
        for device in select_devices(settings.device.kind).map_err(TopologyError::Device)? {
            let name = device_name(device);
            let queue = FrameQueue::new();
            let alive = Arc::new(AtomicBool::new(true));
            let thread = worker::spawn(&settings, device, queue.clone(), metrics.clone(), alive.clone())
                .map_err(|e| TopologyError::Device(format!("{name}: {e}")))?;
            let actor = GpuActor::new(name.clone(), queue.clone()).start();
            tracing::info!(device = %name, "device ready");
            devices.push(Device { name, actor, queue, alive, thread: Mutex::new(Some(thread)) });
        }
        let model: Arc<str> = settings.model.name().into();
        let shards = (0..settings.connector.shards)
            .map(|i| ConnectorActor::new(
                    i,
                    model.clone(),
                    settings.connector.mailbox,
                    settings.tracker,
                    settings.analytics.clone(),
                    sink.clone(),
                    metrics.clone(),
                ).start())
            .collect();
        Ok(Self { settings, metrics, devices, shards, cameras: DashMap::new() })
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Each device with whether its inference thread is running.
    pub fn devices(&self) -> Vec<(String, bool)> {
        self.devices.iter().map(|d| (d.name.clone(), d.alive.load(Ordering::SeqCst))).collect()
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
        let epoch_ms = if is_file { registered_ms } else { crate::actors::camera::status::now_ms() };
        let status = Arc::new(CameraStatus::new(camera_id.clone(), epoch_ms, geometry_version, &self.metrics));
        let device = self.least_loaded_device();
        let shard = shard_for(&spec.id, self.shards.len());
        // Network cameras have no replay options; their default (`realtime`) makes them live.
        let when_full = if mode == CameraMode::Live && spec.replay_options().realtime {
            WhenFull::DropOldest
        } else {
            WhenFull::Wait
        };
        self.shards[shard]
            .send(AddCamera { status: status.clone(), geometry: spec.geometry.clone(), geometry_version })
            .await
            .map_err(|_| TopologyError::Stopped)?;
        let route = CameraRoute { connector: self.shards[shard].clone().recipient(), status: status.clone(), when_full };
        let intake = self.devices[device]
            .actor
            .send(AttachCamera { camera_id: camera_id.clone(), capacity: self.settings.batching.queue_per_camera, route })
            .await
            .map_err(|_| TopologyError::Stopped)?;
        let config = self.source_config(&spec, camera_id, mode, epoch_ms);
        let actor = CameraActor::new(config, status.clone(), Box::new(intake), self.metrics.clone()).start();
        self.cameras.insert(spec.id.clone(), RunningCamera { spec, geometry_version, status: status.clone(), actor, device, shard });
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
            camera.shard
        };
        self.shards[shard]
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
        let _ = self.shards[camera.shard].send(RemoveCamera(camera_id)).await;
        self.metrics.remove_camera(id);
        true
    }

    /// Stops every camera, then each device's inference thread once it has finished its batch,
    /// and waits for those threads: libtorch must not be mid-call while the process exits.
    pub async fn shutdown(&self) {
        for (spec, _) in self.cameras() {
            self.stop_camera(&spec.id).await;
        }
        for device in &self.devices {
            device.queue.close();
            // Taken in its own statement: the lock must not be held across the await.
            let thread = device.thread.lock().take();
            if let Some(thread) = thread {
                let _ = tokio::task::spawn_blocking(move || thread.join()).await;
            }
        }
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
        (0..self.devices.len())
            .min_by_key(|&d| self.cameras.iter().filter(|c| c.device == d).count())
            .unwrap_or(0)
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
            read_timeout: std::time::Duration::from_millis(cams.read_timeout_ms),
            reconnect_initial: std::time::Duration::from_millis(cams.reconnect_initial_ms),
            reconnect_max: std::time::Duration::from_millis(cams.reconnect_max_ms),
            max_retries: (mode == CameraMode::Offline).then_some(0),
            clock_origin: std::time::UNIX_EPOCH + std::time::Duration::from_millis(epoch_ms),
        }
    }
}
