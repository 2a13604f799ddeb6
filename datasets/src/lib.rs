//! Robomimic HDF5 demonstrations for rldt-vision, without libtorch.
//!
//! - [`reader`]: open a Robomimic file, list demos in numeric order, read masks, load the
//!   chosen observation keys and actions into [`Episode`]s (u8 HWC images, f32 low-dim),
//!   with an error naming the file and key path for every malformed input.
//! - [`writer`]: write the same schema (the simulator records demos with it; tests and the
//!   embedded default build fixtures with it).
//! - [`windows`]: (obs history, action chunk) windows padded at episode ends.
//! - [`stats`]: min-max statistics mapping each dimension to [−1, 1].
//! - [`batch`]: gathers a batch of windows into flat buffers ready for the device.
//! - [`synthetic`]: a small procedurally drawn dataset in the Square schema, the embedded
//!   default until scripted simulator demos exist.
//! - [`random`]: the deterministic generator everything here draws from.
//!
//! Schema (as robomimic writes and reads it): `data` (attrs `total`, `env_args`), `data/demo_N` (attr
//! `num_samples`, opt. `model_file`) with `actions`, `rewards`, `dones`, `states`,
//! `obs/<key>`, opt. `next_obs/<key>`; `mask/train`, `mask/valid` (demo names).

pub mod batch;
pub mod error;
pub mod random;
pub mod reader;
pub mod stats;
pub mod synthetic;
pub mod windows;
pub mod writer;

pub use error::DatasetError;
pub use reader::{DemoSelection, Episode, ObsSpec, RobomimicDataset, RobomimicFile};
pub use stats::MinMax;
pub use windows::{Window, WindowSpec};
pub use writer::{DemoRecord, RobomimicWriter};
