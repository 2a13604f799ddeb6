//! `metrics.jsonl`: one JSON object per line, keys `<phase>/<name>` plus `step`.
//! On resume the lines after the checkpoint's step are dropped, so the log reads as one
//! uninterrupted run.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::error::{io_at, Result};
use crate::run_dir::write_atomic;

pub struct MetricsLog {
    path: PathBuf,
    file: fs::File,
}

impl MetricsLog {
    /// Opens `run_dir/metrics.jsonl` for appending, first dropping lines whose `step` is
    /// greater than `keep_until_step` (the resumed checkpoint's step).
    pub fn open(run_dir: &Path, keep_until_step: Option<i64>) -> Result<Self> {
        let path = run_dir.join("metrics.jsonl");
        match keep_until_step {
            Some(step) if path.exists() => {
                let text = fs::read_to_string(&path).map_err(io_at(&path))?;
                let kept: String = text
                    .lines()
                    .filter(|line| {
                        let s = serde_json::from_str::<Value>(line)
                            .ok()
                            .and_then(|v| v.get("step").and_then(Value::as_i64));
                        s.is_some_and(|s| s <= step)
                    })
                    .map(|line| format!("{line}\n"))
                    .collect();
                write_atomic(&path, kept.as_bytes())?;
            }
            None => {
                let _ = fs::remove_file(&path);
            }
            Some(_) => {}
        }
        let file = fs::OpenOptions::new().create(true).append(true).open(&path).map_err(io_at(&path))?;
        Ok(Self { path, file })
    }

    /// Appends `{"step": step, key: value, …}`.
    pub fn log(&mut self, step: i64, values: &[(&str, f64)]) -> Result<()> {
        let mut object = Map::new();
        object.insert("step".into(), step.into());
        for (key, value) in values {
            object.insert((*key).into(), serde_json::Number::from_f64(*value).map_or(Value::Null, Value::Number));
        }
        writeln!(self.file, "{}", Value::Object(object)).map_err(io_at(&self.path))
    }
}
