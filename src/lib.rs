//! rldt-vision: flow-matching visuomotor policies, pretrained on Robomimic HDF5
//! demonstrations and fine-tuned online with RLDT.
//!
//! Reading order: [`policy::flow`] (the maths) → [`policy`] (`FlowPolicy`: encoders +
//! velocity head, its loss and sampler) → [`train::pretrain`] (the pretraining loop, top to
//! bottom) → [`optim`], [`optim::ema`], [`run_dir`] (what the loop leans on) → [`config`].
//! Vision backbones live in the `rldt-encoders` crate, HDF5 data in `rldt-datasets`.

pub mod bench;
pub mod collect;
pub mod config;
pub mod device;
pub mod episodes;
pub mod error;
pub mod eval;
pub mod host_memory;
pub mod optim;
pub mod policy;
pub mod rl;
pub mod run_dir;
pub mod sim;
pub mod toy;
pub mod toy_baselines;
pub mod train;
pub mod viz;

pub use error::{Error, Result};
