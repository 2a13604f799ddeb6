//! Tier 2: the on-policy baselines, ReinFlow, FPO++ and DPPO (`rldt-vision finetune` with a
//! `reinflow`, `fpo` or `dppo` config), end to end on real robosuite rollouts at toy scale: a policy
//! pretrained for a few steps on synthetic 32×32 Square-schema data, one worker, 8-step
//! episodes. Iteration 0 evaluates, iteration 1 trains the value network only, iterations 2–3
//! train the actor (and ReinFlow's noise network) and the value; a run killed after iteration
//! 2 and resumed ends with the same weights and optimizer states, byte for byte, as the
//! uninterrupted run; a diverging run stops with the step named.

mod common;

use std::path::{Path, PathBuf};

use common::metric_lines;
use rldt_vision::config::finetune::OnPolicyConfig;
use rldt_vision::train::onpolicy::{finetune_on_policy, OnPolicyOptions};
use serde_json::Value;
use tch::Device;

/// libtorch's RNG is one per process and the tests of a binary run in parallel threads: the
/// byte-exact resume comparison needs the runs alone, so every test here holds this lock.
static TORCH_RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn alone() -> std::sync::MutexGuard<'static, ()> {
    TORCH_RNG.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn scratch(name: &str) -> PathBuf {
    common::scratch("onpolicy", name)
}

/// A tiny pretrained run (Square schema, synthetic data) in its own scratch directory.
fn pretrained(name: &str) -> PathBuf {
    common::tiny_pretrained(&scratch(name), |_| {})
}

/// `configs/finetune/square_<algorithm>.json` at toy scale.
fn tiny(pretrained: &Path, algorithm: &str) -> OnPolicyConfig {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut config = OnPolicyConfig::load(&root.join(format!("configs/finetune/square_{algorithm}.json"))).unwrap();
    config.pretrained = pretrained.into();
    config.env.horizon = 8;
    config.rollout.envs = 1;
    config.rollout.episodes_per_env = 2;
    config.schedule.iterations = 4;
    config.schedule.eval_every = 10;
    config.evaluation.episodes = 2;
    if let Some(chain) = config.reinflow.as_mut() {
        chain.denoising_steps = 2;
        chain.noise_hidden = vec![16];
    }
    if let Some(dppo) = config.dppo.as_mut() {
        dppo.denoising_steps = 2;
    }
    config.ppo.update_epochs = 2;
    config.ppo.minibatch_size = 2;
    config.ppo.target_kl = None;
    config.ppo.value_hidden = vec![16];
    config.ppo.value_warmup_iterations = 1;
    config.ppo.actor_lr.lr = 1e-3;
    config.ppo.actor_lr.warmup_iterations = 0;
    config.checkpoint.every = 1;
    config.checkpoint.keep = 5;
    config.validate().unwrap();
    config
}

fn run(
    config: Option<OnPolicyConfig>,
    run_dir: &Path,
    resume: bool,
) -> rldt_vision::Result<rldt_vision::train::finetune::FinetuneSummary> {
    finetune_on_policy(OnPolicyOptions {
        config,
        run_dir: run_dir.into(),
        device: Device::Cpu,
        resume,
        reuse_start_evaluation: true,
    })
}

/// A run directory `name` as a run in `run_dir` leaves it when killed after iteration 1's
/// checkpoint came due (`step_00000002`, the latest): checkpoints 1 and 2, the config, the
/// metric lines of iterations 0 and 1.
fn killed_after_iteration_1(run_dir: &Path, name: &str) -> PathBuf {
    let killed = scratch(name);
    for n in [1u32, 2] {
        let step = format!("checkpoints/step_{n:08}");
        std::fs::create_dir_all(killed.join(&step)).unwrap();
        for entry in std::fs::read_dir(run_dir.join(&step)).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), killed.join(&step).join(entry.file_name())).unwrap();
        }
    }
    std::fs::write(killed.join("checkpoints/latest"), "step_00000002").unwrap();
    std::fs::copy(run_dir.join("config.json"), killed.join("config.json")).unwrap();
    let kept: Vec<&str> =
        std::fs::read_to_string(run_dir.join("metrics.jsonl")).unwrap().leak().lines().take(2).collect();
    std::fs::write(killed.join("metrics.jsonl"), kept.join("\n") + "\n").unwrap();
    killed
}

#[test]
fn reinflow_runs_evaluates_and_resumes_exactly() {
    let _alone = alone();
    runs_evaluates_and_resumes_exactly("reinflow");
}

#[test]
fn fpo_runs_evaluates_and_resumes_exactly() {
    let _alone = alone();
    runs_evaluates_and_resumes_exactly("fpo");
}

#[test]
fn dppo_runs_evaluates_and_resumes_exactly() {
    let _alone = alone();
    runs_evaluates_and_resumes_exactly("dppo");
}

fn runs_evaluates_and_resumes_exactly(algorithm: &str) {
    let reinflow = algorithm == "reinflow";
    let pretrained = pretrained(&format!("pretrained_{algorithm}"));
    let config = tiny(&pretrained, algorithm);
    let run_dir = scratch(&format!("run_{algorithm}"));
    let summary = run(Some(config.clone()), &run_dir, false).unwrap();
    assert!(summary.checkpoint.ends_with("step_00000004"));
    assert_eq!(summary.evaluations.len(), 1, "iteration 0 evaluates");
    assert_eq!(summary.env_steps, 3 * 2 * 8, "3 training iterations × 2 episodes × 8 steps");
    let lines = metric_lines(&run_dir);
    let has = |key: &str, step: i64| {
        lines.iter().any(|l| l["step"] == step && l.get(key).is_some_and(|v| v.as_f64().is_some_and(f64::is_finite)))
    };
    assert!(has("eval/success_rate", 0) && has("eval/success_rate_high", 0));
    assert!(has("ppo/value_loss", 1) && lines[1]["ppo/actor_trained"] == 0.0, "iteration 1: value warm-up");
    let own_key = match algorithm {
        "reinflow" => "ppo/noise_std",
        "fpo" => "ppo/cfm_loss",
        _ => "ppo/step_log_prob",
    };
    for key in ["ppo/policy_loss", "ppo/approx_kl", own_key, "rollout/success_rate", "time/update_s"] {
        assert!(has(key, 2) && has(key, 3), "{key} missing at iterations 2-3");
    }
    assert_eq!(lines[3]["ppo/actor_trained"], 1.0);
    if algorithm == "fpo" {
        // The spread of the round's ℓ_old: ordered quantiles, capped draws counted (cap 20).
        let q: Vec<f64> = ["p50", "p90", "p99", "max"]
            .iter()
            .map(|p| lines[3][format!("fpo/cfm_loss_old_{p}").as_str()].as_f64().unwrap())
            .collect();
        assert!(q[0] > 0.0 && q.windows(2).all(|w| w[0] <= w[1]), "ordered quantiles: {q:?}");
        assert!(has("ppo/cfm_loss_capped", 3) && has("ppo/at_log_ratio_clip", 3));
    }
    if reinflow {
        let noise_std = lines[3]["ppo/noise_std"].as_f64().unwrap();
        assert!((0.08..=0.14).contains(&noise_std), "σ within its bounds: {noise_std}");
    }

    // The actor moved, and the checkpoint evaluates like any policy (K' = 2 in its policy.json).
    let step =
        |dir: &Path, n: u32, file: &str| std::fs::read(dir.join(format!("checkpoints/step_{n:08}/{file}"))).unwrap();
    assert_ne!(step(&run_dir, 2, "policy.safetensors"), step(&run_dir, 4, "policy.safetensors"));
    let spec: Value = serde_json::from_slice(&step(&run_dir, 4, "policy.json")).unwrap();
    assert_eq!(spec["config"]["num_denoising_steps"], if algorithm == "fpo" { 8 } else { 2 });
    let report = rldt_vision::eval::evaluate(&rldt_vision::eval::EvalOptions {
        checkpoint: run_dir.clone(),
        online_weights: false,
        task: rldt_vision::sim::Task::Square,
        episodes: 1,
        workers: 1,
        seed: 100_000,
        device: rldt_vision::device::DeviceChoice::Cpu,
        mujoco_gl: "egl".into(),
        video: None,
        video_episodes: vec![],
        horizon: Some(8),
        best_of_n: 1,
        rank_by: rldt_vision::rl::best_of_n::RankBy::Mean,
        critic_calibration: false,
        q_ascent: 0.0,
        ascent_direction: rldt_vision::rl::q_ascent::AscentDirection::Gradient,
    })
    .unwrap();
    assert_eq!((report.episodes, report.weights.as_str()), (1, "online"));

    // Killed after iteration 2's checkpoint: the resumed run ends where the uninterrupted one did.
    let killed = killed_after_iteration_1(&run_dir, &format!("killed_{algorithm}"));
    let resumed = run(None, &killed, true).unwrap();
    assert_eq!(resumed.resumed_from, Some(2));
    assert_eq!(resumed.env_steps, summary.env_steps);
    let mut files = vec![
        "policy.safetensors",
        "value.safetensors",
        "actor_optimizer.safetensors",
        "value_optimizer.safetensors",
        "onpolicy_state.json",
    ];
    if reinflow {
        files.extend(["noise.safetensors", "noise_optimizer.safetensors"]);
    }
    for file in files {
        assert!(step(&run_dir, 4, file) == step(&killed, 4, file), "{file} differs after resume");
    }
    let steps: Vec<i64> = metric_lines(&killed).iter().map(|l| l["step"].as_i64().unwrap()).collect();
    assert_eq!(steps, [0, 1, 2, 3], "one line per iteration, none repeated");
}

/// The start evaluation is stored beside the pretrained weights by the first run and copied by
/// the next (`reused_from` names the stored file; the same per-episode results), which then
/// trains exactly as the first did (iteration 1's value loss and CFM loss equal); with
/// `reuse_start_evaluation` off, another episode count or another K' (DPPO with 2 steps), the
/// episodes run again.
#[test]
fn a_second_run_copies_the_stored_start_evaluation_and_trains_the_same() {
    let _alone = alone();
    let pretrained = pretrained("pretrained_reuse");
    let mut config = tiny(&pretrained, "fpo");
    config.schedule.iterations = 2;
    config.ppo.value_warmup_iterations = 0;
    let start = |dir: &Path| -> Value {
        serde_json::from_slice(&std::fs::read(dir.join("evaluations/iteration_00000.json")).unwrap()).unwrap()
    };
    let stored = pretrained.join("checkpoints/step_00000004/evaluations/square_horizon8_k8_seed100000_episodes2.json");

    let first = scratch("reuse_first");
    run(Some(config.clone()), &first, false).unwrap();
    assert!(stored.is_file(), "the first run stores its start evaluation at {}", stored.display());
    assert!(start(&first).get("reused_from").is_none());

    let second = scratch("reuse_second");
    run(Some(config.clone()), &second, false).unwrap();
    assert_eq!(start(&second)["reused_from"].as_str().unwrap(), stored.to_str().unwrap());
    assert_eq!(start(&second)["report"]["per_episode"], start(&first)["report"]["per_episode"]);
    let (a, b) = (&metric_lines(&first)[1], &metric_lines(&second)[1]);
    for key in ["ppo/value_loss", "ppo/cfm_loss", "ppo/policy_loss", "rollout/success_rate"] {
        assert_eq!(a[key], b[key], "{key} at iteration 1 differs after a copied start evaluation");
    }

    let fresh = scratch("reuse_fresh");
    finetune_on_policy(OnPolicyOptions {
        config: Some(config.clone()),
        run_dir: fresh.clone(),
        device: Device::Cpu,
        resume: false,
        reuse_start_evaluation: false,
    })
    .unwrap();
    assert!(start(&fresh).get("reused_from").is_none());
    assert_eq!(
        start(&fresh)["report"]["per_episode"],
        start(&first)["report"]["per_episode"],
        "deterministic episodes"
    );

    let mut three = config.clone();
    three.evaluation.episodes = 3;
    let other = scratch("reuse_other_settings");
    run(Some(three), &other, false).unwrap();
    assert!(start(&other).get("reused_from").is_none());
    assert_eq!(start(&other)["episodes"], 3);

    // DPPO with K' = 2 evaluates another ODE than the stored K = 8 one: it runs its episodes.
    let mut fewer_steps = tiny(&pretrained, "dppo");
    fewer_steps.schedule.iterations = 1;
    let dppo = scratch("reuse_other_k");
    run(Some(fewer_steps), &dppo, false).unwrap();
    assert!(start(&dppo).get("reused_from").is_none());
    assert_eq!(start(&dppo)["denoising_steps"], 2);
    assert!(stored.with_file_name("square_horizon8_k2_seed100000_episodes2.json").is_file());
}

/// A run killed after iteration 2's evaluation resumes from `step_00000002` (checkpoints come
/// due before evaluations) and keeps that evaluation: its file names itself in `reused_from`,
/// with the same episodes and metric line, and the run ends with the same weights. Had the
/// checkpoint other weights (its recorded hash changed), the episodes run again.
#[test]
fn a_resumed_run_keeps_the_evaluation_of_its_checkpoint() {
    let _alone = alone();
    let pretrained = pretrained("pretrained_keep");
    let mut config = tiny(&pretrained, "fpo");
    config.schedule.iterations = 3;
    config.schedule.eval_every = 2;
    config.ppo.value_warmup_iterations = 0;
    let run_dir = scratch("keep_full");
    run(Some(config.clone()), &run_dir, false).unwrap();
    let evaluation = |dir: &Path| -> Value {
        serde_json::from_slice(&std::fs::read(dir.join("evaluations/iteration_00002.json")).unwrap()).unwrap()
    };
    assert!(evaluation(&run_dir)["weights_fnv1a"].as_str().is_some_and(|h| h.len() == 16));
    assert!(evaluation(&run_dir).get("reused_from").is_none());

    let killed = |name: &str, edit: &dyn Fn(&mut Value)| -> PathBuf {
        let dir = killed_after_iteration_1(&run_dir, name);
        std::fs::create_dir_all(dir.join("evaluations")).unwrap();
        let mut file = evaluation(&run_dir);
        edit(&mut file);
        std::fs::write(dir.join("evaluations/iteration_00002.json"), file.to_string()).unwrap();
        dir
    };
    let resumed = killed("keep_resumed", &|_| {});
    assert_eq!(run(None, &resumed, true).unwrap().resumed_from, Some(2));
    let own = resumed.join("evaluations/iteration_00002.json");
    assert_eq!(evaluation(&resumed)["reused_from"].as_str().unwrap(), own.to_str().unwrap());
    assert_eq!(evaluation(&resumed)["report"]["per_episode"], evaluation(&run_dir)["report"]["per_episode"]);
    assert_eq!(metric_lines(&resumed)[2]["eval/successes"], metric_lines(&run_dir)[2]["eval/successes"]);
    let weights = |dir: &Path| std::fs::read(dir.join("checkpoints/step_00000003/policy.safetensors")).unwrap();
    assert!(weights(&resumed) == weights(&run_dir), "the same weights after a kept evaluation");

    let other_weights = killed("keep_other_weights", &|file| file["weights_fnv1a"] = "0000000000000000".into());
    run(None, &other_weights, true).unwrap();
    assert!(evaluation(&other_weights).get("reused_from").is_none(), "evaluated again");
    assert_eq!(evaluation(&other_weights)["report"]["per_episode"], evaluation(&run_dir)["report"]["per_episode"]);
}

/// An exploding value network (learning rate 1e30) stops the run with a NonFinite error at
/// the iteration where it happened; the last checkpoint (iteration 0's) is intact and loads.
#[test]
fn a_diverging_reinflow_run_stops_and_keeps_the_last_checkpoint() {
    let _alone = alone();
    let pretrained = pretrained("pretrained_diverge");
    let mut config = tiny(&pretrained, "reinflow");
    config.ppo.value_lr.lr = 1e30;
    config.ppo.value_lr.min_lr = 1e30;
    config.ppo.max_grad_norm = 1e30;
    config.schedule.iterations = 3;
    let run_dir = scratch("diverge");
    let err = run(Some(config), &run_dir, false).err().expect("the run must stop");
    let message = err.to_string();
    assert!(matches!(err, rldt_vision::Error::NonFinite { .. }), "{message}");
    assert!(message.contains("ReinFlow loss") && message.contains("checkpoint"), "{message}");
    let latest = rldt_vision::run_dir::latest_checkpoint(&run_dir).unwrap().expect("iteration 0's checkpoint");
    assert!(latest.ends_with("step_00000001"));
    rldt_vision::policy::checkpoint::load(&latest, rldt_vision::policy::checkpoint::Weights::Online, Device::Cpu)
        .unwrap();
}

#[test]
fn bad_on_policy_settings_are_refused_naming_the_field() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let load = |name: &str| OnPolicyConfig::load(&root.join(format!("configs/finetune/{name}.json"))).unwrap();
    let mut config = load("square_reinflow");
    config.reinflow.as_mut().unwrap().noise_std = [0.2, 0.1];
    assert!(config.validate().unwrap_err().contains("field `reinflow`"));
    let mut config = load("square_fpo");
    config.reinflow = load("square_reinflow").reinflow;
    assert!(config.validate().unwrap_err().contains("field `algorithm`"), "two algorithm sections are refused");
    let mut config = load("square_fpo");
    config.fpo.as_mut().unwrap().cfm_loss_clip = Some(0.0);
    assert!(config.validate().unwrap_err().contains("field `fpo`"), "a CFM loss cap of 0 is refused");
    let mut config = load("square_dppo");
    config.dppo.as_mut().unwrap().first_step_clip_ratio = 0.05;
    assert!(config.validate().unwrap_err().contains("field `dppo`"), "a first-step clip above the last is refused");
    config.dppo = None;
    assert!(config.validate().unwrap_err().contains("field `algorithm`"), "dppo without its section is refused");
    let text = std::fs::read_to_string(root.join("configs/finetune/square_reinflow.json")).unwrap();
    let mut value: Value = serde_json::from_str(&text).unwrap();
    value["ppo"]["clip"] = 0.2.into();
    let err = serde_json::from_value::<OnPolicyConfig>(value).unwrap_err().to_string();
    assert!(err.contains("unknown field `clip`"), "{err}");
}
