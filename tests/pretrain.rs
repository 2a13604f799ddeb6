//! Pretraining end to end on generated fixtures: the flow loss overfits a tiny batch, a run
//! writes a checkpoint that reloads and samples chunks of the right shape, weights load in
//! PyTorch, resume continues the step count and reproduces an uninterrupted run exactly, and
//! misuse of run directories and diverging runs give clear errors.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard};

use rldt_datasets::batch::{gather, DatasetStats};
use rldt_datasets::reader::{DemoSelection, RobomimicFile};
use rldt_datasets::synthetic::{write_synthetic, SyntheticSpec};
use rldt_datasets::WindowSpec;
use rldt_vision::config::PretrainConfig;
use rldt_vision::optim::AdamW;
use rldt_vision::policy::checkpoint::{self, Weights};
use rldt_vision::policy::{FlowPolicy, PolicySpec};
use rldt_vision::train::loader::to_device;
use rldt_vision::train::pretrain::{pretrain, PretrainOptions};
use rldt_vision::Error;
use tch::{nn, Device, Kind, Tensor};

/// libtorch's generator is process-global; tests that train hold this lock.
static GLOBAL_RNG: Mutex<()> = Mutex::new(());
fn rng_lock() -> MutexGuard<'static, ()> {
    GLOBAL_RNG.lock().unwrap_or_else(|e| e.into_inner())
}

fn scratch(name: &str) -> PathBuf {
    common::scratch("pretrain", name)
}

/// A 32×32 synthetic dataset (shared by all tests; written once).
fn fixture() -> PathBuf {
    static ONCE: Mutex<()> = Mutex::new(());
    let _guard = ONCE.lock().unwrap();
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("pretrain_fixture_32.hdf5");
    if !path.exists() {
        write_synthetic(&path, SyntheticSpec { demos: 10, image_size: 32, seed: 5 }).unwrap();
    }
    path
}

/// The committed CPU config, shrunk: 32-pixel images, 6 steps, checkpoints every 3.
fn tiny_config(dataset: &Path) -> PretrainConfig {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut config = PretrainConfig::load(&root.join("configs/pretrain/synthetic_cpu.json")).unwrap();
    config.name = "tiny".into();
    config.dataset.path = dataset.into();
    config.policy.velocity_head.hidden_dim = 64;
    config.train.batch_size = 8;
    config.train.steps = 6;
    config.train.warmup_steps = 2;
    config.train.log_every = 1;
    config.train.valid_every = 3;
    config.train.checkpoint_every = 3;
    config.train.keep_checkpoints = 5;
    config.validate().unwrap();
    config
}

fn run(
    config: &PretrainConfig,
    run_dir: &Path,
    resume: bool,
) -> rldt_vision::Result<rldt_vision::train::pretrain::PretrainSummary> {
    pretrain(PretrainOptions { config: Some(config.clone()), run_dir: run_dir.into(), device: Device::Cpu, resume })
}

fn read_weights(path: &Path) -> Vec<(String, Tensor)> {
    let mut named = Tensor::read_safetensors(path).unwrap();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    named
}

/// With noise, flow times and augmentation fixed (same seed every step), the flow loss of a
/// 4-window batch must fall at least 10× within 300 AdamW steps.
#[test]
fn flow_loss_overfits_a_tiny_batch() {
    let _rng = rng_lock();
    let config = tiny_config(&fixture());
    let data = RobomimicFile::open(fixture())
        .unwrap()
        .load(&config.dataset.obs, &DemoSelection { mask: None, first_n: Some(2) })
        .unwrap();
    let stats = DatasetStats::of(&data);
    let spec = WindowSpec { obs_horizon: 1, pred_horizon: 4 };
    let windows = spec.all_windows(data.episodes.iter().map(|e| e.len));
    let batch = gather(&data, &spec, &stats, &windows[..4]);
    let (obs, actions) = to_device(&batch, &data, &spec, Device::Cpu);
    tch::manual_seed(0);
    let vs = nn::VarStore::new(Device::Cpu);
    let policy_spec = PolicySpec {
        config: config.policy.clone(),
        obs: config.dataset.obs.clone(),
        image_size: 32,
        proprio_dim: 9,
        action_dim: 7,
        stats,
    };
    let policy = FlowPolicy::new(&vs.root(), policy_spec).unwrap();
    let mut optimizer = AdamW::new(&vs, 0.9, 0.999, 1e-8, 0.0);
    let loss_at = |train: bool| {
        tch::manual_seed(123);
        policy.flow_loss(&obs, &actions, train)
    };
    let first = loss_at(true).double_value(&[]);
    for _ in 0..300 {
        optimizer.zero_grad();
        loss_at(true).backward();
        optimizer.step(1e-3);
    }
    let last = loss_at(true).double_value(&[]);
    assert!(first / last >= 10.0, "flow loss fell only from {first:.4} to {last:.4}");
}

#[test]
fn smoke_run_checkpoint_reloads_samples_and_loads_in_pytorch() {
    let _rng = rng_lock();
    let run_dir = scratch("smoke");
    let config = tiny_config(&fixture());
    let summary = run(&config, &run_dir, false).unwrap();
    assert_eq!(summary.steps, 6);
    assert!(summary.checkpoint.ends_with("step_00000006"));
    assert!(summary.last_valid_loss.is_some_and(f64::is_finite));
    // Resolved config and metrics are in the run directory.
    let saved = PretrainConfig::load(&run_dir.join("config.json")).unwrap();
    assert_eq!(saved, config);
    let metrics = std::fs::read_to_string(run_dir.join("metrics.jsonl")).unwrap();
    assert!(metrics.lines().any(|l| l.contains("pretrain/valid_flow_loss")));
    assert_eq!(metrics.lines().filter(|l| l.contains("pretrain/flow_loss")).count(), 6);

    // The EMA weights reload and sample chunks: chain [K+1, B, D], env actions [B, Ta, A].
    let (_vs, policy) = checkpoint::load(&summary.checkpoint, Weights::Ema, Device::Cpu).unwrap();
    let data = RobomimicFile::open(fixture())
        .unwrap()
        .load(&config.dataset.obs, &DemoSelection { mask: Some("valid".into()), first_n: None })
        .unwrap();
    let spec = WindowSpec { obs_horizon: 1, pred_horizon: 4 };
    let windows = spec.all_windows(data.episodes.iter().map(|e| e.len));
    let batch = gather(&data, &spec, &policy.spec().stats, &windows[..3]);
    let (obs, _) = to_device(&batch, &data, &spec, Device::Cpu);
    let chain = tch::no_grad(|| {
        let cond = policy.condition(&obs, false);
        policy.sample_chain(&cond, &policy.initial_noise(3, false))
    });
    assert_eq!(chain.size(), [9, 3, 28]);
    let actions = policy.env_actions(&chain.get(8));
    assert_eq!(actions.size(), [3, 4, 7]);
    assert!(bool::try_from(actions.abs().le(1.0).all()).unwrap());

    // safetensors files load in PyTorch with the same names and shapes.
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    assert!(python.exists(), "{} missing: run scripts/setup", python.display());
    let weights = summary.checkpoint.join("ema.safetensors");
    let out = Command::new(&python)
        .args(["-c", "import sys; from safetensors.torch import load_file; w = load_file(sys.argv[1]); print(len(w), sum(t.numel() for t in w.values()))"])
        .arg(&weights)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rust = read_weights(&weights);
    let expected = format!("{} {}", rust.len(), rust.iter().map(|(_, t)| t.numel()).sum::<usize>());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), expected);
}

#[test]
fn resume_continues_the_step_count_and_reproduces_the_run() {
    let _rng = rng_lock();
    let config = tiny_config(&fixture());
    let full = scratch("resume_full");
    let full_summary = run(&config, &full, false).unwrap();

    // A run killed after its step-3 checkpoint: same directory without step 6.
    let killed = scratch("resume_killed");
    let status = Command::new("cp").arg("-r").arg(full.join("checkpoints")).arg(&killed).status().unwrap();
    assert!(status.success());
    std::fs::copy(full.join("config.json"), killed.join("config.json")).unwrap();
    std::fs::copy(full.join("metrics.jsonl"), killed.join("metrics.jsonl")).unwrap();
    std::fs::remove_dir_all(killed.join("checkpoints/step_00000006")).unwrap();
    std::fs::write(killed.join("checkpoints/latest"), "step_00000003").unwrap();

    let resumed = run(&config, &killed, true).unwrap();
    assert_eq!(resumed.resumed_from, Some(3));
    assert!(resumed.checkpoint.ends_with("step_00000006"));
    for file in ["policy.safetensors", "ema.safetensors"] {
        let (a, b) = (read_weights(&full_summary.checkpoint.join(file)), read_weights(&resumed.checkpoint.join(file)));
        assert_eq!(a.len(), b.len());
        for ((name, x), (_, y)) in a.iter().zip(&b) {
            assert!(x.equal(y), "{file}: `{name}` differs after resume");
        }
    }
    // The metrics read as one run: steps 1..=6 once each for the training loss.
    let metrics = std::fs::read_to_string(killed.join("metrics.jsonl")).unwrap();
    let steps: Vec<i64> = metrics
        .lines()
        .filter(|l| l.contains("pretrain/flow_loss"))
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["step"].as_i64().unwrap())
        .collect();
    assert_eq!(steps, [1, 2, 3, 4, 5, 6]);
    // Resuming the finished run trains nothing and reports the losses its log holds.
    let again = run(&config, &killed, true).unwrap();
    assert_eq!(again.last_train_loss, resumed.last_train_loss);
    assert!(again.last_train_loss.is_some_and(f64::is_finite));
}

#[test]
fn run_directory_misuse_is_refused() {
    let _rng = rng_lock();
    let config = tiny_config(&fixture());
    let dir = scratch("misuse");
    let err = run(&config, &dir, true).unwrap_err();
    assert!(matches!(err, Error::RunDir { .. }) && err.to_string().contains("nothing to resume"), "{err}");
    let mut short = config.clone();
    short.train.steps = 3;
    short.train.valid_every = 3;
    run(&short, &dir, false).unwrap();
    let err = run(&short, &dir, false).unwrap_err();
    assert!(err.to_string().contains("--resume"), "{err}");
    let err = run(&config, &dir, true).unwrap_err();
    assert!(err.to_string().contains("config given differs"), "{err}");
}

#[test]
fn a_diverging_run_stops_and_keeps_the_last_good_checkpoint() {
    let _rng = rng_lock();
    let mut config = tiny_config(&fixture());
    config.train.steps = 60;
    config.train.checkpoint_every = 1;
    config.train.valid_every = 1000;
    config.train.lr = 1e9;
    config.train.min_lr = 1e9;
    config.train.warmup_steps = 0;
    let dir = scratch("diverge");
    let err = run(&config, &dir, false).unwrap_err();
    let Error::NonFinite { step, .. } = err else { panic!("expected a NonFinite error, got {err}") };
    let latest = rldt_vision::run_dir::latest_checkpoint(&dir).unwrap();
    if let Some(latest) = latest {
        for (name, t) in read_weights(&latest.join("policy.safetensors")) {
            assert!(bool::try_from(t.isfinite().all()).unwrap(), "saved weight `{name}` is not finite");
        }
        assert!(latest.ends_with(format!("step_{:08}", step - 1)) || step == 1);
    }
    let _ = Kind::Float;
}

/// Tier 2: a checkpoint evaluates in robosuite end to end: batched sampling, chunk-end
/// rendering, horizon truncation, per-episode results and a GIF. (A 6-step policy trained on
/// synthetic 32×32 data: its camera and low-dim keys are Square's, so the env can feed it.)
#[test]
fn a_checkpoint_evaluates_in_simulation() {
    let _rng = rng_lock();
    let run_dir = scratch("eval");
    let summary = run(&tiny_config(&fixture()), &run_dir, false).unwrap();
    let video = run_dir.join("eval.gif");
    let options = rldt_vision::eval::EvalOptions {
        checkpoint: run_dir.clone(),
        online_weights: false,
        task: rldt_vision::sim::Task::Square,
        episodes: 3,
        workers: 2,
        seed: 100_000,
        device: rldt_vision::device::DeviceChoice::Cpu,
        mujoco_gl: "egl".into(),
        video: Some(video.clone()),
        video_episodes: vec![1],
        horizon: Some(12),
        best_of_n: 1,
        rank_by: rldt_vision::rl::best_of_n::RankBy::Mean,
        critic_calibration: false,
        q_ascent: 0.0,
        ascent_direction: rldt_vision::rl::q_ascent::AscentDirection::Gradient,
    };
    let report = rldt_vision::eval::evaluate(&options).unwrap();
    assert_eq!(report.checkpoint, summary.checkpoint, "a run directory resolves to its latest checkpoint");
    assert_eq!(report.episodes, 3);
    assert_eq!(
        report.per_episode.iter().map(|e| (e.episode, e.seed)).collect::<Vec<_>>(),
        [(0, 100_000), (1, 100_001), (2, 100_002)]
    );
    assert!(
        report.per_episode.iter().all(|e| e.length == 12 && !e.success && e.worker_failure.is_none()),
        "{:?}",
        report.per_episode
    );
    assert_eq!(report.env_steps, 36);
    assert_eq!(report.success_rate_ci95[0], 0.0);
    // 1 reset frame + 12 step frames of episode 1, as an animated GIF.
    use image::AnimationDecoder;
    let decoder =
        image::codecs::gif::GifDecoder::new(std::io::BufReader::new(std::fs::File::open(&video).unwrap())).unwrap();
    let frames = decoder.into_frames().collect_frames().unwrap();
    assert_eq!(frames.len(), 13, "one frame per step plus the first observation");
    assert_eq!(frames[0].buffer().dimensions(), (32, 32));
}

/// `eval` names the weights it runs and never falls back silently: a pretraining checkpoint
/// without `ema.safetensors` is refused unless `--online-weights` asks for the online ones,
/// and a weight file holding a NaN is refused at load, naming the tensor.
#[test]
fn eval_refuses_missing_ema_and_non_finite_weights() {
    let _rng = rng_lock();
    let run_dir = scratch("eval_refusals");
    let summary = run(&tiny_config(&fixture()), &run_dir, false).unwrap();
    let options = |online_weights| rldt_vision::eval::EvalOptions {
        checkpoint: summary.checkpoint.clone(),
        online_weights,
        task: rldt_vision::sim::Task::Square,
        episodes: 1,
        workers: 1,
        seed: 0,
        device: rldt_vision::device::DeviceChoice::Cpu,
        mujoco_gl: "egl".into(),
        video: None,
        video_episodes: vec![],
        horizon: Some(2),
        best_of_n: 1,
        rank_by: rldt_vision::rl::best_of_n::RankBy::Mean,
        critic_calibration: false,
        q_ascent: 0.0,
        ascent_direction: rldt_vision::rl::q_ascent::AscentDirection::Gradient,
    };
    use rldt_vision::eval::weights_to_evaluate;
    assert_eq!(weights_to_evaluate(&summary.checkpoint, false).unwrap(), Weights::Ema);

    // A NaN in one EMA tensor: refused at load, the tensor named, before any simulator starts.
    let ema = summary.checkpoint.join(checkpoint::EMA_WEIGHTS_FILE);
    let mut named = read_weights(&ema);
    let poisoned = named.iter().find(|(_, t)| t.kind() == Kind::Float).map(|(n, _)| n.clone()).unwrap();
    for (name, tensor) in named.iter_mut() {
        if *name == poisoned {
            *tensor = tensor.copy();
            let _ = tensor.view(-1).get(0).fill_(f64::NAN);
        }
    }
    Tensor::write_safetensors(&named, &ema).unwrap();
    let err = rldt_vision::eval::evaluate(&options(false)).unwrap_err().to_string();
    assert!(err.contains(&poisoned) && err.contains("non-finite") && err.contains("ema.safetensors"), "{err}");

    // No EMA file at all: refused, naming the file and the flag; asked for, the online weights run.
    std::fs::remove_file(&ema).unwrap();
    let err = rldt_vision::eval::evaluate(&options(false)).unwrap_err().to_string();
    assert!(err.contains("ema.safetensors") && err.contains("--online-weights"), "{err}");
    let report = rldt_vision::eval::evaluate(&options(true)).unwrap();
    assert_eq!(report.weights, "online");
}

/// One process at a time writes a run directory: a second run on a locked directory is
/// refused before it reads or writes anything, naming the holder; when the holder dies (here
/// `flock` killed with SIGKILL) its lock goes with it and the run starts; a lock file left
/// behind without a holder does not block `--resume`.
#[test]
fn a_run_directory_is_locked_while_a_process_writes_it() {
    let _rng = rng_lock();
    let mut config = tiny_config(&fixture());
    config.train.steps = 3;
    config.train.valid_every = 3;
    let dir = scratch("locked");
    let lock = dir.join(rldt_vision::run_dir::LOCK_FILE);
    let ready = dir.join("holder_ready");
    // `-o`: the lock is held by flock itself, not by the shell it runs, so killing flock frees it.
    let mut holder = Command::new("flock")
        .arg("-o")
        .arg(&lock)
        .args(["-c", &format!("touch {}; sleep 60", ready.display())])
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while !ready.exists() {
        assert!(started.elapsed().as_secs() < 20, "flock did not take the lock");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let err = run(&config, &dir, false).unwrap_err();
    assert!(err.to_string().contains("in use by another process"), "{err}");
    assert!(matches!(err, Error::RunDir { .. }), "{err}");
    assert!(!dir.join("config.json").exists(), "a refused run writes nothing");
    holder.kill().unwrap();
    holder.wait().unwrap();
    run(&config, &dir, false).unwrap();
    assert!(!lock.exists(), "a finished run removes its lock file");
    std::fs::write(&lock, "pid 4194304").unwrap(); // left by a killed process: no holder
    let mut longer = config.clone();
    longer.train.steps = 6;
    // A resume with a different step count is refused as a config change, not as locked.
    let err = run(&longer, &dir, true).unwrap_err();
    assert!(err.to_string().contains("config given differs"), "{err}");
    pretrain(PretrainOptions { config: None, run_dir: dir.clone(), device: Device::Cpu, resume: true }).unwrap();
}
