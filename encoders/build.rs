//! Link-time settings so that `rldt-vision`, its tests and doctests run without
//! `LD_LIBRARY_PATH`, and so that CUDA works when libtorch has it.
//!
//! - torch-sys's own rpath covers only its C++ shim; the final binaries need libtorch's
//!   directory as rpath too. torch-sys's `links = "tch"` exposes it to us as
//!   `DEP_TCH_LIBTORCH_LIB`.
//! - rustc links with `--as-needed`, which drops `libtorch_cuda.so` (nothing references a
//!   symbol in it directly) and then `tch::Cuda::is_available()` is false on a GPU machine.
//!   Force-link it when the library exists.
//!
//! On another machine (e.g. the GPU box) `LD_LIBRARY_PATH=<torch>/lib` overrides the rpath.

use std::path::Path;

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    let Ok(lib_dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") else {
        return;
    };
    println!("cargo:rustc-link-arg=-Wl,-rpath,{lib_dir}");
    if Path::new(&lib_dir).join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
    }
}
