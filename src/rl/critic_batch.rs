//! What RLDT's critic draws once per batch and what each critic step recomputes
//! (docs/algorithm.md §3, the paper's code):
//!
//! ```text
//! once per batch (N trajectories of T chunks, drawn once per round):
//!     states  ← the N·(T+1) frames, ONE random-shift augmentation, kept as u8
//!     a'      ← S = target_samples plain ODE samples of the current actor at every s_{t+1}
//! every critic step (critic_steps_per_round of them, paper 32):
//!     Q̄_{t+1} = clip(mean_S min_heads Q_target(s_{t+1}, a'), 0, 1)   target moved by EMA
//!     G       = TD(λ)(r', d', Q̄)
//!     L       = Σ_h Σ_{n ≡ h mod 2, t} mask·(Q_h(s_t, a_t) − G_t)² / (T·N_h)
//!     the gradient of L accumulated over `mini_batch_split` parts of the trajectories
//! ```
//!
//! Split: part p holds a contiguous range of trajectories; its loss is the sum of its
//! entries' terms of L above (each divided by the whole batch's T·N_h), so the parts'
//! gradients add up to the unsplit one exactly; for equal parts this is each part's own
//! mean loss divided by the split, as the paper writes it. Only one part's activations hold
//! gradients at a time; target passes run part by part without gradient.
//!
//! The bootstrap samples see the augmented images too: the batch's images are augmented once
//! and every network that reads the batch reads those.

use tch::{Device, Kind, Tensor};

use super::critic::{Critic, HEADS};
use super::mini_batch::parts;
use super::returns::td_lambda;
use super::trajectory::Trajectory;
use crate::policy::{FlowPolicy, ObsBatch};

/// A critic batch as its steps read it. Shapes: N trajectories, T chunks, S bootstrap
/// samples, E = Ta·A executed numbers.
pub struct CriticBatch {
    pub trajectories: i64,
    pub chunks: i64,
    /// N·(T + 1) states, state t of trajectory n at row n·(T + 1) + t; images u8, augmented.
    pub states: ObsBatch,
    /// [N·T, E] executed chunks a_t, normalised.
    pub actions: Tensor,
    /// [S, N·T, E] bootstrap actions a' at s_{t+1}, drawn once.
    pub bootstrap: Tensor,
    /// [N, T] shaped rewards r', dones d', success mask.
    pub rewards: Tensor,
    pub dones: Tensor,
    pub mask: Tensor,
    /// [N, T, HEADS]: mask / (T·N_h) where trajectory n belongs to head h = n mod HEADS, else 0.
    pub loss_weights: Tensor,
}

impl CriticBatch {
    /// Draws the batch: one augmentation of its images and S bootstrap samples per next
    /// state from `actor` (no gradient, part by part). `executed` = E numbers of a chunk the
    /// critic reads. Trajectories must share one length.
    pub fn draw(
        trajectories: &[&Trajectory],
        actor: &FlowPolicy,
        samples: i64,
        split: usize,
        device: Device,
    ) -> Result<Self, String> {
        let (n, t_len) = (trajectories.len() as i64, trajectories[0].chunks as i64);
        if trajectories.iter().any(|t| t.chunks as i64 != t_len) {
            return Err("trajectories of different lengths (fine-tuning needs full-length episodes)".into());
        }
        let augmentation = &actor.spec().config.encoder.augmentation;
        let all: Vec<(&Trajectory, usize)> =
            trajectories.iter().flat_map(|tr| (0..=tr.chunks).map(move |t| (*tr, t))).collect();
        let states = Trajectory::states(&all, device)
            .augmented_once(augmentation)
            .ok_or_else(|| format!("encoder augmentation {augmentation:?} has no once-per-batch form"))?;
        let field = |f: fn(&Trajectory) -> &Vec<f32>| -> Tensor {
            let values: Vec<f32> = trajectories.iter().flat_map(|tr| f(tr).iter().copied()).collect();
            Tensor::from_slice(&values).view([n, t_len]).to_device(device)
        };
        let (rewards, dones, mask) = (field(|t| &t.rewards), field(|t| &t.dones), field(|t| &t.mask));
        let actions: Vec<f32> = trajectories.iter().flat_map(|tr| tr.actions.iter().copied()).collect();
        let actions = Tensor::from_slice(&actions).view([n * t_len, -1]).to_device(device);
        let executed = actions.size()[1];
        let k = actor.spec().config.num_denoising_steps;
        let bootstrap = tch::no_grad(|| {
            let per_part: Vec<Tensor> = parts(n, split)
                .into_iter()
                .map(|(start, len)| {
                    let cond = actor.condition(&states.select(&next_rows(start, len, t_len, device)), false);
                    let rows = cond.size()[0];
                    let cond = cond.repeat([samples, 1]); // sample-major: s·rows + i
                    let chain = actor.sample_chain(&cond, &actor.initial_noise(rows * samples, false));
                    chain.get(k).narrow(1, 0, executed).view([samples, rows, executed])
                })
                .collect();
            Tensor::cat(&per_part, 1)
        });
        let loss_weights = loss_weights(&mask);
        Ok(Self { trajectories: n, chunks: t_len, states, actions, bootstrap, rewards, dones, mask, loss_weights })
    }

    /// Q̄_{t+1} [N, T] with `target`, part by part, without gradient.
    pub fn next_values(&self, target: &Critic, split: usize) -> Tensor {
        let (t_len, device) = (self.chunks, self.actions.device());
        let samples = self.bootstrap.size()[0];
        tch::no_grad(|| {
            let per_part: Vec<Tensor> = parts(self.trajectories, split)
                .into_iter()
                .map(|(start, len)| {
                    let features = target.features(&self.states.select(&next_rows(start, len, t_len, device)), false);
                    let rows = features.size()[0];
                    let a_next = self.bootstrap.narrow(1, start * t_len, rows).reshape([samples * rows, -1]);
                    let q = target.q_from_features(&features.repeat([samples, 1]), &a_next); // [S·rows, H]
                    let q_min = q.min_dim(-1, false).0.view([samples, rows]).mean_dim(0, false, Kind::Float);
                    q_min.clamp(0.0, 1.0).view([len, t_len])
                })
                .collect();
            Tensor::cat(&per_part, 0)
        })
    }

    /// TD(λ) targets G [N, T] from Q̄ [N, T].
    pub fn targets(&self, next_values: &Tensor, gamma: f64, lambda: f64) -> Tensor {
        td_lambda(&self.rewards, &self.dones, next_values, gamma, lambda)
    }

    /// Accumulates ∇L into `critic`'s variables over `split` parts (the caller zeroes the
    /// gradients before and steps after). Returns (L, mean Q over all entries and heads).
    pub fn backward(&self, critic: &Critic, targets: &Tensor, split: usize) -> (f64, f64) {
        let (t_len, device) = (self.chunks, self.actions.device());
        let (mut loss_sum, mut q_sum) = (0.0, 0.0);
        for (start, len) in parts(self.trajectories, split) {
            let obs = self.states.select(&current_rows(start, len, t_len, device));
            let actions = self.actions.narrow(0, start * t_len, len * t_len);
            let q = critic.q_from_features(&critic.features(&obs, false), &actions).view([len, t_len, HEADS]);
            let error = (&q - targets.narrow(0, start, len).unsqueeze(-1)).square();
            let loss = (error * self.loss_weights.narrow(0, start, len)).sum(Kind::Float);
            loss.backward();
            loss_sum += loss.double_value(&[]);
            q_sum += q.detach().sum(Kind::Float).double_value(&[]);
        }
        (loss_sum, q_sum / (self.trajectories * t_len * HEADS) as f64)
    }
}

/// mask [N, T] → [N, T, HEADS]: mask / (T·N_h) for h = n mod HEADS, 0 for the other heads.
fn loss_weights(mask: &Tensor) -> Tensor {
    let (n, t_len) = mask.size2().expect("mask is [N, T]");
    let device = mask.device();
    let head_of = Tensor::arange(n, (Kind::Int64, device)).remainder(HEADS); // [N]
    let heads = Tensor::arange(HEADS, (Kind::Int64, device));
    let one_hot = head_of.view([n, 1]).eq_tensor(&heads.view([1, HEADS])).to_kind(Kind::Float); // [N, H]
    let entries = one_hot.sum_dim_intlist(0, true, Kind::Float).clamp_min(1.0) * t_len as f64; // [1, H]
    mask.unsqueeze(-1) * (one_hot / entries).unsqueeze(1)
}

/// Rows of s_t (t < T) for trajectories start..start+len in the N·(T + 1) layout: [len·T].
fn current_rows(start: i64, len: i64, t_len: i64, device: Device) -> Tensor {
    let n = Tensor::arange_start(start, start + len, (Kind::Int64, device)).view([len, 1]);
    (n * (t_len + 1) + Tensor::arange(t_len, (Kind::Int64, device)).view([1, t_len])).view([-1])
}

/// Rows of s_{t+1} (t < T): [len·T].
fn next_rows(start: i64, len: i64, t_len: i64, device: Device) -> Tensor {
    current_rows(start, len, t_len, device) + 1
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rl::critic::tests::spec as tiny_image_spec;
    use tch::nn;

    #[test]
    fn rows_of_the_trajectory_major_layout() {
        assert_eq!(current_rows(1, 2, 3, Device::Cpu), Tensor::from_slice(&[4i64, 5, 6, 8, 9, 10]));
        assert_eq!(next_rows(0, 1, 2, Device::Cpu), Tensor::from_slice(&[1i64, 2]));
    }

    /// Reference: the gradient of `Critic::td_loss` on the whole batch (the unsplit loss,
    /// its own test in critic.rs). The batch's split passes (1, 2 and 3 parts of 5
    /// trajectories, uneven) accumulate the same gradient and report the same loss.
    #[test]
    fn split_gradient_pass_equals_the_unsplit_loss() {
        tch::manual_seed(7);
        let spec = tiny_image_spec();
        let vs = nn::VarStore::new(Device::Cpu);
        let critic = Critic::new(&vs.root(), &spec).unwrap();
        let (n, t_len) = (5i64, 3i64);
        let states = ObsBatch {
            images: vec![Tensor::randint(256, [n * (t_len + 1), 1, 32, 32, 3], (Kind::Uint8, Device::Cpu))],
            proprio: Tensor::rand([n * (t_len + 1), 1, 3], (Kind::Float, Device::Cpu)),
        };
        let mask = Tensor::rand([n, t_len], (Kind::Float, Device::Cpu)).gt(0.3).to_kind(Kind::Float);
        let zeros = Tensor::zeros([n, t_len], (Kind::Float, Device::Cpu));
        let batch = CriticBatch {
            trajectories: n,
            chunks: t_len,
            states,
            actions: Tensor::randn([n * t_len, 14], (Kind::Float, Device::Cpu)),
            bootstrap: Tensor::randn([2, n * t_len, 14], (Kind::Float, Device::Cpu)),
            rewards: zeros.copy(),
            dones: zeros,
            mask: mask.copy(),
            loss_weights: loss_weights(&mask),
        };
        let targets = Tensor::rand([n, t_len], (Kind::Float, Device::Cpu));
        let gradients = |vs: &nn::VarStore| -> Vec<Tensor> {
            let mut named: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
            named.sort_by(|a, b| a.0.cmp(&b.0));
            named.into_iter().map(|(_, v)| v.grad().copy()).collect()
        };
        let zero = |vs: &nn::VarStore| {
            for v in vs.variables().values() {
                let _ = v.grad().zero_();
            }
        };

        let all = batch.states.select(&current_rows(0, n, t_len, Device::Cpu));
        let q = critic.q_from_features(&critic.features(&all, false), &batch.actions).view([n, t_len, HEADS]);
        let reference = Critic::td_loss(&q, &targets, &mask);
        reference.backward();
        let expected = gradients(&vs);
        for split in [1, 2, 3] {
            zero(&vs);
            let (loss, _) = batch.backward(&critic, &targets, split);
            assert!((loss - reference.double_value(&[])).abs() < 1e-5, "split {split}: {loss} vs {reference}");
            for (got, want) in gradients(&vs).iter().zip(&expected) {
                assert!(got.allclose(want, 1e-4, 1e-6, false), "split {split}: gradients differ");
            }
        }
        let total: f64 = expected.iter().map(|g| g.abs().sum(Kind::Float).double_value(&[])).sum();
        assert!(total > 1e-3, "a zero gradient proves nothing");
    }
}
