//! Writing the Robomimic schema (see `lib.rs`), demo by demo.
//!
//! Written as robomimic writes it: `actions`, `rewards`, `states`, low-dim obs as f64,
//! `total` / `num_samples` as i64 (robomimic does index arithmetic with them: unsigned
//! attributes turn into floats under numpy 1.x promotion and break its SequenceDataset),
//! `dones` as i64, images as u8 [T, H, W, 3] (gzip level 4, chunked per frame), masks as
//! fixed-length byte strings. After every demo `data.attrs[total]` is updated and the file
//! flushed, so a writer that is interrupted leaves a readable file with the demos done so
//! far (masks are added by [`RobomimicWriter::finish`]).

use std::path::{Path, PathBuf};

use hdf5::types::{FixedAscii, VarLenUnicode};

use crate::error::{DatasetError, Result};

/// One observation array of a demo.
#[derive(Debug, Clone)]
pub enum ObsArray {
    /// [T, H, W, 3] u8, row-major.
    Image { data: Vec<u8>, height: usize, width: usize },
    /// [T, d] row-major.
    LowDim { data: Vec<f64>, dim: usize },
}

/// A demo to write. All arrays share T = `actions.len() / action_dim`.
#[derive(Debug, Clone, Default)]
pub struct DemoRecord {
    /// [T, A].
    pub actions: Vec<f64>,
    pub action_dim: usize,
    /// [T].
    pub rewards: Vec<f64>,
    /// [T].
    pub dones: Vec<i64>,
    /// [T, S] flattened simulator states, when known.
    pub states: Option<(Vec<f64>, usize)>,
    /// (key, array) pairs under `obs/`.
    pub obs: Vec<(String, ObsArray)>,
    /// (key, array) pairs under `next_obs/`, when recorded.
    pub next_obs: Vec<(String, ObsArray)>,
    /// The MJCF XML of the scene (robosuite demos).
    pub model_file: Option<String>,
}

impl DemoRecord {
    pub fn len(&self) -> usize {
        if self.action_dim == 0 {
            0
        } else {
            self.actions.len() / self.action_dim
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

pub struct RobomimicWriter {
    path: PathBuf,
    file: hdf5::File,
    data: hdf5::Group,
    demos: Vec<String>,
    total: i64,
}

/// Mask entries are written as this many bytes (robomimic writes `np.array(names, "S")`).
const MASK_STRING_LEN: usize = 32;

impl RobomimicWriter {
    /// Creates (truncates) `path` with an empty `data` group carrying `env_args`.
    pub fn create(path: impl AsRef<Path>, env_args: &str) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let err = |key: &str, source: hdf5::Error| DatasetError::Hdf5 { file: path.clone(), key: key.into(), source };
        let file = hdf5::File::create(&path).map_err(|e| err("/", e))?;
        let data = file.create_group("data").map_err(|e| err("data", e))?;
        let env_args: VarLenUnicode = env_args
            .parse()
            .map_err(|_| DatasetError::Invalid { file: path.clone(), message: "env_args holds a NUL byte".into() })?;
        data.new_attr::<VarLenUnicode>()
            .create("env_args")
            .and_then(|a| a.write_scalar(&env_args))
            .map_err(|e| err("data.attrs[env_args]", e))?;
        data.new_attr::<i64>()
            .create("total")
            .and_then(|a| a.write_scalar(&0i64))
            .map_err(|e| err("data.attrs[total]", e))?;
        Ok(Self { path, file, data, demos: Vec::new(), total: 0 })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes (or replaces) the string attribute `data.attrs[name]`, beside `env_args`.
    pub fn write_data_attr(&mut self, name: &str, value: &str) -> Result<()> {
        let key = format!("data.attrs[{name}]");
        let value: VarLenUnicode = value.parse().map_err(|_| DatasetError::Invalid {
            file: self.path.clone(),
            message: format!("{key} holds a NUL byte"),
        })?;
        if self.data.attr(name).is_ok() {
            self.data.delete_attr(name).map_err(|e| self.err(&key, e))?;
        }
        self.data
            .new_attr::<VarLenUnicode>()
            .create(name)
            .and_then(|a| a.write_scalar(&value))
            .map_err(|e| self.err(&key, e))
    }

    /// Names written so far (`demo_0`, `demo_1`, …).
    pub fn demo_names(&self) -> &[String] {
        &self.demos
    }

    fn err(&self, key: &str, source: hdf5::Error) -> DatasetError {
        DatasetError::Hdf5 { file: self.path.clone(), key: key.into(), source }
    }

    /// Appends `demo_<n>`; returns its name. The file is flushed afterwards.
    pub fn write_demo(&mut self, record: &DemoRecord) -> Result<String> {
        let len = record.len();
        let name = format!("demo_{}", self.demos.len());
        let invalid = |message: String| DatasetError::Invalid {
            file: self.path.clone(),
            message: format!("demo {name}: {message}"),
        };
        if len == 0 {
            return Err(invalid("no steps".into()));
        }
        if record.rewards.len() != len || record.dones.len() != len {
            return Err(invalid(format!(
                "rewards ({}) and dones ({}) must have {len} steps",
                record.rewards.len(),
                record.dones.len()
            )));
        }
        let group = self.data.create_group(&name).map_err(|e| self.err(&format!("data/{name}"), e))?;
        let key = |k: &str| format!("data/{name}/{k}");
        write_f64(&group, "actions", &record.actions, &[len, record.action_dim])
            .map_err(|e| self.err(&key("actions"), e))?;
        write_f64(&group, "rewards", &record.rewards, &[len]).map_err(|e| self.err(&key("rewards"), e))?;
        group.new_dataset_builder().with_data(&record.dones).create("dones").map_err(|e| self.err(&key("dones"), e))?;
        if let Some((states, dim)) = &record.states {
            write_f64(&group, "states", states, &[len, *dim]).map_err(|e| self.err(&key("states"), e))?;
        }
        for (sub, arrays) in [("obs", &record.obs), ("next_obs", &record.next_obs)] {
            if arrays.is_empty() {
                continue;
            }
            let obs_group = group.create_group(sub).map_err(|e| self.err(&key(sub), e))?;
            for (obs_key, array) in arrays {
                let path = key(&format!("{sub}/{obs_key}"));
                match array {
                    ObsArray::Image { data, height, width } => {
                        if data.len() != len * height * width * 3 {
                            return Err(invalid(format!(
                                "{sub}/{obs_key} has {} bytes, expected {len}×{height}×{width}×3",
                                data.len()
                            )));
                        }
                        let view = ndarray::ArrayView4::from_shape([len, *height, *width, 3], data)
                            .expect("size checked above");
                        obs_group
                            .new_dataset_builder()
                            .chunk([1, *height, *width, 3])
                            .deflate(4)
                            .with_data(&view)
                            .create(obs_key.as_str())
                            .map_err(|e| self.err(&path, e))?;
                    }
                    ObsArray::LowDim { data, dim } => {
                        if data.len() != len * dim {
                            return Err(invalid(format!(
                                "{sub}/{obs_key} has {} numbers, expected {len}×{dim}",
                                data.len()
                            )));
                        }
                        write_f64(&obs_group, obs_key, data, &[len, *dim]).map_err(|e| self.err(&path, e))?;
                    }
                }
            }
        }
        group
            .new_attr::<i64>()
            .create("num_samples")
            .and_then(|a| a.write_scalar(&(len as i64)))
            .map_err(|e| self.err(&key("attrs[num_samples]"), e))?;
        if let Some(xml) = &record.model_file {
            let xml: VarLenUnicode = xml.parse().map_err(|_| invalid("model_file holds a NUL byte".into()))?;
            group
                .new_attr::<VarLenUnicode>()
                .create("model_file")
                .and_then(|a| a.write_scalar(&xml))
                .map_err(|e| self.err(&key("attrs[model_file]"), e))?;
        }
        self.total += len as i64;
        self.data
            .attr("total")
            .and_then(|a| a.write_scalar(&self.total))
            .map_err(|e| self.err("data.attrs[total]", e))?;
        self.file.flush().map_err(|e| self.err("/", e))?;
        self.demos.push(name.clone());
        Ok(name)
    }

    /// Writes `mask/<name>` for each (name, demos) pair and closes the file.
    pub fn finish(mut self, masks: &[(&str, Vec<String>)]) -> Result<PathBuf> {
        self.write_masks(masks)?;
        Ok(self.path)
    }

    /// (Re)writes `mask/<name>` for each pair, replacing masks of the same name, and flushes:
    /// a collector calls this after every demo so the file is complete at every moment.
    pub fn write_masks(&mut self, masks: &[(&str, Vec<String>)]) -> Result<()> {
        let group = match self.file.group("mask") {
            Ok(group) => group,
            Err(_) => self.file.create_group("mask").map_err(|e| self.err("mask", e))?,
        };
        for (mask, names) in masks {
            let key = format!("mask/{mask}");
            let entries: Vec<FixedAscii<MASK_STRING_LEN>> = names
                .iter()
                .map(|n| FixedAscii::from_ascii(n.as_bytes()))
                .collect::<std::result::Result<_, _>>()
                .map_err(|_| DatasetError::Invalid {
                    file: self.path.clone(),
                    message: format!("{key}: demo names must be ASCII of ≤ {MASK_STRING_LEN} bytes"),
                })?;
            if group.link_exists(mask) {
                group.unlink(mask).map_err(|e| self.err(&key, e))?;
            }
            group.new_dataset_builder().with_data(&entries).create(*mask).map_err(|e| self.err(&key, e))?;
        }
        self.file.flush().map_err(|e| self.err("/", e))
    }
}

fn write_f64(group: &hdf5::Group, name: &str, data: &[f64], shape: &[usize]) -> hdf5::Result<()> {
    let array = ndarray::ArrayViewD::from_shape(shape, data).map_err(|e| hdf5::Error::from(e.to_string()))?;
    group.new_dataset_builder().with_data(&array).create(name).map(|_| ())
}

/// The conventional split: every `1/valid_every`-th demo (by position) to `valid`, the rest
/// to `train`; with fewer than 2 demos everything is `train` and `valid` is left out.
pub fn split_train_valid(names: &[String], valid_every: usize) -> Vec<(&'static str, Vec<String>)> {
    let (mut train, mut valid) = (Vec::new(), Vec::new());
    for (i, name) in names.iter().enumerate() {
        if names.len() >= 2 && valid_every > 0 && i % valid_every == valid_every - 1 {
            valid.push(name.clone());
        } else {
            train.push(name.clone());
        }
    }
    let mut masks = vec![("train", train)];
    if !valid.is_empty() {
        masks.push(("valid", valid));
    }
    masks
}
