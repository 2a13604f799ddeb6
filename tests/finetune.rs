//! Tier 2: `finetune` end to end on real robosuite rollouts, at toy scale: a policy pretrained
//! for a few steps on synthetic 32×32 Square-schema data, one worker, 8-step episodes.
//! Iteration 0 evaluates, iteration 1 trains the critic only, iterations 2–3 train critic and
//! actor; metrics carry critic, actor and SVGD statistics; the checkpoint evaluates like any
//! policy; a killed run resumes after its last checkpoint and continues the iteration count.
//! QAM runs in the same loop with its own K' (`qam_runs_in_the_rldt_loop_with_its_own_k`).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::metric_lines;
use rldt_vision::config::finetune::FinetuneConfig;
use rldt_vision::train::finetune::{finetune, FinetuneOptions};
use serde_json::Value;
use tch::Device;

fn scratch(name: &str) -> PathBuf {
    common::scratch("finetune", name)
}

/// A tiny pretrained run in its own scratch directory (tests run in parallel).
fn pretrained(name: &str) -> PathBuf {
    common::tiny_pretrained(&scratch(name), |_| {})
}

fn tiny(pretrained: &Path) -> FinetuneConfig {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut config = FinetuneConfig::load(&root.join("configs/finetune/square_cpu.json")).unwrap();
    config.pretrained = pretrained.into();
    config.env.horizon = 8;
    config.rollout.envs = 1;
    config.rollout.episodes_per_env = 2;
    config.schedule.iterations = 4;
    config.schedule.eval_every = 10;
    config.evaluation.episodes = 2;
    config.schedule.rounds = 1;
    config.schedule.critic_steps_per_round = 2;
    config.schedule.actor_steps_per_round = 1;
    config.schedule.actor_start_iteration = 2;
    config.schedule.critic_batch_trajectories = 2;
    config.schedule.actor_batch_trajectories = 2;
    config.schedule.replay_trajectories = 8;
    config.checkpoint.every = 1;
    config.checkpoint.keep = 5;
    config.validate().unwrap();
    config
}

#[test]
fn finetune_runs_evaluates_and_resumes() {
    let pretrained = pretrained("pretrained_run");
    let config = tiny(&pretrained);
    let run_dir = scratch("run");
    let summary = finetune(FinetuneOptions {
        config: Some(config.clone()),
        run_dir: run_dir.clone(),
        device: Device::Cpu,
        resume: false,
        recording: None,
        reuse_start_evaluation: true,
    })
    .unwrap();
    assert!(summary.checkpoint.ends_with("step_00000004"));
    assert_eq!(summary.evaluations.len(), 1, "iteration 0 evaluates");
    assert_eq!(
        summary.env_steps,
        3 * 2 * 8,
        "3 training iterations × 2 episodes × 8 steps (evaluation steps not counted)"
    );

    let lines = metric_lines(&run_dir);
    let has = |key: &str, step: i64| {
        lines.iter().any(|l| l["step"] == step && l.get(key).is_some_and(|v| v.as_f64().is_some_and(f64::is_finite)))
    };
    assert!(has("eval/success_rate", 0));
    assert!(has("critic/td_loss", 1) && !has("actor/loss", 1), "iteration 1: critic warm-up only");
    for key in
        ["critic/td_loss", "actor/loss", "actor/alignment", "svgd/bandwidth", "svgd/attraction_norm", "time/actor_s"]
    {
        assert!(has(key, 2) && has(key, 3), "{key} missing at iterations 2-3");
    }
    assert!(has("rollout/exploration_gap", 1));

    // The recording: probes (3-D and 2-D views, camera), metrics and rollout frames.
    let viewer = rldt_vision::viz::viewer::find_viewer().unwrap();
    assert_eq!(summary.recording, run_dir.join("particles.rrd"));
    rldt_vision::viz::viewer::verify(&viewer, &summary.recording).unwrap();
    let paths = rldt_vision::viz::viewer::entity_paths(&viewer, &summary.recording).unwrap();
    for expected in [
        "/probes/0/actions_3d/field/combined",
        "/probes/0/actions_3d/chains",
        "/probes/1/actions_2d/particles",
        "/probes/1/actions_2d/q_map",
        "/probes/0/camera/agentview_image",
        "/metrics/critic/td_loss",
        "/metrics/svgd/repulsion_norm",
        "/metrics/eval/success_rate",
        "/metrics/eval/success_rate_low",
        "/metrics/eval/success_rate_high",
        "/rollout/camera/agentview_image",
        "/rollout/action/dx",
    ] {
        assert!(paths.iter().any(|p| p == expected), "{expected} missing from {paths:?}");
    }
    assert!(run_dir.join("probes.safetensors").is_file());

    // The checkpoint evaluates like a pretrained one (actor weights, no EMA file).
    let report = rldt_vision::eval::evaluate(&common::eval_options(
        run_dir.clone(),
        rldt_vision::sim::Task::Square,
        1,
        100_000,
        8,
    ))
    .unwrap();
    assert_eq!(report.episodes, 1);

    // Killed after iteration 2's checkpoint: resume runs iteration 3 (and only it).
    let killed = scratch("killed");
    assert!(Command::new("cp").arg("-r").arg(run_dir.join("checkpoints")).arg(&killed).status().unwrap().success());
    std::fs::copy(run_dir.join("config.json"), killed.join("config.json")).unwrap();
    std::fs::copy(run_dir.join("metrics.jsonl"), killed.join("metrics.jsonl")).unwrap();
    std::fs::copy(run_dir.join("probes.safetensors"), killed.join("probes.safetensors")).unwrap();
    std::fs::remove_dir_all(killed.join("checkpoints/step_00000004")).unwrap();
    std::fs::remove_dir_all(killed.join("checkpoints/step_00000003")).unwrap();
    std::fs::write(killed.join("checkpoints/latest"), "step_00000002").unwrap();
    let resumed = finetune(FinetuneOptions {
        config: None,
        run_dir: killed.clone(),
        device: Device::Cpu,
        resume: true,
        recording: None,
        reuse_start_evaluation: true,
    })
    .unwrap();
    assert_eq!(resumed.resumed_from, Some(2));
    assert!(resumed.checkpoint.ends_with("step_00000004"));
    assert_eq!(resumed.env_steps, 3 * 2 * 8, "env steps continue from the checkpoint's count");
    assert_eq!(resumed.recording, killed.join("particles.resume-2.rrd"), "a resume never overwrites a recording");
    rldt_vision::viz::viewer::verify(&viewer, &resumed.recording).unwrap();
    let steps: Vec<i64> = metric_lines(&killed)
        .iter()
        .filter(|l| l.get("critic/td_loss").is_some())
        .map(|l| l["step"].as_i64().unwrap())
        .collect();
    assert_eq!(steps, [1, 2, 3], "one training line per iteration, none repeated");
    let state: Value =
        serde_json::from_str(&std::fs::read_to_string(resumed.checkpoint.join("finetune_state.json")).unwrap())
            .unwrap();
    assert_eq!(state["iteration"], 4);
    assert!(state["counters"]["actor_steps"].as_i64().unwrap() >= 2);
}

/// A fresh CPU run of `config` in `run_dir` that must end in an error.
fn failed_run(config: FinetuneConfig, run_dir: &Path) -> rldt_vision::Error {
    let options = FinetuneOptions {
        config: Some(config),
        run_dir: run_dir.into(),
        device: Device::Cpu,
        resume: false,
        recording: None,
        reuse_start_evaluation: true,
    };
    finetune(options).err().expect("the run must stop with an error")
}

/// An exploding critic (learning rate 1e30) stops the run with a NonFinite error at the
/// iteration where it happened, and the last checkpoint (the evaluation iteration's) is
/// intact and loads.
#[test]
fn a_diverging_finetune_stops_and_keeps_the_last_checkpoint() {
    let pretrained = pretrained("pretrained_diverge");
    let mut config = tiny(&pretrained);
    config.critic.heads_lr = 1e30;
    config.critic.encoder_lr = 1e30;
    config.schedule.critic_steps_per_round = 4;
    let run_dir = scratch("diverge");
    let err = failed_run(config, &run_dir);
    let message = err.to_string();
    assert!(matches!(err, rldt_vision::Error::NonFinite { step: 1, .. }), "{message}");
    assert!(message.contains("critic/td_loss") && message.contains("checkpoint"), "{message}");
    let latest = rldt_vision::run_dir::latest_checkpoint(&run_dir).unwrap().expect("iteration 0's checkpoint");
    assert!(latest.ends_with("step_00000001"));
    rldt_vision::policy::checkpoint::load(&latest, rldt_vision::policy::checkpoint::Weights::Online, Device::Cpu)
        .unwrap();
}

/// Denoising steps the checkpoint does not have (K = 8 here) are refused before any worker
/// starts, naming the run's config file and the field.
#[test]
fn steps_beyond_the_checkpoints_k_are_refused_naming_the_field() {
    let pretrained = pretrained("pretrained_steps");
    for (field, edit) in [
        (
            "actor.objective.query_steps",
            &(|c: &mut FinetuneConfig| c.actor.objective.query_steps = vec![3, 8]) as &dyn Fn(&mut FinetuneConfig),
        ),
        ("rollout.exploration_steps", &|c: &mut FinetuneConfig| c.rollout.exploration_steps = vec![6, 9]),
    ] {
        let mut config = tiny(&pretrained);
        edit(&mut config);
        let err = failed_run(config, &scratch(&format!("steps_{field}")));
        let message = err.to_string();
        assert!(message.contains(field) && message.contains("config.json") && message.contains("K = 8"), "{message}");
    }
}

/// A policy with two observation frames (obs_horizon 2) is refused by `finetune` and `eval`
/// before any worker starts, naming the checkpoint's policy.json and the field: rollouts
/// render at chunk ends only and cannot give it the history it was trained on.
#[test]
fn a_two_frame_policy_is_refused_before_any_worker_starts() {
    let pretrained = common::tiny_pretrained(&scratch("pretrained_two_frames"), |c| c.policy.obs_horizon = 2);
    let err = failed_run(tiny(&pretrained), &scratch("two_frames"));
    let message = err.to_string();
    assert!(message.contains("policy.json") && message.contains("config.obs_horizon"), "{message}");
    let options = common::eval_options(pretrained.clone(), rldt_vision::sim::Task::Square, 1, 0, 8);
    let message = rldt_vision::eval::evaluate(&options).err().expect("refused").to_string();
    assert!(message.contains("policy.json") && message.contains("config.obs_horizon"), "{message}");
}

/// QAM (`algorithm` = qam) in the same loop: K' = 4 Euler steps for its trajectories, samples
/// and checkpoint; its actor steps report the adjoint-matching loss and move the weights; the
/// checkpoint evaluates (plain, best-of-n, with the critic calibration and along ∇Q); a config
/// that names qam without its section is refused by name.
#[test]
fn qam_runs_in_the_rldt_loop_with_its_own_k() {
    let pretrained = pretrained("pretrained_qam");
    let mut config = tiny(&pretrained);
    config.algorithm = rldt_vision::config::finetune::Algorithm::Qam;
    config.actor.objective.particles = 1;
    config.actor.adjoint_matching = Some(rldt_vision::rl::adjoint_matching::AdjointMatchingSettings {
        inverse_temperature: 30.0,
        clip_endpoint: true,
        denoising_steps: 4,
        q_gradient_from_target: true,
    });
    // QAM's own ensemble: every head on every trajectory, a pessimistic mean − ρ·std target.
    config.critic.heads = 3;
    config.critic.head_trajectories = rldt_vision::rl::critic::HeadTrajectories::All;
    config.critic.target_over_heads = rldt_vision::rl::critic::TargetOverHeads::MeanMinusStd(0.5);
    config.rollout.exploration_steps = vec![3];
    config.recording.probe_states = 0;
    config.validate().unwrap();
    let run_dir = scratch("run_qam");
    let summary = finetune(FinetuneOptions {
        config: Some(config.clone()),
        run_dir: run_dir.clone(),
        device: Device::Cpu,
        resume: false,
        recording: Some(rldt_vision::viz::Sink::Off),
        reuse_start_evaluation: true,
    })
    .unwrap();
    assert!(summary.checkpoint.ends_with("step_00000004"));
    let lines = metric_lines(&run_dir);
    for step in [2, 3] {
        let line = lines.iter().find(|l| l["step"] == step).unwrap();
        let loss = line["actor/adjoint_matching"].as_f64().unwrap();
        assert!(loss.is_finite() && loss > 0.0, "iteration {step}: adjoint-matching loss {loss}");
        assert_eq!(line["actor/loss"], line["actor/adjoint_matching"]);
        assert!(line["actor/endpoint_adjoint_norm"].as_f64().unwrap() >= 0.0);
    }
    let step = |n: u32, file: &str| std::fs::read(run_dir.join(format!("checkpoints/step_{n:08}/{file}"))).unwrap();
    assert_ne!(step(2, "policy.safetensors"), step(4, "policy.safetensors"), "the actor moved");
    let spec: Value = serde_json::from_slice(&step(4, "policy.json")).unwrap();
    assert_eq!(spec["config"]["num_denoising_steps"], 4, "QAM's K' in its checkpoint");
    let critic = tch::Tensor::read_safetensors(run_dir.join("checkpoints/step_00000004/critic.safetensors")).unwrap();
    let heads: std::collections::BTreeSet<&str> =
        critic.iter().filter_map(|(name, _)| name.strip_prefix("heads.")?.split('.').next()).collect();
    assert_eq!(heads.len(), 3, "critic.heads = 3 in the checkpoint: {heads:?}");
    // Best-of-n with this run's critic (its 3 heads read from the file); a checkpoint
    // without a critic is refused by name.
    let best_of = |checkpoint: PathBuf| rldt_vision::eval::EvalOptions {
        best_of_n: 4,
        ..common::eval_options(checkpoint, rldt_vision::sim::Task::Square, 2, 100_000, 8)
    };
    let report = rldt_vision::eval::evaluate(&best_of(run_dir.clone())).unwrap();
    assert_eq!((report.best_of_n, report.episodes), (4, 2));
    let ranking = report.best_of_n_ranking.expect("best-of-n reports its ranking");
    assert!(ranking.spread_ratio.is_finite() && ranking.spread_ratio > 0.0, "{ranking:?}");
    assert!(ranking.q_std_within_state > 0.0 && ranking.q_std_across_states.is_finite(), "{ranking:?}");
    // --critic-calibration scores the executed chunks without changing them: the same episodes
    // as the plain evaluation, one score per chunk (8 steps, Ta = 4: 2 chunks an episode).
    let plain = rldt_vision::eval::evaluate(&common::eval_options(
        run_dir.clone(),
        rldt_vision::sim::Task::Square,
        2,
        100_000,
        8,
    ))
    .unwrap();
    let calibrated = rldt_vision::eval::evaluate(&rldt_vision::eval::EvalOptions {
        critic_calibration: true,
        ..common::eval_options(run_dir.clone(), rldt_vision::sim::Task::Square, 2, 100_000, 8)
    })
    .unwrap();
    let lengths =
        |r: &rldt_vision::eval::EvalReport| r.per_episode.iter().map(|e| (e.success, e.length)).collect::<Vec<_>>();
    assert_eq!(lengths(&plain), lengths(&calibrated));
    let calibration = calibrated.critic_calibration.expect("calibration reported");
    assert_eq!(calibration.decisions, 4, "{calibration:?}");
    assert!(calibration.brier.is_some_and(f64::is_finite), "{calibration:?}");
    assert!(plain.critic_calibration.is_none() && plain.per_episode[0].critic_q.is_none());
    let scored: usize = calibrated.per_episode.iter().map(|e| e.critic_q.as_ref().expect("per-episode q").len()).sum();
    assert_eq!(scored, calibration.decisions);
    // --q-ascent: the same episodes run, every executed chunk moved along ∇_a Q (2 chunks an
    // episode); a small step raises the critic's own Q (first order); with best-of-n refused.
    let ascent = |step: f64| rldt_vision::eval::EvalOptions {
        q_ascent: step,
        ..common::eval_options(run_dir.clone(), rldt_vision::sim::Task::Square, 2, 100_000, 8)
    };
    let stepped = rldt_vision::eval::evaluate(&ascent(1e-3)).unwrap();
    let moved = stepped.q_ascent.expect("q-ascent reported");
    assert_eq!((stepped.episodes, moved.decisions), (2, 4), "{moved:?}");
    assert!(moved.mean_gradient_norm > 0.0 && moved.mean_q_gain > 0.0, "{moved:?}");
    // The control, a random direction of the same length, gains less by the critic's own
    // measure (to first order η·g·u ≤ η·‖g‖).
    let random = rldt_vision::eval::EvalOptions {
        ascent_direction: rldt_vision::rl::q_ascent::AscentDirection::Random,
        ..ascent(1e-3)
    };
    let control = rldt_vision::eval::evaluate(&random).unwrap().q_ascent.expect("q-ascent reported");
    assert_eq!(control.direction, rldt_vision::rl::q_ascent::AscentDirection::Random);
    assert!(control.mean_q_gain < moved.mean_q_gain, "{control:?} against {moved:?}");
    assert!(plain.q_ascent.is_none());
    let both = rldt_vision::eval::EvalOptions { best_of_n: 4, ..ascent(0.5) };
    assert!(rldt_vision::eval::evaluate(&both).err().expect("refused").to_string().contains("--q-ascent"));
    let refused = rldt_vision::eval::evaluate(&best_of(pretrained.clone())).err().expect("no critic").to_string();
    assert!(refused.contains("critic.safetensors"), "{refused}");
    let mut no_heads = config.clone();
    no_heads.critic.heads = 0;
    assert!(no_heads.validate().unwrap_err().contains("critic.heads"));

    let mut bare = config.clone();
    bare.actor.adjoint_matching = None;
    assert!(bare.validate().unwrap_err().contains("actor.adjoint_matching"));
    let mut rldt_with_section = config;
    rldt_with_section.algorithm = rldt_vision::config::finetune::Algorithm::Rldt;
    assert!(rldt_with_section.validate().unwrap_err().contains("actor.adjoint_matching"));
}
