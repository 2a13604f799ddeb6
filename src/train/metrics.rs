//! `metrics.jsonl`: one JSON object per line, keys `<phase>/<name>` plus `step`.
//! On resume the lines after the checkpoint's step are dropped, so the log reads as one
//! uninterrupted run. Metric names come from the stats types' serde field names
//! ([`named`], [`field_means`]): `critic/td_loss` is `CriticStats::td_loss` under `critic`.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;
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

    /// The last finite value logged under `key` (a resumed run reports what its log holds).
    pub fn last(&self, key: &str) -> Option<f64> {
        let text = fs::read_to_string(&self.path).ok()?;
        text.lines()
            .rev()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .find_map(|v| v.get(key).and_then(Value::as_f64))
    }

    /// Appends `{"step": step, key: value, …}` (a non-finite value as null).
    pub fn log<K: AsRef<str>>(&mut self, step: i64, values: &[(K, f64)]) -> Result<()> {
        let mut object = Map::new();
        object.insert("step".into(), step.into());
        for (key, value) in values {
            let value = serde_json::Number::from_f64(*value).map_or(Value::Null, Value::Number);
            object.insert(key.as_ref().into(), value);
        }
        writeln!(self.file, "{}", Value::Object(object)).map_err(io_at(&self.path))
    }
}

/// Metric values: (`<phase>/<name>`, value).
pub type Metrics = Vec<(String, f64)>;

/// The numeric fields of `stats` as `prefix/field` (serde's field names; a non-finite number,
/// which serde writes as null, is NaN; other fields, and those serde skips, are left out).
pub fn named<T: Serialize>(prefix: &str, stats: &T) -> Metrics {
    let Ok(Value::Object(fields)) = serde_json::to_value(stats) else { return Vec::new() };
    fields
        .into_iter()
        .filter_map(|(name, value)| {
            let number = if value.is_null() { Some(f64::NAN) } else { value.as_f64() };
            Some((format!("{prefix}/{name}"), number?))
        })
        .collect()
}

/// The field-wise mean of `items` as `prefix/field` metrics (NaN when `items` is empty).
pub fn field_means<T: Serialize + Default>(prefix: &str, items: &[T]) -> Metrics {
    let rows: Vec<Metrics> = items.iter().map(|item| named(prefix, item)).collect();
    named(prefix, &T::default())
        .into_iter()
        .enumerate()
        .map(|(i, (name, _))| {
            let sum: f64 = rows.iter().map(|row| row[i].1).sum();
            (name, sum / items.len() as f64)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default, Serialize)]
    struct Stats {
        loss: f64,
        steps: usize,
        #[serde(skip)]
        _skipped: f64,
    }

    #[test]
    fn names_come_from_the_fields_and_means_from_the_rows() {
        let rows = [Stats { loss: 1.0, steps: 2, _skipped: 5.0 }, Stats { loss: 2.0, steps: 4, _skipped: 5.0 }];
        assert_eq!(named("critic", &rows[0]), vec![("critic/loss".into(), 1.0), ("critic/steps".into(), 2.0)]);
        assert_eq!(field_means("critic", &rows), vec![("critic/loss".into(), 1.5), ("critic/steps".into(), 3.0)]);
        assert!(field_means::<Stats>("critic", &[]).iter().all(|(_, v)| v.is_nan()));
    }
}
