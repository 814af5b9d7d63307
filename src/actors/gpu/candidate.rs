//! Candidate models: a new version tried beside the serving one before it serves everywhere.
//!
//! A candidate goes through stages, each a transition in the registry's history (log line, metric,
//! `{prefix}:system` event, and a row where the registry keeps its rows):
//! 1. **shadow** (`shadow_started`): the serving model delivers; the candidate runs in each
//!    device's shadow lane on a share of the chosen cameras' frames and is judged against it
//!    (`shadow`): agreement at IoU >= 0.5 per class and the line counts of shadow trackers.
//! 2. **canary** (`canary_started`): the candidate delivers on a share of the cameras; the version
//!    it would replace runs in the lane as the reference, and the candidate is judged against it.
//!    Its agreement with the reference is the serving model's `ml_model_accuracy` on real evidence
//!    (`evidence="reference"`) for those cameras.
//! 3. **promoted** (`promoted`): the candidate is activated on every device (a registry activation).
//!
//! By API (`promote`, `rollback`) or by itself (`tick`): a candidate whose bars (agreement F1,
//! accuracy proxy, failure rate, over at least `min_frames` compared frames) hold for `hold_s`
//! moves on when `auto_promote` is set; a canary whose bars fail is rolled back
//! (`canary_rolled_back`) at once, whatever `auto_promote` says. A promotion needs evidence: a
//! candidate that never compared a frame, or whose bars fail, is refused (a canary may be forced;
//! its own rollback rule still guards it).

use std::sync::Arc;
use std::time::Instant;

use actix::Addr;
use parking_lot::Mutex;
use serde::Serialize;

use super::registry::{ModelRegistry, ModelVersion, ReloadError};
use super::shadow::{CameraSelection, Comparison, ComparisonView, CounterStart, LanePlan, LaneRole, ShadowLane};
use super::transitions::ModelTransitions;
use super::worker::{set_up_thread, Canary, LoadedModel};
use super::{GetValidationTarget, GpuActor, SetCandidate, ValidationTarget};
use crate::detector::config::{LifecycleSettings, ModelSettings};
use crate::detector::{Detector, Model};
use crate::metrics::{AgreementLabels, Metrics};

#[derive(Debug, thiserror::Error)]
pub enum CandidateError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    /// The request is valid but the candidate's state refuses it.
    #[error("{0}")]
    Conflict(String),
    #[error("another candidate change is in progress")]
    Busy,
    #[error(transparent)]
    Reload(#[from] ReloadError),
}

/// Where a candidate is.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "stage")]
pub enum Stage {
    Shadow,
    Canary { share: f64 },
    Promoted,
    RolledBack,
}

/// What `GET /api/v1/models/{name}/candidates/{version}` shows.
#[derive(Debug, Clone, Serialize)]
pub struct CandidateView {
    pub model: String,
    pub version: ModelVersion,
    /// The serving version it is compared with (and would replace).
    pub reference_version: u32,
    #[serde(flatten)]
    pub stage: Stage,
    pub stage_since: chrono::DateTime<chrono::Utc>,
    /// Shadow: the cameras compared (`share` of their frames).
    pub shadow: CameraSelection,
    pub frame_share: f64,
    /// The comparison of the current stage (a canary's starts afresh).
    pub comparison: ComparisonView,
    /// The comparison of the shadow stage, kept once a canary started.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shadow_comparison: Option<ComparisonView>,
    /// Why the bars are not met now (empty: met).
    pub shortfalls: Vec<String>,
    /// Since when the bars have held.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub healthy_for_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ended_because: Option<String>,
}

struct Run {
    version: ModelVersion,
    settings: ModelSettings,
    reference_version: u32,
    stage: Stage,
    stage_since: chrono::DateTime<chrono::Utc>,
    shadow: CameraSelection,
    frame_share: f64,
    comparison: Arc<Comparison>,
    shadow_comparison: Option<Arc<Comparison>>,
    healthy_since: Option<Instant>,
    ended_because: Option<String>,
}

impl Run {
    fn is_active(&self) -> bool {
        matches!(self.stage, Stage::Shadow | Stage::Canary { .. })
    }
}

/// The candidates of the model: at most one active, the ended ones kept for their reports.
pub struct Candidates {
    name: String,
    settings: LifecycleSettings,
    devices: Vec<Addr<GpuActor>>,
    registry: Arc<ModelRegistry>,
    transitions: Arc<ModelTransitions>,
    metrics: Arc<Metrics>,
    counters: CounterStart,
    runs: Mutex<Vec<Run>>,
    /// One change (start, promotion, rollback) at a time.
    changing: tokio::sync::Mutex<()>,
}

/// Frames a lane runs in one model call.
const LANE_BATCH: usize = 4;
/// Canary model calls before its failure rate is judged.
const MIN_CANARY_BATCHES: u64 = 10;

impl Candidates {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        base: ModelSettings,
        devices: Vec<Addr<GpuActor>>,
        registry: Arc<ModelRegistry>,
        transitions: Arc<ModelTransitions>,
        metrics: Arc<Metrics>,
        counters: CounterStart,
    ) -> Self {
        Self {
            name: base.name(),
            settings: base.lifecycle,
            devices,
            registry,
            transitions,
            metrics,
            counters,
            runs: Mutex::default(),
            changing: Default::default(),
        }
    }

    fn check_name(&self, name: &str) -> Result<(), CandidateError> {
        if name == self.name {
            Ok(())
        } else {
            Err(CandidateError::NotFound(format!("model {name} not found")))
        }
    }

    /// Registers `file` as a new version and starts it in shadow on `cameras` (all when none),
    /// on `frame_share` of their frames.
    pub async fn start(
        &self,
        name: &str,
        file: &str,
        frame_share: Option<f64>,
        cameras: Option<Vec<String>>,
    ) -> Result<CandidateView, CandidateError> {
        self.check_name(name)?;
        let frame_share = frame_share.unwrap_or(self.settings.shadow_share);
        if !(frame_share > 0.0 && frame_share <= 1.0) {
            return Err(CandidateError::Invalid(format!("share must be in (0, 1], not {frame_share}")));
        }
        if cameras.as_ref().is_some_and(|c| c.is_empty()) {
            return Err(CandidateError::Invalid("cameras must name at least one camera (or be left out: all)".into()));
        }
        let _one = self.changing.try_lock().map_err(|_| CandidateError::Busy)?;
        if let Some(active) = self.runs.lock().iter().find(|r| r.is_active()) {
            return Err(CandidateError::Conflict(format!(
                "candidate version {} is still being tried: promote or roll it back first",
                active.version.version
            )));
        }
        let version = self.registry.register(name, Some(file)).await?;
        let settings = self.registry.settings_of(version.version).await?.ok_or_else(|| not_found(version.version))?;
        let reference_version = self.registry.serving_version().await;
        if version.version == reference_version {
            return Err(CandidateError::Conflict(format!(
                "{file} is version {reference_version}, the one serving: nothing to try"
            )));
        }
        let shadow = CameraSelection { cameras: cameras.map(|c| c.into_iter().collect()), share: 1.0 };
        let comparison = Arc::new(Comparison::default());
        let lanes = self
            .load_lanes(&settings, LaneRole::Candidate, reference_version, &shadow, frame_share, &comparison)
            .await?;
        for (device, lane) in self.devices.iter().zip(lanes) {
            device.send(SetCandidate { canary: None, lane: Some(lane) }).await.map_err(|_| ReloadError::Stopped)?;
        }
        let detail = format!("{}: in shadow on {} of the frames", version.file, frame_share);
        self.transitions.record("shadow_started", Some(reference_version), Some(version.version), detail);
        let run = Run {
            version,
            settings,
            reference_version,
            stage: Stage::Shadow,
            stage_since: chrono::Utc::now(),
            shadow,
            frame_share,
            comparison,
            shadow_comparison: None,
            healthy_since: None,
            ended_because: None,
        };
        let view = self.view_of(&run);
        let mut runs = self.runs.lock();
        // A version tried again: its new run is the one its number finds.
        runs.retain(|r| r.version.version != run.version.version);
        runs.push(run);
        Ok(view)
    }

    /// Promotes a candidate: to a canary on `share` of the cameras, or (share 1) to all.
    pub async fn promote(
        &self,
        name: &str,
        version: u32,
        share: f64,
        force: bool,
    ) -> Result<CandidateView, CandidateError> {
        self.check_name(name)?;
        if !(share > 0.0 && share <= 1.0) {
            return Err(CandidateError::Invalid(format!("share must be in (0, 1], not {share}")));
        }
        let _one = self.changing.try_lock().map_err(|_| CandidateError::Busy)?;
        let (stage, shortfalls, frames) = {
            let runs = self.runs.lock();
            let run = find(&runs, version)?;
            (run.stage, self.shortfalls(run), run.comparison.view().frames)
        };
        if !matches!(stage, Stage::Shadow | Stage::Canary { .. }) {
            return Err(CandidateError::Conflict(format!("candidate version {version} has ended ({stage:?})")));
        }
        if frames == 0 {
            return Err(CandidateError::Conflict(format!(
                "candidate version {version} has not run on a single frame yet: nothing to judge it by"
            )));
        }
        // Serving everywhere has no guard left: never forced.
        if !shortfalls.is_empty() && (share >= 1.0 || !force) {
            return Err(CandidateError::Conflict(format!("not promoted: {}", shortfalls.join("; "))));
        }
        if share < 1.0 {
            self.start_canary(version, share).await
        } else {
            self.promote_all(version, "by request").await
        }
    }

    /// Ends a candidate's shadow or canary; the serving model serves every camera again.
    pub async fn rollback(&self, name: &str, version: u32) -> Result<CandidateView, CandidateError> {
        self.check_name(name)?;
        let _one = self.changing.try_lock().map_err(|_| CandidateError::Busy)?;
        {
            let runs = self.runs.lock();
            let run = find(&runs, version)?;
            if !run.is_active() {
                return Err(CandidateError::Conflict(format!("candidate version {version} has ended")));
            }
        }
        self.end(version, "rolled back by request".into()).await
    }

    pub fn view(&self, name: &str, version: u32) -> Result<CandidateView, CandidateError> {
        self.check_name(name)?;
        let runs = self.runs.lock();
        Ok(self.view_of(find(&runs, version)?))
    }

    /// The candidates tried since the process started, newest last.
    pub fn list(&self, name: &str) -> Result<Vec<CandidateView>, CandidateError> {
        self.check_name(name)?;
        Ok(self.runs.lock().iter().map(|r| self.view_of(r)).collect())
    }

    /// Judges the active candidate: moves it on when its bars held for `hold_s` (with
    /// `auto_promote`), rolls a failing canary back. Called every `check_interval_ms`.
    pub async fn tick(&self) {
        let Ok(_one) = self.changing.try_lock() else { return };
        let now = Instant::now();
        let decision = {
            let mut runs = self.runs.lock();
            let Some(run) = runs.iter_mut().find(|r| r.is_active()) else {
                self.publish(None);
                return;
            };
            let shortfalls = self.shortfalls(run);
            self.publish(Some(run));
            let judged = run.comparison.view().frames >= self.settings.min_frames;
            let failing = shortfalls.iter().any(|s| !s.starts_with(TOO_FEW));
            if shortfalls.is_empty() {
                run.healthy_since.get_or_insert(now);
            } else {
                run.healthy_since = None;
            }
            let held = run.healthy_since.is_some_and(|since| now - since >= self.settings.hold());
            match run.stage {
                Stage::Canary { .. } if failing && (judged || self.failure_rate_failing(run)) => {
                    Some(Decision::Rollback(run.version.version, shortfalls.join("; ")))
                }
                Stage::Shadow if held && self.settings.auto_promote => {
                    Some(Decision::Canary(run.version.version, self.settings.canary_share))
                }
                Stage::Canary { .. } if held && self.settings.auto_promote => Some(Decision::All(run.version.version)),
                _ => None,
            }
        };
        let result = match decision {
            None => return,
            Some(Decision::Rollback(version, why)) => self.end(version, format!("bars failed: {why}")).await,
            Some(Decision::Canary(version, share)) if share < 1.0 => self.start_canary(version, share).await,
            Some(Decision::Canary(version, _) | Decision::All(version)) => {
                self.promote_all(version, "its bars held").await
            }
        };
        if let Err(error) = result {
            tracing::error!(model = %self.name, %error, "candidate decision not carried out");
        }
    }

    /// Loads the lane model on every device (one CPU thread each) and starts the lanes.
    async fn load_lanes(
        &self,
        settings: &ModelSettings,
        role: LaneRole,
        delivered_by: u32,
        cameras: &CameraSelection,
        share: f64,
        comparison: &Arc<Comparison>,
    ) -> Result<Vec<Arc<ShadowLane>>, CandidateError> {
        let targets = self.targets().await?;
        let models = load_on_devices(&targets, settings, |_| 1).await?;
        let mut lanes = Vec::new();
        for (target, model) in targets.iter().zip(models) {
            let plan = LanePlan {
                role,
                delivered_by,
                cameras: cameras.clone(),
                share,
                queue: self.settings.shadow_queue,
                max_batch: LANE_BATCH,
                comparison: comparison.clone(),
                counters: self.counters.clone(),
            };
            let lane = ShadowLane::start(plan, model, &target.name)
                .map_err(|e| ReloadError::Rejected(format!("cannot start the shadow lane: {e}")))?;
            lanes.push(lane);
        }
        Ok(lanes)
    }

    async fn targets(&self) -> Result<Vec<ValidationTarget>, CandidateError> {
        let mut targets = Vec::new();
        for device in &self.devices {
            targets.push(device.send(GetValidationTarget).await.map_err(|_| ReloadError::Stopped)?);
        }
        Ok(targets)
    }

    async fn start_canary(&self, version: u32, share: f64) -> Result<CandidateView, CandidateError> {
        let (settings, reference_version, frame_share) = {
            let runs = self.runs.lock();
            let run = find(&runs, version)?;
            (run.settings.clone(), run.reference_version, run.frame_share)
        };
        let reference = self.registry.settings_of(reference_version).await?.ok_or_else(|| {
            CandidateError::Conflict(format!("the reference version {reference_version} is no longer known"))
        })?;
        let canary_cameras = CameraSelection { cameras: None, share };
        let comparison = Arc::new(Comparison::default());
        let targets = self.targets().await?;
        let canaries = load_on_devices(&targets, &settings, |t| t.cpu_threads).await?;
        let lanes = self
            .load_lanes(&reference, LaneRole::Reference, version, &canary_cameras, frame_share, &comparison)
            .await?;
        for ((device, model), lane) in self.devices.iter().zip(canaries).zip(lanes) {
            let canary = Canary {
                model: LoadedModel { version, settings: settings.clone(), detector: model },
                cameras: canary_cameras.clone(),
                comparison: comparison.clone(),
            };
            device
                .send(SetCandidate { canary: Some(canary), lane: Some(lane) })
                .await
                .map_err(|_| ReloadError::Stopped)?;
        }
        let mut runs = self.runs.lock();
        let run = runs.iter_mut().find(|r| r.version.version == version).expect("found above");
        run.shadow_comparison.get_or_insert_with(|| run.comparison.clone());
        run.comparison = comparison;
        run.stage = Stage::Canary { share };
        run.stage_since = chrono::Utc::now();
        run.healthy_since = None;
        let detail = format!("{}: serving {share} of the cameras", run.version.file);
        self.transitions.record("canary_started", Some(reference_version), Some(version), detail);
        Ok(self.view_of(run))
    }

    async fn promote_all(&self, version: u32, why: &str) -> Result<CandidateView, CandidateError> {
        let file = find(&self.runs.lock(), version)?.version.file.clone();
        // Install first, then end the canary and lane: every camera is served throughout.
        let detail = format!("promoted: candidate {version} ({why})");
        let activated = self.registry.activate(&self.name, version, &detail).await?;
        self.clear_devices().await;
        let mut runs = self.runs.lock();
        let run = runs.iter_mut().find(|r| r.version.version == version).expect("found above");
        run.stage = Stage::Promoted;
        run.stage_since = chrono::Utc::now();
        run.ended_because = Some(format!("promoted {why}"));
        let detail = format!("{file}: serving every camera ({why})");
        self.transitions.record("promoted", Some(run.reference_version), Some(activated.version), detail);
        Ok(self.view_of(run))
    }

    async fn end(&self, version: u32, why: String) -> Result<CandidateView, CandidateError> {
        self.clear_devices().await;
        let mut runs = self.runs.lock();
        let run = runs.iter_mut().find(|r| r.version.version == version).ok_or_else(|| not_found(version))?;
        let transition = match run.stage {
            Stage::Canary { .. } => "canary_rolled_back",
            _ => "shadow_stopped",
        };
        run.stage = Stage::RolledBack;
        run.stage_since = chrono::Utc::now();
        run.ended_because = Some(why.clone());
        self.transitions.record(transition, Some(version), Some(run.reference_version), why);
        self.publish(None);
        Ok(self.view_of(run))
    }

    async fn clear_devices(&self) {
        for device in &self.devices {
            let _ = device.send(SetCandidate { canary: None, lane: None }).await;
        }
    }

    fn failure_rate_failing(&self, run: &Run) -> bool {
        let view = run.comparison.view();
        view.canary_batches >= MIN_CANARY_BATCHES
            && view.canary_failures as f64 / view.canary_batches as f64 > self.settings.max_failure_rate
    }

    /// Why `run` does not meet its bars now; empty when it does.
    fn shortfalls(&self, run: &Run) -> Vec<String> {
        let s = &self.settings;
        let view = run.comparison.view();
        let mut out = Vec::new();
        if view.frames < s.min_frames {
            out.push(format!("{TOO_FEW} ({} of {} compared)", view.frames, s.min_frames));
        }
        if let Some(scores) = view.overall.filter(|o| o.f1 < s.min_agreement_f1) {
            out.push(format!("agreement F1 {:.3} below {}", scores.f1, s.min_agreement_f1));
        }
        if let Stage::Canary { .. } = run.stage {
            if let Some(proxy) = self.metrics.version_accuracy_proxy(run.version.version) {
                if proxy < s.min_accuracy {
                    out.push(format!("accuracy proxy {proxy:.3} below {}", s.min_accuracy));
                }
            }
            if view.canary_batches > 0 {
                let rate = view.canary_failures as f64 / view.canary_batches as f64;
                if rate > s.max_failure_rate {
                    out.push(format!("failure rate {rate:.3} above {}", s.max_failure_rate));
                }
            }
        } else if let Some(proxy) = self.metrics.version_accuracy_proxy(run.reference_version) {
            if proxy < s.min_accuracy {
                out.push(format!("the serving model's accuracy proxy {proxy:.3} is below {}", s.min_accuracy));
            }
        }
        out
    }

    /// The metrics of the active candidate (`None`: none is active).
    fn publish(&self, run: Option<&Run>) {
        self.metrics.model_agreement.clear();
        *self.metrics.model_accuracy_reference.lock() = None;
        let Some(run) = run else { return };
        let view = run.comparison.view();
        let version = run.version.version.to_string();
        let set = |class: &str, scores: &crate::detector::agreement::Scores| {
            for (score, value) in [("precision", scores.precision), ("recall", scores.recall), ("f1", scores.f1)] {
                let labels = AgreementLabels {
                    model: self.name.clone(),
                    version: version.clone(),
                    class: class.to_string(),
                    score: score.to_string(),
                };
                self.metrics.model_agreement.get_or_create(&labels).set(value);
            }
        };
        if let Some(overall) = &view.overall {
            set("all", overall);
        }
        for class in &view.by_class {
            set(class.class.as_str(), &class.scores);
        }
        if let (Stage::Canary { .. }, Some(overall)) = (run.stage, view.overall) {
            *self.metrics.model_accuracy_reference.lock() = Some((self.name.clone(), overall.f1));
        }
    }

    fn view_of(&self, run: &Run) -> CandidateView {
        CandidateView {
            model: self.name.clone(),
            version: run.version.clone(),
            reference_version: run.reference_version,
            stage: run.stage,
            stage_since: run.stage_since,
            shadow: run.shadow.clone(),
            frame_share: run.frame_share,
            comparison: run.comparison.view(),
            shadow_comparison: run.shadow_comparison.as_ref().map(|c| c.view()),
            shortfalls: if run.is_active() { self.shortfalls(run) } else { Vec::new() },
            healthy_for_s: run.healthy_since.map(|s| s.elapsed().as_secs_f64()),
            ended_because: run.ended_because.clone(),
        }
    }
}

/// The start of the shortfall that only says the evidence is not in yet.
const TOO_FEW: &str = "too few frames compared";

enum Decision {
    Rollback(u32, String),
    Canary(u32, f64),
    All(u32),
}

fn not_found(version: u32) -> CandidateError {
    CandidateError::NotFound(format!("no candidate version {version}"))
}

fn find(runs: &[Run], version: u32) -> Result<&Run, CandidateError> {
    runs.iter().find(|r| r.version.version == version).ok_or_else(|| not_found(version))
}

/// Loads `settings` on every target, with `threads(target)` CPU threads (off the actor threads).
async fn load_on_devices(
    targets: &[ValidationTarget],
    settings: &ModelSettings,
    threads: impl Fn(&ValidationTarget) -> usize,
) -> Result<Vec<Box<dyn Model>>, CandidateError> {
    let jobs: Vec<_> = targets.iter().map(|t| (t.name.clone(), t.device, threads(t))).collect();
    let settings = settings.clone();
    let loaded = tokio::task::spawn_blocking(move || {
        jobs.into_iter()
            .map(|(name, device, threads)| {
                set_up_thread(device, threads);
                Detector::load(&settings, device)
                    .map(|d| Box::new(d) as Box<dyn Model>)
                    .map_err(|e| format!("{name}: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()
    })
    .await
    .map_err(|e| ReloadError::Rejected(format!("loading crashed: {e}")))?;
    Ok(loaded.map_err(ReloadError::Rejected)?)
}
