//! Tier 1, property style: many random malformed inputs, each read the way the commands read
//! it, must end in a named error (the message names the file) or, where the damage leaves a
//! valid file (a flipped bit inside image data), in a normal result; never a panic, and no
//! other file changes. Inputs: Robomimic HDF5 (`RobomimicFile::open` + `load`), checkpoint
//! weights and spec (`checkpoint::load`), rerun recordings (`rerun rrd verify` + `stats`, as
//! `inspect --check`), and every committed config (`PretrainConfig` / `FinetuneConfig` /
//! `OnPolicyConfig::load`) with random field mutations. Damage: truncation at a random
//! length (0 included) or 1–8 random bytes flipped; a fixed seed, so a failure reproduces.
//! The numbers of cases are printed; ~20 s alone.

mod common;

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use rldt_datasets::random::SplitMix64;
use rldt_datasets::reader::{DemoSelection, ObsSpec, RobomimicFile};
use rldt_datasets::synthetic::{write_synthetic, SyntheticSpec};
use rldt_vision::config::finetune::{Algorithm, FinetuneConfig, OnPolicyConfig};
use rldt_vision::config::PretrainConfig;
use rldt_vision::policy::checkpoint::{self, Weights};
use serde_json::Value;

fn scratch(name: &str) -> PathBuf {
    common::scratch("malformed", name)
}

/// Every file under `dir` (path → bytes), to show that reading changed nothing.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                files.insert(path.clone(), std::fs::read(&path).unwrap());
            }
        }
    }
    files
}

/// `original` damaged: truncated (even case numbers) or with 1–8 bytes flipped (odd).
fn damage(original: &[u8], case: usize, rng: &mut SplitMix64) -> Vec<u8> {
    let mut bytes = original.to_vec();
    if case.is_multiple_of(2) {
        bytes.truncate(rng.below(original.len()));
    } else {
        for _ in 0..1 + rng.below(8) {
            let at = rng.below(bytes.len());
            bytes[at] ^= 1 << rng.below(8);
        }
    }
    bytes
}

/// Runs `read` on `cases` damaged copies of `original` written at `target`: never a panic;
/// an error names `target`. Returns (errors, normal results).
fn damaged_reads<T>(
    original: &Path,
    target: &Path,
    cases: usize,
    seed: u64,
    read: impl Fn(&Path) -> Result<T, String>,
) -> (usize, usize) {
    let bytes = std::fs::read(original).unwrap();
    let mut rng = SplitMix64::new(seed);
    let (mut errors, mut fine) = (0, 0);
    for case in 0..cases {
        let damaged = damage(&bytes, case, &mut rng);
        std::fs::write(target, &damaged).unwrap();
        let outcome = catch_unwind(AssertUnwindSafe(|| read(target)));
        match outcome {
            Err(_) => {
                panic!("case {case} ({} of {} bytes): a panic reading {}", damaged.len(), bytes.len(), target.display())
            }
            Ok(Err(message)) => {
                let name = target.file_name().unwrap().to_string_lossy();
                assert!(message.contains(&*name), "case {case}: the error does not name {name}: {message}");
                errors += 1;
            }
            Ok(Ok(_)) => fine += 1,
        }
    }
    (errors, fine)
}

#[test]
fn damaged_hdf5_files_give_named_errors() {
    let dir = scratch("hdf5");
    let original = dir.join("original.hdf5");
    write_synthetic(&original, SyntheticSpec { demos: 3, image_size: 16, seed: 1 }).unwrap();
    let before = snapshot(&dir);
    let spec = ObsSpec { image_keys: vec!["agentview_image".into()], lowdim_keys: vec!["robot0_eef_pos".into()] };
    let target = dir.join("damaged.hdf5");
    let (errors, fine) = damaged_reads(&original, &target, 120, 11, |path| {
        let file = RobomimicFile::open(path).map_err(|e| e.to_string())?;
        file.load(&spec, &DemoSelection { mask: None, first_n: None }).map_err(|e| e.to_string())
    });
    println!("hdf5: {errors} named errors, {fine} still valid");
    assert!(errors >= 60, "every truncation must fail: {errors}");
    std::fs::remove_file(&target).unwrap();
    assert_eq!(snapshot(&dir), before, "reading damaged copies changed a file");
}

#[test]
fn damaged_checkpoint_files_give_named_errors() {
    let dir = scratch("checkpoint");
    // A real checkpoint: 2 pretraining steps of the synthetic CPU config on a 32-px fixture.
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let data = dir.join("data.hdf5");
    write_synthetic(&data, SyntheticSpec { demos: 3, image_size: 32, seed: 2 }).unwrap();
    let mut config = PretrainConfig::load(&root.join("configs/pretrain/synthetic_cpu.json")).unwrap();
    config.dataset.path = data;
    config.dataset.valid_demos = None;
    config.policy.velocity_head.hidden_dim = 32;
    (config.train.steps, config.train.warmup_steps, config.train.batch_size) = (2, 0, 4);
    let summary = rldt_vision::train::pretrain::pretrain(rldt_vision::train::pretrain::PretrainOptions {
        config: Some(config),
        run_dir: dir.join("run"),
        device: tch::Device::Cpu,
        resume: false,
    })
    .unwrap();
    let good = summary.checkpoint;
    let before = snapshot(&dir);
    for (file, seed) in [(checkpoint::EMA_WEIGHTS_FILE, 21), (checkpoint::SPEC_FILE, 22)] {
        // The damaged copy sits in a checkpoint directory of its own, beside intact files.
        let copy = dir.join(format!("damaged_{file}"));
        std::fs::create_dir_all(&copy).unwrap();
        for name in [checkpoint::EMA_WEIGHTS_FILE, checkpoint::SPEC_FILE] {
            std::fs::copy(good.join(name), copy.join(name)).unwrap();
        }
        let (errors, fine) = damaged_reads(&good.join(file), &copy.join(file), 80, seed, |_| {
            checkpoint::load(&copy, Weights::Ema, tch::Device::Cpu).map(|_| ()).map_err(|e| e.to_string())
        });
        println!("{file}: {errors} named errors, {fine} still valid");
        assert!(errors >= 40, "every truncation must fail: {errors}");
        std::fs::remove_dir_all(&copy).unwrap();
    }
    assert_eq!(snapshot(&dir), before, "reading damaged copies changed a file");
}

#[test]
fn damaged_recordings_give_named_errors() {
    use rldt_vision::viz::viewer::{entity_paths, find_viewer, verify};
    use rldt_vision::viz::{Recorder, Sink};
    let dir = scratch("rrd");
    let original = dir.join("original.rrd");
    let recorder = Recorder::open(&Sink::File(original.clone()), "rldt-vision:malformed-test").unwrap();
    for i in 0..5 {
        recorder.set_time(i, None);
        recorder.metrics(&[("test/value", i as f64)]);
        recorder.image("test/image", &[i as u8; 8 * 8 * 3], 8);
    }
    recorder.flush().unwrap();
    drop(recorder);
    let viewer = find_viewer().expect("the venv's rerun (scripts/setup installs rerun-sdk)");
    let before = snapshot(&dir);
    let target = dir.join("damaged.rrd");
    let (errors, fine) = damaged_reads(&original, &target, 24, 31, |path| {
        verify(&viewer, path).map_err(|e| e.to_string())?;
        entity_paths(&viewer, path).map_err(|e| e.to_string())
    });
    println!("rrd: {errors} named errors, {fine} still valid");
    assert!(errors >= 10, "truncations must fail: {errors}");
    std::fs::remove_file(&target).unwrap();
    assert_eq!(snapshot(&dir), before, "reading damaged copies changed a file");
}

/// Every leaf path of a JSON value (`["train", "lr"]`, `["env", "cameras", 0]` as strings).
fn leaves(value: &Value, prefix: Vec<String>, out: &mut Vec<Vec<String>>) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (k, v) in map {
                let mut p = prefix.clone();
                p.push(k.clone());
                leaves(v, p, out);
            }
        }
        Value::Array(items) if !items.is_empty() => {
            for (i, v) in items.iter().enumerate() {
                let mut p = prefix.clone();
                p.push(i.to_string());
                leaves(v, p, out);
            }
        }
        _ => out.push(prefix),
    }
}

fn at<'a>(value: &'a mut Value, path: &[String]) -> &'a mut Value {
    path.iter().fold(value, |v, key| match v {
        Value::Array(items) => &mut items[key.parse::<usize>().unwrap()],
        other => &mut other[key.as_str()],
    })
}

#[test]
fn mutated_configs_give_named_errors() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = scratch("configs");
    let mut files: Vec<PathBuf> = ["pretrain", "finetune"]
        .iter()
        .flat_map(|kind| std::fs::read_dir(root.join("configs").join(kind)).unwrap())
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    let replacements = [
        Value::Null,
        Value::from("x"),
        Value::from(-1),
        Value::from(0),
        Value::from(1e300),
        Value::from(-0.5),
        Value::Array(vec![]),
        Value::Object(Default::default()),
        Value::Bool(true),
    ];
    let mut rng = SplitMix64::new(41);
    let (mut errors, mut fine) = (0, 0);
    for original in &files {
        let config: Value = serde_json::from_str(&std::fs::read_to_string(original).unwrap()).unwrap();
        let mut paths = Vec::new();
        leaves(&config, vec![], &mut paths);
        for case in 0..30 {
            let mut mutated = config.clone();
            let path = &paths[rng.below(paths.len())];
            match rng.below(replacements.len() + 1) {
                0 => {
                    // Remove the field (the parent's key or array element).
                    let (last, parent) = path.split_last().unwrap();
                    match at(&mut mutated, parent) {
                        Value::Object(map) => drop(map.remove(last)),
                        Value::Array(items) => drop(items.remove(last.parse::<usize>().unwrap())),
                        _ => unreachable!(),
                    }
                }
                r => *at(&mut mutated, path) = replacements[r - 1].clone(),
            }
            let target = dir.join(format!("mutated_{}", original.file_name().unwrap().to_string_lossy()));
            std::fs::write(&target, serde_json::to_string_pretty(&mutated).unwrap()).unwrap();
            let outcome = catch_unwind(AssertUnwindSafe(|| -> Result<(), String> {
                let kind = if original.parent().unwrap().ends_with("pretrain") { None } else { Some(()) };
                let loaded = match kind {
                    None => PretrainConfig::load(&target).map(|_| ()),
                    Some(()) => match Algorithm::of_file(&target) {
                        Ok(Algorithm::Rldt | Algorithm::Qam) => FinetuneConfig::load(&target).map(|_| ()),
                        Ok(_) => OnPolicyConfig::load(&target).map(|_| ()),
                        Err(e) => Err(e),
                    },
                };
                loaded.map_err(|e| e.to_string())
            }));
            let mutation = format!("{} case {case}: `{}`", original.display(), path.join("."));
            match outcome {
                Err(_) => panic!("{mutation}: a panic"),
                Ok(Err(message)) => {
                    assert!(message.contains(&*target.to_string_lossy()), "{mutation}: unnamed: {message}");
                    errors += 1;
                }
                Ok(Ok(())) => fine += 1,
            }
        }
        assert_eq!(
            serde_json::from_str::<Value>(&std::fs::read_to_string(original).unwrap()).unwrap(),
            config,
            "the committed config changed"
        );
    }
    println!("configs: {} files, {errors} named errors, {fine} still valid", files.len());
    assert!(errors > fine, "most mutations must be refused: {errors} vs {fine}");
}
