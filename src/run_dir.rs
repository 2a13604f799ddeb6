//! The run directory (`runs/<name>/`) and its atomic writes.
//!
//! ```text
//! runs/<name>/config.json            resolved config (written once, atomically)
//! runs/<name>/metrics.jsonl          one JSON object per log event
//! runs/<name>/checkpoints/step_00001000/   a complete checkpoint (see train::pretrain)
//! runs/<name>/checkpoints/latest     name of the newest complete checkpoint
//! runs/<name>/.lock                  held (flock) by the one process writing the run
//! ```
//! A checkpoint is written into `checkpoints/.step_N.partial/`, every file synced, then the
//! directory is renamed into place and `latest` replaced by rename: a kill at any moment
//! leaves the previous checkpoint and `latest` intact; a failed write removes its partial
//! directory (or temporary file).
//!
//! One process at a time writes a run directory: [`open_run`] takes an exclusive `flock` on
//! `.lock` before it reads or writes anything else, and a second process is refused. The
//! kernel releases the lock when its process ends, however it ends, so the lock of a killed
//! run never blocks its `--resume`.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{io_at, Error, Result};

/// Writes `bytes` to `path` through a synced temporary file (named with the process id, so
/// two processes writing the same file never share one) and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let extension = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    let tmp = path.with_extension(format!("{extension}.{}.tmp", std::process::id()));
    let written = fs::File::create(&tmp)
        .and_then(|mut file| file.write_all(bytes).and_then(|_| file.sync_all()))
        .map_err(io_at(&tmp))
        .and_then(|_| fs::rename(&tmp, path).map_err(io_at(path)));
    if let Err(e) = written {
        // A full disk must not stay full of our temporary file.
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    sync_dir(path.parent().unwrap_or(Path::new(".")));
    Ok(())
}

fn sync_dir(dir: &Path) {
    // Best effort: directory fsync makes the rename durable on Linux filesystems.
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

pub fn checkpoints_dir(run_dir: &Path) -> PathBuf {
    run_dir.join("checkpoints")
}

/// The newest complete checkpoint of a run, from `checkpoints/latest`.
pub fn latest_checkpoint(run_dir: &Path) -> Result<Option<PathBuf>> {
    let pointer = checkpoints_dir(run_dir).join("latest");
    match fs::read_to_string(&pointer) {
        Ok(name) => {
            let dir = checkpoints_dir(run_dir).join(name.trim());
            if dir.is_dir() {
                Ok(Some(dir))
            } else {
                Err(Error::RunDir {
                    dir: run_dir.into(),
                    message: format!("`checkpoints/latest` names {}, which does not exist", dir.display()),
                })
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_at(pointer)(e)),
    }
}

/// The exclusive hold of one process on a run directory (see the module header). Dropped
/// (the run ends, by success or error), it unlocks and removes `.lock`, and removes the run
/// directory if this lock created it and nothing else was written there (a run that failed
/// before writing anything leaves no empty directory behind).
#[derive(Debug)]
pub struct RunLock {
    file: Option<fs::File>,
    path: PathBuf,
    dir: PathBuf,
    created_dir: bool,
}

pub const LOCK_FILE: &str = ".lock";

impl RunLock {
    /// Creates `run_dir` if needed and takes its lock, or says which process holds it.
    pub fn acquire(run_dir: &Path) -> Result<Self> {
        let created_dir = !run_dir.exists();
        fs::create_dir_all(run_dir).map_err(io_at(run_dir))?;
        let path = run_dir.join(LOCK_FILE);
        let mut file = loop {
            let file = fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(io_at(&path))?;
            match file.try_lock() {
                // The holder we raced with may have removed the file after we opened it (its
                // Drop): a lock on that orphan inode locks nothing. Retry on the new file.
                Ok(()) if same_file(&file, &path) => break file,
                Ok(()) => continue,
                Err(e) => return Err(lock_refused(run_dir, &path, e)),
            }
        };
        // Who holds it, for the message a second process prints (the flock is the lock).
        let _ = file.set_len(0).and_then(|_| write!(file, "pid {}", std::process::id())).and_then(|_| file.flush());
        Ok(Self { file: Some(file), path, dir: run_dir.into(), created_dir })
    }
}

/// Whether `file` is (still) the file at `path`.
fn same_file(file: &fs::File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// The error of a lock another process holds (naming it when it wrote its pid).
fn lock_refused(run_dir: &Path, path: &Path, error: fs::TryLockError) -> Error {
    match error {
        fs::TryLockError::WouldBlock => {
            let holder = fs::read_to_string(path).unwrap_or_default();
            let holder = if holder.trim().is_empty() { "pid unknown".to_owned() } else { holder.trim().to_owned() };
            Error::RunDir {
                dir: run_dir.into(),
                message: format!(
                    "in use by another process ({holder}); wait for it to end, or choose another --run-dir"
                ),
            }
        }
        fs::TryLockError::Error(e) => io_at(path)(e),
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        // Remove the file while still holding the lock, so no other process can have locked
        // this inode in between; then let the lock go.
        let _ = fs::remove_file(&self.path);
        drop(self.file.take());
        if self.created_dir {
            let _ = fs::remove_dir(&self.dir); // only succeeds when empty: a run that wrote nothing
        }
    }
}

/// A run directory opened by [`open_run`]: its config, the checkpoint to resume from, and
/// the lock to hold while the run writes.
pub struct OpenedRun<C> {
    pub config: C,
    pub latest: Option<PathBuf>,
    pub lock: RunLock,
}

/// Opens a run directory for a new run or a resumed one, under its [`RunLock`]. A new run
/// refuses a directory that already holds a checkpoint; `--resume` needs one and continues
/// the run's own `config.json` (a config given must equal it).
pub fn open_run<C: PartialEq>(
    run_dir: &Path,
    resume: bool,
    given: Option<C>,
    load: impl Fn(&Path) -> Result<C>,
) -> Result<OpenedRun<C>> {
    let lock = RunLock::acquire(run_dir)?;
    let (config, latest) = open_locked(run_dir, resume, given, load)?;
    Ok(OpenedRun { config, latest, lock })
}

fn open_locked<C: PartialEq>(
    run_dir: &Path,
    resume: bool,
    given: Option<C>,
    load: impl Fn(&Path) -> Result<C>,
) -> Result<(C, Option<PathBuf>)> {
    let run_error = |message: &str| Error::RunDir { dir: run_dir.into(), message: message.into() };
    let latest = latest_checkpoint(run_dir)?;
    match (resume, latest) {
        (false, Some(found)) => Err(Error::RunDir {
            dir: run_dir.into(),
            message: format!(
                "already holds checkpoint {}; pass --resume to continue it, or choose another --run-dir",
                found.display()
            ),
        }),
        (true, None) => Err(run_error("nothing to resume: no complete checkpoint (checkpoints/latest)")),
        (true, Some(found)) => {
            let saved = load(&run_dir.join("config.json"))?;
            if given.is_some_and(|given| given != saved) {
                return Err(run_error("--resume continues the run's own config.json; the config given differs (omit --config, or start a new --run-dir)"));
            }
            Ok((saved, Some(found)))
        }
        (false, None) => Ok((given.ok_or_else(|| run_error("no config given"))?, None)),
    }
}

/// The directory name of the checkpoint after `step` steps (zero-padded: names sort by step).
pub fn step_name(step: i64) -> String {
    format!("step_{step:08}")
}

/// A checkpoint being written; [`commit`](Self::commit) makes it visible.
/// Dropped without [`commit`](Self::commit) (an error while writing), it removes its partial
/// directory.
pub struct PendingCheckpoint {
    partial: PathBuf,
    final_dir: PathBuf,
    committed: bool,
}

impl Drop for PendingCheckpoint {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_dir_all(&self.partial);
        }
    }
}

impl PendingCheckpoint {
    /// Starts `checkpoints/step_<step>` (zero-padded so names sort by step).
    pub fn begin(run_dir: &Path, step: i64) -> Result<Self> {
        let root = checkpoints_dir(run_dir);
        let name = step_name(step);
        let partial = root.join(format!(".{name}.partial"));
        // Partial directories a killed process left (any step): the run holds the lock, so
        // nobody else is writing them, and on a full disk they are what keeps it full.
        for entry in fs::read_dir(&root).into_iter().flatten().flatten() {
            let stale = entry.path();
            if stale
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(".step_") && n.ends_with(".partial"))
            {
                fs::remove_dir_all(&stale).map_err(io_at(&stale))?;
            }
        }
        fs::create_dir_all(&partial).map_err(io_at(&partial))?;
        Ok(Self { partial, final_dir: root.join(name), committed: false })
    }

    /// Where the files go until commit.
    pub fn path(&self, file: &str) -> PathBuf {
        self.partial.join(file)
    }

    /// Syncs every file, renames the directory into place, points `latest` at it, and keeps
    /// only the newest `keep` checkpoints. Returns the final directory.
    pub fn commit(mut self, keep: usize) -> Result<PathBuf> {
        for entry in fs::read_dir(&self.partial).map_err(io_at(&self.partial))? {
            let path = entry.map_err(io_at(&self.partial))?.path();
            fs::File::open(&path).and_then(|f| f.sync_all()).map_err(io_at(&path))?;
        }
        sync_dir(&self.partial);
        if self.final_dir.exists() {
            fs::remove_dir_all(&self.final_dir).map_err(io_at(&self.final_dir))?;
        }
        fs::rename(&self.partial, &self.final_dir).map_err(io_at(&self.final_dir))?;
        self.committed = true;
        let root = self.final_dir.parent().expect("checkpoint has a parent").to_path_buf();
        let name = self.final_dir.file_name().and_then(|n| n.to_str()).expect("ASCII name");
        write_atomic(&root.join("latest"), name.as_bytes())?;
        let run_dir = root.parent().expect("checkpoints/ has a parent");
        prune_checkpoints(run_dir, keep)?;
        Ok(self.final_dir.clone())
    }
}

/// Keeps the newest `keep` (≥ 1) checkpoints, never the one `latest` names. Called after
/// every commit, and when a run resumes (a kill between a commit and its pruning leaves one
/// too many).
pub fn prune_checkpoints(run_dir: &Path, keep: usize) -> Result<()> {
    let root = checkpoints_dir(run_dir);
    let latest = latest_checkpoint(run_dir)?;
    let mut steps: Vec<PathBuf> = fs::read_dir(&root)
        .map_err(io_at(&root))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir() && p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("step_")))
        .collect();
    steps.sort();
    for old in steps.iter().take(steps.len().saturating_sub(keep.max(1))) {
        if Some(old) != latest.as_ref() {
            fs::remove_dir_all(old).map_err(io_at(old))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_publishes_and_prunes() {
        let run = std::env::temp_dir().join(format!("rldt_run_dir_{}", std::process::id()));
        let _ = fs::remove_dir_all(&run);
        assert_eq!(latest_checkpoint(&run).unwrap(), None);
        for step in [10, 20, 30] {
            let pending = PendingCheckpoint::begin(&run, step).unwrap();
            fs::write(pending.path("a.txt"), step.to_string()).unwrap();
            // Before commit nothing is visible.
            let before = latest_checkpoint(&run).unwrap();
            assert_ne!(before.as_deref(), Some(run.join("checkpoints/step_{step:08}").as_path()));
            pending.commit(2).unwrap();
        }
        let latest = latest_checkpoint(&run).unwrap().unwrap();
        assert!(latest.ends_with("step_00000030"));
        assert_eq!(fs::read_to_string(latest.join("a.txt")).unwrap(), "30");
        assert!(!run.join("checkpoints/step_00000010").exists(), "oldest pruned");
        assert!(run.join("checkpoints/step_00000020").exists());
        // A kill between commit and pruning left one too many: the resume prunes it.
        fs::create_dir_all(run.join("checkpoints/step_00000005")).unwrap();
        prune_checkpoints(&run, 2).unwrap();
        assert!(!run.join("checkpoints/step_00000005").exists());
        assert!(run.join("checkpoints/step_00000020").exists() && run.join("checkpoints/step_00000030").exists());
        fs::remove_dir_all(&run).unwrap();
    }

    #[test]
    fn a_failed_write_leaves_nothing_behind() {
        let run = std::env::temp_dir().join(format!("rldt_run_dir_failed_{}", std::process::id()));
        let _ = fs::remove_dir_all(&run);
        {
            let _lock = RunLock::acquire(&run).unwrap();
            let pending = PendingCheckpoint::begin(&run, 5).unwrap();
            fs::write(pending.path("a.txt"), "half").unwrap();
            assert!(run.join("checkpoints/.step_00000005.partial").is_dir());
            drop(pending); // an error before commit
            assert!(!run.join("checkpoints/.step_00000005.partial").exists());
            fs::create_dir_all(run.join("checkpoints/.step_00000003.partial")).unwrap(); // a killed run's
            let pending = PendingCheckpoint::begin(&run, 5).unwrap();
            assert!(!run.join("checkpoints/.step_00000003.partial").exists(), "stale partials are removed");
            drop(pending);
            assert!(!run.join("checkpoints/.step_00000005.partial").exists());
            fs::remove_dir(run.join("checkpoints")).unwrap();
            // A temporary file whose rename fails (the target is a non-empty directory) is removed.
            fs::create_dir_all(run.join("config.json/x")).unwrap();
            assert!(write_atomic(&run.join("config.json"), b"{}").is_err());
            assert!(!run.join(format!("config.json.{}.tmp", std::process::id())).exists());
            fs::remove_dir_all(run.join("config.json")).unwrap();
        }
        assert!(!run.exists(), "a run directory the lock created and nothing was written to is removed");
    }
}
