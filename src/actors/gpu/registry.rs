//! The model registry (risk R5): the versions of the detection model, which one serves, and every
//! transition between them.
//!
//! A reload loads a file from the model directory onto every device, validates it there (output
//! shape, then a smoke inference on a real frame the device saw recently) and only then swaps it
//! in, between two batches, keeping the version it replaced. A file that fails any step is
//! rejected and the serving model never stops. A swapped-in version whose batches keep failing is
//! rolled back by the device (`worker`), and the registry records it. Every transition is a log
//! line, a metric (`its_model_transitions_total`, `its_model_version`), an event on the Redis
//! stream and channel `{prefix}:system` (`"type": "model_transition"`) and an entry of the history
//! shown by `GET /api/v1/models`.

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;
use serde::Serialize;
use sha2::Digest;

use super::transitions::{ModelTransition, ModelTransitions};
use super::worker::{set_up_thread, LoadedModel};
use super::{GetDeviceView, GetValidationTarget, GpuActor, InstallModel, ValidationTarget};
use crate::detector::config::ModelSettings;
use crate::detector::{Detector, DetectorError, Model};

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("model {0} not found")]
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
}

/// One version of the model that was loaded at some point.
#[derive(Debug, Clone, Serialize)]
pub struct ModelVersion {
    pub version: u32,
    /// Relative to the model directory.
    pub file: String,
    pub sha256: String,
    pub loaded_at: chrono::DateTime<chrono::Utc>,
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

pub struct ModelRegistry {
    name: String,
    /// The simulator's synthetic detector serves: there is no file to reload.
    simulated: bool,
    base: ModelSettings,
    /// Canonical directory reloads may read from: the configured model's directory.
    dir: PathBuf,
    devices: Vec<actix::Addr<GpuActor>>,
    versions: Mutex<Vec<ModelVersion>>,
    transitions: Arc<ModelTransitions>,
    reloading: tokio::sync::Mutex<()>,
}

impl ModelRegistry {
    /// The registry of the configured model, serving as version 1 on `devices`.
    pub fn new(
        base: ModelSettings,
        devices: Vec<actix::Addr<GpuActor>>,
        transitions: Arc<ModelTransitions>,
    ) -> std::io::Result<Self> {
        let file = base.path.canonicalize()?;
        let dir = file.parent().map(Path::to_path_buf).unwrap_or_default();
        let first = ModelVersion {
            version: 1,
            file: file.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default(),
            sha256: sha256_of(&file)?,
            loaded_at: chrono::Utc::now(),
        };
        Ok(Self {
            name: base.name(),
            simulated: false,
            base,
            dir,
            devices,
            versions: Mutex::new(vec![first]),
            transitions,
            reloading: Default::default(),
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
        let first =
            ModelVersion { version: 1, file: name.into(), sha256: String::new(), loaded_at: chrono::Utc::now() };
        Self {
            name: name.into(),
            simulated: true,
            base,
            dir: PathBuf::new(),
            devices,
            versions: Mutex::new(vec![first]),
            transitions,
            reloading: Default::default(),
        }
    }

    pub async fn view(&self) -> ModelView {
        let mut devices = Vec::new();
        for device in &self.devices {
            if let Ok(d) = device.send(GetDeviceView).await {
                devices.push(DeviceModelView { device: d.name, version: d.model_version, breaker: d.model_breaker });
            }
        }
        ModelView {
            name: self.name.clone(),
            devices,
            versions: self.versions.lock().clone(),
            history: self.transitions.history(),
        }
    }

    /// Loads `file` (relative to the model directory; `None`: the configured file again),
    /// validates it on every device and swaps it in. Returns the new version.
    pub async fn reload(&self, name: &str, file: Option<&str>) -> Result<ModelVersion, ReloadError> {
        let _one_at_a_time = self.reloading.try_lock().map_err(|_| ReloadError::Busy)?;
        let path = self.resolve(name, file)?;
        let (entry, loaded) = self.validate(&path).await?;
        self.install(entry, loaded).await
    }

    /// Validates `file` on every device and registers it as a new version without serving it
    /// (a candidate, `candidate`). Returns the version and the settings that load it.
    pub async fn register(&self, name: &str, file: &str) -> Result<(ModelVersion, ModelSettings), ReloadError> {
        let _one_at_a_time = self.reloading.try_lock().map_err(|_| ReloadError::Busy)?;
        let path = self.resolve(name, Some(file))?;
        let (entry, _) = self.validate(&path).await?;
        self.versions.lock().push(entry.clone());
        Ok((entry, ModelSettings { path, ..self.base.clone() }))
    }

    /// Serves a registered version on every device (a candidate's promotion).
    pub async fn activate(&self, name: &str, version: u32) -> Result<ModelVersion, ReloadError> {
        let _one_at_a_time = self.reloading.try_lock().map_err(|_| ReloadError::Busy)?;
        if name != self.name {
            return Err(ReloadError::NotFound(name.to_string()));
        }
        let settings = self.settings_of(version).ok_or_else(|| ReloadError::NotFound(format!("{name} {version}")))?;
        let (mut entry, loaded) = self.validate(&settings.path).await?;
        entry.version = version;
        let loaded = loaded.into_iter().map(|model| LoadedModel { version, ..model }).collect();
        self.install(entry, loaded).await
    }

    /// The version serving on the first device.
    pub async fn serving_version(&self) -> u32 {
        match self.devices.first() {
            Some(device) => device.send(GetDeviceView).await.map_or(1, |d| d.model_version),
            None => 1,
        }
    }

    /// The settings that load `version`, if it is known.
    pub fn settings_of(&self, version: u32) -> Option<ModelSettings> {
        let versions = self.versions.lock();
        let entry = versions.iter().find(|v| v.version == version)?;
        Some(ModelSettings { path: self.dir.join(&entry.file), ..self.base.clone() })
    }

    /// The file a request names, inside the model directory (`None`: the configured file).
    fn resolve(&self, name: &str, file: Option<&str>) -> Result<PathBuf, ReloadError> {
        if name != self.name {
            return Err(ReloadError::NotFound(name.to_string()));
        }
        if self.simulated {
            return Err(ReloadError::BadPath("simulator.enabled: the synthetic detector has no file to reload".into()));
        }
        match file {
            Some(file) => resolve_in(&self.dir, file),
            None => self
                .base
                .path
                .canonicalize()
                .map_err(|e| ReloadError::BadPath(format!("the configured model file: {e}"))),
        }
    }

    /// Loads `path` on every device and smoke-tests it there, as the next version; a refusal is
    /// recorded as `rejected`.
    async fn validate(&self, path: &Path) -> Result<(ModelVersion, Vec<LoadedModel>), ReloadError> {
        let file_name = path.strip_prefix(&self.dir).unwrap_or(path).display().to_string();
        let mut from = None;
        let mut targets = Vec::new();
        for device in &self.devices {
            from = from.or(device.send(GetDeviceView).await.ok().map(|d| d.model_version));
            targets.push(device.send(GetValidationTarget).await.map_err(|_| ReloadError::Stopped)?);
        }
        let version = self.versions.lock().last().map_or(1, |v| v.version + 1);
        let settings = ModelSettings { path: path.to_path_buf(), ..self.base.clone() };
        let path = path.to_path_buf();
        // Loading and a smoke inference take seconds: never on an actor's thread.
        let checked = tokio::task::spawn_blocking(move || -> Result<(String, Vec<LoadedModel>), String> {
            let sha256 = sha256_of(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            let loaded = targets
                .iter()
                .map(|device| {
                    validate_on(device, &settings).map(|detector| LoadedModel {
                        version,
                        settings: settings.clone(),
                        detector,
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok((sha256, loaded))
        })
        .await
        .map_err(|e| ReloadError::Rejected(format!("validation crashed: {e}")));
        match checked.and_then(|r| r.map_err(ReloadError::Rejected)) {
            Ok((sha256, loaded)) => {
                let entry = ModelVersion { version, file: file_name, sha256, loaded_at: chrono::Utc::now() };
                Ok((entry, loaded))
            }
            Err(error) => {
                self.transitions.record("rejected", from, None, format!("{file_name}: {error}"));
                Err(error)
            }
        }
    }

    /// Swaps validated models in on every device and records the activation.
    async fn install(&self, entry: ModelVersion, loaded: Vec<LoadedModel>) -> Result<ModelVersion, ReloadError> {
        let from = self.serving_version().await;
        for (device, model) in self.devices.iter().zip(loaded) {
            device.send(InstallModel(model)).await.map_err(|_| ReloadError::Stopped)?;
        }
        let mut versions = self.versions.lock();
        if !versions.iter().any(|v| v.version == entry.version) {
            versions.push(entry.clone());
        }
        drop(versions);
        self.transitions.record("activated", Some(from), Some(entry.version), entry.file.clone());
        Ok(entry)
    }
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
}
