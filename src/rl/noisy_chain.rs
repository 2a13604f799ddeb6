//! ReinFlow's noisy chain (Zhang et al., NeurIPS 2025, arXiv 2505.22094; docs/baselines.md):
//! a noise network turns the K'-step Euler chain of the flow policy into a Markov chain of
//! Gaussians whose log-likelihood is exact, so PPO applies (`rl::reinflow`).
//!
//! Chain (normalised action space, D = Tp·A numbers, t_k = k/K'):
//!   x_0 ~ N(0, I)
//!   μ_k = clip(x_k + v_θ(x_k, t_k, s)/K', ±c)      (c: `denoised_clip`; none: no clip)
//!   x_{k+1} = μ_k + σ_k ⊙ clip(ε, ±n),  ε ~ N(0, I)            (n: `noise_clip`, 3)
//!   x_{K'} is clipped to [−1, 1] (the normalised action range)
//!   σ_k = σ_φ(s[, t_k]) ∈ [σ_min, σ_max] per action number:
//!     log σ² = log σ_min² + (log σ_max² − log σ_min²)·(tanh h_φ + 1)/2
//! Log-likelihood of a stored chain, as ReinFlow's code normalises it (the paper writes the
//! sum; the code divides by the K' + 1 factors and by D so the clip range and the entropy
//! weight do not depend on K' or D):
//!   log π(x_0:K' | s) = [log N(x_0; 0, I) + Σ_k log N(x_{k+1}; μ_k, σ_k²)] / ((K' + 1)·D),
//!   clipped to [ℓ_min, ℓ_max] (`log_prob_clip`, [−1, 1]).
//! Entropy (rate) of the chain, normalised the same way:
//!   H = [D·h(1) + Σ_k Σ_d h(σ_k,d)] / ((K' + 1)·D),   h(σ) = ½·ln(2πe) + ln σ.
//! Evaluation runs the plain ODE with K' steps (noise off), as the paper does: the policy's
//! own `sample_chain` (the learner sets the policy's K to K').

use serde::{Deserialize, Serialize};
use tch::{nn, Kind, Tensor};

use crate::policy::FlowPolicy;

/// The `reinflow.chain` section of a fine-tuning config (the RLDT authors'
/// `ft_ppo_reflow_mlp_img.yaml` for Square in brackets).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoisyChainSettings {
    /// K': Euler steps of the noisy chain and of evaluation (authors' Square config: 1, on a
    /// 1-rectified-flow policy; with a policy pretrained by plain flow matching, as here, its
    /// own K keeps the starting policy unchanged).
    pub denoising_steps: i64,
    /// [σ_min, σ_max] of the noise network (0.08, 0.14).
    pub noise_std: [f64; 2],
    /// Hidden layers of the noise network, tanh activations ([384, 384, 384]).
    pub noise_hidden: Vec<i64>,
    /// Whether σ also sees the step's time t_k (authors' Square config: false, σ(s)).
    pub noise_depends_on_time: bool,
    /// ε is clipped to ±noise_clip before scaling (3).
    pub noise_clip: f64,
    /// Intermediate means are clipped to ±denoised_clip ([1], for their 1-rectified-flow
    /// policies; null: no clip, the ODE the policies here were pretrained and evaluated with,
    /// so fine-tuning starts from the same policy as RLDT's).
    pub denoised_clip: Option<f64>,
    /// [ℓ_min, ℓ_max] of the normalised log-likelihood ([−1, 1]).
    pub log_prob_clip: [f64; 2],
}

/// σ_φ: the observation's condition (and optionally t) → a standard deviation per action
/// number, bounded in [σ_min, σ_max].
#[derive(Debug)]
pub struct NoiseNet {
    layers: Vec<nn::Linear>,
    log_var_min: f64,
    log_var_max: f64,
    with_time: bool,
}

impl NoiseNet {
    /// Under `vs`: `layers.{i}`; input C (+1 with time), output D.
    pub fn new(vs: &nn::Path, cond_dim: i64, action_numbers: i64, settings: &NoisyChainSettings) -> Self {
        let with_time = settings.noise_depends_on_time;
        let mut sizes = vec![cond_dim + with_time as i64];
        sizes.extend(&settings.noise_hidden);
        sizes.push(action_numbers);
        let layers = sizes
            .windows(2)
            .enumerate()
            .map(|(i, w)| nn::linear(vs / "layers" / i, w[0], w[1], Default::default()))
            .collect();
        let [min, max] = settings.noise_std;
        Self { layers, log_var_min: (min * min).ln(), log_var_max: (max * max).ln(), with_time }
    }

    /// σ [B, D] for cond [B, C] at time t_k.
    pub fn std(&self, cond: &Tensor, t_k: f64) -> Tensor {
        let mut x = if self.with_time {
            let t = Tensor::full([cond.size()[0], 1], t_k, (Kind::Float, cond.device()));
            Tensor::cat(&[cond.shallow_clone(), t], 1)
        } else {
            cond.shallow_clone()
        };
        let last = self.layers.len() - 1;
        for (i, layer) in self.layers.iter().enumerate() {
            x = x.apply(layer);
            if i < last {
                x = x.tanh();
            }
        }
        let log_var = self.log_var_min + (self.log_var_max - self.log_var_min) * (x.tanh() + 1.0) / 2.0;
        (log_var * 0.5).exp()
    }
}

/// The mean of transition k: clip(x_k + v_θ(x_k, t_k, s)/K', ±c) → [B, D].
pub fn transition_mean(
    policy: &FlowPolicy,
    cond: &Tensor,
    x_k: &Tensor,
    k: i64,
    steps: i64,
    clip: Option<f64>,
) -> Tensor {
    let t = Tensor::full([x_k.size()[0], 1], k as f64 / steps as f64, (Kind::Float, x_k.device()));
    let mean = x_k + policy.velocity(x_k, &t, cond) / steps as f64;
    match clip {
        Some(c) => mean.clamp(-c, c),
        None => mean,
    }
}

/// A noisy chain for cond [B, C] → [K' + 1, B, D] (no gradient; x_0 from libtorch's RNG).
pub fn sample_noisy_chain(
    policy: &FlowPolicy,
    noise: &NoiseNet,
    cond: &Tensor,
    settings: &NoisyChainSettings,
) -> Tensor {
    let steps = settings.denoising_steps;
    tch::no_grad(|| {
        let mut chain = vec![policy.initial_noise(cond.size()[0], false)];
        for k in 0..steps {
            let x_k = &chain[k as usize];
            let mean = transition_mean(policy, cond, x_k, k, steps, settings.denoised_clip);
            let epsilon = mean.randn_like().clamp(-settings.noise_clip, settings.noise_clip);
            let mut next = mean + noise.std(cond, k as f64 / steps as f64) * epsilon;
            if k == steps - 1 {
                next = next.clamp(-1.0, 1.0);
            }
            chain.push(next);
        }
        Tensor::stack(&chain, 0)
    })
}

/// Normalised log-likelihood [B] (clipped) and entropy rate [B] of stored chains
/// [K' + 1, B, D] under the current θ and φ (with gradient through both).
pub fn chain_log_prob(
    policy: &FlowPolicy,
    noise: &NoiseNet,
    cond: &Tensor,
    chain: &Tensor,
    settings: &NoisyChainSettings,
) -> (Tensor, Tensor) {
    let steps = settings.denoising_steps;
    let mut means = Vec::with_capacity(steps as usize);
    let mut stds = Vec::with_capacity(steps as usize);
    for k in 0..steps {
        means.push(transition_mean(policy, cond, &chain.get(k), k, steps, settings.denoised_clip));
        stds.push(noise.std(cond, k as f64 / steps as f64));
    }
    let (log_prob, entropy) = gaussian_chain_log_prob(chain, &Tensor::stack(&means, 0), &Tensor::stack(&stds, 0));
    let [low, high] = settings.log_prob_clip;
    (log_prob.clamp(low, high), entropy)
}

/// The Gaussian-chain arithmetic of [`chain_log_prob`], unclipped: chain [K' + 1, B, D],
/// transition means and standard deviations [K', B, D] → (log-likelihood, entropy rate), both
/// [B] and divided by (K' + 1)·D.
pub fn gaussian_chain_log_prob(chain: &Tensor, means: &Tensor, stds: &Tensor) -> (Tensor, Tensor) {
    let half_log_two_pi = 0.5 * (2.0 * std::f64::consts::PI).ln();
    let (factors, d) = (chain.size()[0] as f64, chain.size()[2] as f64);
    let x_0 = chain.get(0);
    let initial = (x_0.square() * -0.5 - half_log_two_pi).sum_dim_intlist([-1i64].as_slice(), false, Kind::Float);
    let next = chain.narrow(0, 1, chain.size()[0] - 1);
    let z = (next - means) / stds;
    let transitions =
        (z.square() * -0.5 - stds.log() - half_log_two_pi).sum_dim_intlist([0i64, 2].as_slice(), false, Kind::Float);
    let entropy_initial = d * (0.5 + half_log_two_pi);
    let entropy_transitions =
        (stds.log() + 0.5 + half_log_two_pi).sum_dim_intlist([0i64, 2].as_slice(), false, Kind::Float);
    let norm = factors * d;
    ((initial + transitions) / norm, (entropy_transitions + entropy_initial) / norm)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 2-step chain in one dimension: x_0 = 0.5, means μ_0 = 0.7, μ_1 = 1.0, σ = 0.1, 0.2,
    /// x_1 = 0.8, x_2 = 0.9:
    ///   log N(0.5; 0, 1)    = −0.125 − 0.918939 = −1.043939
    ///   log N(0.8; 0.7, .1) = −0.5 + 2.302585 − 0.918939 = 0.883646
    ///   log N(0.9; 1.0, .2) = −0.125 + 1.609438 − 0.918939 = 0.565499
    ///   sum 0.405206, / ((2 + 1)·1) = 0.135069
    ///   entropy: [1.418939 + (1.418939 − 2.302585) + (1.418939 − 1.609438)] / 3 = 0.114931
    #[test]
    fn the_log_likelihood_of_a_two_step_gaussian_chain_by_hand() {
        let chain = Tensor::from_slice(&[0.5f32, 0.8, 0.9]).view([3, 1, 1]);
        let means = Tensor::from_slice(&[0.7f32, 1.0]).view([2, 1, 1]);
        let stds = Tensor::from_slice(&[0.1f32, 0.2]).view([2, 1, 1]);
        let (log_prob, entropy) = gaussian_chain_log_prob(&chain, &means, &stds);
        assert!((log_prob.double_value(&[0]) - 0.135069).abs() < 1e-5, "{}", log_prob.double_value(&[0]));
        assert!((entropy.double_value(&[0]) - 0.114931).abs() < 1e-5, "{}", entropy.double_value(&[0]));
    }

    #[test]
    fn the_noise_network_stays_within_its_bounds() {
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let settings = NoisyChainSettings {
            denoising_steps: 2,
            noise_std: [0.08, 0.14],
            noise_hidden: vec![16],
            noise_depends_on_time: true,
            noise_clip: 3.0,
            denoised_clip: Some(1.0),
            log_prob_clip: [-1.0, 1.0],
        };
        let net = NoiseNet::new(&vs.root(), 5, 4, &settings);
        let std = net.std(&(Tensor::randn([64, 5], (Kind::Float, tch::Device::Cpu)) * 100.0), 0.5);
        assert_eq!(std.size(), [64, 4]);
        let (min, max) = (std.min().double_value(&[]), std.max().double_value(&[]));
        assert!(min >= 0.08 - 1e-6 && max <= 0.14 + 1e-6, "{min} {max}");
    }
}
