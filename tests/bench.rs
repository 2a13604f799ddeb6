//! The benchmark commands at tiny shapes: what their reports carry, not their speed.
//! - `bench finetune --torch`: both sides run the paper's critic structure (one draw, steps on
//!   it, split passes) and the actor step; the report carries every figure the docs quote
//!   (seconds per draw and step, peak RSS, the ratios, each baseline's minibatch step).
//! - `bench parity --device cpu`: the CPU-vs-device comparison's code path with the CPU on
//!   both sides, where every difference must be exactly 0 (scripts/gpu_check runs it on CUDA).

use std::path::Path;
use std::process::Command;

#[test]
fn bench_finetune_reports_both_sides() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = root.join(".venv/bin/python");
    assert!(python.exists(), "{} missing: run scripts/setup", python.display());
    let output = Command::new(env!("CARGO_BIN_EXE_rldt-vision"))
        .current_dir(root)
        .args(["bench", "finetune", "--config", "configs/pretrain/synthetic_cpu.json", "--image-size", "32"])
        .args(["--critic-trajectories", "5", "--actor-trajectories", "2", "--chunks", "3", "--steps", "1"])
        .args(["--mini-batch-split", "2", "--reinflow-minibatch", "8", "--threads", "1", "--torch"])
        .arg(&python)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let positive = |path: &str| {
        let value = report.pointer(path).and_then(|v| v.as_f64()).unwrap_or(f64::NAN);
        assert!(value.is_finite() && value > 0.0, "{path} = {value} in {report:#}");
    };
    for side in ["/rust_tch", "/pytorch_eager"] {
        for key in ["critic_batch_draw_s", "critic_step_s", "actor_step_s"] {
            positive(&format!("{side}/{key}"));
        }
    }
    positive("/rust_tch/peak_rss_mb_after_rldt");
    for method in ["reinflow", "fpo", "dppo"] {
        positive(&format!("/rust_tch/{method}_minibatch_step_s"));
        positive(&format!("/update_s_per_env_step/{method}"));
    }
    positive("/rust_tch/qam_critic_step_s");
    positive("/rust_tch/qam_actor_step_s");
    positive("/update_s_per_env_step/qam");
    positive("/pytorch_eager/peak_rss_mb");
    for key in ["critic_batch_draw", "critic_step", "critic_call_32_steps", "actor_step"] {
        positive(&format!("/tch_over_torch/{key}"));
    }
    assert_eq!(report["pytorch_eager"]["mini_batch_split"], 2);
}

#[test]
fn bench_parity_on_the_cpu_finds_no_difference() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let output = Command::new(env!("CARGO_BIN_EXE_rldt-vision"))
        .current_dir(root)
        .args(["bench", "parity", "--device", "cpu", "--config", "configs/pretrain/synthetic_cpu.json"])
        .args(["--image-size", "32", "--batch", "3"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["pass"], true);
    let differences = report["relative_differences"].as_object().unwrap();
    assert_eq!(differences.len(), 6, "{report:#}");
    for (name, value) in differences {
        let value = value.get("largest").unwrap_or(value).as_f64().unwrap();
        assert_eq!(value, 0.0, "{name}");
    }
}
