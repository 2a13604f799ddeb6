//! The paper's 2-D figure as a test (`rldt-vision toy` runs the full comparison, both fields,
//! any seeds): a flow policy pretrained on ½·N((−0.5, 0), 0.08²I) + ½·N((0.5, 0), 0.08²I), a
//! known Q with two equal peaks at (±0.5, 0.45), 300 RLDT actor steps with the SVGD field.
//!
//! Asserted for seeds 0, 1 and 2: before, the policy is bimodal (each side 40–60%, < 20% in
//! the gap |x| < 0.25) and off the peaks (< 5% within 0.15 of one, mean Q < 0.05); after,
//! ≥ 80% of 2,000 samples lie within 0.15 of a peak, mean Q ≥ 0.8, and each mode keeps
//! ≥ 25% of the samples. Reference values (this machine, dev and release builds alike): near
//! a peak 97.6 / 98.8 / 99.0%, left share 56 / 53 / 64% (`rldt-vision toy --fields svgd
//! --seeds 0,1,2`).

use rldt_vision::rl::actor::FieldKind;
use rldt_vision::toy::{run_toy, ToyOptions};
use rldt_vision::viz::Recorder;

#[test]
fn svgd_actor_steps_move_samples_onto_both_peaks() {
    for seed in [0, 1, 2] {
        let report = run_toy(&ToyOptions::new(FieldKind::Svgd, seed), &Recorder::off());
        let (before, after) = (&report.pretrained, &report.finetuned);
        eprintln!("seed {seed}: near a peak {:.3}, left share {:.3}", after.near_peak, after.left_share);
        assert!(before.near_peak < 0.05 && before.mean_q < 0.05, "seed {seed}: starts off the peaks: {report:?}");
        assert!(
            (0.4..0.6).contains(&before.left_share) && before.gap_share < 0.2,
            "seed {seed}: pretraining must be bimodal: {report:?}"
        );
        assert!(after.near_peak >= 0.8 && after.mean_q >= 0.8, "seed {seed}: onto the peaks: {report:?}");
        assert!(report.minority_share() >= 0.25, "seed {seed}: each mode keeps ≥ 25%: {report:?}");
    }
}
