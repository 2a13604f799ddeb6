//! The RLDT actor objective moves a pretrained bimodal flow policy onto the peaks of a known
//! two-peak Q (the paper's 2-D figure; `rldt-vision toy` runs the full comparison).
//! Asserted here: the pretrained policy starts off the peaks (< 5% near one, mean Q < 0.05)
//! and 300 actor steps with the SVGD field put ≥ 80% of samples within 0.15 of a peak.
//! Mode preservation (each mode ≥ 25%) is measured by `rldt-vision toy`, not asserted: it
//! does not hold for every seed yet (see README, RLDT status).

use rldt_vision::rl::actor::FieldKind;
use rldt_vision::rl::toy::{run_toy, ToyOptions};
use rldt_vision::viz::Recorder;

#[test]
fn svgd_actor_steps_move_samples_onto_the_peaks() {
    let report = run_toy(&ToyOptions::new(FieldKind::Svgd, 0), &Recorder::off());
    assert!(report.pretrained_near_peak < 0.05 && report.pretrained_mean_q < 0.05, "{report:?}");
    assert!((0.3..0.7).contains(&report.pretrained_left_share), "pretraining must be bimodal: {report:?}");
    assert!(report.near_peak >= 0.8, "{report:?}");
    assert!(report.mean_q >= 0.8, "{report:?}");
}
