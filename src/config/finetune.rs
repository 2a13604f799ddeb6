//! The fine-tuning configs (`configs/finetune/*.json`): every setting explicit,
//! `deny_unknown_fields`, relations checked with the field named. The policy's architecture
//! (encoder resnet | vit, horizons, K) comes from the pretrained checkpoint. The top-level
//! `algorithm` field picks the config type: `rldt` ([`FinetuneConfig`], docs/algorithm.md
//! §3–§7), or an on-policy baseline, `reinflow`, `fpo` or `dppo` ([`OnPolicyConfig`],
//! docs/baselines.md); [`Algorithm::of_file`] reads it first.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
pub use crate::rl::actor::{ActorObjective, ActorSettings, ReferencePolicy};
pub use crate::rl::critic::CriticSettings;
use crate::sim::Task;

/// The fine-tuning algorithm of a config (its top-level `algorithm` field).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Algorithm {
    /// RLDT: SVGD transport through a† (or its `delta` ablation), docs/algorithm.md.
    Rldt,
    /// QAM: adjoint matching toward π_base·exp(λ·Q) in RLDT's loop with RLDT's critic
    /// (`actor.adjoint_matching`), docs/baselines.md.
    Qam,
    /// ReinFlow: PPO over a noise-injected Euler chain, docs/baselines.md.
    Reinflow,
    /// FPO++: PPO-style updates with per-sample flow-matching-loss ratios, docs/baselines.md.
    Fpo,
    /// DPPO on a flow policy: PPO per denoising step with a fixed σ, docs/baselines.md.
    Dppo,
}

impl Algorithm {
    /// The `algorithm` field of a config file, named in the error when absent or unknown.
    pub fn of_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(crate::error::io_at(path))?;
        let config_error = |message: String| Error::Config { file: path.into(), message };
        let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| config_error(e.to_string()))?;
        let field = value
            .get("algorithm")
            .ok_or_else(|| config_error("field `algorithm` is missing (rldt | qam | reinflow | fpo | dppo)".into()))?;
        serde_json::from_value(field.clone()).map_err(|e| config_error(format!("field `algorithm`: {e}")))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FinetuneConfig {
    /// `rldt`, or `qam` (with `actor.adjoint_matching`).
    pub algorithm: Algorithm,
    pub name: String,
    pub seed: u64,
    /// Pretraining run or checkpoint directory (`--pretrained` overrides); its EMA weights
    /// are loaded.
    pub pretrained: PathBuf,
    pub env: EnvSettings,
    pub rollout: RolloutSettings,
    pub schedule: ScheduleSettings,
    pub evaluation: EvaluationSettings,
    pub critic: CriticSettings,
    pub actor: ActorSettings,
    pub checkpoint: CheckpointSettings,
    pub recording: RecordingSettings,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvSettings {
    pub task: Task,
    /// Steps per episode (paper Square: 400, Transport: 800).
    pub horizon: usize,
    /// false: episodes run their full length and the success mask removes the steps after
    /// success (the paper); true: robomimic's stop at success.
    pub stop_on_success: bool,
    pub mujoco_gl: String,
    pub init_timeout_s: f64,
    pub step_timeout_s: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutSettings {
    /// Parallel simulator workers (paper: 64).
    pub envs: usize,
    /// Episodes per env per iteration (paper: 2); each is one trajectory.
    pub episodes_per_env: usize,
    /// Denoising steps k whose extrapolation gap scales exploration noise (paper: [6, 7]).
    pub exploration_steps: Vec<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleSettings {
    pub iterations: usize,
    /// Iteration 0 and every `eval_every`-th are evaluation only (no exploration, no updates).
    pub eval_every: usize,
    /// Rounds per iteration (paper: 16), each: a critic batch, critic steps, actor steps.
    pub rounds: usize,
    pub critic_steps_per_round: usize,
    pub actor_steps_per_round: usize,
    /// Actor steps start at this iteration (before it: critic warm-up; paper: 3).
    pub actor_start_iteration: usize,
    /// Trajectories per critic batch (paper: 128), `fresh_fraction` from this iteration, the
    /// rest from the replay, half successful and half not where possible.
    pub critic_batch_trajectories: usize,
    pub fresh_fraction: f64,
    /// Trajectories whose unmasked states form an actor batch (paper: 16).
    pub actor_batch_trajectories: usize,
    /// Replay capacity in trajectories (paper: 1,280).
    pub replay_trajectories: usize,
}

/// The in-run evaluation of evaluation iterations (`schedule.eval_every`): plain ODE samples on
/// a fixed list of episode seeds, the same episodes `rldt-vision eval --seed first_seed
/// --episodes episodes` runs (full-length episodes here; success = any successful step).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvaluationSettings {
    /// Episodes per evaluation (paper: 128; ≥ 100 so that the 95% interval is ±10 points or
    /// less).
    pub episodes: usize,
    /// Episode e uses simulator seed `first_seed + e` at every evaluation (`eval`'s default:
    /// 100,000, apart from the training rounds' seeds).
    pub first_seed: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointSettings {
    /// Iterations between checkpoints (and after the last).
    pub every: usize,
    pub keep: usize,
}

/// What the rerun recording holds (`viz`; `--no-record` turns it off).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordingSettings {
    /// Fixed states from the first evaluation whose particles are recorded every iteration.
    pub probe_states: usize,
    /// Q on a grid of this many points per side in each probe's 2-D plane (0 = none).
    pub q_map_grid: usize,
    /// Rollout camera frames + executed actions: every this many chunks of one episode per
    /// iteration (0 = none).
    pub rollout_frame_every: usize,
    /// Action numbers of the probes' 3-D view (default: the first step's dx, dy, dz).
    pub view_3d_dims: [usize; 3],
}

impl FinetuneConfig {
    pub fn load(path: &Path) -> Result<Self> {
        super::load_validated(path, Self::validate)
    }

    pub fn validate(&self) -> std::result::Result<(), String> {
        let (r, s, c, a) = (&self.rollout, &self.schedule, &self.critic, &self.actor);
        let d = self.recording.view_3d_dims;
        let qam = self.algorithm == Algorithm::Qam;
        let checks: [(bool, &str, String); 25] = [
            (
                matches!(self.algorithm, Algorithm::Rldt | Algorithm::Qam),
                "algorithm",
                "must be `rldt` or `qam` for this config type".into(),
            ),
            (
                qam == a.adjoint_matching.is_some(),
                "actor.adjoint_matching",
                "present exactly when `algorithm` is qam".into(),
            ),
            (
                a.adjoint_matching.as_ref().is_none_or(|q| q.inverse_temperature > 0.0 && q.denoising_steps >= 2),
                "actor.adjoint_matching",
                "inverse_temperature > 0 and denoising_steps ≥ 2".into(),
            ),
            (!self.name.is_empty() && !self.name.contains('/'), "name", "must be non-empty without '/'".into()),
            (r.envs >= 1 && r.episodes_per_env >= 1, "rollout.envs", "envs and episodes_per_env must be ≥ 1".into()),
            (
                !r.exploration_steps.is_empty() && r.exploration_steps.iter().all(|&k| k >= 0),
                "rollout.exploration_steps",
                "a non-empty list of steps ≥ 0".into(),
            ),
            (self.env.horizon >= 1, "env.horizon", "must be ≥ 1".into()),
            (
                s.iterations >= 1 && s.eval_every >= 1,
                "schedule.iterations",
                "iterations and eval_every must be ≥ 1".into(),
            ),
            (s.rounds >= 1, "schedule.rounds", "must be ≥ 1".into()),
            (self.evaluation.episodes >= 1, "evaluation.episodes", "must be ≥ 1".into()),
            (
                s.critic_batch_trajectories >= 2,
                "schedule.critic_batch_trajectories",
                "must be ≥ 2 (one half per critic head)".into(),
            ),
            ((0.0..=1.0).contains(&s.fresh_fraction), "schedule.fresh_fraction", "must be in [0, 1]".into()),
            (s.actor_batch_trajectories >= 1, "schedule.actor_batch_trajectories", "must be ≥ 1".into()),
            (
                s.replay_trajectories >= s.critic_batch_trajectories,
                "schedule.replay_trajectories",
                "must hold at least one critic batch".into(),
            ),
            (
                (0.0..=1.0).contains(&c.gamma) && (0.0..=1.0).contains(&c.lambda),
                "critic.gamma",
                "gamma and lambda must be in [0, 1]".into(),
            ),
            (c.heads_lr > 0.0 && c.encoder_lr >= 0.0, "critic.heads_lr", "heads_lr > 0 and encoder_lr ≥ 0".into()),
            (
                (0.0..1.0).contains(&c.target_ema) && c.target_samples >= 1,
                "critic.target_ema",
                "target_ema in [0, 1) and target_samples ≥ 1".into(),
            ),
            (c.mini_batch_split >= 1, "critic.mini_batch_split", "must be ≥ 1 (1 = one pass)".into()),
            (c.heads >= 1, "critic.heads", "must be ≥ 1".into()),
            (
                match c.target_over_heads {
                    crate::rl::critic::TargetOverHeads::Min => true,
                    crate::rl::critic::TargetOverHeads::MeanMinusStd(rho) => rho.is_finite() && rho >= 0.0,
                },
                "critic.target_over_heads",
                "mean_minus_std's ρ must be finite and ≥ 0".into(),
            ),
            (a.mini_batch_split >= 1, "actor.mini_batch_split", "must be ≥ 1 (1 = one pass)".into()),
            (
                a.objective.particles >= if qam { 1 } else { 2 },
                "actor.objective.particles",
                "must be ≥ 2 (RLDT's field needs particles; QAM: ≥ 1 trajectory per state)".into(),
            ),
            (a.lr > 0.0, "actor.lr", "must be > 0".into()),
            (
                d[0] != d[1] && d[1] != d[2] && d[0] != d[2],
                "recording.view_3d_dims",
                "three different action numbers".into(),
            ),
            (
                self.checkpoint.every >= 1 && self.checkpoint.keep >= 1,
                "checkpoint.every",
                "every and keep must be ≥ 1".into(),
            ),
        ];
        super::first_failure(checks)
    }
}

/// An on-policy baseline's fine-tuning config (docs/baselines.md): the sections shared with
/// RLDT (`env`, `evaluation`, `checkpoint`), the on-policy rollout and schedule, the PPO
/// settings the baselines share, and the section of its algorithm (`reinflow`, `fpo` or
/// `dppo`; the others are absent).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OnPolicyConfig {
    /// `reinflow`, `fpo` or `dppo`.
    pub algorithm: Algorithm,
    pub name: String,
    pub seed: u64,
    /// Pretraining run or checkpoint directory (`--pretrained` overrides); its EMA weights
    /// are loaded.
    pub pretrained: PathBuf,
    pub env: EnvSettings,
    pub rollout: OnPolicyRolloutSettings,
    pub schedule: OnPolicySchedule,
    pub evaluation: EvaluationSettings,
    pub ppo: crate::rl::ppo::PpoSettings,
    /// ReinFlow's noisy chain (with `algorithm` = reinflow).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reinflow: Option<crate::rl::noisy_chain::NoisyChainSettings>,
    /// FPO++'s ratio settings (with `algorithm` = fpo).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fpo: Option<crate::rl::fpo::FpoSettings>,
    /// DPPO's chain and per-step clip settings (with `algorithm` = dppo).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dppo: Option<crate::rl::dppo::DppoSettings>,
    pub checkpoint: CheckpointSettings,
}

/// Rollouts of an on-policy iteration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OnPolicyRolloutSettings {
    /// Parallel simulator workers (authors' config: 64).
    pub envs: usize,
    /// Full-length episodes per env per iteration (authors': 200 chunks × 4 steps = 2 Square
    /// episodes of 400 steps).
    pub episodes_per_env: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OnPolicySchedule {
    pub iterations: usize,
    /// Iteration 0 and every `eval_every`-th are evaluation only (as RLDT's).
    pub eval_every: usize,
}

impl OnPolicyConfig {
    pub fn load(path: &Path) -> Result<Self> {
        super::load_validated(path, Self::validate)
    }

    pub fn validate(&self) -> std::result::Result<(), String> {
        let ppo = &self.ppo;
        let chain_ok = self.reinflow.as_ref().is_none_or(|c| {
            c.denoising_steps >= 1
                && 0.0 < c.noise_std[0]
                && c.noise_std[0] <= c.noise_std[1]
                && c.log_prob_clip[0] < c.log_prob_clip[1]
        });
        let fpo_ok = self.fpo.as_ref().is_none_or(|f| {
            f.samples_per_chunk >= 1 && f.log_ratio_clip > 0.0 && f.cfm_loss_clip.is_none_or(|cap| cap > 0.0)
        });
        let dppo_ok = self.dppo.as_ref().is_none_or(|c| {
            c.denoising_steps >= 1
                && c.std > 0.0
                && c.noise_clip > 0.0
                && c.log_prob_clip[0] < c.log_prob_clip[1]
                && 0.0 < c.denoising_discount
                && c.denoising_discount <= 1.0
                && 0.0 < c.first_step_clip_ratio
                && c.first_step_clip_ratio <= ppo.clip_ratio
                && c.clip_ratio_rate > 0.0
        });
        let sections = (self.algorithm, self.reinflow.is_some(), self.fpo.is_some(), self.dppo.is_some());
        let checks: [(bool, &str, String); 14] = [
            (
                matches!(
                    sections,
                    (Algorithm::Reinflow, true, false, false)
                        | (Algorithm::Fpo, false, true, false)
                        | (Algorithm::Dppo, false, false, true)
                ),
                "algorithm",
                "`reinflow`, `fpo` or `dppo` with its own section of that name, and no other method's section".into(),
            ),
            (!self.name.is_empty() && !self.name.contains('/'), "name", "must be non-empty without '/'".into()),
            (self.env.horizon >= 1, "env.horizon", "must be ≥ 1".into()),
            (
                self.rollout.envs >= 1 && self.rollout.episodes_per_env >= 1,
                "rollout.envs",
                "envs and episodes_per_env must be ≥ 1".into(),
            ),
            (
                self.schedule.iterations >= 1 && self.schedule.eval_every >= 1,
                "schedule.iterations",
                "iterations and eval_every must be ≥ 1".into(),
            ),
            (self.evaluation.episodes >= 1, "evaluation.episodes", "must be ≥ 1".into()),
            (
                chain_ok,
                "reinflow",
                "denoising_steps ≥ 1, 0 < noise_std[0] ≤ noise_std[1], log_prob_clip[0] < log_prob_clip[1]".into(),
            ),
            (fpo_ok, "fpo", "samples_per_chunk ≥ 1, log_ratio_clip > 0 and cfm_loss_clip null or > 0".into()),
            (
                dppo_ok,
                "dppo",
                "denoising_steps ≥ 1, std > 0, noise_clip > 0, log_prob_clip[0] < log_prob_clip[1], \
                 0 < denoising_discount ≤ 1, 0 < first_step_clip_ratio ≤ ppo.clip_ratio, clip_ratio_rate > 0"
                    .into(),
            ),
            (
                (0.0..=1.0).contains(&ppo.gamma) && (0.0..=1.0).contains(&ppo.gae_lambda),
                "ppo.gamma",
                "gamma and gae_lambda must be in [0, 1]".into(),
            ),
            (
                ppo.update_epochs >= 1 && ppo.minibatch_size >= 2,
                "ppo.update_epochs",
                "update_epochs ≥ 1 and minibatch_size ≥ 2".into(),
            ),
            (
                ppo.clip_ratio > 0.0 && ppo.max_grad_norm > 0.0,
                "ppo.clip_ratio",
                "clip_ratio and max_grad_norm must be > 0".into(),
            ),
            (ppo.actor_lr.lr > 0.0 && ppo.value_lr.lr > 0.0, "ppo.actor_lr", "learning rates must be > 0".into()),
            (
                self.checkpoint.every >= 1 && self.checkpoint.keep >= 1,
                "checkpoint.every",
                "every and keep must be ≥ 1".into(),
            ),
        ];
        super::first_failure(checks)
    }
}
