//! The model registry (risk R5, issue 15 parts 4 and 5): the versions of the detection model,
//! which one serves, and every transition between them.
//!
//! With a store (the service), versions and transitions live in PostgreSQL (`db::models`): a
//! version is a file of the model directory with its SHA-256, numbered once for the whole cluster
//! (the same file with the same content is the same version on every node). Without one (`analyze`,
//! `bench`) they live in memory, the configured file being version 1.
//!
//! `register` loads a file on every device and validates it there (output shape, then a smoke
//! inference on a real frame the device saw recently) and stores it as a version, without
//! installing it; `activate` installs a registered version on every device, between two batches,
//! keeping the version it replaced, and stores the activation, which every other node applies at
//! its next heartbeat (`apply_cluster`, woken at once by `NOTIFY`); `reload` is both. A file that
//! fails any step is rejected and the serving model never stops. A swapped-in version whose
//! batches keep failing is rolled back by the device (`worker`): that too is stored and reaches
//! every node. Every transition is a log line, a metric (`its_model_transitions_total`,
//! `its_model_version`), an event on the Redis stream and channel `{prefix}:system`
//! (`"type": "model_transition"`) and, with a store, a row shown by `GET /api/v1/models`.
//!
//! At start (`StartPlan`) the version that was serving (the newest activation or rollback) serves
//! again. The configured file is registered at every start (a new version when its name or
//! SHA-256 is new) but serves only at the first start, when no version has been activated yet,
//! or as the last resort of a fallback: when the serving version does not load (file missing,
//! SHA-256 changed, load or shape error), the good versions are tried, most recently serving
//! first (a good version was activated or rolled back to, and never rejected nor rolled back
//! from), then the configured file. The first that loads on every device serves, a `fallback`
//! transition is stored and readiness names it; when none loads the start fails with every reason.

use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use serde::Serialize;
use sha2::Digest;

use super::transitions::{ModelTransition, ModelTransitions, TransitionStore, HISTORY};
use super::worker::{set_up_thread, LoadedModel};
use super::{GetDeviceView, GetValidationTarget, GpuActor, InstallModel, ValidationTarget};
use crate::db::models::{VersionRow, SERVING_TRANSITIONS};
use crate::db::{Db, DbError};
use crate::detector::config::ModelSettings;
use crate::detector::{Detector, DetectorError, Model};

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// No such model, or no such version of it.
    #[error("{0}")]
    NotFound(String),
    /// The request names no acceptable file.
    #[error("{0}")]
    BadPath(String),
    /// The file was read and refused; the serving model is unchanged.
    #[error("model rejected: {0}")]
    Rejected(String),
    #[error("another reload of this model is in progress")]
    Busy,
    #[error("the pipeline is shutting down")]
    Stopped,
    /// The registry's store failed; nothing was changed.
    #[error(transparent)]
    Store(#[from] DbError),
}

/// One version of the model.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ModelVersion {
    pub version: u32,
    /// Relative to the model directory.
    pub file: String,
    pub sha256: String,
    /// Square network input side it was validated with.
    pub input_size: u32,
    /// `fp32`, `bf16`, `fp16` or `int8`, from the file name (`precision_of`).
    pub precision: String,
    /// When it was registered.
    pub loaded_at: chrono::DateTime<chrono::Utc>,
}

impl From<VersionRow> for ModelVersion {
    fn from(r: VersionRow) -> Self {
        Self {
            version: r.version,
            file: r.file,
            sha256: r.sha256,
            input_size: r.input_size,
            precision: r.precision,
            loaded_at: r.created_at,
        }
    }
}

/// What `GET /api/v1/models` shows of one model.
#[derive(Debug, Clone, Serialize)]
pub struct ModelView {
    pub name: String,
    /// The version serving on each device.
    pub devices: Vec<DeviceModelView>,
    pub versions: Vec<ModelVersion>,
    pub history: Vec<ModelTransition>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DeviceModelView {
    pub device: String,
    pub version: u32,
    pub breaker: crate::supervision::BreakerView,
}

/// The version serving after a fallback at start, as `/health/ready` shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Fallback {
    /// The version serving instead.
    pub version: u32,
    pub file: String,
    /// The version that should have served (the newest activation or rollback).
    pub instead_of: Option<u32>,
    /// Why each version tried before it did not load.
    pub reason: String,
}

/// The precision of a model file, by its name: a `bf16`, `fp16`, `half` or `int8` part between
/// dots (`yolox_nano.bf16.pt`) says so; anything else is `fp32` (what `scripts/convert_model.py`
/// writes without a suffix).
pub fn precision_of(file: &str) -> &'static str {
    let name = Path::new(file).file_name().and_then(|f| f.to_str()).unwrap_or_default().to_ascii_lowercase();
    let parts: Vec<&str> = name.split('.').skip(1).collect();
    if parts.contains(&"bf16") {
        "bf16"
    } else if parts.contains(&"fp16") || parts.contains(&"half") {
        "fp16"
    } else if parts.contains(&"int8") {
        "int8"
    } else {
        "fp32"
    }
}

/// A version the pipeline may serve at start.
#[derive(Debug, Clone, PartialEq)]
pub struct StartCandidate {
    pub version: u32,
    /// Relative to the model directory (without a store: the configured path).
    pub file: String,
    /// The SHA-256 it was registered with; `None`: not checked (without a store).
    pub sha256: Option<String>,
    /// Why it is tried: `serving version`, `previous good version` or `configured file`.
    pub role: &'static str,
}

/// Which versions the pipeline tries at start, in order, and what the registry knew then.
pub struct StartPlan {
    pub candidates: Vec<StartCandidate>,
    /// Problems found before loading anything (the configured file unreadable).
    pub unavailable: Vec<String>,
    /// The model directory (canonical when it exists).
    dir: PathBuf,
    /// The version that should serve; `None` at the first start.
    serving: Option<u32>,
    /// Transitions up to this one are already reflected in `serving`.
    last_seq: i64,
    store: Option<TransitionStore>,
}

impl StartPlan {
    /// Without a store: the configured file as version 1.
    pub fn configured(settings: &ModelSettings) -> Self {
        let candidate = StartCandidate {
            version: 1,
            file: settings.path.display().to_string(),
            sha256: None,
            role: "configured file",
        };
        Self {
            candidates: vec![candidate],
            unavailable: Vec::new(),
            dir: PathBuf::new(),
            serving: Some(1),
            last_seq: 0,
            store: None,
        }
    }

    /// From the registry in PostgreSQL: registers the configured file (when readable) and lists
    /// the serving version, the good ones and the configured file.
    pub async fn from_registry(db: &Db, node: &str, settings: &ModelSettings) -> Result<Self, DbError> {
        let name = settings.name();
        let dir = model_dir(&settings.path);
        let mut unavailable = Vec::new();
        let configured = settings.path.clone();
        let hashed = tokio::task::spawn_blocking(move || sha256_of(&configured)).await;
        let configured = match hashed {
            Ok(Ok(sha256)) => {
                let file = settings.path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
                let (row, new) =
                    db.register_model_version(&name, &file, &sha256, settings.input_size, precision_of(&file)).await?;
                if new {
                    tracing::info!(model = %name, version = row.version, %file, "configured model file registered");
                }
                Some(row)
            }
            Ok(Err(e)) => {
                let hint =
                    if e.kind() == std::io::ErrorKind::NotFound { "; run scripts/setup.sh to convert it" } else { "" };
                unavailable.push(format!("configured file {}: {e}{hint}", settings.path.display()));
                None
            }
            Err(e) => {
                unavailable.push(format!("configured file {}: {e}", settings.path.display()));
                None
            }
        };
        let serving = db.model_serving(&name).await?;
        let mut candidates = Vec::new();
        let candidate = |row: &VersionRow, role| StartCandidate {
            version: row.version,
            file: row.file.clone(),
            sha256: Some(row.sha256.clone()),
            role,
        };
        if let Some(row) = &serving.version {
            candidates.push(candidate(row, "serving version"));
            for row in db.good_model_versions(&name).await? {
                if !candidates.iter().any(|c| c.version == row.version) {
                    candidates.push(candidate(&row, "previous good version"));
                }
            }
        }
        if let Some(row) = &configured {
            if !candidates.iter().any(|c| c.version == row.version) {
                if let Some(serving) = &serving.version {
                    tracing::info!(model = %name, configured = row.version, serving = serving.version,
                        "the configured file is not the serving version: the registry's serves (reload to change it)");
                }
                candidates.push(candidate(row, "configured file"));
            }
        }
        Ok(Self {
            candidates,
            unavailable,
            dir,
            serving: serving.version.map(|v| v.version),
            last_seq: serving.last_seq,
            store: Some(TransitionStore { db: db.clone(), node: node.to_string() }),
        })
    }

    /// Where transitions are stored, if anywhere.
    pub fn store(&self) -> Option<TransitionStore> {
        self.store.clone()
    }

    /// The settings that load `candidate`: its file exists in the model directory and, when
    /// registered, still has its SHA-256.
    pub fn settings_for(&self, base: &ModelSettings, candidate: &StartCandidate) -> Result<ModelSettings, String> {
        let Some(expected) = &candidate.sha256 else { return Ok(base.clone()) };
        let path = resolve_in(&self.dir, &candidate.file).map_err(|e| e.to_string())?;
        let actual = sha256_of(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        if &actual != expected {
            return Err(format!("{}: SHA-256 {actual} is not the registered {expected}", candidate.file));
        }
        Ok(ModelSettings { path, ..base.clone() })
    }
}

/// What the pipeline loaded at start: the candidate, and why the ones before it did not load.
pub struct Started {
    pub candidate: StartCandidate,
    pub failures: Vec<String>,
}

/// A transition of the start, stored once the service is up (`record_start`).
enum StartRecord {
    FirstActivation { version: u32, file: String },
    Fallback(Fallback),
}

pub struct ModelRegistry {
    name: String,
    /// The simulator's synthetic detector serves: there is no file to reload.
    simulated: bool,
    base: ModelSettings,
    /// Canonical directory reloads may read from: the configured model's directory.
    dir: PathBuf,
    devices: Vec<actix::Addr<GpuActor>>,
    /// Versions and history in PostgreSQL; `None`: in memory.
    store: Option<Db>,
    /// The versions without a store.
    versions: Mutex<Vec<ModelVersion>>,
    transitions: Arc<ModelTransitions>,
    reloading: tokio::sync::Mutex<()>,
    start: Mutex<Option<StartRecord>>,
    fallback: Mutex<Option<Fallback>>,
    /// The last transition (`model_transitions.seq`) applied or skipped by `apply_cluster`.
    applied_seq: AtomicI64,
}

impl ModelRegistry {
    /// The registry of the model the pipeline loaded on `devices` at start.
    pub fn new(
        base: ModelSettings,
        devices: Vec<actix::Addr<GpuActor>>,
        transitions: Arc<ModelTransitions>,
        plan: &StartPlan,
        started: Started,
    ) -> std::io::Result<Self> {
        let store = plan.store.as_ref().map(|s| s.db.clone());
        let (dir, versions) = if store.is_some() {
            (plan.dir.clone(), Vec::new())
        } else {
            let file = base.path.canonicalize()?;
            let dir = file.parent().map(Path::to_path_buf).unwrap_or_default();
            let name = file.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
            let first = ModelVersion {
                version: 1,
                precision: precision_of(&name).into(),
                file: name,
                sha256: sha256_of(&file)?,
                input_size: base.input_size,
                loaded_at: chrono::Utc::now(),
            };
            (dir, vec![first])
        };
        let Started { candidate, failures } = started;
        let start = match plan.serving {
            None => Some(StartRecord::FirstActivation { version: candidate.version, file: candidate.file.clone() }),
            Some(serving) if serving != candidate.version => Some(StartRecord::Fallback(Fallback {
                version: candidate.version,
                file: candidate.file.clone(),
                instead_of: Some(serving),
                reason: failures.join("; "),
            })),
            Some(_) => None,
        };
        if store.is_some() {
            transitions.serving(candidate.version);
        }
        Ok(Self {
            name: base.name(),
            simulated: false,
            base,
            dir,
            devices,
            store,
            versions: Mutex::new(versions),
            transitions,
            reloading: Default::default(),
            start: Mutex::new(start),
            fallback: Mutex::new(None),
            applied_seq: AtomicI64::new(plan.last_seq),
        })
    }

    /// The registry while the simulator runs: version 1 is the synthetic detector, which has no
    /// file (`file` and `sha256` say so) and cannot be reloaded.
    pub fn simulated(
        base: ModelSettings,
        devices: Vec<actix::Addr<GpuActor>>,
        transitions: Arc<ModelTransitions>,
    ) -> Self {
        let name = crate::detector::simulated::MODEL_NAME;
        let first = ModelVersion {
            version: 1,
            file: name.into(),
            sha256: String::new(),
            input_size: base.input_size,
            precision: "fp32".into(),
            loaded_at: chrono::Utc::now(),
        };
        Self {
            name: name.into(),
            simulated: true,
            base,
            dir: PathBuf::new(),
            devices,
            store: None,
            versions: Mutex::new(vec![first]),
            transitions,
            reloading: Default::default(),
            start: Mutex::new(None),
            fallback: Mutex::new(None),
            applied_seq: AtomicI64::new(0),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The version serving after a fallback at start, until another is activated.
    pub fn fallback(&self) -> Option<Fallback> {
        self.fallback.lock().clone()
    }

    /// Stores the transition of the start: the first activation of the configured file, or the
    /// fallback to another version than the serving one (which readiness then names).
    pub async fn record_start(&self) -> Result<(), ReloadError> {
        let Some(start) = self.start.lock().take() else { return Ok(()) };
        match start {
            StartRecord::FirstActivation { version, file } => {
                let detail = format!("{file}: the configured file, at the first start");
                self.transitions.record_stored("activated", None, Some(version), detail).await?;
            }
            StartRecord::Fallback(fallback) => {
                let detail = format!("{}: loaded at start instead; {}", fallback.file, fallback.reason);
                *self.fallback.lock() = Some(fallback.clone());
                self.transitions.record_stored("fallback", fallback.instead_of, Some(fallback.version), detail).await?;
            }
        }
        Ok(())
    }

    pub async fn view(&self) -> Result<ModelView, ReloadError> {
        let mut devices = Vec::new();
        for device in &self.devices {
            if let Ok(d) = device.send(GetDeviceView).await {
                devices.push(DeviceModelView { device: d.name, version: d.model_version, breaker: d.model_breaker });
            }
        }
        let (versions, history) = match &self.store {
            Some(db) => (
                db.model_versions(&self.name).await?.into_iter().map(ModelVersion::from).collect(),
                db.model_history(&self.name, HISTORY as i64).await?.into_iter().map(ModelTransition::from).collect(),
            ),
            None => (self.versions.lock().clone(), self.transitions.history()),
        };
        Ok(ModelView { name: self.name.clone(), devices, versions, history })
    }

    /// Loads `file` (relative to the model directory; `None`: the configured file), validates it on
    /// every device and stores it as a version (the existing one when that file with that SHA-256
    /// is known), without installing it. A refused file is a `rejected` transition.
    pub async fn register(&self, name: &str, file: Option<&str>) -> Result<ModelVersion, ReloadError> {
        self.check(name)?;
        let _one_at_a_time = self.reloading.try_lock().map_err(|_| ReloadError::Busy)?;
        Ok(self.register_locked(file).await?.0)
    }

    /// Installs registered `version` on every device (the one it replaces kept for a rollback),
    /// stores an `activated` transition with `detail`, and so makes every other node of the
    /// cluster install it at its next heartbeat. Its file is loaded and validated again (its
    /// SHA-256 must not have changed). Refused: a `rejected` transition, the serving model
    /// unchanged.
    pub async fn activate(&self, name: &str, version: u32, detail: &str) -> Result<ModelVersion, ReloadError> {
        self.check(name)?;
        let _one_at_a_time = self.reloading.try_lock().map_err(|_| ReloadError::Busy)?;
        self.activate_locked(version, detail, None).await
    }

    /// `register` then `activate` (with the models `register` validated): the version now serving.
    pub async fn reload(&self, name: &str, file: Option<&str>) -> Result<ModelVersion, ReloadError> {
        self.check(name)?;
        let _one_at_a_time = self.reloading.try_lock().map_err(|_| ReloadError::Busy)?;
        let (version, loaded) = self.register_locked(file).await?;
        self.activate_locked(version.version, &version.file, Some(loaded)).await
    }

    /// The version serving on the first device (1 without devices).
    pub async fn serving_version(&self) -> u32 {
        self.device_versions().await.first().copied().unwrap_or(1)
    }

    /// The settings that load registered `version` (its file in the model directory), if known.
    pub async fn settings_of(&self, version: u32) -> Result<Option<ModelSettings>, ReloadError> {
        let Some(entry) = self.version(version).await? else { return Ok(None) };
        Ok(Some(ModelSettings { path: self.dir.join(&entry.file), ..self.base.clone() }))
    }

    /// Applies what other nodes did (at each heartbeat): when a transition stored since the last
    /// call activated or rolled back to a version that some device here does not serve, this
    /// node installs the newest such version (validated here; refused: a `rejected` transition
    /// of this node). `rejected` and `fallback` transitions concern their own node only.
    pub async fn apply_cluster(&self) -> Result<(), ReloadError> {
        let Some(db) = &self.store else { return Ok(()) };
        let after = self.applied_seq.load(Ordering::SeqCst);
        let rows = db.model_transitions_after(&self.name, after).await?;
        let Some(last) = rows.last().map(|r| r.seq) else { return Ok(()) };
        let target = rows.iter().rev().find(|r| SERVING_TRANSITIONS.contains(&r.transition.as_str()));
        let Some((target, to)) = target.and_then(|t| Some((t, t.to_version?))) else {
            self.applied_seq.store(last, Ordering::SeqCst);
            return Ok(());
        };
        let serving = self.device_versions().await;
        if serving.iter().all(|v| *v == to) {
            self.applied_seq.store(last, Ordering::SeqCst);
            return Ok(());
        }
        // A reload here holds it: the next heartbeat looks again.
        let Ok(_one_at_a_time) = self.reloading.try_lock() else { return Ok(()) };
        let from = serving.first().copied();
        match db.model_version(&self.name, to).await? {
            None => {
                tracing::error!(model = %self.name, seq = target.seq, version = to, "transition to an unknown version")
            }
            Some(row) => match self.loaded_for(&row.into(), from).await {
                Ok(loaded) => {
                    self.install(loaded).await?;
                    *self.fallback.lock() = None;
                    self.transitions.applied(target.seq, &target.node, &target.transition, from, to);
                }
                Err(error) => tracing::warn!(model = %self.name, seq = target.seq, %error,
                    "model version of the cluster refused on this node"),
            },
        }
        self.applied_seq.store(last, Ordering::SeqCst);
        Ok(())
    }

    fn check(&self, name: &str) -> Result<(), ReloadError> {
        if name != self.name {
            return Err(ReloadError::NotFound(format!("model {name} not found")));
        }
        if self.simulated {
            return Err(ReloadError::BadPath("simulator.enabled: the synthetic detector has no file to reload".into()));
        }
        Ok(())
    }

    async fn register_locked(&self, file: Option<&str>) -> Result<(ModelVersion, Vec<LoadedModel>), ReloadError> {
        let path = match file {
            Some(file) => resolve_in(&self.dir, file)?,
            None => self
                .base
                .path
                .canonicalize()
                .map_err(|e| ReloadError::BadPath(format!("the configured model file: {e}")))?,
        };
        let file_name = path.strip_prefix(&self.dir).unwrap_or(&path).display().to_string();
        let from = self.device_versions().await.first().copied();
        let (sha256, loaded) = match self.validate(path, None).await {
            Ok(ok) => ok,
            Err(error) => {
                self.reject(from, None, &file_name, &error).await;
                return Err(error);
            }
        };
        let version = self.store_version(&file_name, &sha256).await?;
        let loaded = loaded.into_iter().map(|m| LoadedModel { version: version.version, ..m }).collect();
        Ok((version, loaded))
    }

    async fn activate_locked(
        &self,
        version: u32,
        detail: &str,
        validated: Option<Vec<LoadedModel>>,
    ) -> Result<ModelVersion, ReloadError> {
        let entry = self
            .version(version)
            .await?
            .ok_or_else(|| ReloadError::NotFound(format!("model {} has no version {version}", self.name)))?;
        let from = self.device_versions().await.first().copied();
        let loaded = match validated {
            Some(loaded) => loaded,
            None => self.loaded_for(&entry, from).await?,
        };
        // Stored first: a store that fails changes nothing.
        self.transitions.record_stored("activated", from, Some(version), detail.to_string()).await?;
        self.install(loaded).await?;
        *self.fallback.lock() = None;
        Ok(entry)
    }

    /// The models of `entry` on every device: its file loaded and validated (a refusal is stored
    /// as `rejected`).
    async fn loaded_for(&self, entry: &ModelVersion, from: Option<u32>) -> Result<Vec<LoadedModel>, ReloadError> {
        let checked = match resolve_in(&self.dir, &entry.file) {
            Ok(path) => self.validate(path, Some(entry.sha256.clone())).await,
            Err(e) => Err(ReloadError::Rejected(e.to_string())),
        };
        match checked {
            Ok((_, loaded)) => Ok(loaded.into_iter().map(|m| LoadedModel { version: entry.version, ..m }).collect()),
            Err(error) => {
                self.reject(from, Some(entry.version), &entry.file, &error).await;
                Err(error)
            }
        }
    }

    async fn install(&self, loaded: Vec<LoadedModel>) -> Result<(), ReloadError> {
        for (device, model) in self.devices.iter().zip(loaded) {
            device.send(InstallModel(model)).await.map_err(|_| ReloadError::Stopped)?;
        }
        Ok(())
    }

    async fn reject(&self, from: Option<u32>, to: Option<u32>, file: &str, error: &ReloadError) {
        let detail = format!("{file}: {error}");
        if let Err(e) = self.transitions.record_stored("rejected", from, to, detail).await {
            tracing::error!(model = %self.name, error = %e, "rejection not stored");
        }
    }

    /// The version serving on each device of this node.
    pub async fn device_versions(&self) -> Vec<u32> {
        let mut versions = Vec::new();
        for device in &self.devices {
            if let Ok(d) = device.send(GetDeviceView).await {
                versions.push(d.model_version);
            }
        }
        versions
    }

    async fn version(&self, version: u32) -> Result<Option<ModelVersion>, ReloadError> {
        Ok(match &self.store {
            Some(db) => db.model_version(&self.name, version).await?.map(ModelVersion::from),
            None => self.versions.lock().iter().find(|v| v.version == version).cloned(),
        })
    }

    async fn store_version(&self, file: &str, sha256: &str) -> Result<ModelVersion, ReloadError> {
        let (input_size, precision) = (self.base.input_size, precision_of(file));
        if let Some(db) = &self.store {
            let (row, _) = db.register_model_version(&self.name, file, sha256, input_size, precision).await?;
            return Ok(row.into());
        }
        let mut versions = self.versions.lock();
        if let Some(known) = versions.iter().find(|v| v.file == file && v.sha256 == sha256) {
            return Ok(known.clone());
        }
        let entry = ModelVersion {
            version: versions.last().map_or(1, |v| v.version + 1),
            file: file.to_string(),
            sha256: sha256.to_string(),
            input_size,
            precision: precision.into(),
            loaded_at: chrono::Utc::now(),
        };
        versions.push(entry.clone());
        Ok(entry)
    }

    /// Loads `path` on every device and validates it there, off the actors' threads; its SHA-256
    /// (which must be `expected` when given) and the loaded models (version 0 until numbered).
    async fn validate(
        &self,
        path: PathBuf,
        expected: Option<String>,
    ) -> Result<(String, Vec<LoadedModel>), ReloadError> {
        let mut targets = Vec::new();
        for device in &self.devices {
            targets.push(device.send(GetValidationTarget).await.map_err(|_| ReloadError::Stopped)?);
        }
        let settings = ModelSettings { path: path.clone(), ..self.base.clone() };
        // Loading and a smoke inference take seconds: never on an actor's thread.
        let checked = tokio::task::spawn_blocking(move || -> Result<(String, Vec<LoadedModel>), String> {
            let sha256 = sha256_of(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            if let Some(expected) = expected.filter(|e| *e != sha256) {
                return Err(format!("SHA-256 {sha256} is not the registered {expected}"));
            }
            let loaded = targets
                .iter()
                .map(|device| {
                    validate_on(device, &settings).map(|detector| LoadedModel {
                        version: 0,
                        settings: settings.clone(),
                        detector,
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok((sha256, loaded))
        })
        .await
        .map_err(|e| ReloadError::Rejected(format!("validation crashed: {e}")))?;
        checked.map_err(ReloadError::Rejected)
    }
}

/// The directory of the configured model file: its real file's when it exists (as reloads have
/// always read it, links resolved), else its parent's.
fn model_dir(configured: &Path) -> PathBuf {
    if let Some(dir) = configured.canonicalize().ok().and_then(|f| f.parent().map(Path::to_path_buf)) {
        return dir;
    }
    let parent = match configured.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    parent.canonicalize().unwrap_or(parent)
}

/// A file name under the (canonical) model directory `dir`: no absolute path, no `..`, and still
/// inside once links are resolved.
fn resolve_in(dir: &Path, file: &str) -> Result<PathBuf, ReloadError> {
    let relative = Path::new(file);
    if file.is_empty() || !relative.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err(ReloadError::BadPath("file must be a path inside the model directory, without \"..\"".into()));
    }
    let path = dir
        .join(relative)
        .canonicalize()
        .map_err(|_| ReloadError::BadPath(format!("no model file {file:?} in the model directory")))?;
    if !path.starts_with(dir) || !path.is_file() {
        return Err(ReloadError::BadPath(format!("{file:?} is not a file inside the model directory")));
    }
    Ok(path)
}

/// Loads the model on a device (which checks its output shape on a grey frame) and runs it on a
/// real frame the device saw, when it has seen one.
fn validate_on(device: &ValidationTarget, settings: &ModelSettings) -> Result<Box<dyn Model>, String> {
    // Set up as the device's inference thread: an ONNX Runtime session keeps the thread count
    // it was loaded with, and this one becomes the serving model.
    set_up_thread(device.device, device.cpu_threads);
    let detector = Detector::load(settings, device.device).map_err(|e| format!("{}: {e}", device.name))?;
    if let Some((pixels, letterbox)) = &device.sample {
        detector
            .smoke_test(pixels, *letterbox)
            .map_err(|e: DetectorError| format!("{}: smoke inference: {e}", device.name))?;
    }
    Ok(Box::new(detector))
}

fn sha256_of(path: &Path) -> std::io::Result<String> {
    let bytes = std::fs::read(path)?;
    Ok(sha2::Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reloads_read_only_files_inside_the_model_directory() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("models");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("good.pt"), b"x").unwrap();
        std::fs::write(root.path().join("outside.pt"), b"x").unwrap();
        std::os::unix::fs::symlink(root.path().join("outside.pt"), dir.join("link.pt")).unwrap();
        let dir = dir.canonicalize().unwrap();
        assert_eq!(resolve_in(&dir, "good.pt").unwrap(), dir.join("good.pt"));
        for bad in ["../outside.pt", "/etc/passwd", "", "./good.pt", "link.pt", "missing.pt", "sub/../good.pt"] {
            assert!(matches!(resolve_in(&dir, bad), Err(ReloadError::BadPath(_))), "{bad:?} accepted");
        }
    }

    #[test]
    fn precision_comes_from_the_file_name() {
        for (file, precision) in [
            ("yolox_nano.onnx", "fp32"),
            ("yolox_nano.torchscript.pt", "fp32"),
            ("yolox_nano.bf16.pt", "bf16"),
            ("sub/model.FP16.onnx", "fp16"),
            ("model.half.pt", "fp16"),
            ("model.int8.onnx", "int8"),
            ("bf16.onnx", "fp32"),
        ] {
            assert_eq!(precision_of(file), precision, "{file}");
        }
    }

    #[test]
    fn a_registered_file_loads_only_with_its_sha256() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().canonicalize().unwrap();
        std::fs::write(dir.join("m.onnx"), b"weights").unwrap();
        let defaults = crate::settings::Settings::load(None).expect("the default settings load").model;
        let base = ModelSettings { path: dir.join("m.onnx"), ..defaults };
        let plan = StartPlan {
            candidates: Vec::new(),
            unavailable: Vec::new(),
            dir: dir.clone(),
            serving: Some(1),
            last_seq: 0,
            store: None,
        };
        let sha = sha256_of(&dir.join("m.onnx")).unwrap();
        let good = StartCandidate { version: 1, file: "m.onnx".into(), sha256: Some(sha), role: "serving version" };
        assert_eq!(plan.settings_for(&base, &good).unwrap().path, dir.join("m.onnx"));
        std::fs::write(dir.join("m.onnx"), b"garbage").unwrap();
        let error = plan.settings_for(&base, &good).unwrap_err();
        assert!(error.contains("is not the registered"), "{error}");
        let missing = StartCandidate { file: "gone.onnx".into(), ..good };
        assert!(plan.settings_for(&base, &missing).unwrap_err().contains("gone.onnx"));
    }
}
