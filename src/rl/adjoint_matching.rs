//! QAM's actor objective (Q-learning with Adjoint Matching, Li et al., arXiv 2601.14234; adjoint
//! matching: Domingo-Enrich et al., arXiv 2409.08861; docs/baselines.md "QAM"): fine-tune the
//! velocity field v_θ so that its samples follow π*(a|s) ∝ π_base(a|s)·exp(λ·Q(s, a)), with
//! π_base the reference policy (`actor.reference`) and Q the critic of RLDT's loop (with QAM's
//! ensemble settings: `critic.heads` 10, every head on every trajectory, a mean − 0.5·std
//! target). It runs in RLDT's loop (critic, replay, rounds) in place of the transport objective
//! of `rl::actor`.
//! Convention as the policy's: t = 0 noise, t = 1 data, K Euler steps, h = 1/K, t_i = i·h.
//!
//! 1. A memoryless trajectory per row, without gradient, from x_0 ~ N(0, I) with v_θ:
//!      σ_i = √(2·(1 − t_i + h)/(t_i + h))
//!      x_{i+1} = x_i + h·(2·v_θ(x_i, t_i) − x_i/(t_i + h)) + √h·σ_i·ξ_i      (i < K − 1)
//!      x_K     = x_{K−1} + h·v_base(x_{K−1}, t_{K−1})                        (an ODE step last)
//! 2. The lean adjoint, without gradient into θ, from the critic at the clipped endpoint:
//!      ã_K = −λ·∇_a Q(s, clip(x_K, −1, 1))
//!      ã_i = ã_{i+1} + h·J_iᵀ ã_{i+1},   J_i = ∂/∂x [2·v_base(x, t_i + h) − x/(t_i + h)] at x_i
//! 3. The loss through one velocity evaluation per (row, step):
//!      L = mean over rows of Σ_{i<K} ‖2·(v_θ(x_i, t_i) − v_base(x_i, t_i))/σ_i + σ_i·ã_i‖²
//!    minimised by v_θ = v_base − σ_i²·ã_i/2: the base field plus the control that tilts its
//!    samples by exp(λ·Q). No term keeps v_θ near v_base beyond this target.

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use super::actor::{ActorOutput, ActorStats};
use super::mini_batch::parts;
use crate::policy::{FlowPolicy, ObsBatch};

/// QAM's settings (the `actor.adjoint_matching` section of a config with `algorithm` = qam).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdjointMatchingSettings {
    /// λ, the inverse temperature of π_base·exp(λ·Q) (QAM's `inv_temp`; its default 0.3 is
    /// for OGBench's reward scale, so set it against the critic's Q range).
    pub inverse_temperature: f64,
    /// Endpoints clipped to [−1, 1] before ∇_a Q (QAM: true).
    pub clip_endpoint: bool,
    /// K', the Euler steps QAM fine-tunes, acts and evaluates with (the velocity field does
    /// not depend on K; QAM's own default is 10). On the 2-D toy the ODE samples of the
    /// fine-tuned field follow the memoryless SDE's tilt only from K' ≈ 16 on (at 8 and 10
    /// they move away from Q; docs/baselines.md "QAM"), so the configs use 32.
    pub denoising_steps: i64,
    /// ∇_a Q from the target critic's heads (QAM: true, its `use_target_grad`) instead of the
    /// online critic's.
    pub q_gradient_from_target: bool,
}

/// σ_i = √(2·(1 − t_i + h)/(t_i + h)) for t [N, 1], h = 1/K.
pub fn memoryless_sigma(t: &Tensor, h: f64) -> Tensor {
    let numerator: Tensor = (1.0 - t + h) * 2.0;
    (numerator / (t + h)).sqrt()
}

/// Step 1: states x_0..x_{K−1} [K, N, D] and the endpoint x_K [N, D] of the memoryless
/// trajectories from x0 [N, D] with noises ξ [K − 1, N, D], conditions [N, C] of both fields.
pub fn memoryless_trajectory(
    policy: &FlowPolicy,
    base: &FlowPolicy,
    cond: &Tensor,
    base_cond: &Tensor,
    x0: &Tensor,
    noise: &Tensor,
) -> (Tensor, Tensor) {
    let k_steps = policy.spec().config.num_denoising_steps;
    let h = 1.0 / k_steps as f64;
    tch::no_grad(|| {
        let mut x = x0.shallow_clone();
        let mut states = Vec::with_capacity(k_steps as usize);
        for i in 0..k_steps {
            let t = x.ones_like().narrow(1, 0, 1) * (i as f64 * h);
            states.push(x.shallow_clone());
            x = if i < k_steps - 1 {
                let drift = policy.velocity(&x, &t, cond) * 2.0 - &x / (&t + h);
                &x + drift * h + memoryless_sigma(&t, h) * noise.get(i) * h.sqrt()
            } else {
                &x + base.velocity(&x, &t, base_cond) * h
            };
        }
        (Tensor::stack(&states, 0), x)
    })
}

/// Step 2: the lean adjoints ã_0..ã_{K−1} [K, N, D] from ã_K [N, D] along states [K, N, D].
pub fn lean_adjoint(base: &FlowPolicy, base_cond: &Tensor, states: &Tensor, final_adjoint: &Tensor) -> Tensor {
    let k_steps = states.size()[0];
    let h = 1.0 / k_steps as f64;
    let mut adjoint = final_adjoint.detach();
    let mut adjoints = Vec::with_capacity(k_steps as usize);
    for i in (0..k_steps).rev() {
        let x = states.get(i).detach().set_requires_grad(true);
        let t_next = x.ones_like().narrow(1, 0, 1) * ((i + 1) as f64 * h);
        let drift = base.velocity(&x, &t_next, base_cond) * 2.0 - &x / &t_next;
        let vjp = Tensor::run_backward(&[(drift * &adjoint).sum(Kind::Float)], &[&x], false, false).remove(0);
        adjoint = (&adjoint + vjp * h).detach();
        adjoints.push(adjoint.shallow_clone());
    }
    adjoints.reverse();
    Tensor::stack(&adjoints, 0)
}

/// Step 3: v_θ, v_base [K, N, D], σ [K, N, 1], ã [K, N, D] → mean over N of the sum over steps
/// and numbers.
pub fn adjoint_matching_loss(v: &Tensor, sg_v_base: &Tensor, sigma: &Tensor, sg_adjoint: &Tensor) -> Tensor {
    let residual = (v - sg_v_base.detach()) * 2.0 / sigma + sigma * sg_adjoint.detach();
    residual.square().sum_dim_intlist([0i64, 2].as_slice(), false, Kind::Float).mean(Kind::Float)
}

/// The objective on the states of `obs` (B of them, `particles` trajectories each, rows
/// state-major): accumulates ∇L into `policy`'s variables and returns its scalars (`loss` =
/// L; `endpoint_adjoint_norm` = mean ‖ã_K‖). `q_grad(actions [N, D], first_row) → ∇_a Q`
/// as in `rl::actor::actor_objective`; `base` is π_base. The draws (x_0, then ξ) are made
/// first for all rows, and the gradient pass runs in `mini_batch_split` parts of the states.
pub fn adjoint_matching_objective(
    policy: &FlowPolicy,
    base: &FlowPolicy,
    obs: &ObsBatch,
    q_grad: &dyn Fn(&Tensor, i64) -> Tensor,
    particles: i64,
    settings: &AdjointMatchingSettings,
    mini_batch_split: usize,
) -> ActorOutput {
    let k_steps = policy.spec().config.num_denoising_steps;
    let h = 1.0 / k_steps as f64;
    let rows = obs.batch_size() * particles;
    let x0 = policy.initial_noise(rows, false);
    let noise = Tensor::randn([k_steps - 1, rows, policy.action_numbers()], (Kind::Float, policy.device()));
    let t = Tensor::arange(k_steps, (Kind::Float, policy.device())) * h; // [K]
    let (mut loss_sum, mut adjoint_norm_sum) = (0.0, 0.0);
    for (start, len) in parts(obs.batch_size(), mini_batch_split) {
        let (first_row, part_rows) = (start * particles, len * particles);
        let share = part_rows as f64 / rows as f64;
        let part_obs = obs.narrow(start, len);
        let cond = policy.condition(&part_obs, false).repeat_interleave_self_int(particles, 0, None);
        let base_cond =
            tch::no_grad(|| base.condition(&part_obs, false).repeat_interleave_self_int(particles, 0, None));
        let (x0, noise) = (x0.narrow(0, first_row, part_rows), noise.narrow(1, first_row, part_rows));
        let (states, endpoint) = memoryless_trajectory(policy, base, &cond.detach(), &base_cond, &x0, &noise);
        let endpoint = if settings.clip_endpoint { endpoint.clamp(-1.0, 1.0) } else { endpoint };
        let final_adjoint = q_grad(&endpoint, first_row).detach() * -settings.inverse_temperature;
        let adjoints = lean_adjoint(base, &base_cond, &states, &final_adjoint);

        // All K steps in one velocity evaluation: rows (step, row) step-major.
        let d = states.size()[2];
        let t_rows = t.view([k_steps, 1, 1]).expand([k_steps, part_rows, 1], false).reshape([-1, 1]);
        let flat_states = states.reshape([-1, d]);
        let v = policy.velocity(&flat_states, &t_rows, &cond.repeat([k_steps, 1])).view([k_steps, part_rows, d]);
        let v_base = tch::no_grad(|| {
            base.velocity(&flat_states, &t_rows, &base_cond.repeat([k_steps, 1])).view([k_steps, part_rows, d])
        });
        let sigma = memoryless_sigma(&t_rows, h).view([k_steps, part_rows, 1]);
        let loss = adjoint_matching_loss(&v, &v_base, &sigma, &adjoints);
        (&loss * share).backward();
        loss_sum += share * loss.double_value(&[]);
        adjoint_norm_sum +=
            share * final_adjoint.norm_scalaropt_dim(2.0, [-1], false).mean(Kind::Float).double_value(&[]);
    }
    ActorOutput {
        stats: ActorStats {
            loss: loss_sum,
            adjoint_matching: loss_sum,
            endpoint_adjoint_norm: adjoint_norm_sum,
            ..ActorStats::default()
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::toy::toy_spec;
    use tch::{nn, Device};

    /// σ_i with K = 8 (h = 0.125): at t = 0, √(2·1.125/0.125) = √18; at t = 0.875, √(2·0.25/1) = √0.5.
    #[test]
    fn the_memoryless_noise_scale_by_hand() {
        let t = Tensor::from_slice(&[0.0f32, 0.875]).view([2, 1]);
        let sigma: Vec<f32> = memoryless_sigma(&t, 0.125).view([-1]).try_into().unwrap();
        assert!((sigma[0] - 18f32.sqrt()).abs() < 1e-5 && (sigma[1] - 0.5f32.sqrt()).abs() < 1e-6, "{sigma:?}");
    }

    /// v = 1, v_base = 0, σ = 2, ã = −1 for K = 2 steps of one row, D = 1: each step
    /// (2·1/2 + 2·(−1))² = 1, summed 2; at v = v_base − σ²ã/2 = 2 the loss is 0.
    #[test]
    fn the_adjoint_matching_loss_by_hand() {
        let ones = Tensor::ones([2, 1, 1], (Kind::Float, Device::Cpu));
        let loss = adjoint_matching_loss(&ones, &(&ones * 0.0), &(&ones * 2.0), &(&ones * -1.0));
        assert!((loss.double_value(&[]) - 2.0).abs() < 1e-6);
        let at_target = adjoint_matching_loss(&(&ones * 2.0), &(&ones * 0.0), &(&ones * 2.0), &(&ones * -1.0));
        assert!(at_target.double_value(&[]).abs() < 1e-9);
    }

    /// The lean adjoint of a field whose drift 2·v_base(x, t) − x/t is linear in x: with v_base
    /// of the toy policy replaced by a check against finite differences of the drift, the
    /// one-step update ã_i = ã_{i+1} + h·J_iᵀ ã_{i+1} matches J estimated numerically.
    #[test]
    fn the_lean_adjoint_step_matches_finite_differences() {
        tch::manual_seed(3);
        let vs = nn::VarStore::new(Device::Cpu);
        let base = FlowPolicy::new(&vs.root(), toy_spec()).unwrap();
        let opts = (Kind::Float, Device::Cpu);
        let k_steps = base.spec().config.num_denoising_steps;
        let h = 1.0 / k_steps as f64;
        let cond = base.condition(&ObsBatch { images: vec![], proprio: Tensor::zeros([1, 1, 1], opts) }, false);
        let states = Tensor::randn([k_steps, 1, 2], opts);
        let final_adjoint = Tensor::from_slice(&[0.3f32, -0.7]).view([1, 2]);
        let adjoints = lean_adjoint(&base, &cond, &states, &final_adjoint);
        // The last step by hand: J at x_{K−1}, t = 1, columns by central differences.
        let i = k_steps - 1;
        let x = states.get(i);
        let drift = |x: &Tensor| tch::no_grad(|| base.velocity(x, &Tensor::ones([1, 1], opts), &cond) * 2.0 - x);
        let eps = 1e-3;
        let mut expected = [0.0f64; 2];
        for (j, slot) in expected.iter_mut().enumerate() {
            let bump = Tensor::zeros([1, 2], opts).index_fill(1, &Tensor::from_slice(&[j as i64]), eps);
            let column = (drift(&(&x + &bump)) - drift(&(&x - &bump))) / (2.0 * eps); // J[:, j]
            *slot = (column * &final_adjoint).sum(Kind::Float).double_value(&[]);
            // (Jᵀã)_j
        }
        for (j, jt_a) in expected.iter().enumerate() {
            let got = adjoints.double_value(&[i, 0, j as i64]);
            let want = final_adjoint.double_value(&[0, j as i64]) + h * jt_a;
            assert!((got - want).abs() < 2e-3, "number {j}: {got} vs {want}");
        }
    }
}
