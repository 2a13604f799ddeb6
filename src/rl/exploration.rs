//! Exploration by the last steps' extrapolation gap (docs/algorithm.md §6): sample a full
//! chain, pick k uniform in a set of late steps (paper: {6, 7} for K = 8), take
//! a†_k = x_k + (1 − t_k)·v(x_k, t_k), d = ‖a − a†_k‖ over the whole chunk, and execute
//! a + d·ε, ε ~ N(0, I). With K = 8, k = 7 gives a†_7 = x_8 = a exactly, so d = 0 and about
//! half the chunks get no noise, as in the paper's code; another set of steps is an option.
//! Evaluation uses plain samples (no call to this).

use tch::{Kind, Tensor};

use crate::policy::FlowPolicy;

/// chain [K + 1, B, D], cond [B, C] → (exploratory chunk [B, D], gap d [B]).
pub fn explore(policy: &FlowPolicy, chain: &Tensor, cond: &Tensor, steps: &[i64]) -> (Tensor, Tensor) {
    tch::no_grad(|| {
        let k_steps = policy.spec().config.num_denoising_steps;
        let (b, device) = (cond.size()[0], cond.device());
        let choice = Tensor::randint(steps.len() as i64, [b], (Kind::Int64, device));
        let ks = Tensor::from_slice(steps).to_device(device).index_select(0, &choice); // [B]
        let d = chain.size()[2];
        let x_k =
            chain.permute([1, 0, 2]).gather(1, &ks.view([b, 1, 1]).expand([b, 1, d], false), false).squeeze_dim(1);
        let t = (ks.to_kind(Kind::Float) / k_steps as f64).view([b, 1]);
        let endpoint = chain.get(k_steps);
        let a_dagger = policy.expected_posterior(&x_k, &t, cond);
        let gap = (&endpoint - a_dagger).norm_scalaropt_dim(2.0, [-1], false); // [B]
        (&endpoint + endpoint.randn_like() * gap.unsqueeze(-1), gap)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{nn, Device};

    fn toy_policy() -> (nn::VarStore, FlowPolicy) {
        let vs = nn::VarStore::new(Device::Cpu);
        let policy = FlowPolicy::new(&vs.root(), crate::toy::toy_spec()).unwrap();
        (vs, policy)
    }

    /// k = K − 1 = 7: a† is the last Euler step itself, so the gap is exactly 0 and the
    /// executed chunk is the sample. k = 0: the gap is positive and the noise has that scale.
    #[test]
    fn gap_is_zero_at_the_last_step_and_scales_the_noise() {
        tch::manual_seed(0);
        let (_vs, policy) = toy_policy();
        let obs = crate::policy::ObsBatch {
            images: vec![],
            proprio: Tensor::zeros([4000, 1, 1], (Kind::Float, Device::Cpu)),
        };
        let cond = policy.condition(&obs, false);
        let chain = tch::no_grad(|| policy.sample_chain(&cond, &policy.initial_noise(4000, false)));
        let (executed, gap) = explore(&policy, &chain, &cond, &[7]);
        assert!(gap.abs().max().double_value(&[]) < 1e-5);
        assert!(executed.allclose(&chain.get(8), 1e-5, 1e-5, false));
        let (executed, gap) = explore(&policy, &chain, &cond, &[0]);
        let noise = (&executed - chain.get(8)) / gap.unsqueeze(-1);
        assert!(gap.min().double_value(&[]) > 0.0);
        let std = noise.std(true).double_value(&[]);
        assert!((std - 1.0).abs() < 0.05, "noise / gap should be N(0, 1): std {std}");
    }
}
