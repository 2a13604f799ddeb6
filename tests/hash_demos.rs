//! Tier 2 (venv with h5py): `scripts/hash_demos.py`, the content hashes that tell whether two
//! demo collections agree (the `data` section of
//! `docs/evidence/square_state_pretrained/provenance.json`). On 12 synthetic demos: the same
//! seed written twice hashes the same; a change of one action value changes the actions hash
//! and leaves the observations hash; `--compare` passes on the file it was recorded from and
//! exits 1 on the changed one, naming the hash that differs. Seconds.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use rldt_datasets::synthetic::{write_synthetic, SyntheticSpec};
use serde_json::Value;

fn python() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python")
}

fn hash_demos(file: &Path, compare: Option<&Path>) -> Output {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/hash_demos.py");
    let mut command = Command::new(python());
    command.arg(script).arg(file);
    if let Some(provenance) = compare {
        command.arg("--compare").arg(provenance);
    }
    command.output().unwrap()
}

/// The JSON object the script prints first (the hashes), before any comparison lines.
fn hashes(output: &Output) -> Value {
    let text = String::from_utf8_lossy(&output.stdout);
    let end = text.find("\n}").expect("no JSON object in the output") + 2;
    serde_json::from_str(&text[..end]).unwrap()
}

#[test]
fn hashes_tell_same_collections_from_changed_ones() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("hash_demos");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let spec = SyntheticSpec { demos: 12, image_size: 8, seed: 1 };
    let (first, again, changed) = (dir.join("first.hdf5"), dir.join("again.hdf5"), dir.join("changed.hdf5"));
    write_synthetic(&first, spec).unwrap();
    write_synthetic(&again, spec).unwrap();
    write_synthetic(&changed, spec).unwrap();
    // One action value (demo_10, first step, first dimension) moves by 1e-9.
    let edit = Command::new(python())
        .args([
            "-c",
            "import h5py, sys\nwith h5py.File(sys.argv[1], 'r+') as f:\n    f['data/demo_10/actions'][0, 0] += 1e-9",
        ])
        .arg(&changed)
        .output()
        .unwrap();
    assert!(edit.status.success(), "{}", String::from_utf8_lossy(&edit.stderr));

    let first_output = hash_demos(&first, None);
    assert!(first_output.status.success(), "{}", String::from_utf8_lossy(&first_output.stderr));
    let first_hashes = hashes(&first_output);
    assert_eq!(first_hashes["demos"], 12);
    assert_eq!(first_hashes["actions_sha256"].as_str().unwrap().len(), 64);
    assert_eq!(hashes(&hash_demos(&again, None)), first_hashes, "the same seed written twice");
    let changed_hashes = hashes(&hash_demos(&changed, None));
    assert_ne!(changed_hashes["actions_sha256"], first_hashes["actions_sha256"]);
    assert_eq!(changed_hashes["obs_sha256"], first_hashes["obs_sha256"]);

    let provenance = dir.join("provenance.json");
    std::fs::write(&provenance, serde_json::json!({ "data": first_hashes }).to_string()).unwrap();
    let same = hash_demos(&again, Some(&provenance));
    assert!(same.status.success(), "{}", String::from_utf8_lossy(&same.stdout));
    let differs = hash_demos(&changed, Some(&provenance));
    assert_eq!(differs.status.code(), Some(1));
    let text = String::from_utf8_lossy(&differs.stdout);
    assert!(text.contains("differs: actions_sha256") && !text.contains("differs: obs_sha256"), "{text}");
}
