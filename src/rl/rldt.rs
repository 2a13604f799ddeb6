//! `Rldt`: what RLDT trains and how, one update at a time (docs/algorithm.md §3–§5). It owns
//! the actor (the flow policy), the reference policy v_ref, the critic and its EMA target,
//! and one AdamW per VarStore. The loop that calls it is `train::finetune`.
//!
//! Critic batch (once per round, `rl::critic_batch`): N trajectories of T chunks, their
//!   images augmented once, 2 bootstrap samples a' per next state from the actor.
//! Critic step (one call = one gradient step on that batch):
//!   Q̄_{t+1} = clip(mean over the cached a' of min over target heads Q_target(s_{t+1}, a'), 0, 1)
//!   (QAM's ensemble: mean − ρ·std over the heads in place of min; `critic.target_over_heads`);
//!   G = TD(λ)(r', d', Q̄);
//!   loss = Σ_heads mean(mask·(Q_head(s_t, a_t) − G_t)²), head h on trajectories n ≡ h (mod H)
//!   (QAM: every head on every trajectory; `critic.head_trajectories`), its gradient
//!   accumulated over `mini_batch_split` parts; target ← EMA after the step.
//! Actor step: the objective of `rl::actor` on all unmasked states of the given trajectories,
//! with ∇_a Q = the mean of the online heads' gradients at the particles (QAM: the
//! adjoint-matching objective of `rl::adjoint_matching` instead, same loop, ∇_a Q from the
//! target critic's heads when `actor.adjoint_matching.q_gradient_from_target` is set).

use std::path::Path;

use serde::Serialize;
use tch::{nn, Device, Kind, Tensor};

use super::actor::{actor_objective, ActorStats};
use super::actor::{ActorSettings, ReferencePolicy};
use super::adjoint_matching::adjoint_matching_objective;
use super::critic::CriticSettings;
use super::critic::{init_encoder_from_actor, Critic};
use super::critic_batch::CriticBatch;
use super::trajectory::Trajectory;
use crate::error::{Error, Result};
use crate::optim::ema::Ema;
use crate::optim::AdamW;
use crate::policy::checkpoint::{self, Weights};
use crate::policy::FlowPolicy;

#[derive(Debug, Clone, Default, Serialize)]
pub struct CriticStats {
    pub td_loss: f64,
    /// Means over the entries the loss reads (mask > 0): Q of both heads, and G.
    pub q_mean: f64,
    pub target_mean: f64,
    /// Mean Q̄_{t+1} where a read target uses it.
    pub next_value_mean: f64,
}

pub struct Rldt {
    pub actor_vs: nn::VarStore,
    pub actor: FlowPolicy,
    pub reference_vs: nn::VarStore,
    pub reference: FlowPolicy,
    pub critic_vs: nn::VarStore,
    pub critic: Critic,
    pub target_vs: nn::VarStore,
    pub target: Critic,
    target_ema: Ema,
    pub actor_optimizer: AdamW,
    pub critic_optimizer: AdamW,
    critic_settings: CriticSettings,
    pub actor_settings: ActorSettings,
    /// Actor steps taken (for the learning-rate warm-up).
    pub actor_steps: i64,
}

fn tch_error(path: &Path) -> impl Fn(tch::TchError) -> Error + '_ {
    move |source| Error::Tch { path: path.into(), source }
}

impl Rldt {
    /// Actor and reference from the pretrained checkpoint's EMA weights; critic encoder
    /// initialised from the actor's; target = critic.
    pub fn new(
        pretrained: &Path,
        critic_settings: &CriticSettings,
        actor_settings: &ActorSettings,
        device: Device,
    ) -> Result<Self> {
        let (actor_vs, mut actor) = checkpoint::load(pretrained, Weights::Ema, device)?;
        let (reference_vs, mut reference) = checkpoint::load(pretrained, Weights::Ema, device)?;
        if let Some(qam) = &actor_settings.adjoint_matching {
            // QAM samples, trains and is evaluated with its own K' (its checkpoints carry it).
            actor.set_denoising_steps(qam.denoising_steps);
            reference.set_denoising_steps(qam.denoising_steps);
        }
        let spec = actor.spec().clone();
        if matches!(spec.config.encoder.augmentation, rldt_encoders::Augmentation::RandomCrop { .. }) {
            return Err(Error::CriticBatch(format!(
                "{}: the policy's encoder augmentation is random_crop, which changes the image size; \
                 RLDT augments each critic batch once on the stored images (random_shift or none)",
                pretrained.display()
            )));
        }
        let critic_vs = nn::VarStore::new(device);
        let heads = critic_settings.heads;
        if heads < 1 {
            return Err(Error::CriticBatch(format!("critic.heads is {heads}; the ensemble needs at least one head")));
        }
        let critic = Critic::new(&critic_vs.root(), &spec, heads).map_err(crate::policy::PolicyError::from)?;
        init_encoder_from_actor(&critic_vs, &actor_vs)
            .map_err(|message| Error::RunDir { dir: pretrained.into(), message })?;
        let mut target_vs = nn::VarStore::new(device);
        let target = Critic::new(&target_vs.root(), &spec, heads).map_err(crate::policy::PolicyError::from)?;
        let target_ema =
            Ema::new(&critic_vs, &mut target_vs, critic_settings.target_ema).map_err(tch_error(pretrained))?;
        let actor_optimizer = AdamW::new(&actor_vs, 0.9, 0.999, 1e-8, 0.0);
        let critic_optimizer = AdamW::new(&critic_vs, 0.9, 0.999, 1e-8, 0.0)
            .with_lr_factor("encoder.", critic_settings.encoder_lr / critic_settings.heads_lr);
        Ok(Self {
            actor_vs,
            actor,
            reference_vs,
            reference,
            critic_vs,
            critic,
            target_vs,
            target,
            target_ema,
            actor_optimizer,
            critic_optimizer,
            critic_settings: critic_settings.clone(),
            actor_settings: actor_settings.clone(),
            actor_steps: 0,
        })
    }

    pub fn device(&self) -> Device {
        self.actor.device()
    }

    /// Draws a critic batch from N trajectories of equal length T: one augmentation of its
    /// images and `target_samples` bootstrap actions per next state from the current actor
    /// (`rl::critic_batch`). Every critic step of the round reuses it.
    pub fn draw_critic_batch(&self, trajectories: &[&Trajectory]) -> Result<CriticBatch> {
        let settings = &self.critic_settings;
        CriticBatch::draw(
            trajectories,
            &self.actor,
            settings.target_samples as i64,
            settings.mini_batch_split,
            (settings.heads, settings.head_trajectories),
            self.device(),
        )
        .map_err(Error::CriticBatch)
    }

    /// One critic step on a drawn batch: Q̄ with the current target on the cached bootstrap
    /// actions, TD(λ) targets, the gradient in `mini_batch_split` parts, AdamW, target EMA.
    pub fn critic_step(&mut self, batch: &CriticBatch, critic_lr: f64) -> Result<CriticStats> {
        let (gamma, lambda, split) =
            (self.critic_settings.gamma, self.critic_settings.lambda, self.critic_settings.mini_batch_split);
        let next_values = batch.next_values(&self.target, self.critic_settings.target_over_heads, split);
        let targets = batch.targets(&next_values, gamma, lambda);
        self.critic_optimizer.zero_grad();
        let (loss_value, q_mean) = batch.backward(&self.critic, &targets, split);
        if !loss_value.is_finite() {
            return Err(Error::NonFinite {
                step: 0,
                what: "critic/td_loss".into(),
                value: loss_value,
                checkpoints: Default::default(),
            });
        }
        self.critic_optimizer.step(critic_lr);
        self.target_ema.update();
        Ok(CriticStats {
            td_loss: loss_value,
            q_mean,
            target_mean: mean_at(&targets, &batch.loss_entries),
            next_value_mean: mean_at(&next_values, &batch.bootstrap_entries),
        })
    }

    /// One actor step on every unmasked state of `trajectories`.
    pub fn actor_step(&mut self, trajectories: &[&Trajectory]) -> Result<Option<ActorStats>> {
        let states: Vec<(&Trajectory, usize)> = trajectories
            .iter()
            .flat_map(|tr| (0..tr.chunks).filter(|&t| tr.mask[t] > 0.5).map(move |t| (*tr, t)))
            .collect();
        if states.is_empty() {
            return Ok(None);
        }
        let obs = Trajectory::states(&states, self.device());
        let particles = self.actor_settings.objective.particles;
        let from_target = self.actor_settings.adjoint_matching.as_ref().is_some_and(|qam| qam.q_gradient_from_target);
        let critic = if from_target { &self.target } else { &self.critic };
        let features = tch::no_grad(|| critic.features(&obs, false)).repeat_interleave_self_int(particles, 0, None);
        self.actor_optimizer.zero_grad();
        let q_grad = |actions: &Tensor, first_row: i64| {
            q_gradient_of(critic, &self.actor, &features.narrow(0, first_row, actions.size()[0]), actions)
        };
        let out = match &self.actor_settings.adjoint_matching {
            None => actor_objective(
                &self.actor,
                &self.reference,
                &obs,
                &q_grad,
                &self.actor_settings.objective,
                self.actor_settings.mini_batch_split,
            ),
            Some(qam) => adjoint_matching_objective(
                &self.actor,
                &self.reference,
                &obs,
                &q_grad,
                particles,
                qam,
                self.actor_settings.mini_batch_split,
            ),
        };
        if !out.stats.loss.is_finite() {
            return Err(Error::NonFinite {
                step: 0,
                what: "actor/loss".into(),
                value: out.stats.loss,
                checkpoints: Default::default(),
            });
        }
        self.actor_steps += 1;
        let warmup = (self.actor_steps as f64 / self.actor_settings.warmup_steps.max(1) as f64).min(1.0);
        self.actor_optimizer.step(self.actor_settings.lr * warmup);
        Ok(Some(out.stats))
    }

    /// ∇_a of the mean over the online heads of Q(s, a) at full chunks [N, D], features
    /// [N, F]: zero over the non-executed part of the chunk (the critic sees only Ta·A).
    pub fn q_gradient(&self, features: &Tensor, actions: &Tensor) -> Tensor {
        q_gradient_of(&self.critic, &self.actor, features, actions)
    }

    /// Mean over the online heads of Q(s, a): full chunks [N, D], features [N, F] → [N].
    pub fn q_value(&self, features: &Tensor, actions: &Tensor) -> Tensor {
        let exec = self.actor.spec().config.exec_horizon * self.actor.spec().action_dim;
        tch::no_grad(|| {
            self.critic.q_from_features(features, &actions.narrow(1, 0, exec)).mean_dim(-1, false, Kind::Float)
        })
    }

    /// After every iteration: v_ref ← the current policy (previous-iterate reference).
    pub fn end_iteration(&mut self) -> Result<()> {
        if self.actor_settings.reference == ReferencePolicy::PreviousIterate {
            self.reference_vs.copy(&self.actor_vs).map_err(|source| Error::Tch { path: "reference".into(), source })?;
        }
        Ok(())
    }
}

/// Mean of `values` [N, T] at flat entries [L] (0 when there are none).
fn mean_at(values: &Tensor, entries: &Tensor) -> f64 {
    if entries.numel() == 0 {
        return 0.0;
    }
    values.view([-1]).index_select(0, entries).mean(Kind::Float).double_value(&[])
}

/// File names of an RLDT checkpoint (beside `policy.json` / `policy.safetensors`, which make
/// it loadable by `eval` like any policy checkpoint).
pub const REFERENCE_FILE: &str = "reference.safetensors";
pub const CRITIC_FILE: &str = "critic.safetensors";
pub const TARGET_FILE: &str = "critic_target.safetensors";
pub const ACTOR_OPTIMIZER_FILE: &str = "actor_optimizer.safetensors";
pub const CRITIC_OPTIMIZER_FILE: &str = "critic_optimizer.safetensors";

/// Optimizer step counts saved with the weights (the moments are in the safetensors files).
#[derive(Debug, Clone, Copy, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RldtCounters {
    pub actor_steps: i64,
    pub actor_optimizer_steps: i64,
    pub critic_optimizer_steps: i64,
}

impl Rldt {
    /// Writes every network and optimizer state into `dir` (a pending checkpoint).
    pub fn save(&self, dir: &Path) -> Result<RldtCounters> {
        checkpoint::save_spec(self.actor.spec(), dir)?;
        checkpoint::save_weights(&self.actor_vs, &dir.join(checkpoint::ONLINE_WEIGHTS_FILE))?;
        checkpoint::save_weights(&self.reference_vs, &dir.join(REFERENCE_FILE))?;
        checkpoint::save_weights(&self.critic_vs, &dir.join(CRITIC_FILE))?;
        checkpoint::save_weights(&self.target_vs, &dir.join(TARGET_FILE))?;
        self.actor_optimizer.save(&dir.join(ACTOR_OPTIMIZER_FILE))?;
        self.critic_optimizer.save(&dir.join(CRITIC_OPTIMIZER_FILE))?;
        Ok(RldtCounters {
            actor_steps: self.actor_steps,
            actor_optimizer_steps: self.actor_optimizer.steps_taken(),
            critic_optimizer_steps: self.critic_optimizer.steps_taken(),
        })
    }

    /// Restores what [`save`](Self::save) wrote.
    pub fn load(&mut self, dir: &Path, counters: RldtCounters) -> Result<()> {
        checkpoint::load_weights(&mut self.actor_vs, &dir.join(checkpoint::ONLINE_WEIGHTS_FILE))?;
        checkpoint::load_weights(&mut self.reference_vs, &dir.join(REFERENCE_FILE))?;
        checkpoint::load_weights(&mut self.critic_vs, &dir.join(CRITIC_FILE))?;
        checkpoint::load_weights(&mut self.target_vs, &dir.join(TARGET_FILE))?;
        self.actor_optimizer.load(&dir.join(ACTOR_OPTIMIZER_FILE), counters.actor_optimizer_steps)?;
        self.critic_optimizer.load(&dir.join(CRITIC_OPTIMIZER_FILE), counters.critic_optimizer_steps)?;
        self.actor_steps = counters.actor_steps;
        Ok(())
    }
}

/// ∇_a of the mean over `critic`'s heads of Q(s, a) at full chunks [N, D] of `actor`, features
/// [N, F] from that critic: zero over the non-executed part of the chunk (the critic sees only
/// Ta·A).
fn q_gradient_of(critic: &Critic, actor: &FlowPolicy, features: &Tensor, actions: &Tensor) -> Tensor {
    let (exec, d) = (actor.spec().config.exec_horizon * actor.spec().action_dim, actor.action_numbers());
    let executed = actions.narrow(1, 0, exec).detach().set_requires_grad(true);
    let q = critic.q_from_features(features, &executed).mean_dim(-1, false, Kind::Float).sum(Kind::Float);
    let grad = Tensor::run_backward(&[q], &[&executed], false, false).remove(0);
    if exec < d {
        Tensor::cat(&[grad, Tensor::zeros([actions.size()[0], d - exec], (Kind::Float, actions.device()))], 1)
    } else {
        grad
    }
}
