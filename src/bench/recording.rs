//! `rldt-vision bench recording`: does recording slow training? The 2-D toy fine-tune
//! (pretraining + RLDT actor steps, `toy`) timed with recording off and on, alternating
//! within one invocation, same seed (the toy reseeds at snapshot points, so both runs do the
//! same work apart from the recording). Reports medians and the overhead in percent.

use std::time::Instant;

use serde::Serialize;

use crate::rl::actor::FieldKind;
use crate::toy::{run_toy, ToyOptions};
use crate::viz::{Recorder, RecordingError, Sink};

#[derive(Debug, Serialize)]
pub struct RecordingBench {
    pub machine: String,
    pub actor_steps: i64,
    pub record_every: i64,
    pub repeats: usize,
    pub off_s: Vec<f64>,
    pub on_s: Vec<f64>,
    pub median_off_s: f64,
    pub median_on_s: f64,
    /// (median on / median off − 1) × 100.
    pub overhead_percent: f64,
    pub recording_bytes: u64,
    /// The last recording (kept for `rldt-vision inspect … --check`).
    pub recording_file: std::path::PathBuf,
    /// The two runs' final samples agree (recording does not change training).
    pub same_result: bool,
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

pub fn bench_recording(
    seed: i64,
    actor_steps: i64,
    record_every: i64,
    repeats: usize,
) -> Result<RecordingBench, RecordingError> {
    let dir = std::env::temp_dir().join(format!("rldt-bench-recording-{}", std::process::id()));
    let file = dir.join("particles.rrd");
    let mut options = ToyOptions::new(FieldKind::Svgd, seed);
    options.actor_steps = actor_steps;
    options.record_every = record_every;
    let (mut off_s, mut on_s, mut same_result, mut bytes) = (Vec::new(), Vec::new(), true, 0);
    for _ in 0..repeats.max(1) {
        let started = Instant::now();
        let off = run_toy(&options, &Recorder::off());
        off_s.push(started.elapsed().as_secs_f64());

        let started = Instant::now();
        let recorder = Recorder::open(&Sink::File(file.clone()), "rldt-vision:bench-recording")?;
        let on = run_toy(&options, &recorder);
        recorder.flush()?;
        drop(recorder);
        on_s.push(started.elapsed().as_secs_f64());
        same_result &=
            off.finetuned.near_peak == on.finetuned.near_peak && off.finetuned.left_share == on.finetuned.left_share;
        bytes = std::fs::metadata(&file).map_or(0, |m| m.len());
    }
    let (median_off_s, median_on_s) = (median(&off_s), median(&on_s));
    Ok(RecordingBench {
        machine: super::cpu_description(),
        actor_steps,
        record_every,
        repeats: repeats.max(1),
        off_s,
        on_s,
        median_off_s,
        median_on_s,
        overhead_percent: (median_on_s / median_off_s - 1.0) * 100.0,
        recording_bytes: bytes,
        recording_file: file,
        same_result,
    })
}
