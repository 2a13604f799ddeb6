//! The SVGD transport field of RLDT (docs/algorithm.md §4), pure tensor maths: particles,
//! their scores and the query points in, the field out. It never sees a critic or a policy.
//!
//! Per state (B states, P particles, D numbers per action chunk):
//! - d²_ij = ‖a†_i − a_j‖²  (query i against final particle j, i's own endpoint included)
//! - bandwidth h_i = lowermedian_j(d²_ij) / (2·ln(P + 1)), clamped ≥ 1e-8
//!   (the lower median: for P = 8 the 4th smallest of 8, not the mean of 4th and 5th)
//! - kernel k_ij = exp(−d²_ij / (2·h_i))
//! - temperature α(s) = 0.001 × clamp(mean_j ‖g_j‖, 0, 1e5), g_j = ∇_a Q(s, a_j)
//! - attraction_i = (1/P)·Σ_j k_ij·g_j
//! - repulsion_i  = (1/P)·Σ_j α(s)·k_ij·(a†_i − a_j)/h_i
//! - φ_i = attraction_i + repulsion_i   (α × the SVGD direction for p ∝ exp(Q/α))

use tch::Tensor;

/// How the kernel bandwidth is chosen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Bandwidth {
    /// h_i = lower median of d²_i· / (2 ln(P + 1)) (the paper's).
    Median,
    /// A fixed h for every query.
    Fixed(f64),
}

/// How the repulsion temperature α(s) is chosen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Temperature {
    /// α(s) = scale × clamp(mean_j ‖g_j‖, 0, 1e5) (the paper's, scale = 0.001).
    ScoreNorm { scale: f64 },
    /// A fixed α (tests: α = 1 with g = ∇ log p gives plain SVGD toward p).
    Fixed(f64),
}

/// The field and its parts. Shapes: field, attraction, repulsion [B, P, D]; bandwidth [B, P];
/// alpha [B].
#[derive(Debug)]
pub struct TransportField {
    pub field: Tensor,
    pub attraction: Tensor,
    pub repulsion: Tensor,
    pub bandwidth: Tensor,
    pub alpha: Tensor,
}

/// Lower median along the last dimension: [.., P] → [..], the ⌊(P − 1)/2⌋-th smallest.
pub fn lower_median(values: &Tensor) -> Tensor {
    let p = *values.size().last().expect("at least one dimension");
    let (sorted, _) = values.sort(-1, false);
    sorted.narrow(-1, (p - 1) / 2, 1).squeeze_dim(-1)
}

/// queries a†: [B, P, D], particles a: [B, P, D], scores g = ∇Q(a): [B, P, D] → the field.
pub fn transport_field(
    queries: &Tensor,
    particles: &Tensor,
    scores: &Tensor,
    bandwidth: Bandwidth,
    temperature: Temperature,
) -> TransportField {
    let p = particles.size()[1];
    let kind = queries.kind(); // every sum at the dtype it is given (float64 for reference checks)
    let differences = queries.unsqueeze(2) - particles.unsqueeze(1); // [B, P_i, P_j, D]: a†_i − a_j
    let squared = differences.square().sum_dim_intlist(-1, false, kind); // [B, P, P]
    let h = match bandwidth {
        Bandwidth::Median => (lower_median(&squared) / (2.0 * ((p + 1) as f64).ln())).clamp_min(1e-8),
        Bandwidth::Fixed(h) => squared.select(-1, 0).full_like(h),
    }; // [B, P]
    let kernel = (-&squared / (h.unsqueeze(-1) * 2.0)).exp(); // [B, P_i, P_j]
    let alpha = match temperature {
        Temperature::ScoreNorm { scale } => {
            scores.norm_scalaropt_dim(2.0, [-1], false).mean_dim(-1, false, kind).clamp(0.0, 1e5) * scale
        }
        Temperature::Fixed(a) => scores.select(1, 0).select(-1, 0).full_like(a),
    }; // [B]
    let attraction = kernel.matmul(scores) / p as f64; // Σ_j k_ij g_j / P: [B, P, D]
    let weighted = (kernel.unsqueeze(-1) * &differences).sum_dim_intlist(2, false, kind); // Σ_j k_ij (a†_i − a_j)
    let repulsion = weighted / h.unsqueeze(-1) * alpha.view([-1, 1, 1]) / p as f64;
    TransportField { field: &attraction + &repulsion, attraction, repulsion, bandwidth: h, alpha }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    fn tensor(values: &[f32], shape: &[i64]) -> Tensor {
        Tensor::from_slice(values).view(shape)
    }

    /// Hand computation: 1-D particles [0, 1, 3] queried at themselves.
    /// d² from 0: [0, 1, 9] → lower median 1; from 1: [1, 0, 4] → 1; from 3: [9, 4, 0] → 4;
    /// h = median / (2 ln 4). And P = 8 at 0..7 queried at 0: d² = [0, 1, 4, …, 49], the 4th
    /// smallest is 9 (not (9 + 16)/2): h = 9 / (2 ln 9).
    #[test]
    fn median_bandwidth_by_hand() {
        let a = tensor(&[0.0, 1.0, 3.0], &[1, 3, 1]);
        let field = transport_field(&a, &a, &a.zeros_like(), Bandwidth::Median, Temperature::Fixed(1.0));
        let h: Vec<f32> = field.bandwidth.flatten(0, -1).try_into().unwrap();
        let ln4 = 4f32.ln();
        for (got, want) in h.iter().zip([1.0 / (2.0 * ln4), 1.0 / (2.0 * ln4), 4.0 / (2.0 * ln4)]) {
            assert!((got - want).abs() < 1e-6, "{h:?}");
        }
        let line: Vec<f32> = (0..8).map(|i| i as f32).collect();
        let particles = tensor(&line, &[1, 8, 1]);
        let field = transport_field(
            &particles,
            &particles,
            &particles.zeros_like(),
            Bandwidth::Median,
            Temperature::Fixed(1.0),
        );
        let h0 = field.bandwidth.get(0).get(0).double_value(&[]);
        assert!((h0 - 9.0 / (2.0 * 9f64.ln())).abs() < 1e-5, "{h0}");
    }

    /// The field works at the dtype it is given: float64 particles [0, 1, 3] give
    /// h = 1 / (2 ln 4) to 1e-12 and a float64 field.
    #[test]
    fn float64_inputs_stay_float64() {
        let a = Tensor::from_slice(&[0.0f64, 1.0, 3.0]).view([1, 3, 1]);
        let field = transport_field(&a, &a, &a.ones_like(), Bandwidth::Median, Temperature::ScoreNorm { scale: 0.001 });
        assert_eq!(field.field.kind(), tch::Kind::Double);
        let h = field.bandwidth.double_value(&[0, 0]);
        assert!((h - 1.0 / (2.0 * 4f64.ln())).abs() < 1e-12, "{h}");
    }

    /// Two particles, no scores: the repulsion pushes them apart, equal and opposite. (A fixed
    /// bandwidth: with P = 2 the lower median of {0, d²} is the self-distance 0, so the median
    /// rule gives h = 1e-8 and no interaction — the paper's rule is meant for P ≥ 3.)
    #[test]
    fn repulsion_alone_is_symmetric() {
        let a = tensor(&[-0.5, 0.2, 0.5, -0.2], &[1, 2, 2]);
        let field = transport_field(&a, &a, &a.zeros_like(), Bandwidth::Fixed(1.0), Temperature::Fixed(1.0));
        assert!(field.attraction.abs().max().double_value(&[]) == 0.0);
        let r: Vec<f32> = field.field.flatten(0, -1).try_into().unwrap();
        assert!((r[0] + r[2]).abs() < 1e-6 && (r[1] + r[3]).abs() < 1e-6, "not symmetric: {r:?}");
        // Particle 0 sits at −x: pushed further to −x (away from particle 1).
        assert!(r[0] < 0.0 && r[2] > 0.0, "{r:?}");
    }

    /// α(s) = 0.001 × mean ‖g‖: scores of norms 3 and 5 → α = 0.004.
    #[test]
    fn temperature_from_score_norms() {
        let a = Tensor::zeros([1, 2, 2], (Kind::Float, Device::Cpu));
        let g = tensor(&[3.0, 0.0, 0.0, 5.0], &[1, 2, 2]);
        let field = transport_field(&a, &a, &g, Bandwidth::Median, Temperature::ScoreNorm { scale: 0.001 });
        assert!((field.alpha.double_value(&[0]) - 0.004).abs() < 1e-9);
    }

    /// With g = ∇ log N(μ, σ²I) and α = 1, moving particles by φ (queries = particles) is
    /// plain SVGD: 64 particles in 2-D reach the target's mean and spread.
    #[test]
    fn particles_reach_a_gaussian_target() {
        tch::manual_seed(0);
        let mu = Tensor::from_slice(&[2.0f32, -1.0]).view([1, 1, 2]);
        let sigma = 0.5;
        let mut a = Tensor::randn([1, 64, 2], (Kind::Float, Device::Cpu)) * 0.3 - 1.0;
        for _ in 0..800 {
            let score = (&mu - &a) / (sigma * sigma);
            let field = transport_field(&a, &a, &score, Bandwidth::Median, Temperature::Fixed(1.0));
            a = &a + field.field * 0.05;
        }
        let mean: Vec<f32> = a.mean_dim(1, false, Kind::Float).flatten(0, -1).try_into().unwrap();
        let std: Vec<f32> = a.std_dim(1, true, false).flatten(0, -1).try_into().unwrap();
        assert!((mean[0] - 2.0).abs() < 0.05 && (mean[1] + 1.0).abs() < 0.05, "mean {mean:?}");
        for s in std {
            assert!((s - 0.5).abs() < 0.1, "spread {s} vs 0.5");
        }
    }
}
