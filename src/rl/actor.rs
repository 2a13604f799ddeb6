//! The RLDT actor objective for one batch of states (docs/algorithm.md §4–§5), given a way to
//! take ∇_a Q. It does not know where Q comes from: the critic ensemble in fine-tuning, a
//! known reward in the 2-D toy. Written top to bottom:
//!
//! 0. Every random number of the step, drawn first for all rows ([`ParticleDraws`]).
//! 1. Encoder features once per state, repeated over P particles (rows state-major, b·P + p).
//! 2. Without gradient: P full Euler chains x_0..x_K per state; endpoints a_j.
//! 3. Per row a random step k from `query_steps` (paper: all of {0..K−1}), t = k/K, and the
//!    query a† = x_k + (1 − t)·v(x_k, t).
//! 4. Scores g_j = ∇_a Q(s, a_j); the field φ(a†_i): SVGD (attraction + repulsion, §4), or
//!    `delta` = ∇_a Q(s, a†_i) alone (the ablation).
//! 5. Losses through one velocity evaluation per row (no back-propagation through the ODE):
//!    L = w_a·L_RL + w_c·L_cons + w_r·L_ref  (paper: w_a = 1, w_c = 0.5, w_r = 0.2).

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use super::actor_loss::{alignment_loss, consistency_loss, constraint_loss};
use super::mini_batch::parts;
use super::svgd::{transport_field, Bandwidth, Temperature};
use crate::policy::{FlowPolicy, ObsBatch};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldKind {
    /// SVGD: Q-gradient attraction + kernel repulsion (the paper's).
    Svgd,
    /// ∇_a Q at a† only, no repulsion (the paper's ablation).
    Delta,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BandwidthKind {
    Median,
    Fixed,
}

/// Settings of the actor objective (the `actor` section of a fine-tuning config).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActorObjective {
    /// P particle chains per state (paper: 8).
    pub particles: i64,
    pub field: FieldKind,
    pub bandwidth: BandwidthKind,
    /// h for `bandwidth = fixed`.
    pub fixed_bandwidth: f64,
    /// α(s) = scale × mean ‖∇Q‖ (paper: 0.001).
    pub temperature_scale: f64,
    /// Weight of L_RL (paper: 1). Scaling it scales the step the field asks for relative to
    /// the two regularisers; a larger value suits short, small-budget runs.
    pub alignment_weight: f64,
    pub consistency_weight: f64,
    pub constraint_weight: f64,
    /// Steps k at which a† is queried, one drawn uniformly per row (paper: every step,
    /// [0, 1, …, K − 1]). Late steps only (e.g. [4, 5, 6, 7]) keep a† close to the chain's own
    /// endpoint: at early steps a† is a posterior mean between modes, and a field there moves
    /// the boundary between the modes' basins (see `toy`).
    pub query_steps: Vec<i64>,
}

impl ActorObjective {
    /// The paper's settings.
    pub fn paper() -> Self {
        Self {
            particles: 8,
            field: FieldKind::Svgd,
            bandwidth: BandwidthKind::Median,
            fixed_bandwidth: 1.0,
            temperature_scale: 0.001,
            alignment_weight: 1.0,
            consistency_weight: 0.5,
            constraint_weight: 0.2,
            query_steps: (0..8).collect(),
        }
    }

    /// Why these settings cannot run a policy with K denoising steps, if they cannot.
    pub fn check(&self, k_steps: i64) -> std::result::Result<(), String> {
        if self.query_steps.is_empty() || self.query_steps.iter().any(|&k| !(0..k_steps).contains(&k)) {
            return Err(format!(
                "actor.objective.query_steps: {:?} must be a non-empty list of steps in 0..{k_steps} (K = {k_steps})",
                self.query_steps
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReferencePolicy {
    /// v_ref ← the current policy after every iteration (a trust region; the paper's code).
    PreviousIterate,
    /// v_ref stays the pretrained policy.
    Pretrained,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActorSettings {
    pub objective: ActorObjective,
    pub lr: f64,
    pub warmup_steps: usize,
    pub reference: ReferencePolicy,
    /// An actor step's gradient pass in this many parts of its states, the gradients
    /// accumulated (paper: 4): the same step, a fraction of the memory.
    pub mini_batch_split: usize,
    /// QAM's objective in place of the transport objective (`algorithm` = qam; absent for
    /// RLDT): `rl::adjoint_matching`, with `objective.particles` trajectories per state and
    /// the reference as π_base; the other `objective` fields are not read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adjoint_matching: Option<super::adjoint_matching::AdjointMatchingSettings>,
}

/// Scalars for metrics (`actor/*`, `svgd/*`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct ActorStats {
    pub loss: f64,
    pub alignment: f64,
    pub consistency: f64,
    pub constraint: f64,
    /// QAM (`rl::adjoint_matching`): its loss and the mean ‖ã_K‖ = λ·‖∇_a Q‖ at the
    /// endpoints (0 for RLDT).
    pub adjoint_matching: f64,
    pub endpoint_adjoint_norm: f64,
    /// The transport field's scalars (metrics `svgd/*`).
    #[serde(skip)]
    pub field: FieldStats,
}

/// Scalars of the transport field over a batch (metrics `svgd/*`): mean bandwidth h, mean
/// α(s), mean row norms of the attraction, the repulsion and the field φ.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FieldStats {
    pub bandwidth: f64,
    pub alpha: f64,
    pub attraction_norm: f64,
    pub repulsion_norm: f64,
    pub field_norm: f64,
}

/// What one evaluation of the objective produced (its gradient is in the policy's
/// variables): its scalars.
pub struct ActorOutput {
    pub stats: ActorStats,
}

/// The random numbers of one objective evaluation over `rows` = B·P sample rows, drawn in
/// this order: chain starts x_0 [rows, D], query-step choices [rows] (indices into
/// `query_steps`), the constraint's τ [rows, 1] and noise z' [rows, D]. Drawing them first
/// lets the gradient pass run in parts and give the one-pass result.
pub struct ParticleDraws {
    pub x0: Tensor,
    pub choice: Tensor,
    pub tau: Tensor,
    pub noise: Tensor,
}

impl ParticleDraws {
    pub fn new(policy: &FlowPolicy, rows: i64, objective: &ActorObjective) -> Self {
        let (k_steps, device) = (policy.spec().config.num_denoising_steps, policy.device());
        let x0 = policy.initial_noise(rows, false);
        let choice = Tensor::randint(objective.query_steps.len() as i64, [rows], (Kind::Int64, device));
        let tau = Tensor::randint(k_steps, [rows, 1], (Kind::Int64, device)).to_kind(Kind::Float) / k_steps as f64;
        let noise = x0.randn_like();
        Self { x0, choice, tau, noise }
    }

    /// Rows start..start + len.
    pub fn narrow(&self, start: i64, len: i64) -> Self {
        Self {
            x0: self.x0.narrow(0, start, len),
            choice: self.choice.narrow(0, start, len),
            tau: self.tau.narrow(0, start, len),
            noise: self.noise.narrow(0, start, len),
        }
    }
}

/// Steps 2–4 for a batch of states, all without gradient: the particle chains, the query
/// per row and the field there. Rows are state-major (b·P + p).
/// Shapes: chains [K + 1, B·P, D]; x_t, queries a†, endpoints a, field φ and its two
/// parts [B·P, D]; t [B·P, 1]; bandwidth [B·P] (zeros for `delta`); alpha [B].
pub struct ParticleField {
    pub chains: Tensor,
    pub x_t: Tensor,
    pub t: Tensor,
    pub queries: Tensor,
    pub endpoints: Tensor,
    pub field: Tensor,
    pub attraction: Tensor,
    pub repulsion: Tensor,
    pub bandwidth: Tensor,
    pub alpha: Tensor,
}

fn mean_row_norm(x: &Tensor) -> f64 {
    x.norm_scalaropt_dim(2.0, [-1], false).mean(Kind::Float).double_value(&[])
}

/// Steps 2–4 given the (detached) condition [B·P, C] of B states repeated over P particles
/// and the rows' draws. `q_grad(actions [N, D]) → ∇_a Q [N, D]` (rows state-major).
pub fn particle_field(
    policy: &FlowPolicy,
    cond_fixed: &Tensor,
    q_grad: &dyn Fn(&Tensor) -> Tensor,
    objective: &ActorObjective,
    draws: &ParticleDraws,
) -> ParticleField {
    let p = objective.particles;
    let rows = cond_fixed.size()[0];
    let b = rows / p;
    let k_steps = policy.spec().config.num_denoising_steps;
    let device = policy.device();

    // 2–3. Chains, per-row step, queries a†.
    let (chains, x_t, t, queries, endpoints) = tch::no_grad(|| {
        let chains = policy.sample_chain(cond_fixed, &draws.x0); // [K+1, B·P, D]
        let endpoints = chains.get(k_steps);
        let k = Tensor::from_slice(&objective.query_steps).to_device(device).index_select(0, &draws.choice); // [B·P]
        let x_t = chains
            .permute([1, 0, 2])
            .gather(1, &k.view([rows, 1, 1]).expand([rows, 1, chains.size()[2]], false), false)
            .squeeze_dim(1);
        let t = (k.to_kind(Kind::Float) / k_steps as f64).view([rows, 1]);
        let queries = policy.expected_posterior(&x_t, &t, cond_fixed);
        (chains, x_t, t, queries, endpoints)
    });

    // 4. The field at the queries.
    let d = endpoints.size()[1];
    let (field, attraction, repulsion, bandwidth, alpha) = match objective.field {
        FieldKind::Svgd => {
            let scores = q_grad(&endpoints).detach();
            let bandwidth = match objective.bandwidth {
                BandwidthKind::Median => Bandwidth::Median,
                BandwidthKind::Fixed => Bandwidth::Fixed(objective.fixed_bandwidth),
            };
            let f = transport_field(
                &queries.view([b, p, d]),
                &endpoints.view([b, p, d]),
                &scores.view([b, p, d]),
                bandwidth,
                Temperature::ScoreNorm { scale: objective.temperature_scale },
            );
            (
                f.field.view([rows, d]),
                f.attraction.view([rows, d]),
                f.repulsion.view([rows, d]),
                f.bandwidth.view([rows]),
                f.alpha,
            )
        }
        FieldKind::Delta => {
            let g = q_grad(&queries).detach();
            (
                g.shallow_clone(),
                g,
                queries.zeros_like(),
                Tensor::zeros([rows], (Kind::Float, device)),
                Tensor::zeros([b], (Kind::Float, device)),
            )
        }
    };
    ParticleField { chains, x_t, t, queries, endpoints, field, attraction, repulsion, bandwidth, alpha }
}

/// The objective on the states of `obs` (B of them): accumulates ∇L into `policy`'s
/// variables (the caller zeroes the gradients before and steps after) and returns its
/// scalars. `q_grad(actions [N, D], first_row) → ∇_a Q [N, D]` for the rows first_row..
/// first_row + N in state-major order (row n belongs to state n / P), zero over any
/// non-executed part of the chunk. `reference` is v_ref (previous iterate or pretrained).
///
/// Split: every random draw is made first for all rows ([`ParticleDraws`]); steps 1–5 then
/// run over `mini_batch_split` parts of the states (each state's particles, field and losses
/// depend on that state alone), part p's loss scaled by its share of the rows (= divided by
/// the split for equal parts), so the accumulated gradient is the one-pass gradient, each
/// state's encoder runs once, and only one part's activations hold gradients at a time.
pub fn actor_objective(
    policy: &FlowPolicy,
    reference: &FlowPolicy,
    obs: &ObsBatch,
    q_grad: &dyn Fn(&Tensor, i64) -> Tensor,
    objective: &ActorObjective,
    mini_batch_split: usize,
) -> ActorOutput {
    let p = objective.particles;
    let k_steps = policy.spec().config.num_denoising_steps;
    let rows = obs.batch_size() * p;

    // 0. The step's random numbers, for all rows.
    let draws = ParticleDraws::new(policy, rows, objective);

    let mut terms = [0.0f64; 4]; // loss, alignment, consistency, constraint
    let mut field_terms = [0.0f64; 5]; // bandwidth, alpha, attraction, repulsion, field norms
    for (start, len) in parts(obs.batch_size(), mini_batch_split) {
        let (first_row, part_rows) = (start * p, len * p);
        let share = part_rows as f64 / rows as f64;
        let part_obs = obs.narrow(start, len);
        let draws = draws.narrow(first_row, part_rows);

        // 1. Features once per state, repeated over particles (gradient flows into the encoder).
        let cond = policy.condition(&part_obs, false).repeat_interleave_self_int(p, 0, None); // [len·P, C]

        // 2–4. Particles, queries and the field, without gradient.
        let part_q_grad = |actions: &Tensor| q_grad(actions, first_row);
        let particles = particle_field(policy, &cond.detach(), &part_q_grad, objective, &draws);
        let ParticleField { x_t, t, endpoints, field, .. } = &particles;

        // 5. Losses through one velocity evaluation per row.
        let v = policy.velocity(x_t, t, &cond);
        let alignment = alignment_loss(&v, field, t, k_steps);
        let consistency = consistency_loss(x_t, &v, t, endpoints, k_steps);
        let x_tau = &draws.noise * (1.0 - &draws.tau) + endpoints * &draws.tau; // x'_τ = (1 − τ)·z' + τ·a
        let v_tau = policy.velocity(&x_tau, &draws.tau, &cond);
        let v_ref = tch::no_grad(|| {
            let ref_cond = reference.condition(&part_obs, false).repeat_interleave_self_int(p, 0, None);
            reference.velocity(&x_tau, &draws.tau, &ref_cond)
        });
        let constraint = constraint_loss(&v_tau, &v_ref);
        let loss = &alignment * objective.alignment_weight
            + &consistency * objective.consistency_weight
            + &constraint * objective.constraint_weight;
        (&loss * share).backward();
        for (sum, value) in terms.iter_mut().zip([&loss, &alignment, &consistency, &constraint]) {
            *sum += share * value.double_value(&[]);
        }
        let state_share = len as f64 / obs.batch_size() as f64;
        let field_values = [
            share * particles.bandwidth.mean(Kind::Float).double_value(&[]),
            state_share * particles.alpha.mean(Kind::Float).double_value(&[]),
            share * mean_row_norm(&particles.attraction),
            share * mean_row_norm(&particles.repulsion),
            share * mean_row_norm(field),
        ];
        for (sum, value) in field_terms.iter_mut().zip(field_values) {
            *sum += value;
        }
    }
    let stats = ActorStats {
        loss: terms[0],
        alignment: terms[1],
        consistency: terms[2],
        constraint: terms[3],
        adjoint_matching: 0.0,
        endpoint_adjoint_norm: 0.0,
        field: FieldStats {
            bandwidth: field_terms[0],
            alpha: field_terms[1],
            attraction_norm: field_terms[2],
            repulsion_norm: field_terms[3],
            field_norm: field_terms[4],
        },
    };
    ActorOutput { stats }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::toy::toy_spec;
    use tch::{nn, Device};

    /// L = w_a·L_RL + w_c·L_cons + w_r·L_ref with w_a = 3, w_c = 0.5, w_r = 0.2: the loss equals
    /// that sum of the reported terms (one call, so no dependence on other tests' use of the
    /// global RNG), and the alignment term is not zero (so w_a is seen).
    #[test]
    fn alignment_weight_scales_the_alignment_term() {
        let vs = nn::VarStore::new(Device::Cpu);
        let policy = FlowPolicy::new(&vs.root(), toy_spec()).unwrap();
        let obs = ObsBatch { images: vec![], proprio: Tensor::zeros([4, 1, 1], (Kind::Float, Device::Cpu)) };
        let q_grad = |a: &Tensor, _: i64| a.ones_like() * 0.3;
        let objective = ActorObjective { alignment_weight: 3.0, ..ActorObjective::paper() };
        let stats = actor_objective(&policy, &policy, &obs, &q_grad, &objective, 1).stats;
        assert!(stats.alignment.abs() > 1e-4, "alignment term is not zero: {}", stats.alignment);
        let sum = 3.0 * stats.alignment + 0.5 * stats.consistency + 0.2 * stats.constraint;
        assert!(
            (stats.loss - sum).abs() < 1e-5,
            "loss {} vs 3·{} + 0.5·{} + 0.2·{}",
            stats.loss,
            stats.alignment,
            stats.consistency,
            stats.constraint
        );
    }

    /// Query steps must exist in the policy: 0..K; an empty list is refused too.
    #[test]
    fn query_steps_outside_0_to_k_are_refused() {
        assert!(ActorObjective::paper().check(8).is_ok());
        let late = ActorObjective { query_steps: vec![4, 5, 6, 7], ..ActorObjective::paper() };
        assert!(late.check(8).is_ok());
        assert!(late.check(4).unwrap_err().contains("K = 4"));
        let empty = ActorObjective { query_steps: vec![], ..ActorObjective::paper() };
        assert!(empty.check(8).unwrap_err().contains("actor.objective.query_steps"));
        let negative = ActorObjective { query_steps: vec![-1], ..ActorObjective::paper() };
        assert!(negative.check(8).is_err());
    }
}
