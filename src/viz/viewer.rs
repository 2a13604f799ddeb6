//! Finding and starting the rerun viewer for `rldt-vision inspect`. The viewer must be the
//! version the recordings were written with (rerun-sdk==0.36.3 in the venv); another version
//! may not read them, so it is refused with a message naming both.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The rerun crate version our recordings are written with.
pub const RERUN_VERSION: &str = "0.36.3";

#[derive(Debug, thiserror::Error)]
pub enum ViewerError {
    #[error("no rerun viewer found (looked at $RERUN_VIEWER, .venv/bin/rerun and PATH); scripts/setup installs rerun-sdk=={RERUN_VERSION} into .venv")]
    Missing,
    #[error("{path}: rerun viewer version {found}, but recordings are written with {RERUN_VERSION}; install rerun-sdk=={RERUN_VERSION} (scripts/setup does)")]
    WrongVersion { path: PathBuf, found: String },
    #[error("{path}: {message}")]
    Failed { path: PathBuf, message: String },
    #[error("{path}: no recording (expected particles.rrd or particles.resume-*.rrd)")]
    NoRecording { path: PathBuf },
}

/// The viewer executable: `$RERUN_VIEWER`, else `.venv/bin/rerun` (from the working
/// directory), else `rerun` on PATH.
pub fn find_viewer() -> Result<PathBuf, ViewerError> {
    if let Some(path) = std::env::var_os("RERUN_VIEWER") {
        return Ok(PathBuf::from(path));
    }
    let venv = PathBuf::from(".venv/bin/rerun");
    if venv.is_file() {
        return Ok(venv);
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join("rerun"))
        .find(|p| p.is_file())
        .ok_or(ViewerError::Missing)
}

/// A command for the viewer with analytics off (this machine has no outside network).
pub fn viewer_command(viewer: &Path) -> Command {
    let mut command = Command::new(viewer);
    command.env("RERUN_ANALYTICS", "0");
    command
}

/// Checks `rerun --version` ("rerun-cli 0.36.3 …").
pub fn check_version(viewer: &Path) -> Result<(), ViewerError> {
    let output = viewer_command(viewer)
        .arg("--version")
        .output()
        .map_err(|e| ViewerError::Failed { path: viewer.into(), message: format!("cannot run it: {e}") })?;
    let text = String::from_utf8_lossy(&output.stdout);
    let found = text.split_whitespace().nth(1).unwrap_or("").to_owned();
    if !output.status.success() || found != RERUN_VERSION {
        return Err(ViewerError::WrongVersion {
            path: viewer.into(),
            found: if found.is_empty() { format!("unknown (`--version` printed {:?})", text.trim()) } else { found },
        });
    }
    Ok(())
}

/// The recording files of `path` (at least one) and a viewer of the right version.
fn files_and_viewer(path: &Path) -> Result<(Vec<PathBuf>, PathBuf), ViewerError> {
    let files =
        super::recording_files(path).map_err(|e| ViewerError::Failed { path: path.into(), message: e.to_string() })?;
    if files.is_empty() {
        return Err(ViewerError::NoRecording { path: path.into() });
    }
    let viewer = find_viewer()?;
    check_version(&viewer)?;
    Ok((files, viewer))
}

/// Opens the recordings of `path` (a run directory or an .rrd file): the native viewer, or
/// with `web` the web viewer on 127.0.0.1 (URL printed). Blocks until the viewer exits.
pub fn inspect(path: &Path, web: bool, web_port: u16) -> Result<(), ViewerError> {
    let (files, viewer) = files_and_viewer(path)?;
    let mut command = viewer_command(&viewer);
    if web {
        command.args(["--serve-web", "--bind", "127.0.0.1", "--web-viewer-port", &web_port.to_string()]);
        println!(
            "web viewer: http://127.0.0.1:{web_port} (serving {} recording file(s); Ctrl-C stops it)",
            files.len()
        );
    }
    command.args(&files);
    let status = command.status().map_err(|e| ViewerError::Failed { path: viewer.clone(), message: e.to_string() })?;
    if !status.success() {
        return Err(ViewerError::Failed { path: viewer, message: format!("viewer exited with {status}") });
    }
    Ok(())
}

/// `rerun rrd <subcommand> FILE`: its stdout, or an error naming the file and the stderr.
fn rrd(viewer: &Path, subcommand: &str, file: &Path) -> Result<Vec<u8>, ViewerError> {
    let output = viewer_command(viewer)
        .args(["rrd", subcommand])
        .arg(file)
        .output()
        .map_err(|e| ViewerError::Failed { path: viewer.into(), message: e.to_string() })?;
    if !output.status.success() {
        return Err(ViewerError::Failed {
            path: file.into(),
            message: format!("`rerun rrd {subcommand}` failed: {}", String::from_utf8_lossy(&output.stderr).trim()),
        });
    }
    Ok(output.stdout)
}

/// `rerun rrd verify FILE`: Ok when the file is a complete, readable recording.
/// A zero-byte file is refused first: rerun's verifier accepts it as a recording of nothing.
pub fn verify(viewer: &Path, file: &Path) -> Result<(), ViewerError> {
    let bytes =
        std::fs::metadata(file).map_err(|e| ViewerError::Failed { path: file.into(), message: e.to_string() })?.len();
    if bytes == 0 {
        return Err(ViewerError::Failed {
            path: file.into(),
            message: "empty file (0 bytes): not a recording (was the run killed before its first flush?)".into(),
        });
    }
    rrd(viewer, "verify", file).map(|_| ())
}

/// The entity paths of a recording (from `rerun rrd stats`), sorted.
pub fn entity_paths(viewer: &Path, file: &Path) -> Result<Vec<String>, ViewerError> {
    let output = rrd(viewer, "stats", file)?;
    // Lines "/entity/path: <chunks>" of the "Num chunks per entity" section.
    let mut paths: Vec<String> = String::from_utf8_lossy(&output)
        .lines()
        .filter(|l| l.starts_with('/'))
        .filter_map(|l| l.rsplit_once(": ").map(|(p, _)| p.to_owned()))
        .collect();
    paths.sort();
    paths.dedup();
    Ok(paths)
}

/// `inspect --check`: verifies every recording file of `path` and prints its entity paths;
/// an empty file or a recording without entities is an error.
pub fn check(path: &Path) -> Result<(), ViewerError> {
    let (files, viewer) = files_and_viewer(path)?;
    for file in files {
        verify(&viewer, &file)?;
        let paths = entity_paths(&viewer, &file)?;
        if paths.is_empty() {
            return Err(ViewerError::Failed {
                path: file,
                message: "a valid file that holds no entity paths: nothing was recorded".into(),
            });
        }
        println!("{}: verified, {} entity paths", file.display(), paths.len());
        for p in paths {
            println!("  {p}");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn fake_viewer(dir: &Path, version_line: &str) -> PathBuf {
        std::fs::create_dir_all(dir).unwrap();
        let path = dir.join("rerun");
        std::fs::write(&path, format!("#!/bin/sh\necho '{version_line}'\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    #[test]
    fn a_viewer_of_another_version_is_refused_with_both_versions_named() {
        let dir = std::env::temp_dir().join(format!("rldt-viewer-test-{}", std::process::id()));
        let old = fake_viewer(&dir.join("old"), "rerun-cli 0.30.1 (native_viewer) [rustc 1.90]");
        let message = check_version(&old).unwrap_err().to_string();
        assert!(message.contains("0.30.1") && message.contains(RERUN_VERSION), "{message}");
        let right = fake_viewer(&dir.join("right"), &format!("rerun-cli {RERUN_VERSION} (native_viewer)"));
        check_version(&right).unwrap();
        let missing = check_version(&dir.join("absent")).unwrap_err().to_string();
        assert!(missing.contains("cannot run it"), "{missing}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn recording_files_list_the_run_file_then_resumes_by_iteration() {
        let dir = std::env::temp_dir().join(format!("rldt-recording-files-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for name in ["particles.resume-10.rrd", "particles.rrd", "particles.resume-2.rrd", "metrics.jsonl"] {
            std::fs::write(dir.join(name), b"").unwrap();
        }
        let names: Vec<String> = crate::viz::recording_files(&dir)
            .unwrap()
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["particles.rrd", "particles.resume-2.rrd", "particles.resume-10.rrd"]);
        let message = inspect(&dir.join("nothing-here"), false, 9090).unwrap_err().to_string();
        assert!(message.contains("nothing-here"), "{message}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
