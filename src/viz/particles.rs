//! A probe state's particles in the recording (entity `probes/<i>/…`), in two views:
//! - `actions_3d`: three chosen numbers of the action chunk (default the first executed
//!   step's end-effector dx, dy, dz), when the chunk has ≥ 3 numbers;
//! - `actions_2d`: the probe's fixed plane (`viz::probe::PlaneView`, e.g. PCA of its first
//!   particles), with the Q map on that plane when one was computed.
//!
//! In each view: `chains` (x_0..x_K as line strips), `denoising` (x_k as points on the
//! `denoise_step` timeline), `queries` (a†), `particles` (a_j coloured by Q, blue low → red
//! high), and `field/{attraction,repulsion,combined}` as arrows from the queries. Arrows are
//! scaled by one factor per snapshot (logged as `probes/<i>/arrow_scale`) so that the longest
//! combined arrow spans half the particles' spread; the three layers share it.

use rerun::{Arrows2D, Arrows3D, Color, LineStrips2D, LineStrips3D, Points2D, Points3D, Scalars};

use super::Recorder;
use crate::viz::probe::{ParticleSnapshot, PlaneView};

/// Which three action numbers the 3-D view shows, with their names.
#[derive(Debug, Clone)]
pub struct Dims3 {
    pub indices: [usize; 3],
    pub names: [String; 3],
}

const ATTRACTION: [u8; 3] = [46, 204, 64];
const REPULSION: [u8; 3] = [255, 133, 27];
const COMBINED: [u8; 3] = [0, 116, 217];
const QUERY: [u8; 3] = [220, 220, 220];
const CHAIN: [u8; 3] = [150, 150, 150];

fn rgb([r, g, b]: [u8; 3]) -> Color {
    Color::from_rgb(r, g, b)
}

/// Dark blue (0) → red (1); NaN shows grey.
pub fn heat(x: f32) -> Color {
    if !x.is_finite() {
        return Color::from_rgb(128, 128, 128);
    }
    let x = x.clamp(0.0, 1.0);
    let mix = |lo: f32, hi: f32| (lo + (hi - lo) * x) as u8;
    Color::from_rgb(mix(25.0, 240.0), mix(35.0, 50.0), mix(110.0, 30.0))
}

fn normalise(values: &[f32]) -> Vec<f32> {
    let (lo, hi) = values.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), &v| (l.min(v), h.max(v)));
    values.iter().map(|v| if hi > lo { (v - lo) / (hi - lo) } else { 0.5 }).collect()
}

/// Rows [N, D] → N coordinates in a view.
fn rows<const N: usize>(values: &[f32], d: usize, f: impl Fn(&[f32]) -> [f32; N]) -> Vec<[f32; N]> {
    values.chunks(d).map(f).collect()
}

fn norm<const N: usize>(v: &[f32; N]) -> f32 {
    v.iter().map(|x| x * x).sum::<f32>().sqrt()
}

/// The arrow factor: longest combined arrow = half the largest distance of a particle from
/// the particles' mean (both in view coordinates).
fn arrow_scale<const N: usize>(points: &[[f32; N]], combined: &[[f32; N]]) -> f32 {
    let n = points.len().max(1) as f32;
    let mut mean = [0.0; N];
    for p in points {
        for i in 0..N {
            mean[i] += p[i] / n;
        }
    }
    let spread =
        points.iter().map(|p| norm(&std::array::from_fn::<f32, N, _>(|i| p[i] - mean[i]))).fold(1e-3f32, f32::max);
    let longest = combined.iter().map(norm).fold(0.0f32, f32::max);
    if longest > 0.0 {
        0.5 * spread / longest
    } else {
        1.0
    }
}

/// A snapshot in one view's N coordinates: `point` maps positions, `vector` directions.
/// The field layers are already multiplied by the view's arrow scale.
struct ViewRows<const N: usize> {
    points: Vec<[f32; N]>,
    queries: Vec<[f32; N]>,
    attraction: Vec<[f32; N]>,
    repulsion: Vec<[f32; N]>,
    combined: Vec<[f32; N]>,
    /// P strips of K + 1 points.
    chains: Vec<Vec<[f32; N]>>,
    scale: f32,
}

fn view_rows<const N: usize>(
    snapshot: &ParticleSnapshot,
    point: impl Fn(&[f32]) -> [f32; N],
    vector: impl Fn(&[f32]) -> [f32; N],
) -> ViewRows<N> {
    let (p, d, k) = (snapshot.particles, snapshot.numbers, snapshot.denoising_steps);
    let points = rows(&snapshot.endpoints, d, &point);
    let combined = rows(&snapshot.field, d, &vector);
    let scale = arrow_scale(&points, &combined);
    ViewRows {
        queries: rows(&snapshot.queries, d, &point),
        attraction: scaled(&rows(&snapshot.attraction, d, &vector), scale),
        repulsion: scaled(&rows(&snapshot.repulsion, d, &vector), scale),
        combined: scaled(&combined, scale),
        chains: (0..p)
            .map(|j| (0..=k).map(|s| point(&snapshot.chains[(s * p + j) * d..(s * p + j + 1) * d])).collect())
            .collect(),
        points,
        scale,
    }
}

fn scaled<const N: usize>(v: &[[f32; N]], s: f32) -> Vec<[f32; N]> {
    v.iter().map(|x| x.map(|c| c * s)).collect()
}

impl Recorder {
    /// Logs one probe's snapshot at the current `iteration`/`env_step`.
    pub fn probe(&self, index: usize, snapshot: &ParticleSnapshot, plane: &PlaneView, dims3: Option<&Dims3>) {
        let Some(rec) = self.stream() else { return };
        let base = format!("probes/{index}");
        let (p, d, k) = (snapshot.particles, snapshot.numbers, snapshot.denoising_steps);
        let q_colours: Vec<Color> = normalise(&snapshot.q).into_iter().map(heat).collect();
        let q_mean = snapshot.q.iter().sum::<f32>() / p.max(1) as f32;
        let q_max = snapshot.q.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let _ = rec.log(format!("{base}/q/mean"), &Scalars::single(q_mean as f64));
        let _ = rec.log(format!("{base}/q/max"), &Scalars::single(q_max as f64));

        // ---- 2-D view on the probe's plane ----------------------------------------------
        let view = format!("{base}/actions_2d");
        let project = |a: &[f32]| plane.project_point(a);
        let flat = view_rows(snapshot, project, |v: &[f32]| plane.project_vector(v));
        let _ = rec.log(format!("{base}/arrow_scale"), &Scalars::single(flat.scale as f64));
        if let Some(map) = &snapshot.q_map {
            let g = map.grid;
            let step = 2.0 * map.extent / (g.max(2) - 1) as f32;
            let positions: Vec<[f32; 2]> = (0..g * g)
                .map(|n| [-map.extent + step * (n % g) as f32, -map.extent + step * (n / g) as f32])
                .collect();
            let colours: Vec<Color> = normalise(&map.values).into_iter().map(heat).collect();
            let _ = rec.log(
                format!("{view}/q_map"),
                &Points2D::new(positions).with_colors(colours).with_radii([0.5 * step]).with_draw_order(-10.0),
            );
        }
        let _ = rec.log(format!("{view}/chains"), &LineStrips2D::new(flat.chains).with_colors([rgb(CHAIN)]));
        let _ = rec.log(
            format!("{view}/particles"),
            &Points2D::new(flat.points).with_colors(q_colours.clone()).with_radii([-5.0]),
        );
        let _ = rec.log(
            format!("{view}/queries"),
            &Points2D::new(flat.queries.clone()).with_colors([rgb(QUERY)]).with_radii([-3.0]),
        );
        for (name, vectors, colour) in [
            ("attraction", flat.attraction, ATTRACTION),
            ("repulsion", flat.repulsion, REPULSION),
            ("combined", flat.combined, COMBINED),
        ] {
            let _ = rec.log(
                format!("{view}/field/{name}"),
                &Arrows2D::from_vectors(vectors).with_origins(flat.queries.clone()).with_colors([rgb(colour)]),
            );
        }

        // ---- 3-D view on three chosen numbers (scaled by their own arrow factor) ----------
        let dims = dims3.filter(|_| d >= 3);
        if let Some(dims) = dims {
            let view = format!("{base}/actions_3d");
            let pick = |a: &[f32]| dims.indices.map(|i| a[i]);
            let space = view_rows(snapshot, pick, pick);
            let _ = rec.log(format!("{view}/chains"), &LineStrips3D::new(space.chains).with_colors([rgb(CHAIN)]));
            let _ = rec.log(
                format!("{view}/particles"),
                &Points3D::new(space.points).with_colors(q_colours.clone()).with_radii([-5.0]),
            );
            let _ = rec.log(
                format!("{view}/queries"),
                &Points3D::new(space.queries.clone()).with_colors([rgb(QUERY)]).with_radii([-3.0]),
            );
            for (name, vectors, colour) in [
                ("attraction", space.attraction, ATTRACTION),
                ("repulsion", space.repulsion, REPULSION),
                ("combined", space.combined, COMBINED),
            ] {
                let _ = rec.log(
                    format!("{view}/field/{name}"),
                    &Arrows3D::from_vectors(vectors).with_origins(space.queries.clone()).with_colors([rgb(colour)]),
                );
            }
        }

        // ---- The chains over the denoise_step timeline -----------------------------------
        for s in 0..=k {
            rec.set_time_sequence("denoise_step", s as i64);
            let step = &snapshot.chains[s * p * d..(s + 1) * p * d];
            let _ = rec.log(
                format!("{base}/actions_2d/denoising"),
                &Points2D::new(rows(step, d, project)).with_colors(q_colours.clone()).with_radii([-3.0]),
            );
            if let Some(dims) = dims {
                let pick = |a: &[f32]| dims.indices.map(|i| a[i]);
                let _ = rec.log(
                    format!("{base}/actions_3d/denoising"),
                    &Points3D::new(rows(step, d, pick)).with_colors(q_colours.clone()).with_radii([-3.0]),
                );
            }
        }
        rec.disable_timeline("denoise_step");
    }

    /// Describes a probe's views (static markdown at `probes/<i>/axes`).
    pub fn probe_axes(&self, index: usize, plane: &PlaneView, dims3: Option<&Dims3>, what: &str) {
        let three = match dims3 {
            Some(d) => format!(
                "3-D view (`actions_3d`): x = {}, y = {}, z = {} (normalised action numbers {:?})",
                d.names[0], d.names[1], d.names[2], d.indices
            ),
            None => "3-D view: none (fewer than 3 action numbers)".into(),
        };
        self.note(
            &format!("probes/{index}/axes"),
            &format!(
                "## Probe {index}\n\n{what}\n\n- {three}\n- 2-D view (`actions_2d`): {}\n- particles: final actions \
                 a_j coloured by Q (dark blue low, red high); queries: a†; chains: x_0..x_K; arrows from the queries: \
                 attraction (green), repulsion (orange), combined φ (blue), scaled by `arrow_scale`",
                plane.description
            ),
        );
    }

    /// The toy's sample cloud at the current time and its two peaks (static), drawn in
    /// probe 0's 2-D view (`probes/0/actions_2d/{samples,peaks}`).
    pub fn toy_samples(&self, samples: &[[f32; 2]], peaks: &[[f32; 2]]) {
        let Some(rec) = self.stream() else { return };
        let _ = rec.log(
            "probes/0/actions_2d/samples",
            &Points2D::new(samples.to_vec()).with_colors([Color::from_rgb(235, 235, 235)]).with_radii([-2.0]),
        );
        let _ = rec.log_static(
            "probes/0/actions_2d/peaks",
            &Points2D::new(peaks.to_vec()).with_colors([Color::from_rgb(255, 220, 0)]).with_radii([-6.0]),
        );
    }
}
