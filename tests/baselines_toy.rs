//! DPPO and QAM on the 2-D toy (`rldt-vision toy --fields dppo,qam`).
//!
//! DPPO: the same pretrained bimodal flow policy and two-peak Q as RLDT's toy test
//! (`tests/rldt_toy.rs`), then 30 iterations of 256 chains with σ = 0.1 at each Euler step,
//! 10 epochs of minibatches of 64, lr 1e-3. Asserted for seed 2: the start is off the peaks
//! (< 5% within 0.15 of one); after, ≥ 80% of 2,000 samples lie within 0.15 of a peak, mean
//! Q ≥ 0.8, and each mode keeps ≥ 25%.
//! Reference values (this machine, release build): near a peak 97.0%, left share 49%, mean Q
//! 0.96 (`rldt-vision toy --fields dppo --seeds 2 --no-record`).
//!
//! QAM: the same start, 300 adjoint-matching steps of 16 states × 8 trajectories (λ = 30,
//! K' = 32, lr 1e-3). Asserted for seed 7: ≥ 80% within 0.15 of a peak and mean Q ≥ 0.8 from
//! < 5%. Reference values (this machine, release build): near a peak 99.8%, left share 100%
//! (one mode: QAM kept both in none of seeds 0–7), mean Q 0.91
//! (`rldt-vision toy --fields qam --seeds 7 --no-record`).

use rldt_vision::toy_baselines::{run_toy_dppo, run_toy_qam, ToyReinflowOptions};

/// libtorch's generator is one per process and each run seeds it: the two tests run one at a
/// time, or their draws interleave and the asserted seeds stop meaning anything (DPPO's seed 2
/// read 71% near a peak instead of 97% while the QAM test ran beside it).
static TORCH_RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn alone() -> std::sync::MutexGuard<'static, ()> {
    TORCH_RNG.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The command line's defaults (`rldt-vision toy`).
fn toy_options() -> ToyReinflowOptions {
    ToyReinflowOptions {
        reinflow_iterations: 30,
        reinflow_chains: 256,
        reinflow_epochs: 10,
        reinflow_minibatch: 64,
        reinflow_clip: 0.01,
        reinflow_entropy: 0.01,
        reinflow_target_kl: 0.01,
        qam_inverse_temperature: 30.0,
        qam_denoising_steps: 32,
    }
}

#[test]
fn dppo_moves_samples_onto_both_peaks() {
    let _alone = alone();
    let options = toy_options();
    let report = run_toy_dppo(2, 1500, 1e-3, 2000, &options);
    let (before, after) = (&report.pretrained, &report.finetuned);
    eprintln!("near a peak {:.3}, left share {:.3}, mean Q {:.3}", after.near_peak, after.left_share, after.mean_q);
    assert!(before.near_peak < 0.05, "starts off the peaks: {report:?}");
    assert!(after.near_peak >= 0.8 && after.mean_q >= 0.8, "onto the peaks: {report:?}");
    assert!(report.minority_share() >= 0.25, "each mode keeps ≥ 25%: {report:?}");
    assert_eq!(report.actor_steps, 30 * 10 * 4, "no KL stop: every minibatch steps");
}

#[test]
fn qam_moves_samples_onto_a_peak() {
    let _alone = alone();
    let options = toy_options();
    let report = run_toy_qam(7, 1500, 1e-3, 300, 2000, &options);
    let (before, after) = (&report.pretrained, &report.finetuned);
    eprintln!("near a peak {:.3}, left share {:.3}, mean Q {:.3}", after.near_peak, after.left_share, after.mean_q);
    assert!(before.near_peak < 0.05, "starts off the peaks: {report:?}");
    assert!(after.near_peak >= 0.8 && after.mean_q >= 0.8, "onto a peak: {report:?}");
    assert_eq!(report.actor_steps, 300);
}
