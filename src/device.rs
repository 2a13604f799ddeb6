//! Device choice (`--device auto|cpu|cuda`) and thread count, in one place.

use clap::ValueEnum;
use tch::Device;

use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DeviceChoice {
    /// CUDA when libtorch sees a GPU, else CPU.
    Auto,
    Cpu,
    Cuda,
}

impl DeviceChoice {
    pub fn resolve(self) -> Result<Device> {
        match self {
            DeviceChoice::Cpu => Ok(Device::Cpu),
            DeviceChoice::Auto => Ok(Device::cuda_if_available()),
            DeviceChoice::Cuda if tch::Cuda::is_available() => Ok(Device::Cuda(0)),
            DeviceChoice::Cuda => Err(Error::Device(
                "--device cuda, but libtorch sees no CUDA device (is libtorch_cuda.so linked and a driver present?)"
                    .into(),
            )),
        }
    }
}

/// Sets libtorch's intra-op threads: `threads`, or all available cores when 0. Returns the
/// count in effect.
pub fn set_threads(threads: usize) -> i32 {
    let n = if threads == 0 { std::thread::available_parallelism().map_or(1, |n| n.get()) } else { threads };
    tch::set_num_threads(n as i32);
    tch::get_num_threads()
}

/// A short human description: "cpu" or "cuda:0 (<name>)".
pub fn describe(device: Device) -> String {
    match device {
        Device::Cpu => "cpu".into(),
        Device::Cuda(i) => format!("cuda:{i}"),
        other => format!("{other:?}").to_lowercase(),
    }
}
