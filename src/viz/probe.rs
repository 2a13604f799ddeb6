//! Probe states: what the SVGD transport looks like at one state, as plain numbers for the
//! recordings of `viz` (docs/algorithm.md §4). A snapshot holds the P particle chains
//! x_0..x_K, the query points a†, the final particles a_j, the field φ at the queries split
//! into attraction and repulsion, Q at the particles, and optionally Q on a 2-D grid around
//! them. Fixed view axes per probe (chosen once, from its first particles) keep snapshots of
//! later iterations comparable.

use std::path::Path;

use tch::{Kind, Tensor};

use crate::error::{Error, Result};
use crate::policy::frames::Frames;
use crate::policy::{FlowPolicy, ObsBatch};
use crate::rl::actor::{particle_field, ActorObjective, ParticleDraws};
use crate::rl::rldt::Rldt;
use crate::rl::trajectory::Trajectory;

/// The fixed probe states of a run: N observations taken from the first evaluation's
/// trajectories (state i: trajectory i mod n, at i/N of its length). Saved in the run
/// directory so a resumed run records the same states.
#[derive(Debug, Clone)]
pub struct ProbeStates {
    pub count: usize,
    pub frames: Frames,
}

impl ProbeStates {
    pub fn from_trajectories(trajectories: &[&Trajectory], count: usize) -> Self {
        let mut frames = trajectories.first().map(|t| t.frames.clone()).unwrap_or_default();
        frames.images.iter_mut().for_each(Vec::clear);
        frames.proprio.clear();
        let mut probes = Self { count: 0, frames };
        if trajectories.is_empty() {
            return probes;
        }
        for i in 0..count {
            let trajectory = trajectories[i % trajectories.len()];
            probes.frames.push_from(&trajectory.frames, trajectory.chunks * i / count.max(1));
            probes.count += 1;
        }
        probes
    }

    /// The camera image [H, W, 3] of probe `i`.
    pub fn image(&self, camera: usize, i: usize) -> &[u8] {
        self.frames.image(camera, i)
    }

    /// The states as a batch (B = N, history 1) on `device`.
    pub fn obs(&self, device: tch::Device) -> ObsBatch {
        let pairs: Vec<(&Frames, usize)> = (0..self.count).map(|i| (&self.frames, i)).collect();
        Frames::batch(&pairs, device)
    }

    /// Writes `probes.safetensors` atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut tensors = vec![
            ("proprio".to_owned(), Tensor::from_slice(&self.frames.proprio).view([self.count as i64, -1])),
            ("image_size".to_owned(), Tensor::from_slice(&[self.frames.image_size as i64])),
        ];
        let s = self.frames.image_size as i64;
        for (camera, images) in self.frames.images.iter().enumerate() {
            tensors.push((format!("camera_{camera}"), Tensor::from_slice(images).view([self.count as i64, s, s, 3])));
        }
        let tmp = path.with_extension("safetensors.tmp");
        Tensor::write_safetensors(&tensors, &tmp).map_err(|source| Error::Tch { path: tmp.clone(), source })?;
        std::fs::rename(&tmp, path).map_err(crate::error::io_at(path))
    }

    pub fn load(path: &Path) -> Result<Self> {
        let tensors = Tensor::read_safetensors(path).map_err(|source| Error::Tch { path: path.into(), source })?;
        let get = |name: &str| {
            tensors
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, t)| t.shallow_clone())
                .ok_or_else(|| Error::RunDir { dir: path.into(), message: format!("key `{name}` missing") })
        };
        let proprio = get("proprio")?;
        let count = proprio.size()[0] as usize;
        let image_size = get("image_size")?.int64_value(&[0]) as usize;
        let mut images = Vec::new();
        while let Ok(t) = get(&format!("camera_{}", images.len())) {
            images.push(Vec::<u8>::try_from(&t.contiguous().view([-1])).expect("u8"));
        }
        let proprio_dim = proprio.size()[1] as usize;
        let proprio = Vec::try_from(&proprio.contiguous().view([-1])).expect("float");
        Ok(Self { count, frames: Frames { image_size, proprio_dim, images, proprio } })
    }
}

/// One state's particles and field. D numbers per action chunk, P particles, K steps.
#[derive(Debug, Clone)]
pub struct ParticleSnapshot {
    pub particles: usize,
    pub numbers: usize,
    pub denoising_steps: usize,
    /// [K + 1, P, D] x_0 (noise) … x_K (the action), normalised action space.
    pub chains: Vec<f32>,
    /// [P, D] a† = x_k + (1 − t_k)·v(x_k, t_k) at each particle's random step k.
    pub queries: Vec<f32>,
    /// [P] t_k of each query.
    pub query_t: Vec<f32>,
    /// [P, D] final particles a_j = x_K.
    pub endpoints: Vec<f32>,
    /// [P, D] φ(a†_i) and its two parts (repulsion is zero for the `delta` field).
    pub field: Vec<f32>,
    pub attraction: Vec<f32>,
    pub repulsion: Vec<f32>,
    /// [P] Q(s, a_j) (mean over the critic's heads; the known reward in the toy).
    pub q: Vec<f32>,
    /// Q on a grid in the probe's 2-D view plane, when computed.
    pub q_map: Option<QMap>,
}

/// Q over a G×G grid of the plane centre + u·axis₀ + v·axis₁, u, v ∈ [−extent, extent].
#[derive(Debug, Clone)]
pub struct QMap {
    pub grid: usize,
    pub extent: f32,
    /// [G, G] row-major: row i ↔ v_i, column j ↔ u_j (both ascending).
    pub values: Vec<f32>,
}

/// A linear 2-D view of the D-dimensional action space: p = axes·(a − centre).
#[derive(Debug, Clone)]
pub struct PlaneView {
    /// [D]
    pub centre: Vec<f32>,
    /// [2, D] orthonormal rows.
    pub axes: Vec<f32>,
    /// Half-width of the Q map around the centre, in plane units.
    pub extent: f32,
    /// How the axes were chosen (shown in the recording).
    pub description: String,
}

impl PlaneView {
    /// The first two coordinates (the toy's 2-D actions).
    pub fn identity(numbers: usize) -> Self {
        let mut axes = vec![0.0; 2 * numbers];
        axes[0] = 1.0;
        if numbers > 1 {
            axes[numbers + 1] = 1.0;
        }
        Self { centre: vec![0.0; numbers], axes, extent: 1.0, description: "axes: action dimensions 0 and 1".into() }
    }

    /// Principal axes of a set of particles [P, D] (centre = their mean). Falls back to
    /// the first two coordinates when the particles span less than two directions.
    pub fn principal(particles: &Tensor) -> Self {
        let (p, d) = (particles.size()[0], particles.size()[1] as usize);
        let particles = particles.to_kind(Kind::Float).to_device(tch::Device::Cpu);
        let centre = particles.mean_dim(0, true, Kind::Float);
        let centred = &particles - &centre;
        let (_, s, v) = centred.svd(true, true); // v: [D, min(P, D)]
        let singular: Vec<f32> = Vec::try_from(&s).unwrap_or_default();
        if p < 3 || d < 2 || singular.len() < 2 || singular[1] <= 1e-6 * singular[0].max(1e-12) {
            let mut view = Self::identity(d);
            view.centre = Vec::try_from(&centre.view([-1])).expect("float");
            view.description = "axes: action dimensions 0 and 1 (particles too few or collinear for PCA)".into();
            return view;
        }
        let axes_t = v.tr().narrow(0, 0, 2).contiguous(); // [2, D]
        let axes: Vec<f32> = Vec::try_from(&axes_t.view([-1])).expect("float");
        let total: f32 = singular.iter().map(|x| x * x).sum();
        let explained = (singular[0].powi(2) + singular[1].powi(2)) / total.max(1e-12);
        // Q map extent: 1.5 × the farthest particle from the centre along either axis.
        let farthest = centred.matmul(&axes_t.tr()).abs().max().double_value(&[]) as f32;
        Self {
            centre: Vec::try_from(&centre.view([-1])).expect("float"),
            axes,
            extent: (1.5 * farthest).max(1e-3),
            description: format!(
                "axes: the first two principal directions of this state's first {p} particles \
                 ({:.0}% of their variance), fixed for the run",
                100.0 * explained
            ),
        }
    }

    /// Projects a point [D] onto the plane: (u, v).
    pub fn project_point(&self, a: &[f32]) -> [f32; 2] {
        let d = self.centre.len();
        let mut out = [0.0; 2];
        for (r, o) in out.iter_mut().enumerate() {
            *o = (0..d).map(|i| self.axes[r * d + i] * (a[i] - self.centre[i])).sum();
        }
        out
    }

    /// Projects a vector [D] (no centring): (u, v).
    pub fn project_vector(&self, v: &[f32]) -> [f32; 2] {
        let d = self.centre.len();
        let mut out = [0.0; 2];
        for (r, o) in out.iter_mut().enumerate() {
            *o = (0..d).map(|i| self.axes[r * d + i] * v[i]).sum();
        }
        out
    }

    /// The grid points [G·G, D] of a Q map (row-major over v, then u).
    pub fn grid(&self, grid: usize, extent: f32) -> Tensor {
        let d = self.centre.len();
        let mut points = Vec::with_capacity(grid * grid * d);
        let step = |i: usize| -extent + 2.0 * extent * i as f32 / (grid.max(2) - 1) as f32;
        for i in 0..grid {
            for j in 0..grid {
                let (u, v) = (step(j), step(i));
                points.extend((0..d).map(|k| self.centre[k] + u * self.axes[k] + v * self.axes[d + k]));
            }
        }
        Tensor::from_slice(&points).view([(grid * grid) as i64, d as i64])
    }
}

fn to_vec(t: &Tensor) -> Vec<f32> {
    Vec::try_from(&t.to_kind(Kind::Float).to_device(tch::Device::Cpu).contiguous().view([-1])).expect("float tensor")
}

/// Q on a `grid`×`grid` grid of the view's plane (±`view.extent`). `q_value`: actions
/// [N, D] → Q [N].
pub fn q_map(view: &PlaneView, grid: usize, q_value: &dyn Fn(&Tensor) -> Tensor, device: tch::Device) -> QMap {
    let points = view.grid(grid, view.extent).to_device(device);
    QMap { grid, extent: view.extent, values: to_vec(&tch::no_grad(|| q_value(&points))) }
}

/// The snapshot of one state (without a Q map). `cond` [1, C] is its condition; `q_grad`
/// and `q_value` take actions [N, D] of this state → ∇_a Q [N, D] / Q [N].
pub fn snapshot(
    policy: &FlowPolicy,
    cond: &Tensor,
    q_grad: &dyn Fn(&Tensor) -> Tensor,
    q_value: &dyn Fn(&Tensor) -> Tensor,
    objective: &ActorObjective,
) -> ParticleSnapshot {
    let p = objective.particles;
    let cond = cond.detach().repeat_interleave_self_int(p, 0, None); // [P, C]
    let draws = ParticleDraws::new(policy, p, objective);
    let f = particle_field(policy, &cond, q_grad, objective, &draws);
    let q = tch::no_grad(|| q_value(&f.endpoints));
    ParticleSnapshot {
        particles: p as usize,
        numbers: f.endpoints.size()[1] as usize,
        denoising_steps: (f.chains.size()[0] - 1) as usize,
        chains: to_vec(&f.chains),
        queries: to_vec(&f.queries),
        query_t: to_vec(&f.t),
        endpoints: to_vec(&f.endpoints),
        field: to_vec(&f.field),
        attraction: to_vec(&f.attraction),
        repulsion: to_vec(&f.repulsion),
        q: to_vec(&q),
        q_map: None,
    }
}

/// Particle snapshots of the probe states with the current actor and critic (for the
/// recording). `planes` holds one view per probe; missing ones are fixed now, from
/// these particles. Uses the global RNG (call it where that does not matter).
pub fn probe_snapshots(
    rldt: &Rldt,
    probes: &ProbeStates,
    planes: &mut Vec<PlaneView>,
    q_map_grid: usize,
) -> Vec<ParticleSnapshot> {
    let obs = probes.obs(rldt.device());
    let (cond, features) = tch::no_grad(|| (rldt.actor.condition(&obs, false), rldt.critic.features(&obs, false)));
    let objective = &rldt.actor_settings.objective;
    (0..probes.count)
        .map(|i| {
            let cond_i = cond.narrow(0, i as i64, 1);
            let features_i = features.narrow(0, i as i64, 1);
            let rows = |a: &Tensor| features_i.expand([a.size()[0], -1], false);
            let q_grad = |a: &Tensor| rldt.q_gradient(&rows(a), a);
            let q_value = |a: &Tensor| rldt.q_value(&rows(a), a);
            let mut snap = snapshot(&rldt.actor, &cond_i, &q_grad, &q_value, objective);
            if planes.len() <= i {
                let d = snap.numbers as i64;
                planes.push(PlaneView::principal(&Tensor::from_slice(&snap.endpoints).view([-1, d])));
            }
            if q_map_grid > 0 {
                snap.q_map = Some(q_map(&planes[i], q_map_grid, &q_value, rldt.device()));
            }
            snap
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn principal_axes_follow_the_spread_of_the_particles() {
        // Points along (1, 1, 0)/√2 with a little spread along z: the first axis is ±(1,1,0)/√2.
        let pts = Tensor::from_slice(&[0.0f32, 0.0, 0.0, 1.0, 1.0, 0.1, 2.0, 2.0, -0.1, 3.0, 3.0, 0.05]).view([4, 3]);
        let view = PlaneView::principal(&pts);
        let a0 = &view.axes[0..3];
        let s = std::f32::consts::FRAC_1_SQRT_2;
        assert!((a0[0].abs() - s).abs() < 1e-3 && (a0[1].abs() - s).abs() < 1e-3 && a0[2].abs() < 0.05, "{a0:?}");
        assert!(view.centre.iter().zip([1.5, 1.5, 0.0125]).all(|(a, b)| (a - b).abs() < 1e-6), "{:?}", view.centre);
        // The centre projects to the origin; a unit step along axis 0 to (1, 0).
        let centre = view.centre.clone();
        assert!(view.project_point(&centre).iter().all(|x| x.abs() < 1e-6));
        let p = view.project_vector(a0);
        assert!((p[0] - 1.0).abs() < 1e-5 && p[1].abs() < 1e-5, "{p:?}");
    }

    #[test]
    fn collinear_particles_fall_back_to_the_first_two_dimensions() {
        let pts = Tensor::from_slice(&[0.0f32, 0.0, 1.0, 0.0, 2.0, 0.0]).view([3, 2]);
        let view = PlaneView::principal(&pts);
        assert_eq!(view.axes, vec![1.0, 0.0, 0.0, 1.0]);
        assert!(view.description.contains("collinear"));
    }

    #[test]
    fn the_grid_spans_the_plane_row_major_over_v_then_u() {
        let view = PlaneView::identity(2);
        let grid: Vec<f32> = Vec::try_from(&view.grid(3, 1.0).view([-1])).unwrap();
        assert_eq!(&grid[0..6], &[-1.0, -1.0, 0.0, -1.0, 1.0, -1.0]);
        assert_eq!(&grid[12..18], &[-1.0, 1.0, 0.0, 1.0, 1.0, 1.0]);
    }
}

#[cfg(test)]
mod q_map_tests {
    use super::*;

    /// Q(a) = −‖a − (0.5, −0.5)‖²: on a 5×5 grid of ±1 the maximum is at u = 0.5, v = −0.5,
    /// i.e. row 1 (v ascending: −1, −0.5, …), column 3.
    #[test]
    fn the_q_map_puts_q_at_its_grid_points() {
        let view = PlaneView::identity(2);
        let target = Tensor::from_slice(&[0.5f32, -0.5]).view([1, 2]);
        let q = |a: &Tensor| -(a - &target).square().sum_dim_intlist(-1, false, Kind::Float);
        let map = q_map(&view, 5, &q, tch::Device::Cpu);
        let best = map.values.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0;
        assert_eq!((best / 5, best % 5), (1, 3), "{:?}", map.values);
        assert_eq!(map.values[5 + 3], 0.0);
    }
}
