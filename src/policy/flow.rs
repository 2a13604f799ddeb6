//! Flow-matching maths on flattened action chunks (docs/algorithm.md §1), independent of any
//! network: the velocity is passed in as a closure, so tests can use exact fields.
//!
//! Linear path, t = 0 noise, t = 1 data:
//!   x_t = (1 − t)·x_noise + t·x_data,   target velocity u = x_data − x_noise.
//! Euler sampler with K steps, t_k = k/K:  x_{k+1} = x_k + (1/K)·v(x_k, t_k).
//! Expected posterior (one-step extrapolation to t = 1, E[x_data | x_t] on the linear path):
//!   a† = x_t + (1 − t)·v(x_t, t).
//! Shapes: B batch, D = Tp·A flattened chunk, K Euler steps.

use tch::Tensor;

/// x_t = (1 − t)·x_noise + t·x_data.  x_noise, x_data: [B, D]; t: [B, 1] → [B, D].
pub fn interpolate(x_noise: &Tensor, x_data: &Tensor, t: &Tensor) -> Tensor {
    x_noise * (1.0 - t) + x_data * t
}

/// u = x_data − x_noise: [B, D].
pub fn target_velocity(x_noise: &Tensor, x_data: &Tensor) -> Tensor {
    x_data - x_noise
}

/// The whole Euler chain x_0..x_K from `x_0` [B, D] → [K + 1, B, D].
/// `velocity(x_k, t_k)` gets x_k [B, D] and the scalar t_k = k/K and returns [B, D].
pub fn euler_chain(x_0: &Tensor, num_steps: i64, mut velocity: impl FnMut(&Tensor, f64) -> Tensor) -> Tensor {
    let dt = 1.0 / num_steps as f64;
    let mut chain = Vec::with_capacity(num_steps as usize + 1);
    chain.push(x_0.shallow_clone());
    for k in 0..num_steps {
        let x_k = &chain[k as usize];
        let t_k = k as f64 * dt;
        let next = x_k + velocity(x_k, t_k) * dt;
        chain.push(next);
    }
    Tensor::stack(&chain, 0)
}

/// a† = x_t + (1 − t)·v.  x_t, v: [N, D]; t: [N, 1] (or a scalar tensor) → [N, D].
pub fn expected_posterior(x_t: &Tensor, t: &Tensor, v: &Tensor) -> Tensor {
    x_t + v * (1.0 - t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    /// For the straight path to a fixed endpoint a, v(x, t) = (a − x)/(1 − t) is exact: the
    /// chain ends at a, and a† at every step equals the endpoint.
    #[test]
    fn expected_posterior_of_exact_velocity_is_the_endpoint() {
        tch::manual_seed(0);
        let opts = (Kind::Double, Device::Cpu);
        let a = Tensor::randn([5, 28], opts);
        let x_0 = Tensor::randn([5, 28], opts);
        let exact = |x: &Tensor, t: f64| (&a - x) / (1.0 - t);
        let chain = euler_chain(&x_0, 8, exact);
        assert_eq!(chain.size(), [9, 5, 28]);
        let endpoint = chain.get(8);
        assert!(endpoint.allclose(&a, 1e-10, 1e-10, false));
        for k in 0..8 {
            let t = k as f64 / 8.0;
            let x_k = chain.get(k);
            let a_dagger = expected_posterior(&x_k, &Tensor::from(t), &exact(&x_k, t));
            assert!(a_dagger.allclose(&endpoint, 1e-10, 1e-10, false), "step {k}");
        }
    }

    #[test]
    fn path_endpoints_and_velocity() {
        let opts = (Kind::Double, Device::Cpu);
        let x_noise = Tensor::from_slice(&[1.0, -1.0]).view([1, 2]).to_kind(opts.0);
        let x_data = Tensor::from_slice(&[3.0, 5.0]).view([1, 2]).to_kind(opts.0);
        let t = |v: f64| Tensor::from_slice(&[v]).view([1, 1]);
        assert!(interpolate(&x_noise, &x_data, &t(0.0)).equal(&x_noise));
        assert!(interpolate(&x_noise, &x_data, &t(1.0)).equal(&x_data));
        let mid: Vec<f64> = interpolate(&x_noise, &x_data, &t(0.25)).view([-1]).try_into().unwrap();
        assert_eq!(mid, [1.5, 0.5]);
        let u: Vec<f64> = target_velocity(&x_noise, &x_data).view([-1]).try_into().unwrap();
        assert_eq!(u, [2.0, 6.0]);
    }
}
