//! Robomimic HDF5 read/write: round trip, numeric demo order, masks, "first N", windows and
//! statistics, and one test per malformed input, each checking that the error names the
//! file and the key path.

use std::path::PathBuf;

use rldt_datasets::batch::{gather, DatasetStats};
use rldt_datasets::reader::{DemoSelection, ObsSpec, RobomimicFile};
use rldt_datasets::synthetic::{write_synthetic, SyntheticSpec};
use rldt_datasets::writer::{DemoRecord, ObsArray, RobomimicWriter};
use rldt_datasets::{DatasetError, WindowSpec};

fn tmp(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("robomimic_io");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn square_spec() -> ObsSpec {
    ObsSpec {
        image_keys: vec!["agentview_image".into()],
        lowdim_keys: vec!["robot0_eef_pos".into(), "robot0_eef_quat".into(), "robot0_gripper_qpos".into()],
    }
}

fn all() -> DemoSelection {
    DemoSelection { mask: None, first_n: None }
}

/// A record of `len` steps with one 2×2 camera and a 3-d low-dim key; values encode (step, dim).
fn record(len: usize) -> DemoRecord {
    DemoRecord {
        actions: (0..len * 2).map(|i| i as f64 / 10.0).collect(),
        action_dim: 2,
        rewards: vec![0.0; len],
        dones: vec![0; len],
        states: Some(((0..len * 4).map(|i| i as f64).collect(), 4)),
        obs: vec![
            (
                "cam_image".into(),
                ObsArray::Image { data: (0..len * 12).map(|i| i as u8).collect(), height: 2, width: 2 },
            ),
            ("pos".into(), ObsArray::LowDim { data: (0..len * 3).map(|i| i as f64).collect(), dim: 3 }),
        ],
        next_obs: vec![],
        model_file: Some("<mujoco/>".into()),
    }
}

fn small_spec() -> ObsSpec {
    ObsSpec { image_keys: vec!["cam_image".into()], lowdim_keys: vec!["pos".into()] }
}

fn write_records(name: &str, lens: &[usize]) -> PathBuf {
    let path = tmp(name);
    let mut w = RobomimicWriter::create(&path, r#"{"env_name": "Test"}"#).unwrap();
    for &len in lens {
        w.write_demo(&record(len)).unwrap();
    }
    let names = w.demo_names().to_vec();
    w.finish(&[("train", names[..names.len() - 1].to_vec()), ("valid", names[names.len() - 1..].to_vec())]).unwrap();
    path
}

fn assert_names(err: &DatasetError, file: &std::path::Path, key: &str) {
    let message = err.to_string();
    assert!(message.contains(&file.display().to_string()), "error must name the file: {message}");
    assert!(message.contains(key), "error must name `{key}`: {message}");
}

#[test]
fn round_trip_numeric_order_masks_and_first_n() {
    let lens: Vec<usize> = (0..12).map(|i| 3 + i % 4).collect();
    let path = write_records("roundtrip.hdf5", &lens);
    let file = RobomimicFile::open(&path).unwrap();
    let names: Vec<String> = (0..12).map(|i| format!("demo_{i}")).collect();
    assert_eq!(file.demo_names(), names.as_slice(), "numeric, not lexical, order");
    assert_eq!(file.env_args().unwrap(), r#"{"env_name": "Test"}"#);
    assert_eq!(file.mask("valid").unwrap(), ["demo_11"]);
    assert_eq!(file.mask("train").unwrap().len(), 11);
    let ds = file.load(&small_spec(), &DemoSelection { mask: Some("train".into()), first_n: Some(3) }).unwrap();
    assert_eq!(ds.episodes.iter().map(|e| e.demo.as_str()).collect::<Vec<_>>(), ["demo_0", "demo_1", "demo_2"]);
    let e = &ds.episodes[1];
    assert_eq!(e.len, 4);
    assert_eq!(e.actions, (0..8).map(|i| i as f32 / 10.0).collect::<Vec<_>>());
    assert_eq!(e.lowdim, (0..12).map(|i| i as f32).collect::<Vec<_>>());
    assert_eq!(e.images[0], (0..48).map(|i| i as u8).collect::<Vec<_>>());
    assert_eq!(ds.image_shapes, [[2, 2, 3]]);
    assert_eq!((ds.proprio_dim(), ds.action_dim), (3, 2));
    assert_eq!(ds.memory_bytes(), (36 + 48 + 60) + 4 * (3 + 4 + 5) * (3 + 2));
}

#[test]
fn windows_pad_and_statistics_normalise() {
    let path = write_records("windows.hdf5", &[3, 5]);
    let ds = RobomimicFile::open(&path).unwrap().load(&small_spec(), &all()).unwrap();
    let spec = WindowSpec { obs_horizon: 2, pred_horizon: 3 };
    let windows = spec.all_windows(ds.episodes.iter().map(|e| e.len));
    assert_eq!(windows.len(), 8);
    let stats = DatasetStats::of(&ds);
    let batch = gather(&ds, &spec, &stats, &windows);
    assert_eq!(batch.images[0].len(), 8 * 2 * 12);
    assert_eq!(batch.proprio.len(), 8 * 2 * 3);
    assert_eq!(batch.actions.len(), 8 * 3 * 2);
    assert!(batch.proprio.iter().chain(&batch.actions).all(|v| (-1.0..=1.0).contains(v)));
    // Window at t = 2 of the first episode (length 3): actions at steps [2, 2, 2] (padded),
    // whose raw dim-0 value is 0.4 with min 0.0 and max 0.8 → normalised 0.0.
    let w2 = &batch.actions[2 * 6..3 * 6];
    assert!(w2.iter().step_by(2).all(|v| v.abs() < 1e-6), "{w2:?}");
    // Window at t = 0: obs history [0, 0]: both frames equal frame 0.
    assert_eq!(batch.images[0][0..12], batch.images[0][12..24]);
}

#[test]
fn synthetic_default_dataset_reads_back() {
    let path = tmp("synthetic.hdf5");
    write_synthetic(&path, SyntheticSpec { demos: 11, image_size: 32, seed: 3 }).unwrap();
    let file = RobomimicFile::open(&path).unwrap();
    assert_eq!(file.mask("valid").unwrap(), ["demo_9"]);
    let ds = file.load(&square_spec(), &DemoSelection { mask: Some("train".into()), first_n: None }).unwrap();
    assert_eq!(ds.episodes.len(), 10);
    assert_eq!((ds.proprio_dim(), ds.action_dim, ds.image_shapes[0]), (9, 7, [32, 32, 3]));
    assert!(ds.episodes.iter().all(|e| e.len >= 10));
}

#[test]
fn missing_file() {
    let path = tmp("does_not_exist.hdf5");
    let err = RobomimicFile::open(&path).err().unwrap();
    assert!(matches!(err, DatasetError::MissingFile { .. }));
    assert_names(&err, &path, "no such file");
}

#[test]
fn not_hdf5() {
    let path = tmp("text.hdf5");
    std::fs::write(&path, "demo_0,demo_1\n").unwrap();
    let err = RobomimicFile::open(&path).err().unwrap();
    assert!(matches!(err, DatasetError::NotHdf5 { .. }));
    assert_names(&err, &path, "not an HDF5 file");
}

#[test]
fn missing_data_group() {
    let path = tmp("no_data.hdf5");
    hdf5::File::create(&path).unwrap().create_group("mask").unwrap();
    let err = RobomimicFile::open(&path).err().unwrap();
    assert_names(&err, &path, "missing `data`");
}

#[test]
fn missing_obs_key_and_missing_mask() {
    let path = write_records("missing_key.hdf5", &[3, 3]);
    let file = RobomimicFile::open(&path).unwrap();
    let spec = ObsSpec { image_keys: vec!["eye_in_hand_image".into()], lowdim_keys: vec![] };
    let err = file.load(&spec, &all()).unwrap_err();
    assert_names(&err, &path, "data/demo_0/obs/eye_in_hand_image");
    // Absent from every demo: said so, with the keys that are there, never "present in other demos".
    let text = err.to_string();
    assert!(text.contains("no demo of the 2 selected has obs key `eye_in_hand_image`"), "{text}");
    assert!(text.contains("pos") && !text.contains("other demos"), "{text}");
    let err = file.mask("test").unwrap_err();
    assert_names(&err, &path, "mask/test");
}

#[test]
fn key_absent_in_some_demos_only() {
    let path = tmp("partial_key.hdf5");
    let mut w = RobomimicWriter::create(&path, "{}").unwrap();
    w.write_demo(&record(3)).unwrap();
    let mut without = record(3);
    without.obs.retain(|(k, _)| k != "pos");
    w.write_demo(&without).unwrap();
    w.finish(&[]).unwrap();
    let err = RobomimicFile::open(&path).unwrap().load(&small_spec(), &all()).unwrap_err();
    assert_names(&err, &path, "data/demo_1/obs/pos");
    assert!(err.to_string().contains("(1 of the 2 selected demos have it)"), "{err}");
}

/// Writes `data/demo_0` with the given datasets (name, f64 array) by hand.
fn hand_made(name: &str, build: impl FnOnce(&hdf5::Group)) -> PathBuf {
    let path = tmp(name);
    let file = hdf5::File::create(&path).unwrap();
    let demo = file.create_group("data").unwrap().create_group("demo_0").unwrap();
    build(&demo);
    path
}

#[test]
fn wrong_dtype_of_images() {
    let path = hand_made("float_images.hdf5", |demo| {
        demo.new_dataset_builder().with_data(&ndarray::Array2::<f64>::zeros((3, 2))).create("actions").unwrap();
        let obs = demo.create_group("obs").unwrap();
        obs.new_dataset_builder().with_data(&ndarray::Array4::<f32>::zeros((3, 2, 2, 3))).create("cam_image").unwrap();
    });
    let spec = ObsSpec { image_keys: vec!["cam_image".into()], lowdim_keys: vec![] };
    let err = RobomimicFile::open(&path).unwrap().load(&spec, &all()).unwrap_err();
    assert!(matches!(err, DatasetError::WrongType { .. }), "{err}");
    assert_names(&err, &path, "data/demo_0/obs/cam_image");
    assert!(err.to_string().contains("u8"), "{err}");
}

#[test]
fn wrong_rank_of_actions() {
    let path = hand_made("rank3_actions.hdf5", |demo| {
        demo.new_dataset_builder().with_data(&ndarray::Array3::<f64>::zeros((3, 2, 2))).create("actions").unwrap();
    });
    let spec = ObsSpec { image_keys: vec![], lowdim_keys: vec![] };
    let err = RobomimicFile::open(&path).unwrap().load(&spec, &all()).unwrap_err();
    assert!(matches!(err, DatasetError::WrongType { .. }), "{err}");
    assert_names(&err, &path, "data/demo_0/actions");
}

#[test]
fn obs_and_actions_of_different_lengths() {
    let path = hand_made("mismatch.hdf5", |demo| {
        demo.new_dataset_builder().with_data(&ndarray::Array2::<f64>::zeros((4, 2))).create("actions").unwrap();
        let obs = demo.create_group("obs").unwrap();
        obs.new_dataset_builder().with_data(&ndarray::Array2::<f64>::zeros((3, 3))).create("pos").unwrap();
    });
    let spec = ObsSpec { image_keys: vec![], lowdim_keys: vec!["pos".into()] };
    let err = RobomimicFile::open(&path).unwrap().load(&spec, &all()).unwrap_err();
    assert!(matches!(err, DatasetError::LengthMismatch { found: 3, expected: 4, .. }), "{err}");
    assert_names(&err, &path, "data/demo_0/obs/pos");
}

#[test]
fn empty_demo() {
    let path = hand_made("empty_demo.hdf5", |demo| {
        demo.new_dataset_builder().with_data(&ndarray::Array2::<f64>::zeros((0, 7))).create("actions").unwrap();
    });
    let spec = ObsSpec { image_keys: vec![], lowdim_keys: vec![] };
    let err = RobomimicFile::open(&path).unwrap().load(&spec, &all()).unwrap_err();
    assert!(matches!(err, DatasetError::EmptyDemo { .. }), "{err}");
    assert_names(&err, &path, "demo_0");
}

#[test]
fn empty_mask() {
    let path = write_records("empty_mask.hdf5", &[3]);
    {
        let file = hdf5::File::open_rw(&path).unwrap();
        let empty: Vec<hdf5::types::FixedAscii<8>> = vec![];
        file.group("mask").unwrap().new_dataset_builder().with_data(&empty).create("empty").unwrap();
    }
    let err = RobomimicFile::open(&path)
        .unwrap()
        .load(&small_spec(), &DemoSelection { mask: Some("empty".into()), first_n: None })
        .unwrap_err();
    assert!(matches!(err, DatasetError::EmptySelection { .. }), "{err}");
    assert_names(&err, &path, "mask/empty");
}

#[test]
fn writer_rejects_inconsistent_records() {
    let path = tmp("bad_record.hdf5");
    let mut w = RobomimicWriter::create(&path, "{}").unwrap();
    let mut bad = record(3);
    bad.rewards.pop();
    let err = w.write_demo(&bad).unwrap_err();
    assert_names(&err, &path, "rewards");
}
