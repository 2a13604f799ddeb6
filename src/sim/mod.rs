//! The simulator bridge: robosuite runs in Python worker processes
//! (`scripts/sim_server.py`, one per worker, fork+exec, headless via `MUJOCO_GL`) that speak
//! JSON lines; this module spawns them, talks to them, and survives their failures.
//!
//! - [`task`]: tasks (lift, can, square, transport) and the robomimic-style `env_args` that
//!   build them — the same JSON our demo files carry.
//! - [`protocol`]: message types and observation decoding.
//! - [`worker`]: [`SubprocessEnv`], one worker: spawn, request with a timeout, errors that name
//!   the worker, task and the tail of its stderr.
//! - [`vec_env`]: [`VecEnv`], N workers stepped in parallel; a failed worker is restarted and
//!   its episode ends as truncated, the run goes on.

pub mod protocol;
pub mod task;
pub mod vec_env;
pub mod worker;

pub use protocol::{ChunkOutcome, Observation, Render};
pub use task::{SimConfig, Task};
pub use vec_env::{Action, StepResult, VecEnv};
pub use worker::{SimError, SimErrorKind, SubprocessEnv};
