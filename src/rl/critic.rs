//! The chunk-level critic of RLDT (docs/algorithm.md §3): an ensemble of H Q heads (paper 2,
//! `critic.heads`) on one image encoder of its own (initialised from the pretrained actor's
//! encoder), each head an MLP 256×3 with SiLU whose last layer starts at N(0, 0.1²). Input: the
//! state's features (encoder features of each camera and history frame, plus normalised
//! proprio, as the actor builds its condition) and the executed part of the chunk (Ta·A
//! numbers, normalised).
//!
//! Loss: mean over all entries of mask·(Q_head(s_t, a_t) − G_t)² (masked entries count in the
//! denominator), head losses summed. Which trajectories a head learns from
//! (`critic.head_trajectories`): "interleaved" (RLDT: trajectory n goes to head n mod H) or
//! "all" (QAM: every head on every trajectory). The bootstrap value over the target's heads
//! (`critic.target_over_heads`): "min" (RLDT) or {"mean_minus_std": ρ} (QAM: mean − ρ·std,
//! ρ 0.5). The target network is an EMA (0.995) of the whole critic.

use serde::{Deserialize, Serialize};
use tch::{nn, Kind, Tensor};

use crate::policy::{ObsBatch, PolicySpec, StateEncoder};

const HIDDEN: i64 = 256;

/// Which trajectories of a critic batch each head learns from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HeadTrajectories {
    /// Head h on trajectories n ≡ h (mod H) (RLDT's paper code).
    Interleaved,
    /// Every head on every trajectory (QAM).
    All,
}

/// How the target network's H heads make one bootstrap value at (s_{t+1}, a').
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetOverHeads {
    /// min_h Q_h (RLDT).
    Min,
    /// mean_h Q_h − ρ·std_h Q_h, the population std over heads (QAM, ρ = 0.5).
    MeanMinusStd(f64),
}

impl TargetOverHeads {
    /// q [N, H] → [N].
    pub fn reduce(&self, q: &Tensor) -> Tensor {
        match self {
            TargetOverHeads::Min => q.min_dim(-1, false).0,
            TargetOverHeads::MeanMinusStd(rho) => {
                q.mean_dim(-1, false, Kind::Float) - q.std_dim(-1, false, false) * *rho
            }
        }
    }
}

/// The `critic` section of a fine-tuning config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CriticSettings {
    pub gamma: f64,
    pub lambda: f64,
    pub heads_lr: f64,
    pub encoder_lr: f64,
    /// Target network: EMA of heads and encoder after every critic step.
    pub target_ema: f64,
    /// H, the Q heads of the ensemble (paper 2; QAM 10).
    pub heads: i64,
    /// Which trajectories each head learns from (paper "interleaved"; QAM "all").
    pub head_trajectories: HeadTrajectories,
    /// The bootstrap value over the target's heads (paper "min"; QAM {"mean_minus_std": 0.5}).
    pub target_over_heads: TargetOverHeads,
    /// Policy samples a' per next state for the target, drawn once per critic batch (paper: 2).
    pub target_samples: usize,
    /// A critic step's passes over the batch in this many parts of the entries it reads, the
    /// gradients accumulated (paper: 4): the same step, a quarter of the memory.
    pub mini_batch_split: usize,
}

#[derive(Debug)]
pub struct Critic {
    state_encoder: StateEncoder,
    /// Per head: three hidden layers and the output layer.
    heads: Vec<[nn::Linear; 4]>,
}

impl Critic {
    /// Builds the critic under `vs` with `heads` Q heads: `encoder.*` with the actor's names
    /// (so its weights can be copied from the actor), `heads.{h}.{0..3}`.
    pub fn new(vs: &nn::Path, spec: &PolicySpec, heads: i64) -> Result<Self, rldt_encoders::EncoderConfigError> {
        let state_encoder = StateEncoder::new(vs, spec)?;
        let state_dim = state_encoder.output_dim();
        let action_numbers = spec.config.exec_horizon * spec.action_dim;
        let heads = (0..heads)
            .map(|h| {
                let head = vs / "heads" / h;
                let last_init = nn::LinearConfig {
                    ws_init: nn::Init::Randn { mean: 0.0, stdev: 0.1 },
                    bs_init: Some(nn::Init::Const(0.0)),
                    bias: true,
                };
                [
                    nn::linear(&head / "0", state_dim + action_numbers, HIDDEN, Default::default()),
                    nn::linear(&head / "1", HIDDEN, HIDDEN, Default::default()),
                    nn::linear(&head / "2", HIDDEN, HIDDEN, Default::default()),
                    nn::linear(&head / "3", HIDDEN, 1, last_init),
                ]
            })
            .collect();
        Ok(Self { state_encoder, heads })
    }

    /// State features [B, S]: per camera and frame the encoder feature, then proprio.
    pub fn features(&self, obs: &ObsBatch, train: bool) -> Tensor {
        self.state_encoder.forward_t(obs, train)
    }

    /// H, the number of heads.
    pub fn heads(&self) -> i64 {
        self.heads.len() as i64
    }

    /// Q of every head from features [N, S] and executed actions [N, Ta·A] → [N, H].
    pub fn q_from_features(&self, features: &Tensor, actions: &Tensor) -> Tensor {
        let x = Tensor::cat(&[features.shallow_clone(), actions.shallow_clone()], -1);
        let per_head: Vec<Tensor> = self
            .heads
            .iter()
            .map(|[l0, l1, l2, out]| x.apply(l0).silu().apply(l1).silu().apply(l2).silu().apply(out))
            .collect();
        Tensor::cat(&per_head, -1)
    }

    /// The TD loss, the plain form `rl::critic_batch` is tested against: q [N, T, H]
    /// predictions, targets and mask [N, T]. Head h is trained on trajectories n with n mod H
    /// = h ("interleaved") or on all of them ("all"); per head the mean over its entries
    /// (masked ones count in the denominator); heads summed.
    pub fn td_loss(q: &Tensor, targets: &Tensor, mask: &Tensor, head_trajectories: HeadTrajectories) -> Tensor {
        let (n, heads) = (q.size()[0], q.size()[2]);
        let mut total = Tensor::zeros([], (Kind::Float, q.device()));
        for h in 0..heads {
            // Head h's trajectories: h, h + H, h + 2H, … or all of them.
            let (first, step) = match head_trajectories {
                HeadTrajectories::Interleaved => (h, heads),
                HeadTrajectories::All => (0, 1),
            };
            let rows = Tensor::arange_start_step(first, n, step, (Kind::Int64, q.device()));
            if rows.numel() == 0 {
                continue;
            }
            let error = (q.index_select(0, &rows).select(-1, h) - targets.index_select(0, &rows)).square();
            total = total + (error * mask.index_select(0, &rows)).mean(Kind::Float);
        }
        total
    }
}

/// Copies every `encoder.*` variable of the actor's VarStore into the critic's (same names).
pub fn init_encoder_from_actor(critic: &nn::VarStore, actor: &nn::VarStore) -> Result<usize, String> {
    let actor_vars = actor.variables();
    let mut copied = 0;
    tch::no_grad(|| {
        for (name, mut var) in critic.variables() {
            if name.starts_with("encoder.") {
                let source = actor_vars.get(&name).ok_or_else(|| format!("actor has no `{name}`"))?;
                if source.size() != var.size() {
                    return Err(format!("`{name}`: actor {:?}, critic {:?}", source.size(), var.size()));
                }
                var.copy_(source);
                copied += 1;
            }
        }
        Ok(())
    })?;
    Ok(copied)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::policy::{FlowPolicy, PolicyConfig, VelocityHeadConfig};
    use rldt_datasets::batch::DatasetStats;
    use rldt_datasets::{MinMax, ObsSpec};
    use rldt_encoders::{Augmentation, BackboneConfig, EncoderConfig};
    use tch::Device;

    pub(crate) fn spec() -> PolicySpec {
        PolicySpec {
            config: PolicyConfig {
                obs_horizon: 1,
                pred_horizon: 4,
                exec_horizon: 2,
                num_denoising_steps: 8,
                encoder: EncoderConfig {
                    backbone: BackboneConfig::Resnet18 { width: 16, num_keypoints: 8, feature_dim: 16 },
                    augmentation: Augmentation::RandomShift { pad: 4 },
                    share_across_cameras: true,
                },
                velocity_head: VelocityHeadConfig { time_embed_dim: 16, hidden_dim: 32, num_residual_blocks: 1 },
            },
            obs: ObsSpec { image_keys: vec!["agentview_image".into()], lowdim_keys: vec!["p".into()] },
            image_size: 32,
            proprio_dim: 3,
            action_dim: 7,
            stats: DatasetStats {
                proprio: MinMax { min: vec![0.0; 3], max: vec![1.0; 3] },
                actions: MinMax { min: vec![-1.0; 7], max: vec![1.0; 7] },
            },
        }
    }

    /// The critic's encoder starts as a copy of the actor's: same features for the same
    /// images; Q has one column per head for the executed Ta·A = 14 numbers.
    #[test]
    fn encoder_initialised_from_the_actor() {
        tch::manual_seed(0);
        let actor_vs = nn::VarStore::new(Device::Cpu);
        let actor = FlowPolicy::new(&actor_vs.root(), spec()).unwrap();
        let critic_vs = nn::VarStore::new(Device::Cpu);
        let critic = Critic::new(&critic_vs.root(), &spec(), 2).unwrap();
        let obs = ObsBatch {
            images: vec![Tensor::randint(256, [3, 1, 32, 32, 3], (Kind::Uint8, Device::Cpu))],
            proprio: Tensor::zeros([3, 1, 3], (Kind::Float, Device::Cpu)),
        };
        assert!(
            !critic.features(&obs, false).equal(&actor.condition(&obs, false)),
            "differently initialised before the copy"
        );
        let copied = init_encoder_from_actor(&critic_vs, &actor_vs).unwrap();
        assert!(copied > 0);
        assert!(critic.features(&obs, false).equal(&actor.condition(&obs, false)));
        let q =
            critic.q_from_features(&critic.features(&obs, false), &Tensor::zeros([3, 14], (Kind::Float, Device::Cpu)));
        assert_eq!(q.size(), [3, 2]);
    }

    /// Reference: 4 trajectories × 2 steps; head 0 sees trajectories 0 and 2, head 1 sees 1
    /// and 3. With q = 0 everywhere, targets 1 and the mask dropping one entry of trajectory
    /// 2: head 0 = mean([1, 1, 1, 0]) = 0.75, head 1 = mean([1, 1, 1, 1]) = 1 → 1.75.
    #[test]
    fn td_loss_splits_trajectories_between_heads() {
        let q = Tensor::zeros([4, 2, 2], (Kind::Float, Device::Cpu));
        let targets = Tensor::ones([4, 2], (Kind::Float, Device::Cpu));
        let mask = Tensor::from_slice(&[1.0f32, 1.0, 1.0, 1.0, 1.0, 0.0, 1.0, 1.0]).view([4, 2]);
        let loss = Critic::td_loss(&q, &targets, &mask, HeadTrajectories::Interleaved).double_value(&[]);
        assert!((loss - 1.75).abs() < 1e-6, "{loss}");
        // Head 1's prediction on trajectory 0 is never trained: changing it changes nothing.
        let _ = q.get(0).select(-1, 1).fill_(5.0);
        let changed = Critic::td_loss(&q, &targets, &mask, HeadTrajectories::Interleaved).double_value(&[]);
        assert!((changed - 1.75).abs() < 1e-6);
    }

    /// "all": each head on all 4 trajectories, mean([1, 1, 1, 1, 1, 0, 1, 1]) = 0.875 per
    /// head with q = 0, two heads 1.75; with head 1 at 5 on trajectory 0 (both of its steps)
    /// head 1 reads (16 + 16 + 1 + 1 + 1 + 0 + 1 + 1)/8 = 4.625, total 5.5.
    #[test]
    fn td_loss_with_every_head_on_every_trajectory() {
        let q = Tensor::zeros([4, 2, 2], (Kind::Float, Device::Cpu));
        let targets = Tensor::ones([4, 2], (Kind::Float, Device::Cpu));
        let mask = Tensor::from_slice(&[1.0f32, 1.0, 1.0, 1.0, 1.0, 0.0, 1.0, 1.0]).view([4, 2]);
        let loss = Critic::td_loss(&q, &targets, &mask, HeadTrajectories::All).double_value(&[]);
        assert!((loss - 1.75).abs() < 1e-6, "{loss}");
        let _ = q.get(0).select(-1, 1).fill_(5.0);
        let changed = Critic::td_loss(&q, &targets, &mask, HeadTrajectories::All).double_value(&[]);
        assert!((changed - 5.5).abs() < 1e-6, "{changed}");
    }

    /// q = [[0, 1, 2], [3, 3, 3]]: min → [0, 3]; mean − 0.5·std (population std √(2/3))
    /// → [1 − 0.5·0.8165, 3] = [0.5918, 3].
    #[test]
    fn target_over_heads_by_hand() {
        let q = Tensor::from_slice(&[0.0f32, 1.0, 2.0, 3.0, 3.0, 3.0]).view([2, 3]);
        let min: Vec<f32> = TargetOverHeads::Min.reduce(&q).try_into().unwrap();
        assert_eq!(min, vec![0.0, 3.0]);
        let pessimistic: Vec<f32> = TargetOverHeads::MeanMinusStd(0.5).reduce(&q).try_into().unwrap();
        assert!((pessimistic[0] - (1.0 - 0.5 * (2.0f32 / 3.0).sqrt())).abs() < 1e-6, "{pessimistic:?}");
        assert!((pessimistic[1] - 3.0).abs() < 1e-6);
    }
}
