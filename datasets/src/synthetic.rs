//! A small procedurally drawn dataset in the Robomimic Square schema: the embedded default
//! of `rldt-vision synth-dataset` and of the README's main command until scripted simulator
//! demos exist. It is NOT robosuite data; `env_args.env_name` says `SyntheticReach`.
//!
//! Each demo: a target (red disc) and an end effector (blue disc, radius grows with height)
//! on a 2-D table seen from above. The expert moves over the target, descends, then closes
//! the gripper. Actions (OSC_POSE-like, 7): [dx, dy, dz, 0, 0, 0, grip] in [−1, 1].
//! Observations: `agentview_image` (S×S×3 u8), `robot0_eef_pos` (3), `robot0_eef_quat` (4),
//! `robot0_gripper_qpos` (2), `object` (14: target position, quaternion, offset to eef, 4
//! zeros). The target is only visible in the image (and `object`), so a policy conditioned
//! on camera + proprio must read the image to act.

use std::path::Path;

use crate::error::Result;
use crate::random::SplitMix64;
use crate::writer::{split_train_valid, DemoRecord, ObsArray, RobomimicWriter};

#[derive(Debug, Clone, Copy)]
pub struct SyntheticSpec {
    pub demos: usize,
    pub image_size: usize,
    pub seed: u64,
}

const TABLE: f64 = 0.25; // the table spans [−TABLE, TABLE]² in x, y
const Z_HIGH: f64 = 1.0;
const Z_LOW: f64 = 0.85;
const STEP: f64 = 0.02; // metres moved per unit action

/// Writes `spec.demos` demos to `path` with masks `train` / `valid` (every 10th to valid).
pub fn write_synthetic(path: impl AsRef<Path>, spec: SyntheticSpec) -> Result<()> {
    let env_args = serde_json::json!({
        "env_name": "SyntheticReach",
        "env_version": "rldt-synthetic-1",
        "type": 0,
        "env_kwargs": {"camera_names": ["agentview"], "camera_height": spec.image_size, "camera_width": spec.image_size}
    });
    let mut writer = RobomimicWriter::create(path, &env_args.to_string())?;
    for demo in 0..spec.demos {
        writer.write_demo(&synthetic_demo(spec.image_size, &mut SplitMix64::stream(spec.seed, demo as u64)))?;
    }
    let names = writer.demo_names().to_vec();
    writer.finish(&split_train_valid(&names, 10))?;
    Ok(())
}

fn synthetic_demo(size: usize, rng: &mut SplitMix64) -> DemoRecord {
    let mut uniform = |lo: f64, hi: f64| lo + (hi - lo) * rng.uniform();
    let target = [uniform(-0.8 * TABLE, 0.8 * TABLE), uniform(-0.8 * TABLE, 0.8 * TABLE)];
    let mut eef = [uniform(-0.8 * TABLE, 0.8 * TABLE), uniform(-0.8 * TABLE, 0.8 * TABLE), Z_HIGH];
    let mut gripper = 0.04; // finger opening
    let mut record = DemoRecord { action_dim: 7, ..Default::default() };
    let (mut image, mut eef_pos, mut eef_quat, mut grip_qpos, mut object, mut states) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    let mut closing_steps = 0;
    loop {
        // Observation of the current state.
        image.extend(draw(size, target, eef));
        eef_pos.extend(eef);
        eef_quat.extend([1.0, 0.0, 0.0, 0.0]);
        grip_qpos.extend([gripper, -gripper]);
        object.extend([
            target[0],
            target[1],
            Z_LOW,
            1.0,
            0.0,
            0.0,
            0.0,
            eef[0] - target[0],
            eef[1] - target[1],
            eef[2] - Z_LOW,
            0.0,
            0.0,
            0.0,
            0.0,
        ]);
        states.extend([eef[0], eef[1], eef[2], gripper, target[0], target[1]]);
        // Expert action.
        let (dx, dy) = (target[0] - eef[0], target[1] - eef[1]);
        let aligned = dx.abs() < 0.01 && dy.abs() < 0.01;
        let dz = if aligned { Z_LOW - eef[2] } else { Z_HIGH - eef[2] };
        let grip = if aligned && eef[2] < Z_LOW + 0.01 { 1.0 } else { -1.0 };
        let action = [
            (dx / STEP).clamp(-1.0, 1.0),
            (dy / STEP).clamp(-1.0, 1.0),
            (dz / STEP).clamp(-1.0, 1.0),
            0.0,
            0.0,
            0.0,
            grip,
        ];
        record.actions.extend(action);
        // Dynamics.
        for k in 0..3 {
            eef[k] += STEP * action[k];
        }
        if grip > 0.0 {
            gripper = (gripper - 0.01_f64).max(0.0);
            closing_steps += 1;
        }
        let done = closing_steps >= 5;
        record.rewards.push(if done { 1.0 } else { 0.0 });
        record.dones.push(done as i64);
        if done {
            break;
        }
    }
    let len = record.rewards.len();
    record.states = Some((states, 6));
    record.obs = vec![
        ("agentview_image".into(), ObsArray::Image { data: image, height: size, width: size }),
        ("object".into(), ObsArray::LowDim { data: object, dim: 14 }),
        ("robot0_eef_pos".into(), ObsArray::LowDim { data: eef_pos, dim: 3 }),
        ("robot0_eef_quat".into(), ObsArray::LowDim { data: eef_quat, dim: 4 }),
        ("robot0_gripper_qpos".into(), ObsArray::LowDim { data: grip_qpos, dim: 2 }),
    ];
    debug_assert_eq!(record.len(), len);
    record
}

/// One S×S×3 frame: grey table, red target disc, blue end-effector disc.
fn draw(size: usize, target: [f64; 2], eef: [f64; 3]) -> Vec<u8> {
    let to_pixel = |v: f64| (v + TABLE) / (2.0 * TABLE) * size as f64;
    let (tx, ty) = (to_pixel(target[0]), to_pixel(target[1]));
    let (ex, ey) = (to_pixel(eef[0]), to_pixel(eef[1]));
    let target_radius = size as f64 / 14.0;
    let eef_radius = size as f64 / 20.0 * (1.0 + 4.0 * (eef[2] - Z_LOW));
    let mut frame = Vec::with_capacity(size * size * 3);
    for row in 0..size {
        for col in 0..size {
            let (x, y) = (col as f64 + 0.5, row as f64 + 0.5);
            let shade = (90 + (row * 60 / size)) as u8;
            let mut pixel = [shade, shade, shade];
            if (x - tx).powi(2) + (y - ty).powi(2) < target_radius.powi(2) {
                pixel = [220, 40, 40];
            }
            if (x - ex).powi(2) + (y - ey).powi(2) < eef_radius.powi(2) {
                pixel = [40, 60, 220];
            }
            frame.extend(pixel);
        }
    }
    frame
}
