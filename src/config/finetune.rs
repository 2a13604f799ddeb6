//! The fine-tuning config (`configs/finetune/*.json`, docs/algorithm.md §3–§7): every setting
//! explicit, `deny_unknown_fields`, relations checked with the field named. The policy's
//! architecture (encoder resnet | vit, horizons, K) comes from the pretrained checkpoint.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::Result;
pub use crate::rl::actor::{ActorObjective, ActorSettings, ReferencePolicy};
pub use crate::rl::critic::CriticSettings;
use crate::sim::Task;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FinetuneConfig {
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
        let checks: [(bool, &str, String); 18] = [
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
            (a.objective.particles >= 2, "actor.objective.particles", "must be ≥ 2".into()),
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
