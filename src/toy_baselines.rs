//! The on-policy baselines on the 2-D toy of `crate::toy` (the same pretrained bimodal policy,
//! the same two-peak reward), for the toy table beside RLDT's fields. The toy has one constant
//! state and one-step episodes, so an episode's return is its reward Q(a) and the advantage is
//! Q(a) normalised over the minibatch (a value baseline would be subtracted by the
//! normalisation anyway). Per iteration: `chains` samples, then `epochs` passes of shuffled
//! minibatches with the KL stop:
//! - ReinFlow: noisy chains (`rl::noisy_chain`) and their ℓ_old; the clipped surrogate minus
//!   the entropy bonus; one AdamW step each for the policy and the noise network;
//! - FPO++: the policy's own ODE samples, 8 (τ, ε) draws each with their CFM losses; per-draw
//!   ratios under the asymmetric trust region (`rl::fpo`); one AdamW step for the policy; no
//!   KL stop (as `square_fpo.json`: the CFM-loss ratio's "KL" is no divergence of the policy).
//! - DPPO: chains with σ = 0.1 at every Euler step (`rl::dppo`) and their per-step ℓ_old; the
//!   per-step clipped surrogate with its denoising discount; one AdamW step for the policy; no
//!   KL stop (DPPO's Square config stops at 1).
//! - QAM: the off-policy baseline, with the known Q in place of a critic as RLDT's toy has it:
//!   per actor step 128 memoryless trajectories, their lean adjoints from −λ·∇Q at the
//!   endpoints and the adjoint-matching loss (`rl::adjoint_matching`) toward
//!   π_base·exp(λ·Q), π_base the pretrained policy (frozen); RLDT's toy budget (actor steps,
//!   learning rate, warm-up).
//! The report describes plain ODE samples (noise off), as RLDT's toy report does.

use tch::{nn, Device, Kind, Tensor};

use crate::optim::AdamW;
use crate::policy::flow;
use crate::policy::FlowPolicy;
use crate::rl::adjoint_matching::{adjoint_matching_objective, AdjointMatchingSettings};
use crate::rl::dppo::{dppo_surrogate, sample_fixed_noise_chain, step_log_probs, step_means, DppoSettings};
use crate::rl::fpo::{fpo_log_ratio, trust_region_loss, CfmLossReduction, FpoSettings, TrustRegion};
use crate::rl::noisy_chain::{chain_log_prob, sample_noisy_chain, NoiseNet, NoisyChainSettings};
use crate::rl::ppo::{clip_gradients, clipped_surrogate, normalize_advantages};
use crate::toy::{constant_states, describe, pretrain_bimodal, q_and_grad, sample, toy_spec, ToyReport};

/// The baselines' toy settings: the chain and PPO values of `configs/finetune/square_reinflow.json`
/// (FPO++: the draws and ratio clip of `square_fpo.json`, with the asymmetric trust region,
/// FPO++'s choice away from manipulation fine-tuning) except the learning
/// rate (the toy's actor learning rate, as RLDT's toy uses) and the budget, which the command
/// line sets.
#[derive(Debug, Clone, clap::Args)]
pub struct ToyReinflowOptions {
    /// ReinFlow and FPO++ iterations (each: sample, then `--reinflow-epochs` passes).
    #[arg(long, default_value_t = 30)]
    pub reinflow_iterations: i64,
    /// Noisy chains sampled per iteration.
    #[arg(long, default_value_t = 256)]
    pub reinflow_chains: i64,
    #[arg(long, default_value_t = 10)]
    pub reinflow_epochs: i64,
    #[arg(long, default_value_t = 64)]
    pub reinflow_minibatch: i64,
    /// ε of ReinFlow's clipped ratio (authors' Square config: 0.01; FPO++ uses 0.05).
    #[arg(long, default_value_t = 0.01)]
    pub reinflow_clip: f64,
    /// Entropy bonus weight (0.01).
    #[arg(long, default_value_t = 0.01)]
    pub reinflow_entropy: f64,
    /// Stop an iteration's passes once the approximate KL exceeds this (0.01).
    #[arg(long, default_value_t = 0.01)]
    pub reinflow_target_kl: f64,
    /// QAM's λ in π_base·exp(λ·Q) (the toy's Q peaks at 1; `square_state_qam.json`: 30).
    #[arg(long, default_value_t = 30.0)]
    pub qam_inverse_temperature: f64,
    /// QAM's K' (Euler steps for its trajectories, samples and report; the toy policy's K is 8).
    #[arg(long, default_value_t = 32)]
    pub qam_denoising_steps: i64,
}

/// The policy RLDT's toy starts from for `seed`: the same RNG sequence (the reference policy
/// RLDT's toy builds is built and dropped), the same data and steps.
fn pretrained_toy_policy(seed: i64, pretrain_steps: i64) -> (nn::VarStore, FlowPolicy) {
    tch::manual_seed(seed);
    let vs = nn::VarStore::new(Device::Cpu);
    let policy = FlowPolicy::new(&vs.root(), toy_spec()).expect("toy spec is valid");
    let reference_vs = nn::VarStore::new(Device::Cpu);
    let _reference = FlowPolicy::new(&reference_vs.root(), toy_spec()).expect("toy spec is valid");
    pretrain_bimodal(&vs, &policy, pretrain_steps);
    (vs, policy)
}

/// Pretrains like RLDT's toy (same seed, same data, same steps), then runs ReinFlow.
pub fn run_toy_reinflow(
    seed: i64,
    pretrain_steps: i64,
    actor_lr: f64,
    samples: i64,
    options: &ToyReinflowOptions,
) -> ToyReport {
    let (vs, policy) = pretrained_toy_policy(seed, pretrain_steps);
    let pretrained = describe(&sample(&policy, samples));

    let settings = NoisyChainSettings {
        denoising_steps: policy.spec().config.num_denoising_steps,
        noise_std: [0.08, 0.14],
        noise_hidden: vec![384, 384, 384],
        noise_depends_on_time: false,
        noise_clip: 3.0,
        denoised_clip: None,
        log_prob_clip: [-1.0, 1.0],
    };
    let noise_vs = nn::VarStore::new(Device::Cpu);
    let noise = NoiseNet::new(&noise_vs.root(), policy.condition_dim(), policy.action_numbers(), &settings);
    let mut policy_optimizer = AdamW::new(&vs, 0.9, 0.999, 1e-8, 0.0);
    let mut noise_optimizer = AdamW::new(&noise_vs, 0.9, 0.999, 1e-8, 0.0);
    let k = settings.denoising_steps;
    let mut history = Vec::new();
    let mut steps_taken = 0i64;
    for iteration in 0..=options.reinflow_iterations {
        let cloud = describe(&sample(&policy, 512));
        history.push((steps_taken, cloud.near_peak, cloud.left_share));
        if iteration == options.reinflow_iterations {
            break;
        }
        let n = options.reinflow_chains;
        let cond = tch::no_grad(|| policy.condition(&constant_states(n), false));
        let chain = sample_noisy_chain(&policy, &noise, &cond, &settings);
        let old_log_prob = tch::no_grad(|| chain_log_prob(&policy, &noise, &cond, &chain, &settings).0);
        let rewards = q_and_grad(&chain.get(k)).0;
        'epochs: for _ in 0..options.reinflow_epochs {
            let order = Tensor::randperm(n, (Kind::Int64, Device::Cpu));
            let mut start = 0;
            while start < n {
                let size = options.reinflow_minibatch.min(n - start);
                let rows = order.narrow(0, start, size);
                start += size;
                let cond = policy.condition(&constant_states(size), true);
                let chain = chain.index_select(1, &rows);
                let (log_prob, entropy) = chain_log_prob(&policy, &noise, &cond, &chain, &settings);
                let advantages = normalize_advantages(&rewards.index_select(0, &rows));
                let surrogate = clipped_surrogate(
                    &(log_prob - old_log_prob.index_select(0, &rows)),
                    &advantages,
                    options.reinflow_clip,
                );
                let loss = &surrogate.loss - entropy.mean(Kind::Float) * options.reinflow_entropy;
                policy_optimizer.zero_grad();
                noise_optimizer.zero_grad();
                loss.backward();
                let mut params = vs.trainable_variables();
                params.extend(noise_vs.trainable_variables());
                clip_gradients(&params, 25.0);
                policy_optimizer.step(actor_lr);
                noise_optimizer.step(actor_lr);
                steps_taken += 1;
                if surrogate.approx_kl > options.reinflow_target_kl {
                    break 'epochs;
                }
            }
        }
    }
    ToyReport {
        method: "reinflow".into(),
        seed,
        pretrained,
        finetuned: describe(&sample(&policy, samples)),
        actor_steps: steps_taken,
        history,
    }
}

/// Pretrains like RLDT's toy (same seed, same data, same steps), then runs FPO++.
pub fn run_toy_fpo(
    seed: i64,
    pretrain_steps: i64,
    actor_lr: f64,
    samples: i64,
    options: &ToyReinflowOptions,
) -> ToyReport {
    let (vs, policy) = pretrained_toy_policy(seed, pretrain_steps);
    let pretrained = describe(&sample(&policy, samples));

    let (draws, clip) = (8i64, 0.05);
    // The ratio as FPO++ computes it when training from scratch: per draw, mean over the two
    // numbers, no cap on the losses, |log ρ| ≤ 5 straight-through.
    let ratio_settings = FpoSettings {
        samples_per_chunk: draws as usize,
        per_sample_ratio: true,
        trust_region: TrustRegion::Aspo,
        log_ratio_clip: 5.0,
        log_ratio_clip_straight_through: true,
        cfm_loss_reduction: CfmLossReduction::Mean,
        cfm_loss_clip: None,
    };
    let mut optimizer = AdamW::new(&vs, 0.9, 0.999, 1e-8, 0.0);
    // ℓ of every draw: cond [B, C], actions [B, 2], τ [B, N], ε [B, N, 2] → [B, N].
    let cfm_losses = |cond: &Tensor, actions: &Tensor, tau: &Tensor, epsilon: &Tensor| {
        let (b, n, d) = (epsilon.size()[0], epsilon.size()[1], epsilon.size()[2]);
        let a = actions.unsqueeze(1).expand([b, n, d], false).reshape([b * n, d]);
        let (eps, t) = (epsilon.reshape([b * n, d]), tau.reshape([b * n, 1]));
        let cond = cond.unsqueeze(1).expand([b, n, cond.size()[1]], false).reshape([b * n, -1]);
        let error = policy.velocity(&flow::interpolate(&eps, &a, &t), &t, &cond) - flow::target_velocity(&eps, &a);
        error.square().mean_dim([-1i64].as_slice(), false, Kind::Float).view([b, n])
    };
    let mut history = Vec::new();
    let mut steps_taken = 0i64;
    for iteration in 0..=options.reinflow_iterations {
        let cloud = describe(&sample(&policy, 512));
        history.push((steps_taken, cloud.near_peak, cloud.left_share));
        if iteration == options.reinflow_iterations {
            break;
        }
        let n = options.reinflow_chains;
        let actions = sample(&policy, n);
        let tau = Tensor::rand([n, draws], (Kind::Float, Device::Cpu));
        let epsilon = Tensor::randn([n, draws, 2], (Kind::Float, Device::Cpu));
        let old_losses =
            tch::no_grad(|| cfm_losses(&policy.condition(&constant_states(n), false), &actions, &tau, &epsilon));
        let rewards = q_and_grad(&actions).0;
        for _ in 0..options.reinflow_epochs {
            let order = Tensor::randperm(n, (Kind::Int64, Device::Cpu));
            let mut start = 0;
            while start < n {
                let size = options.reinflow_minibatch.min(n - start);
                let rows = order.narrow(0, start, size);
                start += size;
                let cond = policy.condition(&constant_states(size), true);
                let pick = |t: &Tensor| t.index_select(0, &rows);
                let new_losses = cfm_losses(&cond, &pick(&actions), &pick(&tau), &pick(&epsilon));
                let log_ratio = fpo_log_ratio(&pick(&old_losses), &new_losses, &ratio_settings);
                let advantages = normalize_advantages(&pick(&rewards)).unsqueeze(-1);
                let loss = trust_region_loss(&log_ratio, &advantages, clip, TrustRegion::Aspo);
                optimizer.zero_grad();
                loss.backward();
                clip_gradients(&vs.trainable_variables(), 25.0);
                optimizer.step(actor_lr);
                steps_taken += 1;
            }
        }
    }
    ToyReport {
        method: "fpo".into(),
        seed,
        pretrained,
        finetuned: describe(&sample(&policy, samples)),
        actor_steps: steps_taken,
        history,
    }
}

/// Pretrains like RLDT's toy (same seed, same data, same steps), then runs DPPO on the flow
/// policy: the settings of `square_state_dppo.json` (σ 0.1 per step, per-step clip 0.001 → the
/// ReinFlow clip option (0.01 by default, as DPPO's last step), denoising discount 0.99), every
/// Euler step fine-tuned, no KL stop (DPPO's config stops at a KL of 1, in effect never).
pub fn run_toy_dppo(
    seed: i64,
    pretrain_steps: i64,
    actor_lr: f64,
    samples: i64,
    options: &ToyReinflowOptions,
) -> ToyReport {
    let (vs, policy) = pretrained_toy_policy(seed, pretrain_steps);
    let pretrained = describe(&sample(&policy, samples));

    let settings = DppoSettings::square(policy.spec().config.num_denoising_steps);
    let k = settings.denoising_steps;
    let horizons = (policy.spec().config.pred_horizon, policy.spec().config.exec_horizon);
    let (clips, discounts) = (settings.step_clip_ratios(options.reinflow_clip), settings.step_discounts());
    let mut optimizer = AdamW::new(&vs, 0.9, 0.999, 1e-8, 0.0);
    let mut history = Vec::new();
    let mut steps_taken = 0i64;
    for iteration in 0..=options.reinflow_iterations {
        let cloud = describe(&sample(&policy, 512));
        history.push((steps_taken, cloud.near_peak, cloud.left_share));
        if iteration == options.reinflow_iterations {
            break;
        }
        let n = options.reinflow_chains;
        let cond = tch::no_grad(|| policy.condition(&constant_states(n), false));
        let chain = sample_fixed_noise_chain(&policy, &cond, &settings);
        let old_log_probs = tch::no_grad(|| {
            step_log_probs(
                &chain,
                &step_means(&policy, &cond, &chain, k),
                settings.std,
                horizons,
                settings.log_prob_clip,
            )
        }); // [K', n]
        let rewards = q_and_grad(&chain.get(k)).0;
        for _ in 0..options.reinflow_epochs {
            let order = Tensor::randperm(n, (Kind::Int64, Device::Cpu));
            let mut start = 0;
            while start < n {
                let size = options.reinflow_minibatch.min(n - start);
                let rows = order.narrow(0, start, size);
                start += size;
                let cond = policy.condition(&constant_states(size), true);
                let chain = chain.index_select(1, &rows);
                let means = step_means(&policy, &cond, &chain, k);
                let log_probs = step_log_probs(&chain, &means, settings.std, horizons, settings.log_prob_clip);
                let advantages = normalize_advantages(&rewards.index_select(0, &rows));
                let surrogate = dppo_surrogate(
                    &(log_probs - old_log_probs.index_select(1, &rows)),
                    &advantages,
                    &clips,
                    &discounts,
                );
                optimizer.zero_grad();
                surrogate.loss.backward();
                clip_gradients(&vs.trainable_variables(), 25.0);
                optimizer.step(actor_lr);
                steps_taken += 1;
            }
        }
    }
    ToyReport {
        method: "dppo".into(),
        seed,
        pretrained,
        finetuned: describe(&sample(&policy, samples)),
        actor_steps: steps_taken,
        history,
    }
}

/// Pretrains like RLDT's toy (same seed, same data, same steps), then runs QAM's actor steps
/// (RLDT's toy budget: `actor_steps` steps of 16 states × 8 trajectories, Adam at `actor_lr`
/// with RLDT's 64-step warm-up) toward π_base·exp(λ·Q) with π_base the pretrained policy,
/// both sampled with K' Euler steps (the "pretrained" row too).
pub fn run_toy_qam(
    seed: i64,
    pretrain_steps: i64,
    actor_lr: f64,
    actor_steps: i64,
    samples: i64,
    options: &ToyReinflowOptions,
) -> ToyReport {
    let (vs, mut policy) = pretrained_toy_policy(seed, pretrain_steps);
    policy.set_denoising_steps(options.qam_denoising_steps);
    let pretrained = describe(&sample(&policy, samples));
    let mut base_vs = nn::VarStore::new(Device::Cpu);
    let mut base = FlowPolicy::new(&base_vs.root(), toy_spec()).expect("toy spec is valid");
    base_vs.copy(&vs).expect("same variables");
    base.set_denoising_steps(options.qam_denoising_steps);
    let settings = AdjointMatchingSettings {
        inverse_temperature: options.qam_inverse_temperature,
        clip_endpoint: true,
        denoising_steps: options.qam_denoising_steps,
        q_gradient_from_target: false, // the toy's Q is exact: no critic, no target
    };
    let (states, trajectories) = (16i64, 8i64);
    let q_grad = |a: &Tensor, _first_row: i64| q_and_grad(a).1;
    let mut optimizer = AdamW::new(&vs, 0.9, 0.999, 1e-8, 0.0);
    let mut history = Vec::new();
    for step in 0..=actor_steps {
        if step % 10 == 0 || step == actor_steps {
            let cloud = describe(&sample(&policy, 512));
            history.push((step, cloud.near_peak, cloud.left_share));
        }
        if step == actor_steps {
            break;
        }
        optimizer.zero_grad();
        adjoint_matching_objective(&policy, &base, &constant_states(states), &q_grad, trajectories, &settings, 1);
        optimizer.step(actor_lr * ((step + 1) as f64 / 64.0).min(1.0));
    }
    ToyReport {
        method: "qam".into(),
        seed,
        pretrained,
        finetuned: describe(&sample(&policy, samples)),
        actor_steps,
        history,
    }
}
