//! The paper's figure as an experiment: 2-D actions, a flow policy pretrained on a bimodal
//! distribution, a known reward with two peaks used as Q, then RLDT actor updates (§4–§5).
//! With the SVGD field the samples should move onto the peaks while both modes survive; the
//! `delta` field is the ablation. `rldt-vision toy` runs it and prints the report; a test
//! asserts the SVGD outcome.
//!
//! Everything lives in the normalised action space (identity statistics). The state is a
//! constant (one low-dim number, no camera).
//! Data: ½·N((−0.5, 0), 0.08²I) + ½·N((0.5, 0), 0.08²I); pretraining must really learn two
//! clusters (`PRETRAIN_LR`), or the modes' split is not stable under any field.
//! Q(a) = Σ_c exp(−‖a − c‖² / (2σ²)), peaks c = (±0.5, 0.45), σ = 0.15, so
//! ∇Q(a) = Σ_c −(a − c)/σ² · exp(−‖a − c‖² / (2σ²)).

use rldt_datasets::batch::DatasetStats;
use rldt_datasets::{MinMax, ObsSpec};
use rldt_encoders::{Augmentation, BackboneConfig, EncoderConfig};
use serde::Serialize;
use tch::{nn, Device, Kind, Tensor};

use crate::optim::{warmup_cosine, AdamW};
use crate::policy::{FlowPolicy, ObsBatch, PolicyConfig, PolicySpec, VelocityHeadConfig};
use crate::rl::actor::{actor_objective, ActorObjective, BandwidthKind, FieldKind};
use crate::viz::probe::{q_map, snapshot, PlaneView};
use crate::viz::Recorder;

pub const PEAKS: [[f64; 2]; 2] = [[-0.5, 0.45], [0.5, 0.45]];
pub const PEAK_WIDTH: f64 = 0.15;
/// A sample "lies near a peak" within this distance.
pub const NEAR: f64 = 0.15;

/// Flow-matching pretraining: cosine schedule from this learning rate down to `PRETRAIN_LR_END`.
/// 1e-3 (constant, or cosine from 1e-3) leaves, after 1,500 steps, a smeared band between the
/// modes instead of two clusters, and RLDT then drifts all mass to one side in some seeds
/// (measured with constant 1e-3: 2 of 8).
pub const PRETRAIN_LR: f64 = 1e-2;
pub const PRETRAIN_LR_END: f64 = 1e-5;

/// What a cloud of samples [N, 2] looks like against the two peaks.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct CloudStats {
    /// Share within `NEAR` of a peak.
    pub near_peak: f64,
    /// Share with x < 0 (the left mode); the right mode holds the rest.
    pub left_share: f64,
    /// Share in the gap between the data's modes, |x| < 0.25 (≈ 3σ from either; the data
    /// put < 0.2% there).
    pub gap_share: f64,
    /// Root-mean-square distance of the near-peak samples to their peak (diversity within a
    /// mode; 0 when none is near).
    pub peak_spread: f64,
    pub mean_q: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ToyReport {
    /// `svgd` or `delta` (RLDT's fields), or `reinflow` / `fpo` (`crate::toy_baselines`).
    pub method: String,
    pub seed: i64,
    /// Before fine-tuning.
    pub pretrained: CloudStats,
    /// After fine-tuning.
    pub finetuned: CloudStats,
    pub actor_steps: i64,
    /// (actor step, share near a peak, share with x < 0) of 512 samples at every snapshot
    /// point (every `record_every` steps, or every ReinFlow iteration), recorded or not.
    pub history: Vec<(i64, f64, f64)>,
}

impl ToyReport {
    /// The smaller of the two modes' shares after fine-tuning.
    pub fn minority_share(&self) -> f64 {
        self.finetuned.left_share.min(1.0 - self.finetuned.left_share)
    }
}

/// One toy run's settings; the command line's `rldt-vision toy` flags are these fields (the
/// field and the seed come from its `--fields` and `--seeds` lists).
#[derive(Debug, Clone, clap::Args)]
pub struct ToyOptions {
    #[arg(skip = FieldKind::Svgd)]
    pub field: FieldKind,
    #[arg(skip)]
    pub seed: i64,
    /// Flow-matching steps on the bimodal data before the RLDT steps.
    #[arg(long, default_value_t = 1500)]
    pub pretrain_steps: i64,
    #[arg(long, default_value_t = 300)]
    pub actor_steps: i64,
    #[arg(long, default_value_t = 1e-3)]
    pub actor_lr: f64,
    /// Reset v_ref to the current policy every N actor steps (the paper's per-iteration
    /// reset); 0 keeps the pretrained policy as the frozen reference.
    #[arg(long, default_value_t = 10)]
    pub reference_every: i64,
    #[arg(skip = 16i64)]
    pub states_per_step: i64,
    #[arg(skip = 2000i64)]
    pub samples: i64,
    /// α(s) = scale × mean ‖∇Q‖ (paper: 0.001).
    #[arg(long, default_value_t = 0.001)]
    pub temperature_scale: f64,
    /// Loss weights (paper: 0.5 and 0.2).
    #[arg(long, default_value_t = 0.5)]
    pub consistency_weight: f64,
    #[arg(long, default_value_t = 0.2)]
    pub constraint_weight: f64,
    /// A fixed kernel bandwidth h instead of the median rule.
    #[arg(long)]
    pub fixed_bandwidth: Option<f64>,
    /// Denoising steps k at which a† is queried (paper: all, 0..7).
    #[arg(long, value_delimiter = ',', default_value = "0,1,2,3,4,5,6,7")]
    pub query_steps: Vec<i64>,
    /// Particle chains per state (paper: 8).
    #[arg(long, default_value_t = 8)]
    pub particles: i64,
    /// Snapshot the particles every this many actor steps (for the recording). The global
    /// RNG is reseeded after each snapshot point whether recording or not, so a run gives
    /// the same samples with recording on and off.
    #[arg(long, default_value_t = 10)]
    pub record_every: i64,
}

impl ToyOptions {
    /// The defaults of the command line (the paper's settings where it has them).
    pub fn new(field: FieldKind, seed: i64) -> Self {
        #[derive(clap::Parser)]
        struct Defaults {
            #[command(flatten)]
            options: ToyOptions,
        }
        let defaults = <Defaults as clap::Parser>::parse_from(["toy"]).options;
        Self { field, seed, ..defaults }
    }
}

/// Q and ∇Q of the two-peak reward: a [N, 2] → ([N], [N, 2]).
pub fn q_and_grad(a: &Tensor) -> (Tensor, Tensor) {
    let mut q = a.select(1, 0).zeros_like();
    let mut grad = a.zeros_like();
    for c in PEAKS {
        let centre = Tensor::from_slice(&[c[0] as f32, c[1] as f32]).to_device(a.device()).view([1, 2]);
        let diff = a - &centre;
        let bump = (diff.square().sum_dim_intlist(-1, false, Kind::Float) / (-2.0 * PEAK_WIDTH * PEAK_WIDTH)).exp();
        grad = grad - diff * bump.unsqueeze(-1) / (PEAK_WIDTH * PEAK_WIDTH);
        q = q + bump;
    }
    (q, grad)
}

pub fn toy_spec() -> PolicySpec {
    PolicySpec {
        config: PolicyConfig {
            obs_horizon: 1,
            pred_horizon: 1,
            exec_horizon: 1,
            num_denoising_steps: 8,
            encoder: EncoderConfig {
                backbone: BackboneConfig::Resnet18 { width: 16, num_keypoints: 8, feature_dim: 8 },
                augmentation: Augmentation::None,
                share_across_cameras: true,
            },
            velocity_head: VelocityHeadConfig { time_embed_dim: 32, hidden_dim: 128, num_residual_blocks: 1 },
        },
        obs: ObsSpec { image_keys: vec![], lowdim_keys: vec!["state".into()] },
        image_size: 0,
        proprio_dim: 1,
        action_dim: 2,
        stats: DatasetStats {
            proprio: MinMax { min: vec![0.0], max: vec![0.0] },
            actions: MinMax { min: vec![-1.0, -1.0], max: vec![1.0, 1.0] },
        },
    }
}

pub fn constant_states(b: i64) -> ObsBatch {
    ObsBatch { images: vec![], proprio: Tensor::zeros([b, 1, 1], (Kind::Float, Device::Cpu)) }
}

/// Endpoints of `n` fresh samples: [n, 2].
pub fn sample(policy: &FlowPolicy, n: i64) -> Tensor {
    tch::no_grad(|| {
        let cond = policy.condition(&constant_states(n), false);
        policy.sample_chain(&cond, &policy.initial_noise(n, false)).get(policy.spec().config.num_denoising_steps)
    })
}

/// Statistics of samples [n, 2].
pub fn describe(samples: &Tensor) -> CloudStats {
    let distances: Vec<Tensor> = PEAKS
        .iter()
        .map(|c| {
            let centre = Tensor::from_slice(&[c[0] as f32, c[1] as f32]).view([1, 2]);
            (samples - centre).norm_scalaropt_dim(2.0, [-1], false)
        })
        .collect();
    let nearest = distances[0].minimum(&distances[1]); // [n]
    let near = nearest.le(NEAR);
    let share = |mask: &Tensor| mask.to_kind(Kind::Float).mean(Kind::Float).double_value(&[]);
    let near_count = near.to_kind(Kind::Float).sum(Kind::Float).double_value(&[]);
    let peak_spread = if near_count > 0.0 {
        (nearest.square().masked_select(&near).sum(Kind::Float).double_value(&[]) / near_count).sqrt()
    } else {
        0.0
    };
    let x = samples.select(1, 0);
    CloudStats {
        near_peak: share(&near),
        left_share: share(&x.lt(0.0)),
        gap_share: share(&x.abs().lt(0.25)),
        peak_spread,
        mean_q: q_and_grad(samples).0.mean(Kind::Float).double_value(&[]),
    }
}

/// Samples shown per snapshot in the recording (`toy/samples`).
const RECORDED_SAMPLES: i64 = 256;

/// Records the particles of the constant state and a sample cloud at actor step `step`.
fn record_snapshot(recorder: &Recorder, policy: &FlowPolicy, objective: &ActorObjective, plane: &PlaneView, step: i64) {
    recorder.set_time(step, None);
    let cond = tch::no_grad(|| policy.condition(&constant_states(1), false));
    let q_grad = |a: &Tensor| q_and_grad(a).1;
    let q_value = |a: &Tensor| q_and_grad(a).0;
    let mut snap = snapshot(policy, &cond, &q_grad, &q_value, objective);
    if step == 0 {
        // Q is known and fixed here: its map is recorded once (it stays shown).
        snap.q_map = Some(q_map(plane, 41, &q_value, Device::Cpu));
    }
    recorder.probe(0, &snap, plane, None);
    let cloud: Vec<f32> = Vec::try_from(&sample(policy, RECORDED_SAMPLES).contiguous().view([-1])).expect("float");
    let cloud: Vec<[f32; 2]> = cloud.chunks(2).map(|c| [c[0], c[1]]).collect();
    recorder.toy_samples(&cloud, &PEAKS.map(|c| [c[0] as f32, c[1] as f32]));
}

/// Flow-matching pretraining of `policy` (variables in `vs`) on the bimodal data.
pub fn pretrain_bimodal(vs: &nn::VarStore, policy: &FlowPolicy, steps: i64) {
    let mut optimizer = AdamW::new(vs, 0.9, 0.999, 1e-8, 0.0);
    let batch = 256;
    for step in 0..steps {
        let side = Tensor::randint(2, [batch, 1], (Kind::Int64, Device::Cpu)).to_kind(Kind::Float) * 1.0 - 0.5;
        let centre = Tensor::cat(&[side, Tensor::zeros([batch, 1], (Kind::Float, Device::Cpu))], 1);
        let actions = (centre + Tensor::randn([batch, 2], (Kind::Float, Device::Cpu)) * 0.08).view([batch, 1, 2]);
        optimizer.zero_grad();
        policy.flow_loss(&constant_states(batch), &actions, true).backward();
        optimizer.step(warmup_cosine(step, steps, 0, PRETRAIN_LR, PRETRAIN_LR_END));
    }
}

/// Pretrains on the bimodal data, then runs RLDT actor steps with the known Q. With a
/// recorder that is on, the particles are recorded every `record_every` actor steps.
pub fn run_toy(options: &ToyOptions, recorder: &Recorder) -> ToyReport {
    tch::manual_seed(options.seed);
    let vs = nn::VarStore::new(Device::Cpu);
    let policy = FlowPolicy::new(&vs.root(), toy_spec()).expect("toy spec is valid");
    let mut reference_vs = nn::VarStore::new(Device::Cpu);
    let reference = FlowPolicy::new(&reference_vs.root(), toy_spec()).expect("toy spec is valid");

    pretrain_bimodal(&vs, &policy, options.pretrain_steps);
    let pretrained = describe(&sample(&policy, options.samples));

    // RLDT actor steps with Q known: Adam, linear warm-up, v_ref reset periodically.
    let mut actor_optimizer = AdamW::new(&vs, 0.9, 0.999, 1e-8, 0.0);
    let objective = ActorObjective {
        field: options.field,
        temperature_scale: options.temperature_scale,
        consistency_weight: options.consistency_weight,
        constraint_weight: options.constraint_weight,
        bandwidth: if options.fixed_bandwidth.is_some() { BandwidthKind::Fixed } else { BandwidthKind::Median },
        fixed_bandwidth: options.fixed_bandwidth.unwrap_or(1.0),
        query_steps: options.query_steps.clone(),
        particles: options.particles,
        ..ActorObjective::paper()
    };
    let q_grad = |a: &Tensor| q_and_grad(a).1;
    let plane = PlaneView::identity(2);
    crate::viz::layout::toy(recorder);
    recorder.probe_axes(
        0,
        &plane,
        None,
        "The toy's one constant state: 2-D actions, Q = two Gaussian bumps at (±0.5, 0.45) (the heat map).",
    );
    let mut history = Vec::new();
    for step in 0..=options.actor_steps {
        if options.record_every > 0 && (step % options.record_every == 0 || step == options.actor_steps) {
            if recorder.is_on() {
                record_snapshot(recorder, &policy, &objective, &plane, step);
            }
            let cloud = describe(&sample(&policy, 512));
            history.push((step, cloud.near_peak, cloud.left_share));
            tch::manual_seed(options.seed.wrapping_mul(1_000_003).wrapping_add(step));
        }
        if step == options.actor_steps {
            break;
        }
        if step == 0 || (options.reference_every > 0 && step % options.reference_every == 0) {
            reference_vs.copy(&vs).expect("same variables");
        }
        actor_optimizer.zero_grad();
        let q_grad_rows = |a: &Tensor, _first_row: i64| q_grad(a);
        actor_objective(&policy, &reference, &constant_states(options.states_per_step), &q_grad_rows, &objective, 1);
        let warmup = ((step + 1) as f64 / 64.0).min(1.0);
        actor_optimizer.step(options.actor_lr * warmup);
    }
    ToyReport {
        method: if options.field == FieldKind::Svgd { "svgd" } else { "delta" }.into(),
        seed: options.seed,
        pretrained,
        finetuned: describe(&sample(&policy, options.samples)),
        actor_steps: options.actor_steps,
        history,
    }
}
