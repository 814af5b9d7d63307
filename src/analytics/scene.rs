//! One camera's analytics: tracked objects in, events and per-minute measures out. Glues the
//! compiled geometry to the kinematics, measures and incident detectors; the definitions live
//! in `docs/ANALYTICS.md`.

use std::collections::HashMap;
use std::time::Instant;

use chrono::{DateTime, TimeZone, Utc};
use serde::Serialize;

use super::config::AnalyticsConfig;
use super::geometry::{Geometry, SceneGeometry};
use super::incidents::{IncidentTransition, LaneIncidents, LaneTrack, Phase};
use super::kinematics::{kmh, MotionFit, MotionWindow};
use super::measures::{class_length_m, queue_at, IntervalMeasures, MeasuresView, QueueCandidate};
use super::{AggregateRow, ElementKind};
use crate::analytics::lines::{LineCount, LineCounter};
use crate::analytics::tracker::TrackedObject;
use crate::analytics::vehicle_class::VehicleClassifier;
use crate::events::{Event, EventDetail, IncidentEvent, LineCrossing};
use crate::ids::CameraId;
use crate::objects::{BBox, ObjectClass};

const MINUTE_MS: i64 = 60_000;
/// A frame gap longer than this (a stall, a reconnect) does not count as observed time; long
/// enough for a camera analysed at 0.1 frames/s.
const MAX_FRAME_GAP_MS: i64 = 10_000;
/// Frame time after which an unseen track is finished (longer than the tracker keeps lost tracks
/// at any sane frame rate).
const TRACK_FORGET_MS: i64 = 60_000;

/// What a frame produced.
#[derive(Default)]
pub struct FrameOutput {
    pub events: Vec<Event>,
    /// Rows of the minutes that closed.
    pub aggregates: Vec<AggregateRow>,
    /// Something an operator would see changed (counts, presence, incidents, a minute closed).
    pub changed: bool,
}

/// Identity of the stream the events belong to.
#[derive(Debug, Clone)]
pub struct StreamIdentity {
    pub camera_id: CameraId,
    /// Part of every event id (see `Pipeline::start_camera`).
    pub epoch_ms: u64,
    pub geometry_version: u32,
}

struct TrackState {
    class: ObjectClass,
    last_seen_ms: i64,
    box_height: f64,
    /// Ground-point motion in image pixels (always) and road metres (calibrated cameras).
    image_motion: MotionWindow,
    ground_motion: Option<MotionWindow>,
    /// Per zone: present in the previous frame, the previous lane position, and the speeds
    /// (km/h) seen while in the lane, for its one sample per track.
    zones: Vec<TrackInZone>,
}

#[derive(Default, Clone)]
struct TrackInZone {
    present: bool,
    last_position: Option<(i64, f64)>,
    /// Speeds seen in the lane as a 1 km/h histogram (bounded however long the vehicle stays).
    speeds: std::collections::BTreeMap<u16, u32>,
    /// Uncalibrated lanes: the box height when the track entered, so its lane positions and
    /// speeds in box heights use one scale for the whole visit.
    scale: Option<f64>,
}

impl TrackInZone {
    fn record_speed(&mut self, kmh: f64) {
        if kmh.is_finite() && kmh >= 0.0 {
            *self.speeds.entry(kmh.round().min(f64::from(u16::MAX)) as u16).or_default() += 1;
        }
    }

    /// The median speed of the visit, and a fresh histogram for the next.
    fn take_median(&mut self) -> Option<f64> {
        let speeds = std::mem::take(&mut self.speeds);
        let total: u32 = speeds.values().sum();
        let mut seen = 0;
        for (kmh, n) in speeds {
            seen += n;
            if seen * 2 > total {
                return Some(f64::from(kmh));
            }
        }
        None
    }
}

struct ZoneState {
    measures: IntervalMeasures,
    incidents: Option<LaneIncidents>,
    /// The last vehicle to pass the lane's reference section: time (ms, fractional), class,
    /// speed in m/s.
    last_pass: Option<(f64, ObjectClass, Option<f64>)>,
    present_now: usize,
    /// Lanes, this frame: the class lengths (m) of the vehicles present, and whether one of
    /// them covers the loop.
    present_length_now: f64,
    loop_covered_now: bool,
}

/// The latest state of a camera as the live API shows it.
#[derive(Debug, Serialize)]
pub struct LiveState {
    pub geometry_version: u32,
    pub ts: DateTime<Utc>,
    pub lines: Vec<LineCount>,
    pub zones: Vec<ZoneNow>,
    pub open_incidents: Vec<IncidentEvent>,
    /// The measures of the last complete minute, per element.
    pub last_minute: Vec<ElementMeasures>,
}

#[derive(Debug, Serialize)]
pub struct ZoneNow {
    pub id: String,
    pub kind: ElementKind,
    pub present: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct ElementMeasures {
    pub id: String,
    pub kind: ElementKind,
    pub interval_start: DateTime<Utc>,
    pub measures: MeasuresView,
}

pub struct SceneAnalytics {
    identity: StreamIdentity,
    config: AnalyticsConfig,
    geometry: SceneGeometry,
    lines: LineCounter,
    line_ids: Vec<String>,
    line_measures: Vec<IntervalMeasures>,
    zones: Vec<ZoneState>,
    tracks: HashMap<u64, TrackState>,
    /// Start (ms) of the minute being accumulated.
    minute: Option<i64>,
    last_ts_ms: Option<i64>,
    open_incidents: HashMap<String, IncidentEvent>,
    last_minute: Vec<ElementMeasures>,
    classes: VehicleClassifier,
}

impl SceneAnalytics {
    /// `geometry` must have passed `Geometry::validate`.
    pub fn new(identity: StreamIdentity, geometry: &Geometry, config: AnalyticsConfig) -> Result<Self, Vec<String>> {
        let compiled = SceneGeometry::new(geometry)?;
        let calibrated = compiled.calibrated();
        let zones = compiled
            .zones()
            .iter()
            .map(|z| ZoneState {
                measures: IntervalMeasures::new(z.length_m()).with_loop(z.loop_section().map(|(a, b)| b - a)),
                incidents: z.is_lane().then(|| LaneIncidents::new(z.id(), calibrated, &config)),
                last_pass: None,
                present_now: 0,
                present_length_now: 0.0,
                loop_covered_now: false,
            })
            .collect();
        Ok(Self {
            identity,
            config,
            geometry: compiled,
            lines: LineCounter::new(geometry.lines.clone()),
            line_ids: geometry.lines.iter().map(|l| l.id.clone()).collect(),
            line_measures: vec![IntervalMeasures::default(); geometry.lines.len()],
            zones,
            tracks: HashMap::new(),
            minute: None,
            last_ts_ms: None,
            open_incidents: HashMap::new(),
            last_minute: Vec::new(),
            classes: VehicleClassifier::default(),
        })
    }

    pub fn identity(&self) -> &StreamIdentity {
        &self.identity
    }

    /// Detections inside an exclusion or below the minimum size never reach the tracker.
    pub fn keep_detection(&self, bbox: &BBox) -> bool {
        self.geometry.keep_detection(bbox)
    }

    pub fn line_counts(&self) -> &[LineCount] {
        self.lines.counts()
    }

    /// Continues the line counts of an earlier instance (see `LineCounter::continue_counts`).
    pub fn continue_counts(&mut self, earlier: &[LineCount]) {
        self.lines.continue_counts(earlier);
    }

    /// Analyses one tracked frame. `ts_ms`: frame time (ms since the Unix epoch).
    pub fn observe(&mut self, ts_ms: i64, seq: u64, captured: Instant, objects: &[TrackedObject]) -> FrameOutput {
        let objects = &self.classes.classify(objects);
        let mut out = FrameOutput::default();
        let minute = ts_ms.div_euclid(MINUTE_MS) * MINUTE_MS;
        if self.minute.is_some_and(|m| minute > m) {
            out.aggregates = self.close_minute();
            out.changed = true;
        }
        self.minute = Some(self.minute.map_or(minute, |m| m.max(minute)));
        let dt_s = match self.last_ts_ms {
            Some(last) if ts_ms > last && ts_ms - last <= MAX_FRAME_GAP_MS => (ts_ms - last) as f64 / 1e3,
            _ => 0.0,
        };
        self.last_ts_ms = Some(self.last_ts_ms.map_or(ts_ms, |l| l.max(ts_ms)));

        for measures in &mut self.line_measures {
            measures.record_frame(dt_s, 0);
        }
        let calibrated = self.geometry.calibrated();
        let zone_count = self.zones.len();
        for zone in &mut self.zones {
            zone.present_now = 0;
            zone.present_length_now = 0.0;
            zone.loop_covered_now = false;
        }
        let mut transitions = Vec::new();
        let mut lane_tracks: Vec<Vec<LaneTrack>> = vec![Vec::new(); zone_count];
        let mut queue_candidates: Vec<Vec<QueueCandidate>> = vec![Vec::new(); zone_count];

        for object in objects {
            let (gx, gy) = object.bbox.ground_point();
            let image_point = [gx as f64, gy as f64];
            let ground_point = self.geometry.to_ground(image_point);
            let window = self.config.speed_window_ms;
            let track = self.tracks.entry(object.track_id).or_insert_with(|| TrackState {
                class: object.class,
                last_seen_ms: ts_ms,
                box_height: 1.0,
                image_motion: MotionWindow::new(window),
                ground_motion: calibrated.then(|| MotionWindow::new(window)),
                zones: vec![TrackInZone::default(); zone_count],
            });
            track.class = object.class;
            track.last_seen_ms = ts_ms;
            track.box_height = (object.bbox.height() as f64).max(1.0);
            track.image_motion.push(ts_ms, image_point);
            if let (Some(motion), Some(p)) = (track.ground_motion.as_mut(), ground_point) {
                motion.push(ts_ms, p);
            }
            let ground_fit = track.ground_motion.as_ref().and_then(MotionWindow::fit);
            let image_fit = track.image_motion.fit();
            let speed_kmh = ground_fit.as_ref().map(|f| kmh(f.speed));
            let is_vehicle = object.class != ObjectClass::Person;

            for crossing in self.lines.observe(object.track_id, (image_point[0], image_point[1]), object.class) {
                let index = self.line_ids.iter().position(|id| *id == crossing.line_id).unwrap_or(0);
                let measures = &mut self.line_measures[index];
                measures.record_volume(crossing.direction.as_str(), crossing.class);
                if let (Some(speed), true) = (speed_kmh, is_vehicle) {
                    measures.record_speed(speed);
                }
                out.changed = true;
                out.events.push(Event {
                    event_id: crate::events::event_id(
                        &self.identity.camera_id,
                        self.identity.epoch_ms,
                        self.identity.geometry_version,
                        object.track_id,
                        &crossing.line_id,
                        seq,
                    ),
                    camera_id: self.identity.camera_id.clone(),
                    ts: to_datetime(ts_ms),
                    frame_seq: seq,
                    geometry_version: self.identity.geometry_version,
                    detail: EventDetail::LineCrossing(LineCrossing {
                        track_id: object.track_id,
                        class: crossing.class,
                        line_id: crossing.line_id,
                        direction: crossing.direction,
                        speed_kmh: speed_kmh.map(round2),
                        speed_uncertainty_kmh: ground_fit.as_ref().map(|f| round2(kmh(f.speed_sigma))),
                    }),
                    captured: Some(captured),
                    span: tracing::Span::none(),
                });
            }

            for (z, compiled) in self.geometry.zones().iter().enumerate() {
                let zone = &mut self.zones[z];
                let in_zone = &mut track.zones[z];
                let present = compiled.contains(image_point);
                if present && !in_zone.present {
                    zone.measures.record_volume("entered", object.class);
                    out.changed = true;
                }
                if !present && in_zone.present {
                    if let Some(speed) = in_zone.take_median() {
                        zone.measures.record_speed(speed);
                    }
                    in_zone.last_position = None;
                    in_zone.scale = None;
                    if let Some(incidents) = zone.incidents.as_mut() {
                        transitions.extend(incidents.leave(ts_ms, object.track_id));
                    }
                }
                in_zone.present = present;
                if !present || !is_vehicle {
                    continue;
                }
                zone.present_now += 1;
                if !compiled.is_lane() {
                    continue;
                }
                if let Some(speed) = speed_kmh {
                    in_zone.record_speed(speed);
                }
                // Lane units: km/h and metres when calibrated, box heights (per second) otherwise.
                let scale = if calibrated { 1.0 } else { *in_zone.scale.get_or_insert(track.box_height) };
                let fit: Option<&MotionFit> = if calibrated { ground_fit.as_ref() } else { image_fit.as_ref() };
                let to_lane_speed = |v: f64| if calibrated { kmh(v) } else { v / scale };
                let position = compiled.lane_position(image_point);
                let length_m = class_length_m(object.class);
                zone.present_length_now += length_m;
                if position.is_some_and(|p| compiled.loop_covered_by(p, length_m)) {
                    zone.loop_covered_now = true;
                }
                let axis_speed = fit
                    .zip(compiled.axis_unit())
                    .map(|(f, u)| to_lane_speed(f.velocity[0] * u[0] + f.velocity[1] * u[1]));
                let speed = fit.map(|f| to_lane_speed(f.speed));
                lane_tracks[z].push(LaneTrack {
                    track_id: object.track_id,
                    class: object.class,
                    speed,
                    axis_speed,
                    position: position.map(|p| p / scale),
                });
                let stopped = match (calibrated, speed) {
                    (true, Some(s)) => s < self.config.stopped_speed_kmh,
                    (false, Some(s)) => s < self.config.stopped_image_rate,
                    (_, None) => false,
                };
                if let Some(position) = position {
                    queue_candidates[z].push(QueueCandidate {
                        position,
                        stopped,
                        class: object.class,
                        join_scale: scale,
                    });
                    // Headway: the ground point passing the reference section downstream.
                    if let (Some(reference), Some((last_ms, last_position))) =
                        (compiled.reference_position(), in_zone.last_position)
                    {
                        if last_position < reference && position >= reference && position > last_position {
                            let f = (reference - last_position) / (position - last_position);
                            let passed_ms = last_ms as f64 + f * (ts_ms - last_ms) as f64;
                            let speed_mps = ground_fit.as_ref().map(|f| f.speed);
                            if let Some((leader_ms, leader_class, leader_speed)) = zone.last_pass {
                                let headway_s = (passed_ms - leader_ms) / 1e3;
                                if headway_s > 0.0 {
                                    zone.measures.record_headway(headway_s);
                                    if let Some(v) = leader_speed.filter(|v| *v > 0.5) {
                                        zone.measures.record_gap(headway_s - class_length_m(leader_class) / v);
                                    }
                                }
                            }
                            zone.last_pass = Some((passed_ms, object.class, speed_mps));
                        }
                    }
                    in_zone.last_position = Some((ts_ms, position));
                }
            }
        }

        for (z, compiled) in self.geometry.zones().iter().enumerate() {
            let zone = &mut self.zones[z];
            zone.measures.record_frame(dt_s, zone.present_now);
            if compiled.is_lane() {
                zone.measures.record_footprints(zone.loop_covered_now, zone.present_length_now);
            }
            if let (Some(stop), true) = (compiled.stop_line_position(), compiled.is_lane()) {
                let join = if calibrated { self.config.queue_join_m } else { self.config.queue_join_box_heights };
                let (vehicles, metres) = queue_at(stop, &queue_candidates[z], join, calibrated);
                zone.measures.record_queue(metres, vehicles);
            }
            let Some(incidents) = zone.incidents.as_mut() else { continue };
            transitions.extend(incidents.observe(ts_ms, &lane_tracks[z]));
            if let Some(length_m) = compiled.length_m().filter(|l| *l > 0.0 && calibrated) {
                transitions.extend(incidents.observe_density(ts_ms, zone.present_now as f64 / (length_m / 1e3)));
            }
        }
        for transition in transitions {
            out.changed = true;
            let event = self.incident_event(transition, seq, captured);
            out.events.push(event);
        }
        self.forget_finished_tracks(ts_ms);
        out
    }

    /// Closes the open minute and every incident (stream ended, geometry replaced, camera
    /// removed): the last partial minute is stored too.
    pub fn finish(&mut self, seq: u64) -> FrameOutput {
        let mut out = FrameOutput { changed: true, ..Default::default() };
        let ts_ms = self.last_ts_ms.unwrap_or(0);
        let finished: Vec<u64> = self.tracks.keys().copied().collect();
        for id in finished {
            self.finish_track(id);
        }
        let mut transitions = Vec::new();
        for zone in &mut self.zones {
            if let Some(incidents) = zone.incidents.as_mut() {
                transitions.extend(incidents.close_all(ts_ms));
            }
        }
        for transition in transitions {
            out.events.push(self.incident_event(transition, seq, Instant::now()));
        }
        if self.minute.is_some() {
            out.aggregates = self.close_minute();
        }
        self.minute = None;
        out
    }

    /// The camera's live state, for the Redis cache.
    pub fn live_state(&self) -> LiveState {
        let mut open: Vec<IncidentEvent> = self.open_incidents.values().cloned().collect();
        open.sort_by(|a, b| a.started_at.cmp(&b.started_at).then(a.incident_id.cmp(&b.incident_id)));
        LiveState {
            geometry_version: self.identity.geometry_version,
            ts: to_datetime(self.last_ts_ms.unwrap_or(0)),
            lines: self.lines.counts().to_vec(),
            zones: self
                .geometry
                .zones()
                .iter()
                .zip(&self.zones)
                .map(|(c, z)| ZoneNow { id: c.id().to_string(), kind: zone_kind(c.is_lane()), present: z.present_now })
                .collect(),
            open_incidents: open,
            last_minute: self.last_minute.clone(),
        }
    }

    fn incident_event(&mut self, t: IncidentTransition, seq: u64, captured: Instant) -> Event {
        let StreamIdentity { camera_id, epoch_ms, geometry_version } = &self.identity;
        let incident_id = stable_id(&format!("{camera_id}/{epoch_ms}/{geometry_version}/{}", t.key));
        let detail = IncidentEvent {
            incident_id: incident_id.clone(),
            incident_type: t.kind.as_str().into(),
            zone_id: t.zone_id.clone(),
            track_id: t.track_id,
            class: t.class,
            started_at: to_datetime(t.started_ms),
            duration_s: round2(t.duration_s),
            speed_kmh: t.speed_kmh.map(round2),
            density_per_km: t.density_per_km.map(round2),
        };
        let event_id = stable_id(&format!("{incident_id}/{}/{}", t.phase.event_type(), t.ts_ms));
        let detail = match t.phase {
            Phase::Opened => {
                self.open_incidents.insert(incident_id, detail.clone());
                EventDetail::IncidentOpened(detail)
            }
            Phase::Updated => {
                self.open_incidents.insert(incident_id, detail.clone());
                EventDetail::IncidentUpdated(detail)
            }
            Phase::Closed => {
                self.open_incidents.remove(&incident_id);
                EventDetail::IncidentClosed(detail)
            }
        };
        Event {
            event_id,
            camera_id: self.identity.camera_id.clone(),
            ts: to_datetime(t.ts_ms),
            frame_seq: seq,
            geometry_version: self.identity.geometry_version,
            detail,
            captured: Some(captured),
            span: tracing::Span::none(),
        }
    }

    /// Rows for the minute being accumulated (elements that saw at least one frame), then a
    /// fresh minute.
    fn close_minute(&mut self) -> Vec<AggregateRow> {
        let Some(start_ms) = self.minute else { return Vec::new() };
        let start = to_datetime(start_ms);
        let mut rows = Vec::new();
        let mut views = Vec::new();
        for (id, measures) in self.line_ids.iter().zip(&mut self.line_measures) {
            let taken = std::mem::take(measures);
            rows.push((id.clone(), ElementKind::Line, taken));
        }
        for (compiled, zone) in self.geometry.zones().iter().zip(&mut self.zones) {
            let fresh = zone.measures.fresh();
            let taken = std::mem::replace(&mut zone.measures, fresh);
            rows.push((compiled.id().to_string(), zone_kind(compiled.is_lane()), taken));
        }
        let out = rows
            .into_iter()
            .map(|(id, kind, measures)| {
                views.push(ElementMeasures {
                    id: id.clone(),
                    kind,
                    interval_start: start,
                    measures: measures.view_kind(kind),
                });
                AggregateRow {
                    camera_id: self.identity.camera_id.clone(),
                    interval_start: start,
                    geometry_version: self.identity.geometry_version,
                    element_id: id,
                    stream_epoch_ms: self.identity.epoch_ms,
                    element_kind: kind,
                    measures,
                }
            })
            .collect();
        self.last_minute = views;
        self.minute = None;
        out
    }

    fn forget_finished_tracks(&mut self, ts_ms: i64) {
        let finished: Vec<u64> =
            self.tracks.iter().filter(|(_, t)| ts_ms - t.last_seen_ms > TRACK_FORGET_MS).map(|(id, _)| *id).collect();
        if finished.is_empty() {
            return;
        }
        for id in finished {
            self.finish_track(id);
        }
        let alive = &self.tracks;
        self.lines.retain_tracks(|id| alive.contains_key(&id));
    }

    /// A finished track gives its lane speed samples.
    fn finish_track(&mut self, id: u64) {
        let Some(mut track) = self.tracks.remove(&id) else { return };
        for (zone, in_zone) in self.zones.iter_mut().zip(track.zones.iter_mut()) {
            if let Some(speed) = in_zone.take_median() {
                zone.measures.record_speed(speed);
            }
        }
    }
}

fn zone_kind(is_lane: bool) -> ElementKind {
    if is_lane {
        ElementKind::Lane
    } else {
        ElementKind::Zone
    }
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

pub fn to_datetime(ts_ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ts_ms).single().unwrap_or_default()
}

fn stable_id(name: &str) -> String {
    uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, name.as_bytes()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analytics::geometry::{Calibration, CalibrationPoint, LoopSpec, ZoneSpec};
    use crate::analytics::kinematics::kmh;
    use crate::analytics::lines::LineSpec;

    const T0: i64 = 1_800_000_000_000; // a whole minute
    const FRAME_MS: i64 = 40; // 25 fps

    /// A road seen from straight above at 0.1 m per pixel: image y grows downstream.
    fn geometry(calibrated: bool) -> Geometry {
        let point = |image: [f64; 2], ground: [f64; 2]| CalibrationPoint { image, ground };
        Geometry {
            lines: vec![LineSpec { id: "mid".into(), name: String::new(), a: [0.0, 500.0], b: [100.0, 500.0] }],
            zones: vec![ZoneSpec {
                id: "lane".into(),
                name: String::new(),
                polygon: vec![[0.0, 0.0], [100.0, 0.0], [100.0, 1000.0], [0.0, 1000.0]],
                direction: Some([[50.0, 0.0], [50.0, 1000.0]]),
                stop_line: Some([[0.0, 950.0], [100.0, 950.0]]),
                detection_loop: None,
            }],
            calibration: calibrated.then(|| Calibration {
                points: vec![
                    point([0.0, 0.0], [0.0, 100.0]),
                    point([100.0, 0.0], [10.0, 100.0]),
                    point([0.0, 1000.0], [0.0, 0.0]),
                    point([100.0, 1000.0], [10.0, 0.0]),
                ],
            }),
            ..Default::default()
        }
    }

    fn scene(calibrated: bool) -> SceneAnalytics {
        let identity = StreamIdentity { camera_id: "cam".into(), epoch_ms: 7, geometry_version: 3 };
        SceneAnalytics::new(identity, &geometry(calibrated), AnalyticsConfig::default()).unwrap()
    }

    /// A car whose ground point is at image y.
    fn car(track_id: u64, y: f64) -> TrackedObject {
        let y = y as f32;
        TrackedObject {
            track_id,
            bbox: BBox::new(40.0, y - 40.0, 60.0, y),
            class: ObjectClass::Car,
            score: 0.9,
            vehicle: Default::default(),
        }
    }

    /// Runs frames `0..n` with the objects `at(i)` gives; returns every event and row.
    fn run(scene: &mut SceneAnalytics, n: i64, at: impl Fn(i64) -> Vec<TrackedObject>) -> FrameOutput {
        let mut all = FrameOutput::default();
        for i in 0..n {
            let out = scene.observe(T0 + i * FRAME_MS, i as u64, Instant::now(), &at(i));
            all.events.extend(out.events);
            all.aggregates.extend(out.aggregates);
        }
        all
    }

    fn types(events: &[Event]) -> Vec<&'static str> {
        events.iter().map(Event::kind).collect()
    }

    #[test]
    fn a_crossing_carries_the_calibrated_speed_and_the_geometry_version() {
        // 72 km/h = 20 m/s = 200 px/s = 8 px per frame at 25 fps.
        let mut scene = scene(true);
        let out = run(&mut scene, 100, |i| vec![car(1, 100.0 + 8.0 * i as f64)]);
        assert_eq!(types(&out.events), vec!["line_crossing"]);
        let event = &out.events[0];
        assert_eq!(event.geometry_version, 3);
        let EventDetail::LineCrossing(crossing) = &event.detail else { unreachable!() };
        let speed = crossing.speed_kmh.unwrap();
        assert!((speed - 72.0).abs() < 72.0 * 0.02, "{speed} km/h");
        assert!(crossing.speed_uncertainty_kmh.unwrap() < 1.0);
        // The minute closes at the end: one row per element, the lane's speed sample is the track's.
        let rows = scene.finish(100).aggregates;
        assert_eq!(rows.iter().map(|r| r.element_id.as_str()).collect::<Vec<_>>(), vec!["mid", "lane"]);
        let lane = rows[1].measures.view_kind(ElementKind::Lane);
        let json = serde_json::to_value(&lane).unwrap();
        assert!((json["speed_mean_kmh"].as_f64().unwrap() - 72.0).abs() < 1.5, "{json}");
        assert_eq!(json["volume_total"], 1);
        assert!(json["density_per_km"].as_f64().unwrap() > 0.0);
    }

    #[test]
    fn without_a_calibration_no_speed_is_invented() {
        let mut scene = scene(false);
        let out = run(&mut scene, 100, |i| vec![car(1, 100.0 + 8.0 * i as f64)]);
        let EventDetail::LineCrossing(crossing) = &out.events[0].detail else { unreachable!() };
        assert_eq!((crossing.speed_kmh, crossing.speed_uncertainty_kmh), (None, None));
        let rows = scene.finish(100).aggregates;
        let json = serde_json::to_value(rows[1].measures.view_kind(ElementKind::Lane)).unwrap();
        for field in ["speed_mean_kmh", "density_per_km", "los", "queue_max_m"] {
            assert!(json.get(field).is_none(), "{field}: {json}");
        }
    }

    #[test]
    fn a_car_stopped_forty_seconds_opens_and_closes_one_incident() {
        let mut scene = scene(true);
        // Drive to y=600 (35 m before the stop line), wait 40 s, leave at 27 km/h (3 px a frame)
        // and drop out of view at the end of the lane.
        let stop_frames = 40_000 / FRAME_MS;
        let out = run(&mut scene, 60 + stop_frames + 200, |i| {
            let y = if i < 60 {
                120.0 + 8.0 * i as f64
            } else if i < 60 + stop_frames {
                600.0
            } else {
                600.0 + 3.0 * (i - 60 - stop_frames) as f64
            };
            if y < 1000.0 {
                vec![car(5, y)]
            } else {
                vec![]
            }
        });
        let incidents: Vec<&Event> = out.events.iter().filter(|e| e.kind() != "line_crossing").collect();
        assert_eq!(
            types(&incidents.iter().map(|e| (*e).clone()).collect::<Vec<_>>()),
            vec!["incident_opened", "incident_closed"]
        );
        let id = |e: &Event| match &e.detail {
            EventDetail::IncidentOpened(i) | EventDetail::IncidentClosed(i) | EventDetail::IncidentUpdated(i) => {
                (i.incident_id.clone(), i.incident_type.clone(), i.track_id)
            }
            EventDetail::LineCrossing(_) => unreachable!(),
        };
        assert_eq!(id(incidents[0]), id(incidents[1]));
        assert_eq!(id(incidents[0]).1, "stopped_vehicle");
        assert_eq!(id(incidents[0]).2, Some(5));
        assert_ne!(incidents[0].event_id, incidents[1].event_id);
        assert!(scene.live_state().open_incidents.is_empty());
        // A frame in the next minute of frame time closes the first minute: one row per element.
        assert!(out.aggregates.is_empty());
        let next = scene.observe(T0 + 61_000, 9_999, Instant::now(), &[]);
        assert_eq!(next.aggregates.len(), 2);
        assert_eq!(next.aggregates[0].interval_start, to_datetime(T0));
        assert_eq!(next.aggregates[1].measures.frames, 60 + stop_frames as u64 + 200);
    }

    #[test]
    fn a_queue_at_the_stop_line_is_measured() {
        let mut scene = scene(true);
        // Three cars standing 1, 7 and 13 m upstream of the stop line (y = 950: 10 px per m).
        let out = run(&mut scene, 75, |_| vec![car(1, 940.0), car(2, 880.0), car(3, 820.0)]);
        assert!(out.events.is_empty());
        let rows = scene.finish(75).aggregates;
        let json = serde_json::to_value(rows[1].measures.view_kind(ElementKind::Lane)).unwrap();
        assert_eq!(json["queue_max_vehicles"], 3, "{json}");
        let metres = json["queue_max_m"].as_f64().unwrap();
        assert!((metres - (13.0 + 4.5)).abs() < 0.01, "{json}");
    }

    #[test]
    fn a_wrong_way_driver_opens_an_incident_and_is_closed_at_the_end() {
        let mut scene = scene(true);
        let out = run(&mut scene, 100, |i| vec![car(9, 900.0 - 8.0 * i as f64)]);
        let kinds = types(&out.events);
        assert!(kinds.contains(&"incident_opened"), "{kinds:?}");
        let EventDetail::IncidentOpened(opened) =
            &out.events.iter().find(|e| e.kind() == "incident_opened").unwrap().detail
        else {
            unreachable!()
        };
        assert_eq!(opened.incident_type, "wrong_way");
        assert!((opened.speed_kmh.unwrap() - kmh(20.0)).abs() < 2.0, "{opened:?}");
        assert_eq!(scene.live_state().open_incidents.len(), 1);
        let finished = scene.finish(100);
        assert_eq!(types(&finished.events), vec!["incident_closed"]);
    }

    #[test]
    fn a_wrong_way_driver_leaving_the_lane_closes_its_incident_at_once() {
        let mut scene = scene(true);
        // Up the lane and out of its top edge (y < 0), still tracked.
        let out = run(&mut scene, 140, |i| vec![car(9, 900.0 - 8.0 * i as f64)]);
        assert_eq!(types(&out.events), vec!["line_crossing", "incident_opened", "incident_closed"]);
        assert!(scene.live_state().open_incidents.is_empty());
    }

    #[test]
    fn the_uncalibrated_wrong_way_test_is_not_fooled_by_a_shrinking_box() {
        // Driving up the image away from the camera, the box shrinks as the position falls:
        // position / current height would stay constant. One scale per visit sees the motion.
        let mut scene = scene(false);
        let out = run(&mut scene, 100, |i| {
            let y = 900.0 - 6.0 * i as f64;
            let h = (y / 10.0) as f32;
            let y = y as f32;
            vec![TrackedObject {
                track_id: 4,
                bbox: BBox::new(45.0, y - h, 55.0, y),
                class: ObjectClass::Car,
                score: 0.9,
                vehicle: Default::default(),
            }]
        });
        assert!(types(&out.events).contains(&"incident_opened"), "{:?}", types(&out.events));
    }

    /// The test lane (100 m, 10 px per m) with a 2 m loop from image y = 500: lane positions 50
    /// to 52 m. `receding`: traffic drives up the image (the direction reversed).
    fn scene_with_loop(receding: bool) -> SceneAnalytics {
        let mut geometry = geometry(true);
        let lane = &mut geometry.zones[0];
        let at = if receding { [[0.0, 520.0], [100.0, 520.0]] } else { [[0.0, 500.0], [100.0, 500.0]] };
        lane.detection_loop = Some(LoopSpec { at, length_m: 2.0 });
        if receding {
            lane.direction = Some([[50.0, 1000.0], [50.0, 0.0]]);
            lane.stop_line = None;
        }
        let identity = StreamIdentity { camera_id: "cam".into(), epoch_ms: 7, geometry_version: 3 };
        SceneAnalytics::new(identity, &geometry, AnalyticsConfig::default()).unwrap()
    }

    /// A vehicle of `class` whose ground point is at image (x, y).
    fn vehicle(track_id: u64, class: ObjectClass, x: f64, y: f64) -> TrackedObject {
        let (x, y) = (x as f32, y as f32);
        TrackedObject {
            track_id,
            bbox: BBox::new(x - 10.0, y - 40.0, x + 10.0, y),
            class,
            score: 0.9,
            vehicle: Default::default(),
        }
    }

    /// `classes[k]` enters the lane every 150 frames (6 s) at 72 km/h (20 m/s: 8 px a frame),
    /// down the image or up it, and drives through it in 125 frames; a car parked beside the
    /// lane over the loop's rows all minute is not in the lane. Returns the lane's minute.
    fn loop_minute(receding: bool, classes: &[ObjectClass]) -> MeasuresView {
        let mut scene = scene_with_loop(receding);
        run(&mut scene, 1500, |i| {
            let mut objects = vec![vehicle(99, ObjectClass::Car, 150.0, 510.0)];
            for (k, class) in classes.iter().enumerate() {
                let travelled = 8.0 * (i - 150 * k as i64) as f64;
                let y = if receding { 999.0 - travelled } else { travelled };
                if (0.0..1000.0).contains(&travelled) {
                    objects.push(vehicle(k as u64 + 1, *class, 50.0, y));
                }
            }
            objects
        });
        let rows = scene.finish(1500).aggregates;
        let lane = rows.iter().find(|r| r.element_id == "lane").unwrap();
        assert_eq!(lane.measures.frames, 1500);
        lane.measures.view_kind(ElementKind::Lane)
    }

    #[test]
    fn loop_occupancy_is_vehicle_plus_loop_length_over_speed() {
        // Each vehicle covers the loop while its footprint overlaps it: for (L + l) / v seconds,
        // so N vehicles in T seconds occupy it sum (L + l) / v / T. The frames sample that time:
        // each vehicle is seen covering it in the frames within that span (8.125 at 25 frames/s
        // for a car), so the measure is within one frame per vehicle of the exact value.
        let cars = [ObjectClass::Car; 10];
        let mixed = [ObjectClass::Car, ObjectClass::Truck, ObjectClass::Car, ObjectClass::Bus, ObjectClass::Car];
        for (receding, classes) in [(false, &cars[..]), (true, &cars[..]), (false, &mixed[..]), (true, &mixed[..])] {
            let view = loop_minute(receding, classes);
            let occupied_s: f64 = classes.iter().map(|c| (class_length_m(*c) + 2.0) / 20.0).sum();
            let expected = 100.0 * occupied_s / 60.0;
            let one_frame_each = 100.0 * classes.len() as f64 / 1500.0;
            let measured = view.loop_occupancy_percent.unwrap();
            assert!(
                (measured - expected).abs() <= one_frame_each,
                "receding {receding}, {classes:?}: {measured} % measured, {expected} % expected"
            );
            // The lane itself is occupied whenever a vehicle is in it: 125 of every 150 frames.
            assert!((view.occupancy_percent.unwrap() - 100.0 * 125.0 * classes.len() as f64 / 1500.0).abs() < 1e-9);
            // Space occupancy: the vehicles' lengths over the 100 m lane, averaged over the
            // frames, which is the density times the mean length of the vehicles present.
            let lengths: f64 = classes.iter().map(|c| class_length_m(*c)).sum();
            let space = view.space_occupancy_percent.unwrap();
            assert!((space - 100.0 * 125.0 * lengths / 1500.0 / 100.0).abs() < 1e-9, "{space}");
            let mean_length = lengths / classes.len() as f64;
            assert!((space - view.density_per_km.unwrap() * mean_length / 10.0).abs() < 1e-9);
        }
        // Ten cars: 10 x 6.5 m / 20 m/s = 3.25 s of the minute, 5.42 %; the long lane reads 83 %.
        let view = loop_minute(false, &cars);
        assert!((view.loop_occupancy_percent.unwrap() - 5.42).abs() < 0.67, "{view:?}");
    }

    #[test]
    fn a_vehicle_that_stops_short_of_the_loop_does_not_cover_it() {
        // The front stops 1 m upstream of the loop (s = 49 m, image y = 490) for the minute.
        let mut with_loop = scene_with_loop(false);
        run(&mut with_loop, 1500, |i| vec![car(1, (100.0 + 8.0 * i as f64).min(490.0))]);
        let rows = with_loop.finish(1500).aggregates;
        let view = rows[1].measures.view_kind(ElementKind::Lane);
        assert_eq!(view.loop_occupancy_percent, Some(0.0), "{view:?}");
        assert!(view.occupancy_percent.unwrap() > 99.0);
        // Without a loop no loop occupancy is reported at all.
        let mut plain = scene(true);
        run(&mut plain, 10, |i| vec![car(1, 500.0 + i as f64)]);
        let rows = plain.finish(10).aggregates;
        assert_eq!(rows[1].measures.view_kind(ElementKind::Lane).loop_occupancy_percent, None);
    }

    #[test]
    fn a_replayed_clip_gives_the_same_events() {
        let events = |_: ()| {
            let mut scene = scene(true);
            let mut out = run(&mut scene, 100, |i| vec![car(1, 100.0 + 8.0 * i as f64)]);
            out.events.extend(scene.finish(100).events);
            out.events.iter().map(|e| serde_json::to_string(e).unwrap()).collect::<Vec<_>>()
        };
        assert_eq!(events(()), events(()));
    }
}
