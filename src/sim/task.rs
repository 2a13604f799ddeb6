//! Tasks and their robomimic-style `env_args` (robosuite 1.4.1, OSC_POSE controller), plus the
//! simulator settings of a run ([`SimConfig`]).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    Lift,
    Can,
    Square,
    Transport,
}

impl Task {
    pub fn name(self) -> &'static str {
        match self {
            Task::Lift => "lift",
            Task::Can => "can",
            Task::Square => "square",
            Task::Transport => "transport",
        }
    }

    /// robosuite's environment class.
    pub fn env_name(self) -> &'static str {
        match self {
            Task::Lift => "Lift",
            Task::Can => "PickPlaceCan",
            Task::Square => "NutAssemblySquare",
            Task::Transport => "TwoArmTransport",
        }
    }

    /// robomimic's horizons for its proficient-human datasets (Lift 400 is generous; the
    /// paper's Square rollouts are 400 steps, Transport 800).
    pub fn default_horizon(self) -> usize {
        match self {
            Task::Lift | Task::Can | Task::Square => 400,
            Task::Transport => 800,
        }
    }
}

/// Simulator settings of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimConfig {
    pub task: Task,
    /// Camera names, e.g. ["agentview"] (paper Square) or ["agentview", "robot0_eye_in_hand"].
    pub cameras: Vec<String>,
    /// Side of the square camera images (paper: 96; robomimic image datasets: 84).
    pub image_size: usize,
    pub horizon: usize,
    /// robomimic's convention (evaluation, collection): the episode ends at success. The
    /// paper's fine-tuning rollouts run the full horizon instead.
    pub stop_on_success: bool,
    /// `egl` or `osmesa` (both render on the CPU through Mesa when there is no GPU).
    pub mujoco_gl: String,
    /// Seconds a worker may take to start and build its env, and to answer a step.
    pub init_timeout_s: f64,
    pub step_timeout_s: f64,
}

impl SimConfig {
    /// Defaults for evaluation and demo collection of `task` (robomimic's conventions).
    pub fn for_task(task: Task, cameras: Vec<String>, image_size: usize) -> Self {
        Self {
            task,
            cameras,
            image_size,
            horizon: task.default_horizon(),
            stop_on_success: true,
            mujoco_gl: "egl".into(),
            init_timeout_s: 120.0,
            step_timeout_s: 60.0,
        }
    }

    /// The `env_args` JSON that robomimic's `EnvUtils.create_env_from_metadata` rebuilds the
    /// environment from (stored in `data.attrs["env_args"]` of collected demos).
    pub fn env_args(&self) -> Value {
        let robots = if self.task == Task::Transport { json!(["Panda", "Panda"]) } else { json!(["Panda"]) };
        let mut kwargs = json!({
            "has_renderer": false,
            "has_offscreen_renderer": !self.cameras.is_empty(),
            "ignore_done": true,
            "use_object_obs": true,
            "use_camera_obs": !self.cameras.is_empty(),
            "control_freq": 20,
            "controller_configs": {
                "type": "OSC_POSE", "input_max": 1, "input_min": -1,
                "output_max": [0.05, 0.05, 0.05, 0.5, 0.5, 0.5],
                "output_min": [-0.05, -0.05, -0.05, -0.5, -0.5, -0.5],
                "kp": 150, "damping_ratio": 1, "impedance_mode": "fixed",
                "kp_limits": [0, 300], "damping_ratio_limits": [0, 10],
                "position_limits": null, "orientation_limits": null,
                "uncouple_pos_ori": true, "control_delta": true, "interpolation": null, "ramp_ratio": 0.2
            },
            "robots": robots,
            "camera_depths": false,
            "camera_heights": self.image_size,
            "camera_widths": self.image_size,
            "camera_names": self.cameras,
            "reward_shaping": false,
        });
        if self.task == Task::Transport {
            kwargs["env_configuration"] = json!("single-arm-opposed");
        }
        json!({"env_name": self.task.env_name(), "env_version": "1.4.1", "type": 1, "env_kwargs": kwargs})
    }
}

/// Where the Python side lives: the venv's interpreter and `scripts/sim_server.py`.
#[derive(Debug, Clone)]
pub struct PythonPaths {
    pub python: PathBuf,
    pub server: PathBuf,
}

impl PythonPaths {
    /// `$RLDT_PYTHON` or `<project>/.venv/bin/python`, and `<project>/scripts/sim_server.py`,
    /// where `<project>` is `$RLDT_PROJECT_DIR`, else the source tree this binary was built
    /// from, else the current directory.
    pub fn discover() -> Self {
        let built_from = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let project = std::env::var_os("RLDT_PROJECT_DIR")
            .map(PathBuf::from)
            .or_else(|| built_from.join("scripts/sim_server.py").exists().then_some(built_from))
            .unwrap_or_else(|| PathBuf::from("."));
        let python =
            std::env::var_os("RLDT_PYTHON").map(PathBuf::from).unwrap_or_else(|| project.join(".venv/bin/python"));
        Self { python, server: project.join("scripts/sim_server.py") }
    }
}
