//! Decoder for YOLOX raw output: one row per grid cell over strides 8, 16 and 32, row-major,
//! each `(tx, ty, tw, th, objectness, class scores...)` with objectness and classes already sigmoid.

use super::input::{Overview, OVERVIEW_FACTOR};
use super::Letterbox;
use crate::objects::{BBox, Detection, ObjectClass, VehicleProbs};

/// COCO ids of car, bus and truck, whose probabilities every motor-vehicle box keeps.
const COCO_CAR: usize = 2;
const COCO_BUS: usize = 5;
const COCO_TRUCK: usize = 7;

pub const STRIDES: [u32; 3] = [8, 16, 32];

/// The smallest box height, in input pixels, the overview reports: it is there for vehicles too
/// large for the main view, which sees everything smaller better.
pub const OVERVIEW_MIN_HEIGHT: f32 = 32.0;

/// The height, in input pixels of the main view, from which a box is large (`Detection::large`):
/// the height from which the overview reports a vehicle, so every box the overview reports is.
pub const LARGE_HEIGHT: f32 = OVERVIEW_MIN_HEIGHT * OVERVIEW_FACTOR as f32;

/// One frame's detections: of the main picture and of the overview (`input` module docs).
#[derive(Debug, Default)]
pub struct Decoded {
    pub main: Vec<Detection>,
    pub overview: Vec<Detection>,
}

/// Rows the model emits for an input of `width` x `height` pixels.
pub fn rows_for((width, height): (u32, u32)) -> usize {
    STRIDES.iter().map(|s| (width / s) as usize * (height / s) as usize).sum()
}

/// Decodes one image's rows, from an input of `input` pixels, into detections of the reported
/// classes, in source-frame pixels. The image is the letterbox's main picture, or its `overview`
/// when one is given: then a box is kept when it is centred on the overview's picture, at least
/// `OVERVIEW_MIN_HEIGHT` tall there and no larger than that picture.
/// A row's class is its best-scoring COCO class; rows whose best class is not reported are dropped.
pub fn decode(
    rows: &[f32],
    row_len: usize,
    input: (u32, u32),
    letterbox: &Letterbox,
    overview: Option<&Overview>,
    score_threshold: f32,
) -> Vec<Detection> {
    let mut out = Vec::new();
    if row_len < 6 {
        return out;
    }
    let mut row_index = 0usize;
    for stride in STRIDES {
        let (columns, grid_rows) = ((input.0 / stride) as usize, (input.1 / stride) as usize);
        let s = stride as f32;
        for gy in 0..grid_rows {
            for gx in 0..columns {
                let Some(row) = rows.get(row_index * row_len..(row_index + 1) * row_len) else {
                    return out;
                };
                row_index += 1;
                let objectness = row[4];
                // Cheap reject first: score = obj x cls <= obj. NaN never passes.
                if objectness.is_nan() || objectness < score_threshold {
                    continue;
                }
                let (class_id, class_score) =
                    row[5..]
                        .iter()
                        .enumerate()
                        .fold((0, f32::MIN), |best, (i, &p)| if p > best.1 { (i, p) } else { best });
                let score = objectness * class_score;
                if score.is_nan() || score < score_threshold {
                    continue;
                }
                let Some(class) = ObjectClass::from_coco(class_id) else { continue };
                let cx = (row[0] + gx as f32) * s;
                let cy = (row[1] + gy as f32) * s;
                let w = row[2].exp() * s;
                let h = row[3].exp() * s;
                if overview.is_some_and(|o| !fits_overview(o, cx, cy, w, h)) {
                    continue;
                }
                let bbox = to_source(cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0, letterbox, overview);
                let vehicle = if class.is_motor_vehicle() {
                    let p = |id: usize| row.get(5 + id).copied().unwrap_or(0.0);
                    VehicleProbs { car: p(COCO_CAR), bus: p(COCO_BUS), truck: p(COCO_TRUCK) }
                } else {
                    VehicleProbs::default()
                };
                if bbox.area() > 0.0 {
                    let large = overview.is_some() || h >= LARGE_HEIGHT;
                    out.push(Detection { bbox, score, class, vehicle, large });
                }
            }
        }
    }
    out
}

/// Whether an overview box centred at (`cx`, `cy`), `w` x `h` input pixels, is one to report:
/// centred on the overview's picture, tall enough, and not larger than that picture (a box that
/// is, is the model guessing at the whole scene).
fn fits_overview(overview: &Overview, cx: f32, cy: f32, w: f32, h: f32) -> bool {
    let (width, height) = (overview.size.0 as f32, overview.size.1 as f32);
    cx < width && cy < height && h >= OVERVIEW_MIN_HEIGHT && w <= width && h <= height
}

/// A box of the input (of the main picture, or of the overview) in source-frame pixels,
/// clamped to the part of the frame the model saw (the letterbox's region: the whole frame
/// unless the camera crops).
fn to_source(x1: f32, y1: f32, x2: f32, y2: f32, lb: &Letterbox, overview: Option<&Overview>) -> BBox {
    let r = lb.region;
    let (left, top) = (r.x as f32, r.y as f32);
    let (right, bottom) = ((r.x + r.width) as f32, (r.y + r.height) as f32);
    let (x1, y1) = lb.to_source(overview, x1, y1);
    let (x2, y2) = lb.to_source(overview, x2, y2);
    BBox::new(x1.clamp(left, right), y1.clamp(top, bottom), x2.clamp(left, right), y2.clamp(top, bottom))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROW: usize = 85;

    fn empty_rows(input: (u32, u32)) -> Vec<f32> {
        vec![0.0; rows_for(input) * ROW]
    }

    /// Sets the row of cell (`gx`, `gy`) of `stride`'s grid over `input` to a box of `w` x `h`
    /// centred on the cell, objectness 0.9, class `coco` 0.9.
    fn put(
        rows: &mut [f32],
        input: (u32, u32),
        stride: u32,
        (gx, gy): (usize, usize),
        (w, h): (f32, f32),
        coco: usize,
    ) {
        let cells = |s: u32| (input.0 / s) as usize * (input.1 / s) as usize;
        let before: usize = STRIDES.iter().take_while(|&&s| s != stride).map(|&s| cells(s)).sum();
        let r = before + gy * (input.0 / stride) as usize + gx;
        let row = &mut rows[r * ROW..(r + 1) * ROW];
        row[0] = 0.5;
        row[1] = 0.5;
        row[2] = (w / stride as f32).ln();
        row[3] = (h / stride as f32).ln();
        row[4] = 0.9;
        row[5 + coco] = 0.9;
    }

    #[test]
    fn rows_follow_the_input_grid() {
        assert_eq!(rows_for((416, 416)), 3549, "YOLOX-Nano at its native square");
        assert_eq!(rows_for((416, 320)), 52 * 40 + 26 * 20 + 13 * 10);
    }

    #[test]
    fn decodes_a_cell_of_the_second_stride_into_source_pixels() {
        let lb = Letterbox::new(320, 240, 416); // ratio 1.3, input 416x320
        let mut rows = empty_rows(lb.input);
        // stride 16 starts after 52*40 rows; cell (gx=3, gy=2) of its 26 columns
        let r = 52 * 40 + 2 * 26 + 3;
        let row = &mut rows[r * ROW..(r + 1) * ROW];
        row[0] = 0.5; // cx = 3.5 * 16 = 56
        row[1] = 0.5; // cy = 2.5 * 16 = 40
        row[2] = (2.0f32).ln(); // w = 32
        row[3] = 0.0; // h = 16
        row[4] = 0.9;
        row[5 + 2] = 0.8; // car
        let dets = decode(&rows, ROW, lb.input, &lb, None, 0.3);
        assert_eq!(dets.len(), 1);
        let d = dets[0];
        assert_eq!(d.class, ObjectClass::Car);
        assert!((d.score - 0.72).abs() < 1e-6);
        assert_eq!(
            (d.vehicle.car, d.vehicle.bus, d.vehicle.truck),
            (0.8, 0.0, 0.0),
            "the vehicle classes' probabilities"
        );
        let expect = BBox::new(40.0 / 1.3, 32.0 / 1.3, 72.0 / 1.3, 48.0 / 1.3);
        for (a, b) in [(d.bbox.x1, expect.x1), (d.bbox.y1, expect.y1), (d.bbox.x2, expect.x2), (d.bbox.y2, expect.y2)] {
            assert!((a - b).abs() < 1e-3, "{:?} vs {:?}", d.bbox, expect);
        }
    }

    #[test]
    fn a_cropped_frame_at_another_input_size_decodes_into_full_frame_pixels() {
        // The right half of a 1280x720 frame at input 640: ratio 640/720, offset 640, the picture
        // 569x640 in an input of 576x640.
        let region = crate::detector::input::Region { x: 640, y: 0, width: 640, height: 720 };
        let lb = Letterbox::cropped(1280, 720, region, 640);
        assert!((lb.ratio - 640.0 / 720.0).abs() < 1e-6);
        assert_eq!(lb.input, (576, 640));
        let mut rows = empty_rows(lb.input);
        // Cell (gx=16, gy=0) of stride 32's 18 columns: a box reaching past the picture is
        // clamped to the region's edge.
        let r = 72 * 80 + 36 * 40 + 16;
        let row = &mut rows[r * ROW..(r + 1) * ROW];
        row[0] = 0.5; // cx = 16.5 * 32 = 528
        row[1] = 0.5; // cy = 16
        row[2] = (4.0f32).ln(); // w = 128: 464..592
        row[3] = 0.0; // h = 32
        row[4] = 0.9;
        row[5 + 2] = 0.9;
        let dets = decode(&rows, ROW, lb.input, &lb, None, 0.3);
        assert_eq!(dets.len(), 1);
        let b = dets[0].bbox;
        let expect = [640.0 + 464.0 / lb.ratio, 0.0, 1280.0, 32.0 / lb.ratio];
        for (a, e) in [b.x1, b.y1, b.x2, b.y2].into_iter().zip(expect) {
            assert!((a - e).abs() < 1e-3, "{b:?} vs {expect:?}");
        }
    }

    #[test]
    fn main_boxes_are_large_from_large_height() {
        let lb = Letterbox::new(320, 240, 416);
        let mut rows = empty_rows(lb.input);
        put(&mut rows, lb.input, 32, (1, 2), (40.0, 48.0), COCO_TRUCK);
        put(&mut rows, lb.input, 32, (5, 3), (100.0, LARGE_HEIGHT), COCO_TRUCK);
        let large: Vec<bool> = decode(&rows, ROW, lb.input, &lb, None, 0.3).iter().map(|d| d.large).collect();
        assert_eq!(large, [false, true]);
    }

    #[test]
    fn overview_boxes_map_back_at_its_scale_and_only_those_it_can_see_are_kept() {
        let lb = Letterbox::new(320, 240, 416).with_overview(); // 138x104 in an input of 160x128
        let overview = lb.overview.unwrap();
        let input = overview.input;
        let mut rows = empty_rows(input);
        put(&mut rows, input, 32, (1, 1), (40.0, 48.0), COCO_TRUCK); // centre (48, 48)
        put(&mut rows, input, 16, (2, 2), (16.0, 16.0), COCO_TRUCK); // too small for the overview
        put(&mut rows, input, 32, (4, 1), (40.0, 48.0), COCO_TRUCK); // centre (144, 48): right of it
        put(&mut rows, input, 32, (1, 3), (40.0, 48.0), COCO_TRUCK); // centre (48, 112): below it
        put(&mut rows, input, 32, (2, 1), (140.0, 48.0), COCO_TRUCK); // wider than its picture
        let dets = decode(&rows, ROW, input, &lb, Some(&overview), 0.3);
        assert_eq!(dets.len(), 1, "{dets:?}");
        assert!(dets[0].large, "every box the overview reports is large");
        let b = dets[0].bbox;
        let ratio = overview.ratio;
        let expect = [28.0 / ratio, 24.0 / ratio, 68.0 / ratio, 72.0 / ratio];
        for (a, e) in [b.x1, b.y1, b.x2, b.y2].into_iter().zip(expect) {
            assert!((a - e).abs() < 1e-3, "{b:?} vs {expect:?}");
        }
    }

    #[test]
    fn unreported_classes_low_scores_and_nan_are_dropped() {
        let lb = Letterbox::new(416, 416, 416);
        let mut rows = empty_rows(lb.input);
        rows[4] = 0.9;
        rows[5 + 9] = 0.9; // traffic light
        rows[ROW + 4] = 0.2;
        rows[ROW + 5 + 2] = 0.2; // car at 0.04
        rows[2 * ROW + 4] = f32::NAN;
        rows[2 * ROW + 5 + 2] = 0.9;
        assert!(decode(&rows, ROW, lb.input, &lb, None, 0.1).is_empty());
    }

    #[test]
    fn short_output_does_not_panic() {
        let lb = Letterbox::new(416, 416, 416);
        assert_eq!(decode(&[0.5; 100], ROW, lb.input, &lb, None, 0.1).len(), 1, "the one whole row decodes");
        assert!(decode(&[], 3, lb.input, &lb, None, 0.1).is_empty());
    }
}
