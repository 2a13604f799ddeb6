//! Tier 1 (needs the venv's rerun CLI, installed by scripts/setup): the recording of a short
//! 2-D toy fine-tune is a valid .rrd (`rerun rrd verify`) holding the particle entities
//! (`rerun rrd stats`): chains, denoising points, queries a†, particles, the three field
//! layers, the Q map, the sample cloud. A truncated copy fails verification (so the check
//! can fail), and so does a zero-byte one, for `verify` and `inspect --check`. Recording does
//! not change the toy's result.

use std::path::PathBuf;

use rldt_vision::rl::actor::FieldKind;
use rldt_vision::toy::{run_toy, ToyOptions};
use rldt_vision::viz::viewer::{check_version, entity_paths, find_viewer, verify};
use rldt_vision::viz::{Recorder, Sink};

fn short_toy() -> ToyOptions {
    let mut options = ToyOptions::new(FieldKind::Svgd, 3);
    options.pretrain_steps = 100;
    options.actor_steps = 10;
    options.record_every = 5;
    options.samples = 200;
    options
}

#[test]
fn a_toy_recording_verifies_and_holds_the_particle_entities() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("recording");
    let _ = std::fs::remove_dir_all(&dir);
    let file = dir.join("particles.rrd");
    let recorder = Recorder::open(&Sink::File(file.clone()), "rldt-vision:test-toy").unwrap();
    let recorded = run_toy(&short_toy(), &recorder);
    recorder.flush().unwrap();
    drop(recorder);
    let unrecorded = run_toy(&short_toy(), &Recorder::off());
    assert_eq!(recorded.finetuned.near_peak, unrecorded.finetuned.near_peak, "recording must not change training");
    assert_eq!(recorded.finetuned.left_share, unrecorded.finetuned.left_share);

    let viewer = find_viewer().expect("the venv's rerun (scripts/setup installs rerun-sdk)");
    check_version(&viewer).unwrap();
    verify(&viewer, &file).unwrap();
    let paths = entity_paths(&viewer, &file).unwrap();
    for expected in [
        "/probes/0/actions_2d/chains",
        "/probes/0/actions_2d/denoising",
        "/probes/0/actions_2d/queries",
        "/probes/0/actions_2d/particles",
        "/probes/0/actions_2d/field/attraction",
        "/probes/0/actions_2d/field/repulsion",
        "/probes/0/actions_2d/field/combined",
        "/probes/0/actions_2d/q_map",
        "/probes/0/axes",
        "/probes/0/q/mean",
        "/probes/0/actions_2d/samples",
        "/probes/0/actions_2d/peaks",
    ] {
        assert!(paths.iter().any(|p| p == expected), "{expected} missing from {paths:?}");
    }

    // A truncated recording is caught.
    let bytes = std::fs::read(&file).unwrap();
    let truncated = dir.join("truncated.rrd");
    std::fs::write(&truncated, &bytes[..bytes.len() * 2 / 3]).unwrap();
    assert!(verify(&viewer, &truncated).is_err(), "a truncated file must fail `rerun rrd verify`");

    // A zero-byte recording is not "verified, 0 entity paths".
    let empty = dir.join("empty").join("particles.rrd");
    std::fs::create_dir_all(empty.parent().unwrap()).unwrap();
    std::fs::write(&empty, b"").unwrap();
    let err = verify(&viewer, &empty).unwrap_err().to_string();
    assert!(err.contains("empty file") && err.contains("particles.rrd"), "{err}");
    assert!(rldt_vision::viz::viewer::check(empty.parent().unwrap()).is_err());
}
