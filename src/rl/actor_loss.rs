//! RLDT's actor losses (docs/algorithm.md §5) as functions of tensors, apart from any network.
//! Every loss is a mean over the N = B·P sample rows of a sum over the chunk's D numbers.
//! Inputs named `sg_*` are treated as constants (detached here).
//!
//! - Transport alignment: L_RL = −mean_n ⟨v_n, sg(φ_n)⟩ / (K·(1 − t_n)). Its gradient equals
//!   that of the regression form ½·mean_n ‖v_n − sg(v_n + φ_n/(1 − t_n))‖² / K: the velocity
//!   change that moves a† by exactly φ.
//! - Consistency (weight 0.5): mean_n ‖x_t + (1 − t)·v − sg(a)‖² / (K·(1 − t))².
//! - Constraint (weight 0.2): mean_n ‖v(x'_τ) − sg(v_ref(x'_τ))‖².

use tch::{Kind, Tensor};

fn row_sum_mean(x: &Tensor) -> Tensor {
    x.sum_dim_intlist(-1, false, Kind::Float).mean(Kind::Float)
}

/// v: [N, D] (with gradient), φ: [N, D], t: [N, 1], K Euler steps → scalar.
pub fn alignment_loss(v: &Tensor, sg_phi: &Tensor, t: &Tensor, num_steps: i64) -> Tensor {
    let one_minus_t: Tensor = 1.0 - t;
    let weight = (one_minus_t * num_steps as f64).reciprocal(); // [N, 1]
    -row_sum_mean(&(v * sg_phi.detach() * weight))
}

/// The regression form of [`alignment_loss`] (same gradient in v): for tests and reading.
pub fn alignment_regression_loss(v: &Tensor, sg_phi: &Tensor, t: &Tensor, num_steps: i64) -> Tensor {
    let one_minus_t: Tensor = 1.0 - t;
    let target = (v + sg_phi / one_minus_t).detach();
    row_sum_mean(&(v - target).square()) * (0.5 / num_steps as f64)
}

/// x_t: [N, D], v = v_θ(x_t, t): [N, D], t: [N, 1], endpoint a: [N, D] → scalar.
pub fn consistency_loss(x_t: &Tensor, v: &Tensor, t: &Tensor, sg_endpoint: &Tensor, num_steps: i64) -> Tensor {
    let one_minus_t: Tensor = 1.0 - t;
    let a_dagger: Tensor = x_t + v * &one_minus_t;
    let scale = (one_minus_t * num_steps as f64).square(); // [N, 1]
    row_sum_mean(&((a_dagger - sg_endpoint.detach()).square() / scale))
}

/// v, v_ref at the same (x'_τ, τ, s): [N, D] → scalar.
pub fn constraint_loss(v: &Tensor, sg_v_ref: &Tensor) -> Tensor {
    row_sum_mean(&(v - sg_v_ref.detach()).square())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{nn, Device};

    /// A linear "velocity" v = x·W: the alignment loss and its regression form give the same
    /// gradient in W.
    #[test]
    fn alignment_gradient_equals_regression_gradient() {
        tch::manual_seed(4);
        let opts = (Kind::Float, Device::Cpu);
        let x = Tensor::randn([6, 5], opts);
        let phi = Tensor::randn([6, 5], opts);
        let t = Tensor::from_slice(&[0.0f32, 0.125, 0.25, 0.5, 0.75, 0.875]).view([6, 1]);
        let grad_of = |loss_fn: &dyn Fn(&Tensor) -> Tensor| {
            let vs = nn::VarStore::new(Device::Cpu);
            let w = vs.root().var_copy("w", &Tensor::eye(5, opts));
            let loss = loss_fn(&x.matmul(&w));
            loss.backward();
            w.grad().copy()
        };
        let a = grad_of(&|v| alignment_loss(v, &phi, &t, 8));
        let b = grad_of(&|v| alignment_regression_loss(v, &phi, &t, 8));
        assert!(a.allclose(&b, 1e-5, 1e-6, false), "{a}\n{b}");
        assert!(a.abs().sum(Kind::Float).double_value(&[]) > 1e-3, "a zero gradient proves nothing");
    }

    /// Consistency is zero when a† equals the endpoint, positive otherwise.
    #[test]
    fn consistency_vanishes_at_the_endpoint() {
        let x_t = Tensor::from_slice(&[0.0f32, 1.0]).view([1, 2]);
        let t = Tensor::from_slice(&[0.5f32]).view([1, 1]);
        let endpoint = Tensor::from_slice(&[1.0f32, 2.0]).view([1, 2]);
        let exact = (&endpoint - &x_t) / 0.5; // a† = x_t + 0.5·v = endpoint
        assert_eq!(consistency_loss(&x_t, &exact, &t, &endpoint, 8).double_value(&[]), 0.0);
        // Off by 0.1 in one number: (0.5·0.1)² / (8·0.5)² = 0.0025/16.
        let off = &exact + Tensor::from_slice(&[0.1f32, 0.0]).view([1, 2]);
        let value = consistency_loss(&x_t, &off, &t, &endpoint, 8).double_value(&[]);
        assert!((value - 0.0025 / 16.0).abs() < 1e-9, "{value}");
    }
}
