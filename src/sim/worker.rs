//! [`SubprocessEnv`]: one simulator worker process and the conversation with it.
//!
//! The worker's stdout is read on a thread that forwards lines through a channel, so every
//! request waits with a timeout; its stderr is drained on another thread that keeps the last
//! lines for error messages. A worker that dies (killed, exited), hangs (timeout), raises, or
//! reports an unstable simulation gives a [`SimError`] naming the worker, the task and the
//! tail of its stderr; [`crate::sim::VecEnv`] restarts it.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use super::protocol::{decode_chunk, decode_observation, ChunkOutcome, Observation, Render};
use super::task::{PythonPaths, SimConfig};

/// Lines of a worker's stderr kept for error messages.
const STDERR_TAIL_LINES: usize = 30;

#[derive(Debug, Clone, PartialEq)]
pub enum SimErrorKind {
    /// The Python environment is missing: run scripts/setup.
    MissingPython(String),
    Spawn(String),
    /// The process ended (killed, crashed, exited).
    Died(String),
    Timeout {
        seconds: f64,
        request: String,
    },
    /// The worker raised an exception while serving a request.
    Raised(String),
    /// MuJoCo reported an unstable simulation.
    Unstable(String),
    Protocol(String),
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("simulator worker {worker} (task {task}): {kind}{}", tail_block(.stderr_tail))]
pub struct SimError {
    pub worker: usize,
    pub task: String,
    pub kind: SimErrorKind,
    pub stderr_tail: String,
}

fn tail_block(tail: &str) -> String {
    if tail.trim().is_empty() {
        String::new()
    } else {
        format!("\n--- last lines of its stderr ---\n{tail}")
    }
}

impl std::fmt::Display for SimErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SimErrorKind::MissingPython(path) => {
                write!(f, "no Python environment at {path}: run scripts/setup (it creates .venv with robosuite)")
            }
            SimErrorKind::Spawn(e) => write!(f, "could not start: {e}"),
            SimErrorKind::Died(status) => write!(f, "the process died ({status})"),
            SimErrorKind::Timeout { seconds, request } => {
                write!(f, "no answer to `{request}` within {seconds} s (hung; killed)")
            }
            SimErrorKind::Raised(message) => write!(f, "raised {message}"),
            SimErrorKind::Unstable(message) => write!(f, "unstable simulation: {message}"),
            SimErrorKind::Protocol(message) => write!(f, "protocol error: {message}"),
        }
    }
}

/// Facts the worker reports after building its env.
#[derive(Debug, Clone)]
pub struct WorkerInfo {
    pub action_dim: usize,
    pub state_dim: usize,
    /// Low-dim observation keys and their lengths.
    pub lowdim_dims: Vec<(String, usize)>,
}

pub struct SubprocessEnv {
    worker: usize,
    config: SimConfig,
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<std::io::Result<String>>,
    stderr_tail: Arc<Mutex<VecDeque<String>>>,
    info: WorkerInfo,
}

impl SubprocessEnv {
    /// Starts worker `worker` and builds the env of `config` in it.
    pub fn spawn(worker: usize, config: &SimConfig, paths: &PythonPaths) -> Result<Self, SimError> {
        let error = |kind| SimError { worker, task: config.task.name().into(), kind, stderr_tail: String::new() };
        if !paths.python.exists() {
            return Err(error(SimErrorKind::MissingPython(paths.python.display().to_string())));
        }
        let mut child = Command::new(&paths.python)
            .arg("-u")
            .arg(&paths.server)
            .env("MUJOCO_GL", &config.mujoco_gl)
            .env("PYOPENGL_PLATFORM", &config.mujoco_gl)
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| error(SimErrorKind::Spawn(format!("{}: {e}", paths.python.display()))))?;
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        let (sender, lines) = channel();
        std::thread::Builder::new()
            .name(format!("sim{worker}-stdout"))
            .spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    if sender.send(line).is_err() {
                        return;
                    }
                }
            })
            .map_err(|e| error(SimErrorKind::Spawn(e.to_string())))?;
        let stderr_tail = Arc::new(Mutex::new(VecDeque::new()));
        let tail = stderr_tail.clone();
        std::thread::Builder::new()
            .name(format!("sim{worker}-stderr"))
            .spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    let mut tail = tail.lock().unwrap_or_else(|e| e.into_inner());
                    if tail.len() == STDERR_TAIL_LINES {
                        tail.pop_front();
                    }
                    tail.push_back(line);
                }
            })
            .map_err(|e| error(SimErrorKind::Spawn(e.to_string())))?;
        let placeholder = WorkerInfo { action_dim: 0, state_dim: 0, lowdim_dims: Vec::new() };
        let mut env = Self { worker, config: config.clone(), child, stdin, lines, stderr_tail, info: placeholder };
        let reply = env.request(
            json!({
                "cmd": "init", "env_args": config.env_args(), "cameras": config.cameras, "image_size": config.image_size,
                "stop_on_success": config.stop_on_success, "horizon": config.horizon, "task": config.task.name(),
            }),
            config.init_timeout_s,
        )?;
        env.info = env.parse_info(&reply)?;
        Ok(env)
    }

    fn parse_info(&self, reply: &Value) -> Result<WorkerInfo, SimError> {
        let protocol = reply.get("protocol").and_then(Value::as_u64);
        if protocol != Some(1) {
            return Err(self.error(SimErrorKind::Protocol(format!("expected protocol 1, worker speaks {protocol:?}"))));
        }
        let number = |key: &str| reply.get(key).and_then(Value::as_u64).map(|n| n as usize);
        let lowdim_dims = reply
            .get("lowdim_dims")
            .and_then(Value::as_object)
            .map(|m| m.iter().filter_map(|(k, v)| v.as_u64().map(|n| (k.clone(), n as usize))).collect())
            .unwrap_or_default();
        match (number("action_dim"), number("state_dim")) {
            (Some(action_dim), Some(state_dim)) => Ok(WorkerInfo { action_dim, state_dim, lowdim_dims }),
            _ => Err(self.error(SimErrorKind::Protocol("init reply lacks action_dim / state_dim".into()))),
        }
    }

    pub fn worker(&self) -> usize {
        self.worker
    }

    pub fn info(&self) -> &WorkerInfo {
        &self.info
    }

    pub fn config(&self) -> &SimConfig {
        &self.config
    }

    /// The worker's process id (tests kill it to simulate a crash).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn stderr_tail(&self) -> String {
        // Give the stderr thread a moment to collect a dying process's last words.
        std::thread::sleep(Duration::from_millis(50));
        self.stderr_tail.lock().unwrap_or_else(|e| e.into_inner()).iter().cloned().collect::<Vec<_>>().join("\n")
    }

    fn error(&self, kind: SimErrorKind) -> SimError {
        SimError { worker: self.worker, task: self.config.task.name().into(), kind, stderr_tail: self.stderr_tail() }
    }

    fn died(&mut self) -> SimError {
        let status = match self.child.wait() {
            Ok(status) => status.to_string(),
            Err(e) => e.to_string(),
        };
        self.error(SimErrorKind::Died(status))
    }

    /// Sends one request and waits up to `timeout_s` for its reply.
    fn request(&mut self, message: Value, timeout_s: f64) -> Result<Value, SimError> {
        let cmd = message.get("cmd").and_then(Value::as_str).unwrap_or("?").to_owned();
        if writeln!(self.stdin, "{message}").and_then(|_| self.stdin.flush()).is_err() {
            return Err(self.died());
        }
        let line = match self.lines.recv_timeout(Duration::from_secs_f64(timeout_s)) {
            Ok(Ok(line)) => line,
            Ok(Err(e)) => return Err(self.error(SimErrorKind::Protocol(e.to_string()))),
            Err(RecvTimeoutError::Timeout) => {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return Err(self.error(SimErrorKind::Timeout { seconds: timeout_s, request: cmd }));
            }
            Err(RecvTimeoutError::Disconnected) => return Err(self.died()),
        };
        let reply: Value = serde_json::from_str(&line)
            .map_err(|e| self.error(SimErrorKind::Protocol(format!("reply to `{cmd}` is not JSON ({e})"))))?;
        if reply.get("ok").and_then(Value::as_bool) == Some(true) {
            return Ok(reply);
        }
        let message = reply.get("error").and_then(Value::as_str).unwrap_or("unknown error").to_owned();
        if reply.get("unstable").and_then(Value::as_bool) == Some(true) {
            Err(self.error(SimErrorKind::Unstable(message)))
        } else {
            Err(self.error(SimErrorKind::Raised(message)))
        }
    }

    fn image_bytes(&self) -> usize {
        self.config.image_size * self.config.image_size * 3
    }

    /// Starts an episode; the seed alone determines it.
    pub fn reset(&mut self, seed: u64) -> Result<Observation, SimError> {
        let reply = self.request(json!({"cmd": "reset", "seed": seed}), self.config.step_timeout_s)?;
        let obs =
            reply.get("obs").ok_or_else(|| self.error(SimErrorKind::Protocol("reset reply lacks `obs`".into())))?;
        decode_observation(obs, self.image_bytes()).map_err(|e| self.error(SimErrorKind::Protocol(e)))
    }

    /// Executes a chunk of actions ([n][A], env units in [−1, 1]); stops early at the end of
    /// the episode.
    pub fn step(
        &mut self,
        actions: &[Vec<f64>],
        render: Render,
        record_states: bool,
    ) -> Result<ChunkOutcome, SimError> {
        let message =
            json!({"cmd": "step", "actions": actions, "render": render.as_str(), "record_states": record_states});
        let reply = self.request(message, self.config.step_timeout_s)?;
        decode_chunk(&reply, self.image_bytes()).map_err(|e| self.error(SimErrorKind::Protocol(e)))
    }

    /// Lets the task's scripted expert act for up to `n` steps (with N(0, noise²) added).
    pub fn expert(
        &mut self,
        n: usize,
        render: Render,
        record_states: bool,
        noise: f64,
        noise_seed: u64,
    ) -> Result<ChunkOutcome, SimError> {
        let message = json!({"cmd": "expert", "n": n, "render": render.as_str(), "record_states": record_states, "noise": noise, "noise_seed": noise_seed});
        let reply = self.request(message, self.config.step_timeout_s)?;
        decode_chunk(&reply, self.image_bytes()).map_err(|e| self.error(SimErrorKind::Protocol(e)))
    }

    /// The MJCF XML of the current scene (stored as `model_file` with demos).
    pub fn model_xml(&mut self) -> Result<String, SimError> {
        let reply = self.request(json!({"cmd": "model_xml"}), self.config.step_timeout_s)?;
        reply
            .get("xml")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| self.error(SimErrorKind::Protocol("no `xml`".into())))
    }

    /// Failure injection for tests: "raise", "hang", "exit" or "unstable".
    pub fn inject_fault(&mut self, kind: &str, timeout_s: f64) -> Result<(), SimError> {
        self.request(json!({"cmd": "fault", "kind": kind}), timeout_s).map(|_| ())
    }
}

impl Drop for SubprocessEnv {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "{}", json!({"cmd": "close"}));
        let _ = self.stdin.flush();
        for _ in 0..20 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
