//! Reading Robomimic HDF5 files (the schema in `lib.rs`) into memory.
//!
//! Images are read straight from HDF5 into one `Vec<u8>` per (demo, camera), [T, H, W, C]:
//! one copy, the only one; batches are gathered from these buffers. Memory for a dataset is
//! therefore ≈ the file's uncompressed image bytes + 4 bytes per low-dim number
//! ([`RobomimicDataset::memory_bytes`]); e.g. Square-ph image (200 demos, ~150 steps,
//! `agentview` 84×84×3) ≈ 0.64 GB.
//!
//! Every malformed input becomes a [`DatasetError`] naming the file and key path.

use std::path::{Path, PathBuf};

use hdf5::types::{TypeDescriptor, VarLenAscii, VarLenUnicode};
use serde::{Deserialize, Serialize};

use crate::error::{DatasetError, Result};

/// Which observation keys to load: cameras (`<camera>_image`, u8 [T, H, W, 3]) and
/// low-dim keys (float [T, d]), concatenated in this order into the proprio vector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObsSpec {
    pub image_keys: Vec<String>,
    pub lowdim_keys: Vec<String>,
}

/// Which demos to load: those named by `mask/<mask>` (or all under `data` when `None`),
/// in numeric order, then only the first `first_n` of them when given.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DemoSelection {
    pub mask: Option<String>,
    pub first_n: Option<usize>,
}

/// One demonstration in memory.
#[derive(Debug, Clone)]
pub struct Episode {
    pub demo: String,
    pub len: usize,
    /// One buffer per image key, [T, H, W, C] u8 row-major.
    pub images: Vec<Vec<u8>>,
    /// [T, P] f32: the low-dim keys concatenated in `ObsSpec` order.
    pub lowdim: Vec<f32>,
    /// [T, A] f32.
    pub actions: Vec<f32>,
}

/// Demos loaded with one `ObsSpec`; all share image shapes and dimensions.
#[derive(Debug, Clone)]
pub struct RobomimicDataset {
    pub file: PathBuf,
    pub spec: ObsSpec,
    /// [H, W, C] per image key.
    pub image_shapes: Vec<[usize; 3]>,
    /// d per low-dim key.
    pub lowdim_dims: Vec<usize>,
    pub action_dim: usize,
    pub episodes: Vec<Episode>,
}

impl RobomimicDataset {
    /// P: total low-dim (proprio) length.
    pub fn proprio_dim(&self) -> usize {
        self.lowdim_dims.iter().sum()
    }

    /// Total number of steps over all episodes.
    pub fn num_steps(&self) -> usize {
        self.episodes.iter().map(|e| e.len).sum()
    }

    /// Bytes held by the loaded arrays.
    pub fn memory_bytes(&self) -> usize {
        self.episodes
            .iter()
            .map(|e| e.images.iter().map(Vec::len).sum::<usize>() + 4 * (e.lowdim.len() + e.actions.len()))
            .sum()
    }
}

/// Shapes of one episode's arrays, checked to agree across demos.
#[derive(Debug, Clone, PartialEq)]
pub struct EpisodeLayout {
    /// [H, W, C] per image key.
    pub image_shapes: Vec<[usize; 3]>,
    /// d per low-dim key.
    pub lowdim_dims: Vec<usize>,
    pub action_dim: usize,
}

/// An open Robomimic file with its demo names in numeric order.
pub struct RobomimicFile {
    path: PathBuf,
    file: hdf5::File,
    demos: Vec<String>,
}

/// The 8-byte signature every HDF5 file carries (at offset 0 for files we meet).
const HDF5_SIGNATURE: &[u8; 8] = b"\x89HDF\r\n\x1a\n";

/// `demo_12` → (0, 12, ""), anything else → (1, 0, name): numeric order first, then the rest.
fn demo_sort_key(name: &str) -> (u8, u64, String) {
    match name.strip_prefix("demo_").and_then(|n| n.parse::<u64>().ok()) {
        Some(n) => (0, n, String::new()),
        None => (1, 0, name.to_owned()),
    }
}

impl RobomimicFile {
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let mut signature = [0u8; 8];
        match std::fs::File::open(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(DatasetError::MissingFile { file: path }),
            Err(e) => return Err(DatasetError::NotHdf5 { file: path, detail: e.to_string() }),
            Ok(mut f) => {
                use std::io::Read;
                if f.read_exact(&mut signature).is_err() || &signature != HDF5_SIGNATURE {
                    return Err(DatasetError::NotHdf5 { file: path, detail: "no HDF5 signature at offset 0".into() });
                }
            }
        }
        let file =
            hdf5::File::open(&path).map_err(|e| DatasetError::NotHdf5 { file: path.clone(), detail: e.to_string() })?;
        let mut this = Self { path, file, demos: Vec::new() };
        let data = this.group("data", "")?;
        let mut demos = data.member_names().map_err(|e| this.hdf5("data", e))?;
        demos.sort_by_key(|d| demo_sort_key(d));
        this.demos = demos;
        Ok(this)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Demo names under `data`, numerically ordered (`demo_2` before `demo_10`).
    pub fn demo_names(&self) -> &[String] {
        &self.demos
    }

    fn hdf5(&self, key: &str, source: hdf5::Error) -> DatasetError {
        DatasetError::Hdf5 { file: self.path.clone(), key: key.to_owned(), source }
    }

    fn missing(&self, key: &str, context: &str) -> DatasetError {
        DatasetError::MissingKey { file: self.path.clone(), key: key.to_owned(), context: context.to_owned() }
    }

    fn group(&self, key: &str, context: &str) -> Result<hdf5::Group> {
        if !self.file.link_exists(key) {
            return Err(self.missing(key, context));
        }
        self.file.group(key).map_err(|_| DatasetError::WrongType {
            file: self.path.clone(),
            key: key.into(),
            expected: "a group".into(),
            found: "a dataset".into(),
        })
    }

    fn dataset(&self, key: &str, context: &str) -> Result<hdf5::Dataset> {
        if !self.file.link_exists(key) {
            return Err(self.missing(key, context));
        }
        self.file.dataset(key).map_err(|_| DatasetError::WrongType {
            file: self.path.clone(),
            key: key.into(),
            expected: "a dataset".into(),
            found: "a group".into(),
        })
    }

    fn descriptor(&self, key: &str, ds: &hdf5::Dataset) -> Result<TypeDescriptor> {
        ds.dtype().and_then(|t| t.to_descriptor()).map_err(|e| self.hdf5(key, e))
    }

    fn wrong(&self, key: &str, expected: impl Into<String>, found: impl Into<String>) -> DatasetError {
        DatasetError::WrongType {
            file: self.path.clone(),
            key: key.into(),
            expected: expected.into(),
            found: found.into(),
        }
    }

    /// The `data` attribute `env_args` (JSON text that rebuilds the environment).
    pub fn env_args(&self) -> Result<String> {
        let data = self.group("data", "")?;
        let attr = data.attr("env_args").map_err(|_| self.missing("data.attrs[env_args]", ""))?;
        attr.read_scalar::<VarLenUnicode>()
            .map(|s| s.as_str().to_owned())
            .or_else(|_| attr.read_scalar::<VarLenAscii>().map(|s| s.as_str().to_owned()))
            .map_err(|e| self.hdf5("data.attrs[env_args]", e))
    }

    /// Demo names listed in `mask/<name>`, in file order; each must exist under `data`.
    pub fn mask(&self, name: &str) -> Result<Vec<String>> {
        let key = format!("mask/{name}");
        let ds = self.dataset(&key, " (available masks are listed under `mask`)")?;
        let names = read_strings(&ds, &self.descriptor(&key, &ds)?)
            .map_err(|found| self.wrong(&key, "an array of strings", found))?;
        if names.is_empty() {
            return Err(DatasetError::EmptySelection { file: self.path.clone(), key });
        }
        if let Some(unknown) = names.iter().find(|n| !self.demos.contains(n)) {
            return Err(DatasetError::UnknownDemo { file: self.path.clone(), key, demo: unknown.clone() });
        }
        Ok(names)
    }

    /// Demo names chosen by `selection`, numerically ordered.
    pub fn select(&self, selection: &DemoSelection) -> Result<Vec<String>> {
        let mut names = match &selection.mask {
            Some(mask) => self.mask(mask)?,
            None => self.demos.clone(),
        };
        names.sort_by_key(|d| demo_sort_key(d));
        if let Some(n) = selection.first_n {
            names.truncate(n);
        }
        if names.is_empty() {
            let key = selection.mask.as_ref().map_or("data".to_owned(), |m| format!("mask/{m}"));
            return Err(DatasetError::EmptySelection { file: self.path.clone(), key });
        }
        Ok(names)
    }

    /// Every observation key of `spec` in every demo of `names`. A key no demo has is named
    /// as such, with the keys the first demo does have; a key some demos lack names the first
    /// of those and how many have it.
    fn check_keys_present(&self, spec: &ObsSpec, names: &[String]) -> Result<()> {
        for key in spec.image_keys.iter().chain(&spec.lowdim_keys) {
            let has = |demo: &String| self.file.link_exists(&format!("data/{demo}/obs/{key}"));
            let with = names.iter().filter(|d| has(d)).count();
            if with == names.len() {
                continue;
            }
            let first_without = names.iter().find(|d| !has(d)).expect("some demo lacks the key");
            let context = if with == 0 {
                let available = self
                    .file
                    .group(&format!("data/{}/obs", names[0]))
                    .and_then(|g| g.member_names())
                    .map(|m| m.join(", "))
                    .unwrap_or_else(|_| "none: no obs group".into());
                format!(
                    ": no demo of the {} selected has obs key `{key}` (obs keys of {}: {available})",
                    names.len(),
                    names[0]
                )
            } else {
                format!(" ({with} of the {} selected demos have it)", names.len())
            };
            return Err(self.missing(&format!("data/{first_without}/obs/{key}"), &context));
        }
        Ok(())
    }

    /// Reads one demo's chosen keys and its actions.
    pub fn read_episode(&self, demo: &str, spec: &ObsSpec) -> Result<(Episode, EpisodeLayout)> {
        let context = "";
        let actions_key = format!("data/{demo}/actions");
        let (actions, len, action_dim) = self.read_float_2d(&actions_key, "")?;
        if len == 0 {
            return Err(DatasetError::EmptyDemo { file: self.path.clone(), demo: demo.into() });
        }
        let mut images = Vec::with_capacity(spec.image_keys.len());
        let mut image_shapes = Vec::with_capacity(spec.image_keys.len());
        for key in &spec.image_keys {
            let path = format!("data/{demo}/obs/{key}");
            let ds = self.dataset(&path, context)?;
            let shape = ds.shape();
            let descriptor = self.descriptor(&path, &ds)?;
            if descriptor != TypeDescriptor::Unsigned(hdf5::types::IntSize::U1) {
                return Err(self.wrong(&path, "u8 images", format!("element type {descriptor}")));
            }
            if shape.len() != 4 || shape[3] != 3 {
                return Err(self.wrong(&path, "shape [T, H, W, 3] (HWC RGB)", format!("shape {shape:?}")));
            }
            self.check_len(&path, shape[0], &actions_key, len)?;
            images.push(ds.read_raw::<u8>().map_err(|e| self.hdf5(&path, e))?);
            image_shapes.push([shape[1], shape[2], shape[3]]);
        }
        let mut lowdim_dims = Vec::with_capacity(spec.lowdim_keys.len());
        let mut columns = Vec::with_capacity(spec.lowdim_keys.len());
        for key in &spec.lowdim_keys {
            let path = format!("data/{demo}/obs/{key}");
            let (values, rows, dim) = self.read_float_2d(&path, context)?;
            self.check_len(&path, rows, &actions_key, len)?;
            lowdim_dims.push(dim);
            columns.push(values);
        }
        let proprio_dim: usize = lowdim_dims.iter().sum();
        let mut lowdim = Vec::with_capacity(len * proprio_dim);
        for t in 0..len {
            for (values, &dim) in columns.iter().zip(&lowdim_dims) {
                lowdim.extend_from_slice(&values[t * dim..(t + 1) * dim]);
            }
        }
        let layout = EpisodeLayout { image_shapes, lowdim_dims, action_dim };
        Ok((Episode { demo: demo.into(), len, images, lowdim, actions }, layout))
    }

    fn check_len(&self, key: &str, found: usize, reference: &str, expected: usize) -> Result<()> {
        if found != expected {
            return Err(DatasetError::LengthMismatch {
                file: self.path.clone(),
                key: key.into(),
                found,
                reference: reference.into(),
                expected,
            });
        }
        Ok(())
    }

    /// A float (or integer) dataset of rank 1 or 2 as f32 rows: (values [T·d], T, d).
    fn read_float_2d(&self, key: &str, context: &str) -> Result<(Vec<f32>, usize, usize)> {
        let ds = self.dataset(key, context)?;
        let descriptor = self.descriptor(key, &ds)?;
        if !matches!(descriptor, TypeDescriptor::Float(_) | TypeDescriptor::Integer(_) | TypeDescriptor::Unsigned(_)) {
            return Err(self.wrong(key, "a numeric array", format!("element type {descriptor}")));
        }
        let shape = ds.shape();
        let (rows, dim) = match shape.as_slice() {
            [t] => (*t, 1),
            [t, d] => (*t, *d),
            other => return Err(self.wrong(key, "rank 1 or 2 ([T] or [T, d])", format!("shape {other:?}"))),
        };
        let values = ds.read_raw::<f32>().map_err(|e| self.hdf5(key, e))?;
        if values.iter().any(|v| !v.is_finite()) {
            return Err(DatasetError::Invalid {
                file: self.path.clone(),
                message: format!("`{key}` holds NaN or infinite values"),
            });
        }
        Ok((values, rows, dim))
    }

    /// Loads the selected demos; shapes and dimensions must agree across demos.
    pub fn load(&self, spec: &ObsSpec, selection: &DemoSelection) -> Result<RobomimicDataset> {
        let names = self.select(selection)?;
        self.check_keys_present(spec, &names)?;
        let mut dataset = RobomimicDataset {
            file: self.path.clone(),
            spec: spec.clone(),
            image_shapes: Vec::new(),
            lowdim_dims: Vec::new(),
            action_dim: 0,
            episodes: Vec::with_capacity(names.len()),
        };
        for (i, demo) in names.iter().enumerate() {
            let (episode, EpisodeLayout { image_shapes, lowdim_dims, action_dim }) = self.read_episode(demo, spec)?;
            if i == 0 {
                dataset.image_shapes = image_shapes;
                dataset.lowdim_dims = lowdim_dims;
                dataset.action_dim = action_dim;
            } else {
                let first = &names[0];
                for (k, key) in spec.image_keys.iter().enumerate() {
                    if image_shapes[k] != dataset.image_shapes[k] {
                        let path = format!("data/{demo}/obs/{key}");
                        return Err(self.wrong(
                            &path,
                            format!("image shape {:?} as in {first}", dataset.image_shapes[k]),
                            format!("{:?}", image_shapes[k]),
                        ));
                    }
                }
                for (k, key) in spec.lowdim_keys.iter().enumerate() {
                    if lowdim_dims[k] != dataset.lowdim_dims[k] {
                        let path = format!("data/{demo}/obs/{key}");
                        return Err(self.wrong(
                            &path,
                            format!("dimension {} as in {first}", dataset.lowdim_dims[k]),
                            format!("dimension {}", lowdim_dims[k]),
                        ));
                    }
                }
                if action_dim != dataset.action_dim {
                    return Err(self.wrong(
                        &format!("data/{demo}/actions"),
                        format!("dimension {} as in {first}", dataset.action_dim),
                        format!("dimension {action_dim}"),
                    ));
                }
            }
            dataset.episodes.push(episode);
        }
        Ok(dataset)
    }
}

/// Reads a 1-D array of strings (fixed-length bytes, as robomimic writes masks, or
/// variable-length); on a non-string type returns the type found.
fn read_strings(ds: &hdf5::Dataset, descriptor: &TypeDescriptor) -> std::result::Result<Vec<String>, String> {
    use hdf5::types::FixedAscii;
    let trim = |s: &str| s.trim_end_matches('\0').to_owned();
    match descriptor {
        TypeDescriptor::FixedAscii(n) | TypeDescriptor::FixedUnicode(n) if *n <= 256 => ds
            .read_raw::<FixedAscii<256>>()
            .map(|v| v.iter().map(|s| trim(s.as_str())).collect())
            .map_err(|e| e.to_string()),
        TypeDescriptor::VarLenUnicode => ds
            .read_raw::<VarLenUnicode>()
            .map(|v| v.iter().map(|s| trim(s.as_str())).collect())
            .map_err(|e| e.to_string()),
        TypeDescriptor::VarLenAscii => ds
            .read_raw::<VarLenAscii>()
            .map(|v| v.iter().map(|s| trim(s.as_str())).collect())
            .map_err(|e| e.to_string()),
        other => Err(format!("element type {other}")),
    }
}
