//! What RLDT's critic draws once per batch and what each critic step recomputes
//! (docs/algorithm.md §3, the paper's code):
//!
//! ```text
//! once per batch (N trajectories of T chunks, drawn once per round):
//!     states  ← the N·(T+1) frames, ONE random-shift augmentation, kept as u8
//!     a'      ← S = target_samples plain ODE samples of the current actor at every s_{t+1}
//! every critic step (critic_steps_per_round of them, paper 32):
//!     Q̄_{t+1} = clip(mean_S min_heads Q_target(s_{t+1}, a'), 0, 1)   target moved by EMA
//!               (QAM: mean_heads − ρ·std_heads in place of min_heads)
//!     G       = TD(λ)(r', d', Q̄)
//!     L       = Σ_h Σ_{n ≡ h mod H, t} mask·(Q_h(s_t, a_t) − G_t)² / (T·N_h)
//!               (QAM: every head on every n, N_h = N)
//!     the gradient of L accumulated over `mini_batch_split` parts of the trajectories
//! ```
//!
//! Only what the loss reads is computed (exact, not an approximation): the gradient pass
//! runs on the entries with mask > 0 (a masked entry's term is zero), and Q̄_{t+1} is computed
//! only where a read target uses it (`returns::needed_bootstraps`; elsewhere it is set to 0,
//! which changes no read target). After success the rest of a full-length episode is masked,
//! so a batch of successful episodes costs a fraction of a full pass; the paper's code passes
//! every state.
//!
//! Split: the entries are cut into `mini_batch_split` contiguous parts; a part's loss is the
//! sum of its entries' terms of L above (each divided by the whole batch's T·N_h), so the
//! parts' gradients add up to the unsplit one exactly; for equal parts this is each part's own
//! mean loss divided by the split, as the paper writes it. Only one part's activations hold
//! gradients at a time; target passes run part by part without gradient.
//!
//! The bootstrap samples see the augmented images too: the batch's images are augmented once
//! and every network that reads the batch reads those.

use tch::{Device, Kind, Tensor};

use super::critic::{Critic, HeadTrajectories, TargetOverHeads};
use super::mini_batch::parts;
use super::returns::{needed_bootstraps, td_lambda};
use super::trajectory::Trajectory;
use crate::policy::{FlowPolicy, ObsBatch};

/// A critic batch as its steps read it. Shapes: N trajectories, T chunks, S bootstrap
/// samples, E = Ta·A executed numbers; an entry (n, t) has the flat index n·T + t.
pub struct CriticBatch {
    pub trajectories: i64,
    pub chunks: i64,
    /// N·(T + 1) states, state t of trajectory n at row n·(T + 1) + t; images u8, augmented.
    pub states: ObsBatch,
    /// [N·T, E] executed chunks a_t, normalised.
    pub actions: Tensor,
    /// [N, T] shaped rewards r', dones d', success mask.
    pub rewards: Tensor,
    pub dones: Tensor,
    pub mask: Tensor,
    /// [N, T, H]: mask / (T·N_h) where trajectory n belongs to head h, else 0.
    pub loss_weights: Tensor,
    /// [L] flat indices of the entries the loss reads (mask > 0), ascending.
    pub loss_entries: Tensor,
    /// [B] flat indices of the entries whose Q̄_{t+1} a read target uses, ascending.
    pub bootstrap_entries: Tensor,
    /// [S, B, E] bootstrap actions a' at s_{t+1} for those entries, drawn once.
    pub bootstrap: Tensor,
}

impl CriticBatch {
    /// Draws the batch: one augmentation of its images and S bootstrap samples per needed
    /// next state from `actor` (no gradient, part by part); the loss weights for `heads` heads
    /// learning from `head_trajectories`. Trajectories must share one length.
    pub fn draw(
        trajectories: &[&Trajectory],
        actor: &FlowPolicy,
        samples: i64,
        split: usize,
        (heads, head_trajectories): (i64, HeadTrajectories),
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
        let (loss_entries, bootstrap_entries) =
            read_entries(trajectories.iter().map(|tr| (tr.mask.as_slice(), tr.dones.as_slice())), device);
        let executed = actions.size()[1];
        let k = actor.spec().config.num_denoising_steps;
        let bootstrap = tch::no_grad(|| {
            let per_part: Vec<Tensor> = parts(bootstrap_entries.size()[0], split)
                .into_iter()
                .map(|(start, len)| {
                    let rows = next_rows(&bootstrap_entries.narrow(0, start, len), t_len);
                    let cond = actor.condition(&states.select(&rows), false);
                    let cond = cond.repeat([samples, 1]); // sample-major: s·len + i
                    let chain = actor.sample_chain(&cond, &actor.initial_noise(len * samples, false));
                    chain.get(k).narrow(1, 0, executed).view([samples, len, executed])
                })
                .collect();
            if per_part.is_empty() {
                Tensor::zeros([samples, 0, executed], (Kind::Float, device))
            } else {
                Tensor::cat(&per_part, 1)
            }
        });
        let loss_weights = loss_weights(&mask, heads, head_trajectories);
        Ok(Self {
            trajectories: n,
            chunks: t_len,
            states,
            actions,
            rewards,
            dones,
            mask,
            loss_weights,
            loss_entries,
            bootstrap_entries,
            bootstrap,
        })
    }

    /// Q̄_{t+1} [N, T] with `target` at the bootstrap entries (0 elsewhere), its heads reduced
    /// by `over_heads`, part by part, without gradient.
    pub fn next_values(&self, target: &Critic, over_heads: TargetOverHeads, split: usize) -> Tensor {
        let (n, t_len) = (self.trajectories, self.chunks);
        let samples = self.bootstrap.size()[0];
        let device = self.actions.device();
        tch::no_grad(|| {
            let mut values = Tensor::zeros([n * t_len], (Kind::Float, device));
            for (start, len) in parts(self.bootstrap_entries.size()[0], split) {
                let entries = self.bootstrap_entries.narrow(0, start, len);
                let features = target.features(&self.states.select(&next_rows(&entries, t_len)), false);
                let a_next = self.bootstrap.narrow(1, start, len).reshape([samples * len, -1]);
                let q = target.q_from_features(&features.repeat([samples, 1]), &a_next); // [S·len, H]
                let q_bar = over_heads.reduce(&q).view([samples, len]).mean_dim(0, false, Kind::Float);
                let _ = values.index_copy_(0, &entries, &q_bar.clamp(0.0, 1.0));
            }
            values.view([n, t_len])
        })
    }

    /// TD(λ) targets G [N, T] from Q̄ [N, T].
    pub fn targets(&self, next_values: &Tensor, gamma: f64, lambda: f64) -> Tensor {
        td_lambda(&self.rewards, &self.dones, next_values, gamma, lambda)
    }

    /// Accumulates ∇L into `critic`'s variables over `split` parts of the loss entries (the
    /// caller zeroes the gradients before and steps after). Returns (L, mean Q over the read
    /// entries and heads).
    pub fn backward(&self, critic: &Critic, targets: &Tensor, split: usize) -> (f64, f64) {
        let t_len = self.chunks;
        let heads = self.loss_weights.size()[2];
        let (flat_targets, flat_weights) = (targets.view([-1]), self.loss_weights.view([-1, heads]));
        let (mut loss_sum, mut q_sum) = (0.0, 0.0);
        let count = self.loss_entries.size()[0];
        for (start, len) in parts(count, split) {
            let entries = self.loss_entries.narrow(0, start, len);
            let obs = self.states.select(&current_rows(&entries, t_len));
            let q = critic.q_from_features(&critic.features(&obs, false), &self.actions.index_select(0, &entries));
            let error = (&q - flat_targets.index_select(0, &entries).unsqueeze(-1)).square(); // [len, H]
            let loss = (error * flat_weights.index_select(0, &entries)).sum(Kind::Float);
            loss.backward();
            loss_sum += loss.double_value(&[]);
            q_sum += q.detach().sum(Kind::Float).double_value(&[]);
        }
        (loss_sum, q_sum / (count.max(1) * heads) as f64)
    }
}

/// mask [N, T] → [N, T, H]: mask / (T·N_h) where trajectory n belongs to head h, 0 for the
/// other heads. "interleaved": n belongs to head n mod H (N_h of them); "all": to every head
/// (N_h = N).
fn loss_weights(mask: &Tensor, heads: i64, head_trajectories: HeadTrajectories) -> Tensor {
    let (n, t_len) = mask.size2().expect("mask is [N, T]");
    let device = mask.device();
    let one_hot = match head_trajectories {
        HeadTrajectories::Interleaved => {
            let head_of = Tensor::arange(n, (Kind::Int64, device)).remainder(heads); // [N]
            let head_ids = Tensor::arange(heads, (Kind::Int64, device));
            head_of.view([n, 1]).eq_tensor(&head_ids.view([1, heads])).to_kind(Kind::Float)
            // [N, H]
        }
        HeadTrajectories::All => Tensor::ones([n, heads], (Kind::Float, device)),
    };
    let entries = one_hot.sum_dim_intlist(0, true, Kind::Float).clamp_min(1.0) * t_len as f64; // [1, H]
    mask.unsqueeze(-1) * (one_hot / entries).unsqueeze(1)
}

/// (loss entries, bootstrap entries) of trajectories given as (mask, dones) [T] each: flat
/// indices n·T + t where mask > 0, and where `needed_bootstraps` holds.
fn read_entries<'a>(trajectories: impl Iterator<Item = (&'a [f32], &'a [f32])>, device: Device) -> (Tensor, Tensor) {
    let (mut loss, mut bootstrap) = (Vec::new(), Vec::new());
    let mut offset = 0i64;
    for (mask, dones) in trajectories {
        loss.extend(mask.iter().enumerate().filter(|(_, &m)| m > 0.0).map(|(t, _)| offset + t as i64));
        let needed = needed_bootstraps(mask, dones);
        bootstrap.extend(needed.iter().enumerate().filter(|(_, &k)| k).map(|(t, _)| offset + t as i64));
        offset += mask.len() as i64;
    }
    (Tensor::from_slice(&loss).to_device(device), Tensor::from_slice(&bootstrap).to_device(device))
}

/// Rows of s_t in the N·(T + 1) layout for flat entries n·T + t: [L] → [L].
fn current_rows(entries: &Tensor, t_len: i64) -> Tensor {
    entries.divide_scalar_mode(t_len, "floor") * (t_len + 1) + entries.remainder(t_len)
}

/// Rows of s_{t+1} for flat entries n·T + t: [L] → [L].
fn next_rows(entries: &Tensor, t_len: i64) -> Tensor {
    current_rows(entries, t_len) + 1
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rl::critic::tests::spec as tiny_image_spec;
    use tch::nn;

    #[test]
    fn rows_of_the_trajectory_major_layout() {
        let entries = Tensor::from_slice(&[0i64, 1, 2, 3, 5]); // T = 3
        assert_eq!(current_rows(&entries, 3), Tensor::from_slice(&[0i64, 1, 2, 4, 6]));
        assert_eq!(next_rows(&entries, 3), Tensor::from_slice(&[1i64, 2, 3, 5, 7]));
    }

    /// The plain path (reference): Q̄ at every next state with every bootstrap sample, TD(λ),
    /// `Critic::td_loss` on every entry (its own test in critic.rs), one backward. The batch's
    /// path (Q̄ only where a read target uses it, the loss only on unmasked entries, in 1, 2
    /// and 3 parts) gives the same loss and the same gradient. Five full-length episodes of 4
    /// chunks, shaped as a round: success held from t = 1, never, lost at t = 3, from t = 0,
    /// at the last chunk (time-outs terminal). RLDT's ensemble (2 heads, interleaved, min) and
    /// QAM's (3 heads here, all on every trajectory, mean − 0.5·std written out by hand).
    #[test]
    fn read_entries_in_parts_equal_the_plain_full_pass() {
        parts_equal_the_plain_full_pass(2, HeadTrajectories::Interleaved, TargetOverHeads::Min);
        parts_equal_the_plain_full_pass(3, HeadTrajectories::All, TargetOverHeads::MeanMinusStd(0.5));
    }

    fn parts_equal_the_plain_full_pass(heads: i64, head_trajectories: HeadTrajectories, over_heads: TargetOverHeads) {
        tch::manual_seed(7);
        let spec = tiny_image_spec();
        let cpu = (Kind::Float, Device::Cpu);
        let (vs, target_vs) = (nn::VarStore::new(Device::Cpu), nn::VarStore::new(Device::Cpu));
        let critic = Critic::new(&vs.root(), &spec, heads).unwrap();
        let target = Critic::new(&target_vs.root(), &spec, heads).unwrap();
        let (n, t_len, samples) = (5i64, 4i64, 2i64);
        let raw = Tensor::from_slice(&[
            0.0f32, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 1.0,
        ])
        .view([n, t_len]);
        let time_outs = Tensor::zeros([n, t_len], cpu).index_fill(1, &Tensor::from_slice(&[t_len - 1]), 1.0);
        let shaped = crate::rl::returns::shape_rewards(&raw, &time_outs);
        let rows_of =
            |t: &Tensor| -> Vec<Vec<f32>> { (0..n).map(|i| Vec::<f32>::try_from(t.get(i)).unwrap()).collect() };
        let (masks, dones) = (rows_of(&shaped.mask), rows_of(&shaped.dones));
        let (loss_entries, bootstrap_entries) =
            read_entries(masks.iter().zip(&dones).map(|(m, d)| (m.as_slice(), d.as_slice())), Device::Cpu);
        assert!(loss_entries.size()[0] < n * t_len && bootstrap_entries.size()[0] < loss_entries.size()[0]);
        let states = ObsBatch {
            images: vec![Tensor::randint(256, [n * (t_len + 1), 1, 32, 32, 3], (Kind::Uint8, Device::Cpu))],
            proprio: Tensor::rand([n * (t_len + 1), 1, 3], cpu),
        };
        let every_bootstrap = Tensor::randn([samples, n * t_len, 14], cpu);
        let batch = CriticBatch {
            trajectories: n,
            chunks: t_len,
            states,
            actions: Tensor::randn([n * t_len, 14], cpu),
            rewards: shaped.rewards.shallow_clone(),
            dones: shaped.dones.shallow_clone(),
            mask: shaped.mask.shallow_clone(),
            loss_weights: loss_weights(&shaped.mask, heads, head_trajectories),
            bootstrap: every_bootstrap.index_select(1, &bootstrap_entries),
            loss_entries,
            bootstrap_entries,
        };
        let gradients = |vs: &nn::VarStore| -> Vec<Tensor> {
            let mut named: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
            named.sort_by(|a, b| a.0.cmp(&b.0));
            named.into_iter().map(|(_, v)| v.grad().copy()).collect()
        };

        // The plain path.
        let every = Tensor::arange(n * t_len, (Kind::Int64, Device::Cpu));
        let plain_next = tch::no_grad(|| {
            let features = target.features(&batch.states.select(&next_rows(&every, t_len)), false);
            let q = target.q_from_features(&features.repeat([samples, 1]), &every_bootstrap.reshape([-1, 14]));
            let per_sample = match over_heads {
                TargetOverHeads::Min => q.min_dim(-1, false).0,
                TargetOverHeads::MeanMinusStd(rho) => {
                    let mean = q.mean_dim(-1, true, Kind::Float);
                    let std = (&q - &mean).square().mean_dim(-1, false, Kind::Float).sqrt();
                    mean.squeeze_dim(-1) - std * rho
                }
            };
            per_sample.view([samples, n * t_len]).mean_dim(0, false, Kind::Float).clamp(0.0, 1.0)
        });
        let plain_targets = batch.targets(&plain_next.view([n, t_len]), 0.999, 0.5);
        let all = batch.states.select(&current_rows(&every, t_len));
        let q = critic.q_from_features(&critic.features(&all, false), &batch.actions).view([n, t_len, heads]);
        let reference = Critic::td_loss(&q, &plain_targets, &batch.mask, head_trajectories);
        reference.backward();
        let expected = gradients(&vs);
        let total: f64 = expected.iter().map(|g| g.abs().sum(Kind::Float).double_value(&[])).sum();
        assert!(total > 1e-3, "a zero gradient proves nothing");

        for split in [1, 2, 3] {
            for v in vs.variables().values() {
                let _ = v.grad().zero_();
            }
            let targets = batch.targets(&batch.next_values(&target, over_heads, split), 0.999, 0.5);
            let read = batch.mask.gt(0.0);
            let (got, want) = (targets.masked_select(&read), plain_targets.masked_select(&read));
            let largest = (&got - &want).abs().max().double_value(&[]);
            assert!(
                got.allclose(&want, 1e-6, 1e-6, false),
                "{heads} heads, split {split}: targets differ by {largest}"
            );
            let (loss, _) = batch.backward(&critic, &targets, split);
            assert!((loss - reference.double_value(&[])).abs() < 1e-5, "split {split}: {loss} vs {reference}");
            for (got, want) in gradients(&vs).iter().zip(&expected) {
                assert!(got.allclose(want, 1e-4, 1e-6, false), "split {split}: gradients differ");
            }
        }
    }
}
