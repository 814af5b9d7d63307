//! Longer intervals from the stored minute rows: the measures are accumulators, so a
//! 15-minute or hourly value is the merge of its minutes (counts and sums add; percentiles come
//! from the merged histograms), never an average of averages.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::measures::{IntervalMeasures, MeasuresView};
use super::ElementKind;

/// A minute row as PostgreSQL returns it, the input of a roll-up.
pub struct StoredAggregate {
    pub interval_start: DateTime<Utc>,
    pub geometry_version: u32,
    pub element_id: String,
    pub element_kind: String,
    pub measures: super::measures::IntervalMeasures,
}

/// Interval lengths the API serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Interval {
    #[serde(rename = "1m")]
    Minute,
    #[serde(rename = "15m")]
    Quarter,
    #[serde(rename = "1h")]
    Hour,
}

impl Interval {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "1m" => Some(Interval::Minute),
            "15m" => Some(Interval::Quarter),
            "1h" => Some(Interval::Hour),
            _ => None,
        }
    }

    pub fn label(&self) -> &'static str {
        match self {
            Interval::Minute => "1m",
            Interval::Quarter => "15m",
            Interval::Hour => "1h",
        }
    }

    pub fn seconds(&self) -> i64 {
        match self {
            Interval::Minute => 60,
            Interval::Quarter => 900,
            Interval::Hour => 3600,
        }
    }

    /// The start of the interval holding `t` (intervals are aligned on the UTC epoch).
    pub fn start_of(&self, t: DateTime<Utc>) -> DateTime<Utc> {
        let s = self.seconds();
        DateTime::from_timestamp(t.timestamp().div_euclid(s) * s, 0).unwrap_or(t)
    }
}

/// One element (of one geometry version) with its intervals in time order.
#[derive(Debug, Serialize)]
pub struct ElementSeries {
    pub id: String,
    pub kind: String,
    pub geometry_version: u32,
    pub intervals: Vec<IntervalValue>,
}

#[derive(Debug, Serialize)]
pub struct IntervalValue {
    pub start: DateTime<Utc>,
    pub measures: MeasuresView,
}

/// Groups minute rows by element and geometry version and merges them into `interval`s.
pub fn roll_up(rows: Vec<StoredAggregate>, interval: Interval) -> Vec<ElementSeries> {
    type Buckets = BTreeMap<DateTime<Utc>, IntervalMeasures>;
    let mut groups: BTreeMap<(u32, String), (String, Buckets)> = BTreeMap::new();
    for row in rows {
        let (_, buckets) =
            groups.entry((row.geometry_version, row.element_id)).or_insert_with(|| (row.element_kind, BTreeMap::new()));
        match buckets.entry(interval.start_of(row.interval_start)) {
            std::collections::btree_map::Entry::Vacant(slot) => {
                slot.insert(row.measures);
            }
            std::collections::btree_map::Entry::Occupied(mut slot) => slot.get_mut().merge(&row.measures),
        }
    }
    groups
        .into_iter()
        .map(|((geometry_version, id), (kind, buckets))| {
            let element_kind = match kind.as_str() {
                "lane" => ElementKind::Lane,
                "zone" => ElementKind::Zone,
                _ => ElementKind::Line,
            };
            ElementSeries {
                id,
                kind,
                geometry_version,
                intervals: buckets
                    .into_iter()
                    .map(|(start, measures)| IntervalValue { start, measures: measures.view_kind(element_kind) })
                    .collect(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objects::ObjectClass;

    fn row(minute: i64, element: &str, cars: u64) -> StoredAggregate {
        let mut measures = IntervalMeasures::default();
        for _ in 0..cars {
            measures.record_volume("in", ObjectClass::Car);
        }
        measures.record_frame(60.0, 0);
        StoredAggregate {
            interval_start: DateTime::from_timestamp(minute * 60, 0).unwrap(),
            geometry_version: 1,
            element_id: element.into(),
            element_kind: "line".into(),
            measures,
        }
    }

    #[test]
    fn minutes_merge_into_quarters_per_element() {
        // Minutes 0..=16: the first quarter holds 15 of them, the second 2.
        let rows: Vec<_> = (0..17).map(|m| row(m, "a", 2)).chain([row(3, "b", 5)]).collect();
        let series = roll_up(rows, Interval::Quarter);
        assert_eq!(series.len(), 2);
        let a = &series[0];
        assert_eq!((a.id.as_str(), a.intervals.len()), ("a", 2));
        let first = serde_json::to_value(&a.intervals[0].measures).unwrap();
        assert_eq!(first["volume_total"], 30);
        assert_eq!(first["flow_per_hour"], 120.0, "30 vehicles in 15 minutes");
        assert_eq!(serde_json::to_value(&a.intervals[1].measures).unwrap()["volume_total"], 4);
        assert_eq!(series[1].intervals.len(), 1);
    }

    #[test]
    fn intervals_parse_and_align() {
        assert_eq!(Interval::parse("15m"), Some(Interval::Quarter));
        assert_eq!(Interval::parse("5m"), None);
        let t = DateTime::from_timestamp(3 * 3600 + 17 * 60 + 5, 0).unwrap();
        assert_eq!(Interval::Quarter.start_of(t), DateTime::from_timestamp(3 * 3600 + 15 * 60, 0).unwrap());
        assert_eq!(Interval::Hour.start_of(t), DateTime::from_timestamp(3 * 3600, 0).unwrap());
    }
}
