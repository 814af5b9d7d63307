//! Incidents of one lane: stopped vehicles, wrong-way driving and congestion, each with a life
//! cycle of `incident_opened`, `incident_updated` (every `incident_update_s` while open) and
//! `incident_closed`, and different conditions to open and to close (hysteresis).
//! Definitions: `docs/ANALYTICS.md` ("Incidents"). Pure: time is the frame time passed in.
//!
//! Timing rules shared by every kind:
//! - A condition must hold on consecutive observations, from the first frame it holds to a
//!   frame at least the required time later; a frame where it does not hold restarts it. A
//!   frame without the needed input (no speed yet, no position) neither confirms nor breaks it.
//! - `started_ms` is when the condition began (the vehicle stopped, started to go the wrong way,
//!   density reached E), so `duration_s` is already `stopped_open_s` at opening.
//! - Updates fall every `incident_update_s` after the opening frame (no drift; after a gap in
//!   frames one update, not a burst). A 40 s stop (opened at 15 s, closed ~3 s after driving
//!   off) emits no update; a 100 s stop emits two.
//! - Frames older than the last one seen are ignored; equal timestamps are processed.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use super::config::{secs_to_ms, AnalyticsConfig};
use super::measures::Los;
use crate::objects::ObjectClass;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IncidentKind {
    StoppedVehicle,
    WrongWay,
    Congestion,
}

impl IncidentKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            IncidentKind::StoppedVehicle => "stopped_vehicle",
            IncidentKind::WrongWay => "wrong_way",
            IncidentKind::Congestion => "congestion",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Opened,
    Updated,
    Closed,
}

impl Phase {
    /// The event `type`.
    pub fn event_type(&self) -> &'static str {
        match self {
            Phase::Opened => "incident_opened",
            Phase::Updated => "incident_updated",
            Phase::Closed => "incident_closed",
        }
    }
}

/// One step in an incident's life.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IncidentTransition {
    pub phase: Phase,
    pub kind: IncidentKind,
    pub zone_id: String,
    /// Vehicle incidents.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub track_id: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub class: Option<ObjectClass>,
    /// Frame time the condition began.
    pub started_ms: i64,
    /// Frame time of this transition.
    pub ts_ms: i64,
    /// `(ts_ms - started_ms) / 1000`, never negative.
    pub duration_s: f64,
    /// Vehicle incidents on a calibrated lane: the track's latest ground speed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub speed_kmh: Option<f64>,
    /// Congestion: the lane's rolling mean density.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub density_per_km: Option<f64>,
    /// Stable over the incident's life, unique per incident of a lane:
    /// `stopped_vehicle/{zone}/{track}/{started_ms}`, `wrong_way/{zone}/{track}/{started_ms}`,
    /// `congestion/{zone}/{started_ms}`. Derive the incident id from it (with the camera and
    /// geometry version).
    pub key: String,
}

/// A track present in the lane this frame, in lane units: km/h and metres when the lane is
/// calibrated, box heights per second and box heights when not.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LaneTrack {
    pub track_id: u64,
    pub class: ObjectClass,
    /// Ground speed (length of the fitted velocity); `None` until the fit has enough samples.
    pub speed: Option<f64>,
    /// Velocity along the lane axis, positive downstream.
    pub axis_speed: Option<f64>,
    /// Lane position `s`, increasing downstream.
    pub position: Option<f64>,
}

#[derive(Debug, Clone, PartialEq)]
struct OpenIncident {
    started_ms: i64,
    opened_ms: i64,
    next_update_ms: i64,
    key: String,
}

#[derive(Debug, Clone, PartialEq)]
struct TrackState {
    class: ObjectClass,
    last_seen_ms: i64,
    last_speed: Option<f64>,
    stopped_since: Option<i64>,
    moving_since: Option<i64>,
    stopped: Option<OpenIncident>,
    against_since: Option<i64>,
    against_max_position: Option<f64>,
    wrong_way: Option<OpenIncident>,
}

/// Who a vehicle incident is about, as its transitions report it.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Vehicle {
    track_id: u64,
    class: ObjectClass,
    speed: Option<f64>,
}

impl TrackState {
    fn vehicle(&self, track_id: u64) -> Vehicle {
        Vehicle { track_id, class: self.class, speed: self.last_speed }
    }

    fn new(class: ObjectClass, ts_ms: i64) -> Self {
        Self {
            class,
            last_seen_ms: ts_ms,
            last_speed: None,
            stopped_since: None,
            moving_since: None,
            stopped: None,
            against_since: None,
            against_max_position: None,
            wrong_way: None,
        }
    }
}

/// Thresholds in lane units and timings in ms, fixed at construction.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Limits {
    stopped_speed: f64,
    wrong_way_speed: f64,
    wrong_way_min: f64,
    stopped_open_ms: i64,
    stopped_close_ms: i64,
    lost_close_ms: i64,
    wrong_way_open_ms: i64,
    congestion_open_ms: i64,
    congestion_close_ms: i64,
    congestion_window_ms: i64,
    update_ms: i64,
}

/// Per-second sums of density samples over the congestion window: bounded by the window
/// length, whatever the frame rate.
#[derive(Debug, Clone, Default, PartialEq)]
struct DensityWindow {
    buckets: VecDeque<(i64, f64, u64)>,
}

impl DensityWindow {
    fn push(&mut self, ts_ms: i64, density: f64, window_ms: i64) {
        let second = ts_ms.div_euclid(1000);
        match self.buckets.back_mut() {
            Some((s, sum, n)) if *s == second => {
                *sum += density;
                *n += 1;
            }
            _ => self.buckets.push_back((second, density, 1)),
        }
        // A bucket leaves once all of its second is older than the window.
        let oldest = ts_ms.saturating_sub(window_ms);
        while let Some((s, _, _)) = self.buckets.front() {
            if s.saturating_add(1).saturating_mul(1000) <= oldest && self.buckets.len() > 1 {
                self.buckets.pop_front();
            } else {
                break;
            }
        }
    }

    fn mean(&self) -> Option<f64> {
        let (sum, n) = self.buckets.iter().fold((0.0, 0u64), |(s, c), (_, sum, n)| (s + sum, c + n));
        (n > 0).then(|| sum / n as f64).filter(|m| m.is_finite())
    }
}

/// The incident state of one lane. Feed it every frame with [`LaneIncidents::observe`] (the
/// tracks present in the lane) and, for a calibrated lane, [`LaneIncidents::observe_density`];
/// end with [`LaneIncidents::close_all`].
#[derive(Debug, Clone, PartialEq)]
pub struct LaneIncidents {
    zone_id: String,
    calibrated: bool,
    limits: Limits,
    tracks: BTreeMap<u64, TrackState>,
    last_ts: Option<i64>,
    density: DensityWindow,
    density_last_ts: Option<i64>,
    density_mean: Option<f64>,
    congested_since: Option<i64>,
    clear_since: Option<i64>,
    congestion: Option<OpenIncident>,
}

fn elapsed(since: i64, ts_ms: i64) -> i64 {
    ts_ms.saturating_sub(since)
}

fn duration_s(started_ms: i64, ts_ms: i64) -> f64 {
    (elapsed(started_ms, ts_ms).max(0) as f64) / 1000.0
}

impl LaneIncidents {
    pub fn new(zone_id: &str, calibrated: bool, config: &AnalyticsConfig) -> Self {
        let c = config;
        let (stopped_speed, wrong_way_speed, wrong_way_min) = if calibrated {
            (c.stopped_speed_kmh, c.wrong_way_speed_kmh, c.wrong_way_min_m)
        } else {
            (c.stopped_image_rate, c.wrong_way_image_rate, c.wrong_way_min_box_heights)
        };
        let limits = Limits {
            stopped_speed,
            wrong_way_speed,
            wrong_way_min,
            stopped_open_ms: secs_to_ms(c.stopped_open_s),
            stopped_close_ms: secs_to_ms(c.stopped_close_s),
            lost_close_ms: secs_to_ms(c.lost_close_s),
            wrong_way_open_ms: secs_to_ms(c.wrong_way_open_s),
            congestion_open_ms: secs_to_ms(c.congestion_open_s),
            congestion_close_ms: secs_to_ms(c.congestion_close_s),
            congestion_window_ms: secs_to_ms(c.congestion_window_s).max(1),
            // At least 1 s, whatever an unvalidated config says.
            update_ms: secs_to_ms(c.incident_update_s).max(1000),
        };
        Self::fresh(zone_id.to_string(), calibrated, limits)
    }

    /// A lane with nothing observed yet.
    fn fresh(zone_id: String, calibrated: bool, limits: Limits) -> Self {
        Self {
            zone_id,
            calibrated,
            limits,
            tracks: BTreeMap::new(),
            last_ts: None,
            density: DensityWindow::default(),
            density_last_ts: None,
            density_mean: None,
            congested_since: None,
            clear_since: None,
            congestion: None,
        }
    }

    pub fn zone_id(&self) -> &str {
        &self.zone_id
    }

    /// Incidents open now.
    pub fn open_count(&self) -> usize {
        self.tracks
            .values()
            .map(|t| usize::from(t.stopped.is_some()) + usize::from(t.wrong_way.is_some()))
            .sum::<usize>()
            + usize::from(self.congestion.is_some())
    }

    /// Tracks remembered (present, or lost for less than `lost_close_s`).
    pub fn tracked(&self) -> usize {
        self.tracks.len()
    }

    /// The latest rolling mean density (veh/km/ln), calibrated lanes.
    pub fn density_mean(&self) -> Option<f64> {
        self.density_mean
    }

    fn vehicle_key(&self, kind: IncidentKind, track_id: u64, started_ms: i64) -> String {
        format!("{}/{}/{}/{}", kind.as_str(), self.zone_id, track_id, started_ms)
    }

    fn open(&self, kind: IncidentKind, track_id: Option<u64>, started_ms: i64, ts_ms: i64) -> OpenIncident {
        let key = match track_id {
            Some(id) => self.vehicle_key(kind, id, started_ms),
            None => format!("{}/{}/{}", kind.as_str(), self.zone_id, started_ms),
        };
        OpenIncident { started_ms, opened_ms: ts_ms, next_update_ms: ts_ms.saturating_add(self.limits.update_ms), key }
    }

    fn transition(
        &self,
        phase: Phase,
        kind: IncidentKind,
        incident: &OpenIncident,
        track: Option<Vehicle>,
        ts_ms: i64,
        density: Option<f64>,
    ) -> IncidentTransition {
        IncidentTransition {
            phase,
            kind,
            zone_id: self.zone_id.clone(),
            track_id: track.map(|v| v.track_id),
            class: track.map(|v| v.class),
            started_ms: incident.started_ms,
            ts_ms,
            duration_s: duration_s(incident.started_ms, ts_ms),
            speed_kmh: if self.calibrated { track.and_then(|v| v.speed) } else { None },
            density_per_km: density,
            key: incident.key.clone(),
        }
    }

    /// Whether an update is due at `ts_ms`; if so the schedule moves to the first period
    /// boundary (counted from the opening) after `ts_ms`.
    fn due_update(&self, incident: &mut OpenIncident, ts_ms: i64) -> bool {
        if ts_ms < incident.next_update_ms {
            return false;
        }
        let period = self.limits.update_ms;
        let periods = elapsed(incident.opened_ms, ts_ms) / period + 1;
        incident.next_update_ms = incident.opened_ms.saturating_add(periods.saturating_mul(period));
        true
    }

    /// One frame: the tracks present in the lane (lane units, see [`LaneTrack`]). Persons are
    /// ignored. A remembered track absent from the list is lost from its last-seen frame; at
    /// `lost_close_s` its incidents close and it is forgotten.
    pub fn observe(&mut self, ts_ms: i64, tracks: &[LaneTrack]) -> Vec<IncidentTransition> {
        if self.last_ts.is_some_and(|last| ts_ms < last) {
            return Vec::new();
        }
        self.last_ts = Some(ts_ms);
        let mut present: BTreeMap<u64, &LaneTrack> = BTreeMap::new();
        for t in tracks {
            if t.class != ObjectClass::Person {
                present.insert(t.track_id, t);
            }
        }
        let mut events = Vec::new();
        let mut states = std::mem::take(&mut self.tracks);
        for (id, t) in &present {
            states.entry(*id).or_insert_with(|| TrackState::new(t.class, ts_ms));
        }
        let mut keep = BTreeMap::new();
        for (id, mut st) in states {
            match present.get(&id) {
                Some(t) => self.observe_track(id, &mut st, t, ts_ms, &mut events),
                None => {
                    if elapsed(st.last_seen_ms, ts_ms) >= self.limits.lost_close_ms {
                        self.close_track(id, &st, ts_ms, &mut events);
                        continue;
                    }
                }
            }
            self.update_track(id, &mut st, ts_ms, &mut events);
            keep.insert(id, st);
        }
        self.tracks = keep;
        events
    }

    fn observe_track(
        &self,
        id: u64,
        st: &mut TrackState,
        t: &LaneTrack,
        ts_ms: i64,
        events: &mut Vec<IncidentTransition>,
    ) {
        let l = self.limits;
        st.class = t.class;
        st.last_seen_ms = ts_ms;
        let speed = t.speed.filter(|s| s.is_finite());
        if speed.is_some() {
            st.last_speed = speed;
        }
        // Stopped vehicle.
        if let Some(s) = speed {
            if st.stopped.is_none() {
                if s < l.stopped_speed {
                    let since = *st.stopped_since.get_or_insert(ts_ms);
                    if elapsed(since, ts_ms) >= l.stopped_open_ms {
                        let inc = self.open(IncidentKind::StoppedVehicle, Some(id), since, ts_ms);
                        events.push(self.transition(
                            Phase::Opened,
                            IncidentKind::StoppedVehicle,
                            &inc,
                            Some(st.vehicle(id)),
                            ts_ms,
                            None,
                        ));
                        st.stopped = Some(inc);
                        st.moving_since = None;
                    }
                } else {
                    st.stopped_since = None;
                }
            } else if s > 2.0 * l.stopped_speed {
                let since = *st.moving_since.get_or_insert(ts_ms);
                if elapsed(since, ts_ms) >= l.stopped_close_ms {
                    if let Some(inc) = st.stopped.take() {
                        events.push(self.transition(
                            Phase::Closed,
                            IncidentKind::StoppedVehicle,
                            &inc,
                            Some(st.vehicle(id)),
                            ts_ms,
                            None,
                        ));
                    }
                    st.stopped_since = None;
                    st.moving_since = None;
                }
            } else {
                st.moving_since = None;
            }
        }
        // Wrong way: opens only; it closes when the track leaves the lane or is lost.
        if st.wrong_way.is_none() {
            let position = t.position.filter(|p| p.is_finite());
            match t.axis_speed.filter(|v| v.is_finite()) {
                Some(v) if v < -l.wrong_way_speed => {
                    let since = *st.against_since.get_or_insert(ts_ms);
                    if let Some(p) = position {
                        st.against_max_position = Some(st.against_max_position.map_or(p, |m| m.max(p)));
                    }
                    let gone = match (st.against_max_position, position) {
                        (Some(max), Some(p)) => max - p,
                        _ => 0.0,
                    };
                    if elapsed(since, ts_ms) >= l.wrong_way_open_ms && gone >= l.wrong_way_min {
                        let inc = self.open(IncidentKind::WrongWay, Some(id), since, ts_ms);
                        events.push(self.transition(
                            Phase::Opened,
                            IncidentKind::WrongWay,
                            &inc,
                            Some(st.vehicle(id)),
                            ts_ms,
                            None,
                        ));
                        st.wrong_way = Some(inc);
                    }
                }
                Some(_) => {
                    st.against_since = None;
                    st.against_max_position = None;
                }
                None => {}
            }
        }
    }

    fn update_track(&self, id: u64, st: &mut TrackState, ts_ms: i64, events: &mut Vec<IncidentTransition>) {
        let vehicle = st.vehicle(id);
        let slots = [(IncidentKind::StoppedVehicle, &mut st.stopped), (IncidentKind::WrongWay, &mut st.wrong_way)];
        for (kind, slot) in slots {
            if let Some(inc) = slot {
                if self.due_update(inc, ts_ms) {
                    let event = self.transition(Phase::Updated, kind, inc, Some(vehicle), ts_ms, None);
                    events.push(event);
                }
            }
        }
    }

    fn close_track(&self, id: u64, st: &TrackState, ts_ms: i64, events: &mut Vec<IncidentTransition>) {
        if let Some(inc) = &st.stopped {
            events.push(self.transition(
                Phase::Closed,
                IncidentKind::StoppedVehicle,
                inc,
                Some(st.vehicle(id)),
                ts_ms,
                None,
            ));
        }
        if let Some(inc) = &st.wrong_way {
            events.push(self.transition(Phase::Closed, IncidentKind::WrongWay, inc, Some(st.vehicle(id)), ts_ms, None));
        }
    }

    /// The caller knows `track_id` has left the lane (its ground point is now outside it, or
    /// the tracker dropped it): its incidents close now rather than after `lost_close_s`, and
    /// it is forgotten. Optional; without it the same happens `lost_close_s` later.
    pub fn leave(&mut self, ts_ms: i64, track_id: u64) -> Vec<IncidentTransition> {
        let mut events = Vec::new();
        if let Some(st) = self.tracks.remove(&track_id) {
            let ts = self.last_ts.map_or(ts_ms, |last| ts_ms.max(last));
            self.close_track(track_id, &st, ts, &mut events);
        }
        events
    }

    /// One frame's density of a calibrated lane (vehicles present / lane length, veh/km);
    /// uncalibrated lanes, non-finite or negative densities and frames older than the last are
    /// ignored. Congestion is judged on the mean over the last `congestion_window_s` (per-second
    /// buckets; frames weigh equally).
    pub fn observe_density(&mut self, ts_ms: i64, density_per_km: f64) -> Vec<IncidentTransition> {
        let mut events = Vec::new();
        if !(self.calibrated && density_per_km.is_finite() && density_per_km >= 0.0) {
            return events;
        }
        if self.density_last_ts.is_some_and(|last| ts_ms < last) {
            return events;
        }
        self.density_last_ts = Some(ts_ms);
        self.density.push(ts_ms, density_per_km, self.limits.congestion_window_ms);
        let Some(mean) = self.density.mean() else {
            return events;
        };
        self.density_mean = Some(mean);
        let l = self.limits;
        if Los::from_density(mean).is_congested() {
            self.clear_since = None;
            let since = *self.congested_since.get_or_insert(ts_ms);
            if self.congestion.is_none() && elapsed(since, ts_ms) >= l.congestion_open_ms {
                let inc = self.open(IncidentKind::Congestion, None, since, ts_ms);
                events.push(self.transition(Phase::Opened, IncidentKind::Congestion, &inc, None, ts_ms, Some(mean)));
                self.congestion = Some(inc);
                return events;
            }
        } else {
            self.congested_since = None;
            let since = *self.clear_since.get_or_insert(ts_ms);
            if elapsed(since, ts_ms) >= l.congestion_close_ms {
                if let Some(inc) = self.congestion.take() {
                    events.push(self.transition(
                        Phase::Closed,
                        IncidentKind::Congestion,
                        &inc,
                        None,
                        ts_ms,
                        Some(mean),
                    ));
                    return events;
                }
            }
        }
        if let Some(mut inc) = self.congestion.take() {
            if self.due_update(&mut inc, ts_ms) {
                events.push(self.transition(Phase::Updated, IncidentKind::Congestion, &inc, None, ts_ms, Some(mean)));
            }
            self.congestion = Some(inc);
        }
        events
    }

    /// Closes every open incident at `ts_ms` (the stream ended or the geometry was replaced)
    /// and forgets all state, as if new.
    pub fn close_all(&mut self, ts_ms: i64) -> Vec<IncidentTransition> {
        let mut events = Vec::new();
        let tracks = std::mem::take(&mut self.tracks);
        for (id, st) in &tracks {
            self.close_track(*id, st, ts_ms, &mut events);
        }
        if let Some(inc) = self.congestion.take() {
            events.push(self.transition(Phase::Closed, IncidentKind::Congestion, &inc, None, ts_ms, self.density_mean));
        }
        *self = Self::fresh(std::mem::take(&mut self.zone_id), self.calibrated, self.limits);
        events
    }
}

#[cfg(test)]
mod tests {
    use super::super::kinematics::{kmh, tests::Noise, MotionWindow};
    use super::*;

    const FRAME_MS: i64 = 40;

    fn lane(calibrated: bool) -> LaneIncidents {
        LaneIncidents::new("lane-1", calibrated, &AnalyticsConfig::default())
    }

    fn car(id: u64, speed: f64, axis: f64, position: f64) -> LaneTrack {
        LaneTrack {
            track_id: id,
            class: ObjectClass::Car,
            speed: Some(speed),
            axis_speed: Some(axis),
            position: Some(position),
        }
    }

    fn phases(events: &[IncidentTransition]) -> Vec<Phase> {
        events.iter().map(|e| e.phase).collect()
    }

    /// Runs a track whose speed (km/h) at time t (ms) is `speed(t)` from 0 to `end_ms`, then
    /// absent for 10 s; returns every transition.
    fn run_speed_profile(end_ms: i64, speed: impl Fn(i64) -> f64) -> Vec<IncidentTransition> {
        let mut lane = lane(true);
        let mut events = Vec::new();
        let mut ts = 0;
        while ts <= end_ms + 10_000 {
            let tracks = if ts <= end_ms { vec![car(17, speed(ts), speed(ts), 50.0)] } else { vec![] };
            events.extend(lane.observe(ts, &tracks));
            ts += FRAME_MS;
        }
        assert_eq!(lane.tracked(), 0);
        events
    }

    #[test]
    fn stopped_40s_exact_timings() {
        // Stopped 0..40 s, then 30 km/h (in the lane until 60 s).
        let events = run_speed_profile(60_000, |t| if t < 40_000 { 0.5 } else { 30.0 });
        assert_eq!(phases(&events), vec![Phase::Opened, Phase::Closed], "{events:#?}");
        let (o, c) = (&events[0], &events[1]);
        assert_eq!((o.ts_ms, o.started_ms, o.duration_s), (15_000, 0, 15.0));
        assert_eq!((c.ts_ms, c.duration_s), (43_000, 43.0));
        assert_eq!(o.key, "stopped_vehicle/lane-1/17/0");
        assert_eq!(o.key, c.key);
        assert_eq!(o.kind, IncidentKind::StoppedVehicle);
        assert_eq!((o.track_id, o.class), (Some(17), Some(ObjectClass::Car)));
        assert_eq!(o.speed_kmh, Some(0.5));
        assert_eq!(c.speed_kmh, Some(30.0));
    }

    #[test]
    fn stopped_100s_has_two_updates() {
        let events = run_speed_profile(120_000, |t| if t < 100_000 { 0.0 } else { 30.0 });
        assert_eq!(phases(&events), vec![Phase::Opened, Phase::Updated, Phase::Updated, Phase::Closed]);
        let ts: Vec<i64> = events.iter().map(|e| e.ts_ms).collect();
        assert_eq!(ts, vec![15_000, 45_000, 75_000, 103_000]);
        assert!(events.iter().all(|e| e.key == events[0].key));
    }

    /// A car driving into the lane, stopping for `stop_s`, driving off: positions with
    /// ±0.2 m noise through the real speed fit.
    fn drive(stop_s: i64) -> Vec<IncidentTransition> {
        let cfg = AnalyticsConfig::default();
        let mut lane = LaneIncidents::new("lane-1", true, &cfg);
        let mut window = MotionWindow::new(cfg.speed_window_ms);
        let mut noise = Noise::new(99);
        let t0 = 1_700_000_000_000i64;
        let stop_at = 5_000;
        let go_at = stop_at + stop_s * 1000;
        let mut events = Vec::new();
        let mut t = 0;
        loop {
            // 10 m/s to 50 m, stopped, then 2 m/s² away.
            let s = if t < stop_at {
                t as f64 / 100.0
            } else if t < go_at {
                50.0
            } else {
                let d = (t - go_at) as f64 / 1000.0;
                50.0 + d * d
            };
            if s > 150.0 {
                break;
            }
            window.push(t0 + t, [s + noise.next(0.2), noise.next(0.2)]);
            let fit = window.fit();
            let track = LaneTrack {
                track_id: 17,
                class: ObjectClass::Car,
                speed: fit.map(|f| kmh(f.speed)),
                axis_speed: fit.and_then(|f| f.along([1.0, 0.0])).map(kmh),
                position: Some(s),
            };
            events.extend(lane.observe(t0 + t, &[track]));
            t += FRAME_MS;
        }
        for k in 0..200 {
            events.extend(lane.observe(t0 + t + k * FRAME_MS, &[]));
        }
        events
    }

    #[test]
    fn car_stopped_40s_in_a_lane() {
        let events = drive(40);
        // Opened ~15.5 s after stopping (fit lag), closed ~4 s after driving off: 29 s open,
        // under the 30 s update period, so no update.
        assert_eq!(phases(&events), vec![Phase::Opened, Phase::Closed], "{events:#?}");
        assert!(events.iter().all(|e| e.kind == IncidentKind::StoppedVehicle));
        assert_eq!(events[0].key, events[1].key);
        let open_after = events[0].ts_ms - 1_700_000_000_000 - 5_000;
        assert!((15_000..16_500).contains(&open_after), "{open_after}");
        let closed_after_go = events[1].ts_ms - 1_700_000_000_000 - 45_000;
        assert!((3_000..5_000).contains(&closed_after_go), "{closed_after_go}");
    }

    #[test]
    fn car_stopped_90s_in_a_lane() {
        let events = drive(90);
        assert_eq!(phases(&events), vec![Phase::Opened, Phase::Updated, Phase::Updated, Phase::Closed], "{events:#?}");
        assert!(events.iter().all(|e| e.key == events[0].key));
        assert_eq!(events[1].ts_ms - events[0].ts_ms, 30_000);
        assert_eq!(events[2].ts_ms - events[1].ts_ms, 30_000);
    }

    #[test]
    fn brief_stops_open_nothing() {
        assert!(drive(10).is_empty());
        assert!(drive(14).is_empty());
        let events = run_speed_profile(60_000, |t| if (20_000..34_960).contains(&t) { 0.0 } else { 40.0 });
        assert!(events.is_empty(), "{events:#?}");
    }

    #[test]
    fn jitter_around_thresholds_does_not_flap() {
        // Stopped 20 s, then speeds jittering between 4 and 9.9 km/h (between the stopped
        // threshold and twice it) for 60 s, with 2.9 s bursts above 10 km/h every 10 s.
        let events = run_speed_profile(100_000, |t| {
            if t < 20_000 {
                0.0
            } else if t % 10_000 < 2_900 {
                12.0
            } else if (t / FRAME_MS) % 2 == 0 {
                4.0
            } else {
                9.9
            }
        });
        assert_eq!(phases(&events), vec![Phase::Opened, Phase::Updated, Phase::Updated, Phase::Closed]);
        // Closed only when lost (5 s after the last frame at 100 s).
        assert_eq!(events[3].ts_ms, 105_000);
        // Speed flickering around 5 km/h before opening restarts the stop: nothing opens.
        let flicker = run_speed_profile(60_000, |t| if (t / FRAME_MS) % 10 == 0 { 5.5 } else { 4.5 });
        assert!(flicker.is_empty());
    }

    #[test]
    fn lost_track_closes_after_lost_close_s_and_missed_frames_do_not() {
        let mut lane = lane(true);
        let mut events = Vec::new();
        for k in 0..=500 {
            let ts = k * FRAME_MS; // 0..20 s
                                   // Missed by the detector for 4 s in the middle: not lost.
            let present = !(8_000..12_000).contains(&ts);
            let tracks = if present { vec![car(3, 0.0, 0.0, 10.0)] } else { vec![] };
            events.extend(lane.observe(ts, &tracks));
        }
        assert_eq!(phases(&events), vec![Phase::Opened]);
        assert_eq!(events[0].ts_ms, 15_000);
        for k in 1..=200 {
            events.extend(lane.observe(20_000 + k * FRAME_MS, &[]));
        }
        assert_eq!(phases(&events), vec![Phase::Opened, Phase::Closed]);
        assert_eq!(events[1].ts_ms, 25_000);
        assert_eq!(lane.open_count(), 0);
        assert_eq!(lane.tracked(), 0);
    }

    fn run_axis(calibrated: bool, axis: f64, start: f64) -> (Vec<IncidentTransition>, LaneIncidents) {
        let mut lane = lane(calibrated);
        let mut events = Vec::new();
        // 10 s in the lane, position following the axis speed (lane units per second).
        let per_s = if calibrated { axis / 3.6 } else { axis };
        for k in 0..250 {
            let ts = k * FRAME_MS;
            let pos = start + per_s * ts as f64 / 1000.0;
            events.extend(lane.observe(ts, &[car(8, axis.abs(), axis, pos)]));
        }
        (events, lane)
    }

    #[test]
    fn wrong_way_track_opens_one_and_closes_when_gone() {
        let (mut events, mut lane) = run_axis(true, -30.0, 100.0);
        assert_eq!(phases(&events), vec![Phase::Opened]);
        let o = &events[0];
        assert_eq!(o.kind, IncidentKind::WrongWay);
        assert_eq!((o.started_ms, o.ts_ms), (0, 2_000));
        assert_eq!(o.key, "wrong_way/lane-1/8/0");
        assert_eq!(o.speed_kmh, Some(30.0));
        // Leaves the lane: closed at once through `leave`.
        events.extend(lane.leave(10_000, 8));
        assert_eq!(phases(&events), vec![Phase::Opened, Phase::Closed]);
        assert_eq!(events[1].key, events[0].key);
        assert!(lane.leave(10_000, 8).is_empty());
        // Or lost: closed after lost_close_s.
        let (_, mut lane) = run_axis(true, -30.0, 100.0);
        let mut closed = Vec::new();
        for k in 0..200 {
            closed.extend(lane.observe(10_000 + k * FRAME_MS, &[]));
        }
        assert_eq!(phases(&closed), vec![Phase::Closed]);
        assert_eq!(closed[0].ts_ms, 9_960 + 5_000);
    }

    #[test]
    fn wrong_way_needs_distance_and_right_way_opens_nothing() {
        assert!(run_axis(true, 30.0, 0.0).0.is_empty());
        assert!(run_axis(true, -4.0, 100.0).0.is_empty(), "below the speed threshold");
        // -6 km/h = 1.67 m/s: 5 m upstream only after 3 s.
        let (events, _) = run_axis(true, -6.0, 100.0);
        assert_eq!(phases(&events), vec![Phase::Opened]);
        assert_eq!(events[0].ts_ms, 3_000);
        // Uncalibrated: box heights per second; -0.5 bh/s needs 2 s to go one box height.
        let (events, _) = run_axis(false, -0.5, 10.0);
        assert_eq!(phases(&events), vec![Phase::Opened]);
        assert_eq!(events[0].ts_ms, 2_000);
        assert_eq!(events[0].speed_kmh, None);
        assert!(run_axis(false, 0.5, 10.0).0.is_empty());
        assert!(run_axis(false, -0.15, 10.0).0.is_empty());
    }

    fn feed_density(lane: &mut LaneIncidents, from_s: i64, to_s: i64, density: f64, out: &mut Vec<IncidentTransition>) {
        let mut ts = from_s * 1000;
        while ts < to_s * 1000 {
            out.extend(lane.observe_density(ts, density));
            ts += 200;
        }
    }

    #[test]
    fn congestion_opens_after_sustained_high_density_and_closes_after_low() {
        let mut lane = lane(true);
        let mut ev = Vec::new();
        feed_density(&mut lane, 0, 120, 10.0, &mut ev);
        feed_density(&mut lane, 120, 420, 35.0, &mut ev);
        feed_density(&mut lane, 420, 720, 10.0, &mut ev);
        let p = phases(&ev);
        assert_eq!(p.first(), Some(&Phase::Opened));
        assert_eq!(p.last(), Some(&Phase::Closed));
        assert_eq!(p.iter().filter(|x| **x == Phase::Opened).count(), 1);
        assert_eq!(p.iter().filter(|x| **x == Phase::Closed).count(), 1);
        assert!(ev.iter().all(|e| e.key == ev[0].key && e.kind == IncidentKind::Congestion));
        let (o, c) = (&ev[0], ev.last().unwrap());
        // The 60 s mean passes D (21.75, into E) ~28 s into the high density; open 60 s later.
        assert!((145_000..152_000).contains(&o.started_ms), "{}", o.started_ms);
        assert_eq!(o.ts_ms - o.started_ms, 60_000);
        assert_eq!(o.key, format!("congestion/lane-1/{}", o.started_ms));
        assert!(o.density_per_km.unwrap() > 21.75 && o.track_id.is_none() && o.class.is_none());
        // The mean falls to D ~32 s after the density drops; close 60 s later.
        assert!((505_000..520_000).contains(&c.ts_ms), "{}", c.ts_ms);
        assert!(c.density_per_km.unwrap() <= 21.75);
        let updates = p.iter().filter(|x| **x == Phase::Updated).count() as i64;
        assert_eq!(updates, (c.ts_ms - o.ts_ms - 1) / 30_000);
    }

    #[test]
    fn congestion_ignores_spikes_and_uncalibrated_lanes() {
        let mut lane = lane(true);
        let mut ev = Vec::new();
        feed_density(&mut lane, 0, 120, 10.0, &mut ev);
        feed_density(&mut lane, 120, 130, 40.0, &mut ev);
        feed_density(&mut lane, 130, 400, 10.0, &mut ev);
        assert!(ev.is_empty());
        // High density for 50 s: the 60 s mean is in E for ~54 s only.
        let mut lane2 = self::lane(true);
        feed_density(&mut lane2, 0, 120, 10.0, &mut ev);
        feed_density(&mut lane2, 120, 170, 35.0, &mut ev);
        feed_density(&mut lane2, 170, 400, 10.0, &mut ev);
        assert!(ev.is_empty(), "{ev:#?}");
        // Frame-to-frame jitter across the D/E bound around a D mean.
        let mut lane3 = self::lane(true);
        let mut noise = super::super::kinematics::tests::Noise::new(5);
        for k in 0..(600 * 5) {
            ev.extend(lane3.observe_density(k * 200, 20.0 + noise.next(6.0)));
        }
        assert!(ev.is_empty(), "{ev:#?}");
        let mut unc = self::lane(false);
        feed_density(&mut unc, 0, 400, 80.0, &mut ev);
        assert!(ev.is_empty());
        assert_eq!(unc.density_mean(), None);
        // Garbage densities are ignored.
        assert!(lane.observe_density(500_000, f64::NAN).is_empty());
        assert!(lane.observe_density(500_000, -1.0).is_empty());
    }

    #[test]
    fn close_all_closes_everything_once() {
        let mut lane = lane(true);
        let mut ev = Vec::new();
        for k in 0..500 {
            let ts = k * FRAME_MS;
            ev.extend(lane.observe(ts, &[car(1, 0.0, 0.0, 10.0), car(2, 40.0, -40.0, 60.0 - ts as f64 / 90.0)]));
        }
        feed_density(&mut lane, 0, 200, 50.0, &mut ev);
        assert_eq!(lane.open_count(), 3);
        let closed = lane.close_all(200_000);
        assert_eq!(phases(&closed), vec![Phase::Closed; 3]);
        let kinds: Vec<IncidentKind> = closed.iter().map(|e| e.kind).collect();
        assert_eq!(kinds, vec![IncidentKind::StoppedVehicle, IncidentKind::WrongWay, IncidentKind::Congestion]);
        for c in &closed {
            assert_eq!(ev.iter().filter(|e| e.key == c.key && e.phase == Phase::Opened).count(), 1);
        }
        assert!(lane.close_all(200_000).is_empty());
        assert_eq!((lane.open_count(), lane.tracked()), (0, 0));
    }

    #[test]
    fn memory_stays_bounded_and_bad_input_is_harmless() {
        let mut lane = lane(true);
        // A new vehicle every 2 s, each in the lane for 4 s, for an hour.
        for k in 0..(3600 * 25) {
            let ts = k * FRAME_MS;
            let first = (ts / 2000 - 1).max(0) as u64;
            let tracks: Vec<LaneTrack> = (first..=(ts / 2000) as u64).map(|id| car(id, 50.0, 50.0, 0.0)).collect();
            assert!(lane.observe(ts, &tracks).is_empty());
        }
        assert!(lane.tracked() <= 6, "{}", lane.tracked());
        // Out of order frames are ignored; odd values do not panic.
        assert!(lane.observe(0, &[car(1, 0.0, 0.0, 0.0)]).is_empty());
        let odd = LaneTrack {
            track_id: u64::MAX,
            class: ObjectClass::Truck,
            speed: Some(f64::NAN),
            axis_speed: Some(f64::NEG_INFINITY),
            position: Some(f64::NAN),
        };
        let person = LaneTrack { track_id: 5, class: ObjectClass::Person, ..car(5, 0.0, 0.0, 0.0) };
        for ts in [i64::MAX - 10, i64::MAX] {
            let _ = lane.observe(ts, &[odd, person, odd]);
            let _ = lane.observe_density(ts, 1e300);
        }
        let _ = lane.close_all(i64::MIN);
        let mut extreme = LaneIncidents::new(
            "x",
            true,
            &AnalyticsConfig {
                incident_update_s: f64::NAN,
                stopped_open_s: -1.0,
                congestion_window_s: f64::INFINITY,
                ..AnalyticsConfig::default()
            },
        );
        for ts in [i64::MIN, 0, i64::MAX] {
            let _ = extreme.observe(ts, &[car(1, 0.0, -100.0, 0.0)]);
            let _ = extreme.observe_density(ts, 100.0);
        }
        let _ = extreme.close_all(i64::MAX);
        // Persons never open anything.
        let mut p = self::lane(true);
        for k in 0..1000 {
            assert!(p.observe(k * FRAME_MS, &[person]).is_empty());
        }
        assert_eq!(p.tracked(), 0);
    }

    #[test]
    fn serde_names() {
        assert_eq!(serde_json::to_string(&IncidentKind::StoppedVehicle).unwrap(), "\"stopped_vehicle\"");
        assert_eq!(IncidentKind::WrongWay.as_str(), "wrong_way");
        assert_eq!(Phase::Opened.event_type(), "incident_opened");
        assert_eq!(Phase::Updated.event_type(), "incident_updated");
        assert_eq!(Phase::Closed.event_type(), "incident_closed");
    }
}
