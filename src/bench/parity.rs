//! `rldt-vision bench parity --device cuda`: the same networks, weights and inputs on the CPU
//! and on the device, and the largest differences in what training computes: the encoder's
//! state features, a velocity, a K-step Euler chain's endpoint (from the same x_0), the
//! critic's Q, the TD loss and its gradient in every variable. Each difference is relative
//! to the largest magnitude on the CPU side; a quantity passes under `--tolerance` (default
//! 2e-2: cuDNN may run fp32 convolutions in TF32, ~1e-3 relative per layer). With `--device
//! cpu` both sides are the CPU: a run of the code path whose differences must be 0.

use std::path::PathBuf;

use serde_json::{json, Value};
use tch::{nn, Device, Kind, Tensor};

use crate::config::PretrainConfig;
use crate::device::DeviceChoice;
use crate::error::{Error, Result};
use crate::policy::{FlowPolicy, ObsBatch};
use crate::rl::critic::{Critic, HeadTrajectories};

/// The flags of `rldt-vision bench parity`.
#[derive(Debug, Clone, clap::Args)]
pub struct ParityOptions {
    /// Pretraining config whose networks are compared.
    #[arg(long, default_value = "configs/pretrain/square.json")]
    pub config: PathBuf,
    #[arg(long, default_value_t = 84)]
    pub image_size: usize,
    /// States in the compared batch.
    #[arg(long, default_value_t = 16)]
    pub batch: i64,
    #[arg(long, value_enum, default_value = "cuda")]
    pub device: DeviceChoice,
    #[arg(long, default_value_t = 2e-2)]
    pub tolerance: f64,
}

/// max |device − cpu| / max(|cpu|, 1e-6) over all entries.
fn relative_difference(cpu: &Tensor, other: &Tensor) -> f64 {
    let other = other.to_device(Device::Cpu).to_kind(Kind::Double);
    let cpu = cpu.to_kind(Kind::Double);
    let scale = cpu.abs().max().double_value(&[]).max(1e-6);
    (cpu - other).abs().max().double_value(&[]) / scale
}

/// Networks on one device with the CPU side's weights.
struct Side {
    policy_vs: nn::VarStore,
    policy: FlowPolicy,
    critic_vs: nn::VarStore,
    critic: Critic,
}

pub fn bench_parity(options: &ParityOptions) -> Result<Value> {
    let config = PretrainConfig::load(&options.config)?;
    let device = options.device.resolve()?;
    let spec = super::synthetic_spec(&config, options.image_size, 9, 7);
    let build = |device: Device| -> Result<Side> {
        let policy_vs = nn::VarStore::new(device);
        let policy = FlowPolicy::new(&policy_vs.root(), spec.clone())?;
        let critic_vs = nn::VarStore::new(device);
        let critic = Critic::new(&critic_vs.root(), &spec, 2).map_err(crate::policy::PolicyError::from)?;
        Ok(Side { policy_vs, policy, critic_vs, critic })
    };
    tch::manual_seed(0);
    let cpu = build(Device::Cpu)?;
    let mut other = build(device)?;
    let copy_error = |source| Error::Tch { path: options.config.clone(), source };
    other.policy_vs.copy(&cpu.policy_vs).map_err(copy_error)?;
    other.critic_vs.copy(&cpu.critic_vs).map_err(copy_error)?;

    // Inputs, made on the CPU and copied.
    let (b, s) = (options.batch, options.image_size as i64);
    let obs = ObsBatch {
        images: (0..spec.obs.image_keys.len())
            .map(|_| Tensor::randint(256, [b, spec.config.obs_horizon, s, s, 3], (Kind::Uint8, Device::Cpu)))
            .collect(),
        proprio: Tensor::rand([b, spec.config.obs_horizon, 9], (Kind::Float, Device::Cpu)) * 2.0 - 1.0,
    };
    let moved = |obs: &ObsBatch| ObsBatch {
        images: obs.images.iter().map(|i| i.to_device(device)).collect(),
        proprio: obs.proprio.to_device(device),
    };
    let d = cpu.policy.action_numbers();
    let exec = spec.config.exec_horizon * spec.action_dim;
    let x0 = Tensor::randn([b, d], (Kind::Float, Device::Cpu));
    let t = Tensor::full([b, 1], 0.5, (Kind::Float, Device::Cpu));
    let actions = Tensor::rand([b, exec], (Kind::Float, Device::Cpu)) * 2.0 - 1.0;
    let targets = Tensor::rand([b, 1], (Kind::Float, Device::Cpu));

    // What each side computes: features, velocity, chain endpoint, Q, TD loss, gradients.
    let k = spec.config.num_denoising_steps;
    let compute = |side: &Side, obs: &ObsBatch, on: Device| -> (Vec<Tensor>, Vec<(String, Tensor)>) {
        let forward = tch::no_grad(|| {
            let cond = side.policy.condition(obs, false);
            let velocity = side.policy.velocity(&x0.to_device(on), &t.to_device(on), &cond);
            let endpoint = side.policy.sample_chain(&cond, &x0.to_device(on)).get(k);
            (cond, velocity, endpoint)
        });
        let features = side.critic.features(obs, false);
        let q = side.critic.q_from_features(&features, &actions.to_device(on)); // [B, 2]
        let loss = Critic::td_loss(
            &q.unsqueeze(1),
            &targets.to_device(on),
            &targets.ones_like().to_device(on),
            HeadTrajectories::Interleaved,
        );
        loss.backward();
        let mut gradients: Vec<(String, Tensor)> =
            side.critic_vs.variables().into_iter().map(|(name, v)| (name, v.grad().copy())).collect();
        gradients.sort_by(|a, b| a.0.cmp(&b.0));
        (vec![forward.0, forward.1, forward.2, q.detach(), loss.detach()], gradients)
    };
    let (cpu_values, cpu_gradients) = compute(&cpu, &obs, Device::Cpu);
    let (values, gradients) = compute(&other, &moved(&obs), device);
    let names = ["state_features", "velocity", "chain_endpoint", "critic_q", "td_loss"];
    let mut report = serde_json::Map::new();
    let mut worst = 0.0f64;
    for (name, (a, b)) in names.iter().zip(cpu_values.iter().zip(&values)) {
        let difference = relative_difference(a, b);
        worst = worst.max(difference);
        report.insert(name.to_string(), json!(difference));
    }
    let (worst_name, gradient_difference) = cpu_gradients
        .iter()
        .zip(&gradients)
        .map(|((name, a), (_, b))| (name.clone(), relative_difference(a, b)))
        .fold((String::new(), 0.0f64), |best, (name, diff)| if diff > best.1 { (name, diff) } else { best });
    worst = worst.max(gradient_difference);
    report.insert("critic_gradient".into(), json!({"largest": gradient_difference, "variable": worst_name}));
    Ok(json!({
        "bench": "parity",
        "config": config.name,
        "device": crate::device::describe(device),
        "batch": b,
        "image_size": options.image_size,
        "relative_differences": report,
        "tolerance": options.tolerance,
        "pass": worst <= options.tolerance,
    }))
}
