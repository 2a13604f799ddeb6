//! What FPO++ and DPPO train (docs/baselines.md): the actor (the flow policy, from the
//! pretrained checkpoint's EMA weights), the value network V_ψ (its encoder initialised from
//! the actor's), one AdamW per VarStore and the running return scale; how one minibatch's
//! gradients are clipped and stepped; and how all of it is written to and read from a
//! checkpoint directory (`policy.safetensors` + `policy.json`, `value.safetensors`, the two
//! optimizer files; the counters go into the loop's state file). ReinFlow keeps its own
//! struct: it adds a noise network and its optimizer.

use std::path::Path;

use serde::{Deserialize, Serialize};
use tch::{nn, Device};

use super::critic::init_encoder_from_actor;
use super::ppo::{clip_gradients, PpoSettings, RunningReturnScale};
use super::reinflow::{ACTOR_OPTIMIZER_FILE, VALUE_FILE, VALUE_OPTIMIZER_FILE};
use super::value::ValueNet;
use crate::error::{Error, Result};
use crate::optim::AdamW;
use crate::policy::checkpoint::{self, Weights};
use crate::policy::FlowPolicy;

/// Counters saved with a checkpoint beside the weights.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActorValueCounters {
    pub actor_optimizer_steps: i64,
    pub value_optimizer_steps: i64,
    pub return_scale: RunningReturnScale,
}

pub struct ActorAndValue {
    pub actor_vs: nn::VarStore,
    pub actor: FlowPolicy,
    pub value_vs: nn::VarStore,
    pub value: ValueNet,
    pub actor_optimizer: AdamW,
    pub value_optimizer: AdamW,
    pub return_scale: RunningReturnScale,
}

impl ActorAndValue {
    /// The actor from the pretrained checkpoint's EMA weights, its K set to `denoising_steps`
    /// when given; V with `ppo.value_hidden` and its encoder from the actor's.
    pub fn new(pretrained: &Path, ppo: &PpoSettings, denoising_steps: Option<i64>, device: Device) -> Result<Self> {
        let (actor_vs, mut actor) = checkpoint::load(pretrained, Weights::Ema, device)?;
        if let Some(steps) = denoising_steps {
            actor.set_denoising_steps(steps);
        }
        let value_vs = nn::VarStore::new(device);
        let value = ValueNet::new(&value_vs.root(), actor.spec(), &ppo.value_hidden)
            .map_err(crate::policy::PolicyError::from)?;
        init_encoder_from_actor(&value_vs, &actor_vs)
            .map_err(|message| Error::RunDir { dir: pretrained.into(), message })?;
        Ok(Self {
            actor_optimizer: AdamW::new(&actor_vs, 0.9, 0.999, 1e-8, 0.0),
            value_optimizer: AdamW::new(&value_vs, 0.9, 0.999, 1e-8, 0.0),
            actor_vs,
            actor,
            value_vs,
            value,
            return_scale: RunningReturnScale::default(),
        })
    }

    pub fn zero_grad(&mut self) {
        self.actor_optimizer.zero_grad();
        self.value_optimizer.zero_grad();
    }

    /// After the minibatch's backward pass: each network's gradients clipped to `max_grad_norm`
    /// (the actor's only when it trains), then one AdamW step each. → (actor, value) gradient
    /// norms before clipping (the actor's 0 when it does not train).
    pub fn clip_and_step(&mut self, train_actor: bool, max_grad_norm: f64, actor_lr: f64, value_lr: f64) -> (f64, f64) {
        let actor_grad_norm =
            if train_actor { clip_gradients(&self.actor_vs.trainable_variables(), max_grad_norm) } else { 0.0 };
        let value_grad_norm = clip_gradients(&self.value_vs.trainable_variables(), max_grad_norm);
        if train_actor {
            self.actor_optimizer.step(actor_lr);
        }
        self.value_optimizer.step(value_lr);
        (actor_grad_norm, value_grad_norm)
    }

    /// The actor's `policy.json` carries its K, so `eval` runs the policy as it was trained.
    pub fn save(&self, dir: &Path) -> Result<ActorValueCounters> {
        checkpoint::save_spec(self.actor.spec(), dir)?;
        checkpoint::save_weights(&self.actor_vs, &dir.join(checkpoint::ONLINE_WEIGHTS_FILE))?;
        checkpoint::save_weights(&self.value_vs, &dir.join(VALUE_FILE))?;
        self.actor_optimizer.save(&dir.join(ACTOR_OPTIMIZER_FILE))?;
        self.value_optimizer.save(&dir.join(VALUE_OPTIMIZER_FILE))?;
        Ok(ActorValueCounters {
            actor_optimizer_steps: self.actor_optimizer.steps_taken(),
            value_optimizer_steps: self.value_optimizer.steps_taken(),
            return_scale: self.return_scale.clone(),
        })
    }

    pub fn load(&mut self, dir: &Path, counters: ActorValueCounters) -> Result<()> {
        checkpoint::load_weights(&mut self.actor_vs, &dir.join(checkpoint::ONLINE_WEIGHTS_FILE))?;
        checkpoint::load_weights(&mut self.value_vs, &dir.join(VALUE_FILE))?;
        self.actor_optimizer.load(&dir.join(ACTOR_OPTIMIZER_FILE), counters.actor_optimizer_steps)?;
        self.value_optimizer.load(&dir.join(VALUE_OPTIMIZER_FILE), counters.value_optimizer_steps)?;
        self.return_scale = counters.return_scale;
        Ok(())
    }
}
