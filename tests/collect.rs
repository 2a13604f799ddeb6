//! Tier 2: `rldt-vision collect` as a user runs it. An interrupted collect (SIGINT, as Ctrl-C)
//! leaves a valid Robomimic file holding the demos done so far, masks included, and exits 130;
//! an existing output is refused without `--force` and left untouched.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rldt_datasets::reader::{DemoSelection, ObsSpec, RobomimicFile};

#[test]
fn an_interrupted_collect_leaves_a_valid_file() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("collect");
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("interrupted_lift.hdf5");
    let _ = std::fs::remove_file(&out);
    let mut child = Command::new(env!("CARGO_BIN_EXE_rldt-vision"))
        .args(["collect", "--task", "lift", "--episodes", "200", "--workers", "2", "--out"])
        .arg(&out)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for some demos (the file grows with each), then interrupt like Ctrl-C.
    let started = Instant::now();
    while std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0) < 600_000 {
        assert!(started.elapsed() < Duration::from_secs(120), "collect wrote nothing in 2 minutes");
        assert!(child.try_wait().unwrap().is_none(), "collect ended early");
        std::thread::sleep(Duration::from_millis(200));
    }
    let status = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(130), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("interrupted"), "{stdout}");

    let file = RobomimicFile::open(&out).unwrap();
    let demos = file.demo_names().len();
    assert!((1..200).contains(&demos), "{demos} demos");
    let train = file.mask("train").unwrap();
    let valid = if demos >= 10 { file.mask("valid").unwrap() } else { Vec::new() };
    assert_eq!(train.len() + valid.len(), demos, "masks cover every demo");
    let spec = ObsSpec {
        image_keys: vec!["agentview_image".into()],
        lowdim_keys: vec!["robot0_eef_pos".into(), "object".into()],
    };
    let data = file.load(&spec, &DemoSelection { mask: None, first_n: None }).unwrap();
    assert!(data.episodes.iter().all(|e| e.len > 10 && e.images[0].len() == e.len * 84 * 84 * 3));
    assert!(file.env_args().unwrap().contains("\"Lift\""));
}

#[test]
fn collect_refuses_an_existing_output_without_force() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("collect");
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("existing.hdf5");
    let before = b"three demos a user collected yesterday".to_vec();
    std::fs::write(&out, &before).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_rldt-vision"))
        .args(["collect", "--task", "lift", "--episodes", "1", "--cameras", "", "--out"])
        .arg(&out)
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains("already exists") && stderr.contains("--force"), "{stderr}");
    assert!(stderr.contains(&*out.to_string_lossy()), "the error names the file: {stderr}");
    assert_eq!(std::fs::read(&out).unwrap(), before, "the existing file is untouched");
    // Printed once, without a backtrace of stripped frames.
    assert_eq!(stderr.matches("already exists").count(), 1, "{stderr}");
    assert!(!stderr.contains("acktrace") && !stderr.contains("<unknown>"), "{stderr}");

    // An I/O error names its path and prints its cause once.
    let output = Command::new(env!("CARGO_BIN_EXE_rldt-vision"))
        .args(["collect", "--task", "lift", "--episodes", "1", "--cameras", "", "--out", "/proc/no/such/dir/x.hdf5"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success() && stderr.contains("/proc/no"), "{stderr}");
    assert_eq!(stderr.matches("No such file or directory").count(), 1, "{stderr}");
}
