//! What a fine-tuning run records each iteration (rerun, `--no-record` turns it off): its
//! metrics, a subsample of one rollout's camera frames with the executed actions, and the
//! particles of fixed probe states after the iteration's updates. The probe states are
//! chosen once, from the first collection round (an evaluation on a fresh run), and saved as
//! `probes.safetensors` so a resumed run records the same states.

use std::path::{Path, PathBuf};

use super::particles::Dims3;
use super::probe::{probe_snapshots, PlaneView, ProbeStates};
use super::{layout, Recorder};
use crate::config::finetune::RecordingSettings;
use crate::error::Result;
use crate::policy::PolicySpec;
use crate::rl::rldt::Rldt;
use crate::rl::trajectory::Trajectory;

/// The probe states of the recording (kept so a resumed run records the same states).
pub const PROBES_FILE: &str = "probes.safetensors";

pub struct FinetuneRecording {
    pub recorder: Recorder,
    settings: RecordingSettings,
    spec: PolicySpec,
    probes_path: PathBuf,
    probes: Option<ProbeStates>,
    planes: Vec<PlaneView>,
    action_names: Vec<String>,
    dims3: Dims3,
}

/// Names of the A numbers of one action step (robosuite OSC_POSE per arm, else a0, a1, …).
fn action_names(action_dim: usize) -> Vec<String> {
    const OSC: [&str; 7] = ["dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper"];
    match action_dim {
        7 => OSC.iter().map(|s| s.to_string()).collect(),
        14 => (0..14).map(|i| format!("arm{}_{}", i / 7, OSC[i % 7])).collect(),
        a => (0..a).map(|i| format!("a{i}")).collect(),
    }
}

impl FinetuneRecording {
    pub fn new(recorder: Recorder, settings: &RecordingSettings, spec: &PolicySpec, run_dir: &Path) -> Result<Self> {
        let probes_path = run_dir.join(PROBES_FILE);
        let probes = if probes_path.exists() { Some(ProbeStates::load(&probes_path)?) } else { None };
        let names = action_names(spec.action_dim as usize);
        let dims = settings.view_3d_dims;
        let dims3 = Dims3 {
            indices: dims,
            names: dims.map(|i| format!("{} (step {})", names[i % names.len()], i / names.len())),
        };
        Ok(Self {
            recorder,
            settings: settings.clone(),
            spec: spec.clone(),
            probes_path,
            probes,
            planes: Vec::new(),
            action_names: names,
            dims3,
        })
    }

    /// Everything of one iteration, after its updates: the metrics at (iteration, env
    /// steps), the first trajectory's frames at their own env steps (the round began at
    /// `steps_before`), and the probes' particles. Uses the global RNG (the next iteration
    /// reseeds it, so recording does not change training).
    pub fn iteration<K: AsRef<str>>(
        &mut self,
        iteration: usize,
        (steps_before, env_steps): (usize, usize),
        metrics: &[(K, f64)],
        round: &[&Trajectory],
        rldt: &Rldt,
    ) -> Result<()> {
        let recorder = &self.recorder;
        recorder.set_time(iteration as i64, Some(env_steps as i64));
        recorder.metrics(metrics);
        if !recorder.is_on() {
            return Ok(());
        }
        if self.probes.is_none() && self.settings.probe_states > 0 && !round.is_empty() {
            let chosen = ProbeStates::from_trajectories(round, self.settings.probe_states);
            chosen.save(&self.probes_path)?;
            self.probes = Some(chosen);
        }
        if let (Some(probes), 0) = (&self.probes, self.planes.len()) {
            layout::finetune(recorder, probes.count, &self.spec.obs.image_keys);
        }
        self.rollout_frames(iteration, steps_before, round.first().copied());
        recorder.set_time(iteration as i64, Some(env_steps as i64));
        self.probe_particles(rldt);
        Ok(())
    }

    /// Every `rollout_frame_every`-th chunk of one trajectory: its cameras and the first
    /// executed step of the chunk.
    fn rollout_frames(&self, iteration: usize, steps_before: usize, trajectory: Option<&Trajectory>) {
        let (Some(trajectory), true) = (trajectory, self.settings.rollout_frame_every > 0) else { return };
        let (a, ta) = (self.spec.action_dim as usize, self.spec.config.exec_horizon as usize);
        for t in (0..trajectory.chunks).step_by(self.settings.rollout_frame_every) {
            self.recorder.set_time(iteration as i64, Some((steps_before + t * ta) as i64));
            let cameras: Vec<(&str, &[u8])> = (self.spec.obs.image_keys.iter().enumerate())
                .map(|(camera, key)| (key.as_str(), trajectory.frames.image(camera, t)))
                .collect();
            let size = self.spec.image_size as usize;
            self.recorder.rollout_frame(&cameras, size, &trajectory.action(t)[..a], &self.action_names);
        }
    }

    /// The probes' particles with the current actor and critic.
    fn probe_particles(&mut self, rldt: &Rldt) {
        let Some(probes) = &self.probes else { return };
        let new_planes = self.planes.len();
        let snapshots = probe_snapshots(rldt, probes, &mut self.planes, self.settings.q_map_grid);
        for (i, snap) in snapshots.iter().enumerate() {
            if i >= new_planes {
                self.recorder.probe_axes(
                    i,
                    &self.planes[i],
                    Some(&self.dims3),
                    &format!("A fixed state of the run (`{PROBES_FILE}`), recorded after every iteration's updates."),
                );
                for (camera, key) in self.spec.obs.image_keys.iter().enumerate() {
                    let size = probes.frames.image_size;
                    self.recorder.image(&format!("probes/{i}/camera/{key}"), probes.image(camera, i), size);
                }
            }
            self.recorder.probe(i, snap, &self.planes[i], Some(&self.dims3));
        }
    }
}
