//! [`VecEnv`]: N simulator workers stepped in parallel (one thread per request, the workers
//! are processes). A worker that fails is restarted in place; the episode it was running
//! ends as truncated and the failure is reported in the result, so a run goes on.

use std::thread;

use super::protocol::{ChunkOutcome, Observation, Render};
use super::task::{PythonPaths, SimConfig};
use super::worker::{SimError, SubprocessEnv};

/// What one worker does next: execute a chunk of actions ([n][A], already in the env's
/// [−1, 1] range), or let the task's scripted expert act.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Chunk(Vec<Vec<f64>>),
    /// `steps` expert steps, Gaussian noise of std `noise` on its actions (seeded by
    /// `noise_seed`), the MuJoCo state recorded before every step when `record_states`.
    Expert {
        steps: usize,
        noise: f64,
        noise_seed: u64,
        record_states: bool,
    },
}

/// The result of one env's chunk: its outcome, or the failure that truncated its episode
/// (the worker has been restarted and needs a reset).
#[derive(Debug)]
pub enum StepResult {
    Ok(ChunkOutcome),
    WorkerFailed(SimError),
}

pub struct VecEnv {
    envs: Vec<SubprocessEnv>,
    config: SimConfig,
    paths: PythonPaths,
    /// Failures survived so far (each restarted its worker).
    pub failures: Vec<SimError>,
}

impl VecEnv {
    /// Starts `n` workers in parallel.
    pub fn new(config: &SimConfig, n: usize) -> Result<Self, SimError> {
        let paths = PythonPaths::discover();
        let envs = thread::scope(|scope| {
            let handles: Vec<_> = (0..n)
                .map(|i| {
                    let paths = &paths;
                    scope.spawn(move || SubprocessEnv::spawn(i, config, paths))
                })
                .collect();
            handles.into_iter().map(|h| h.join().expect("spawn thread")).collect::<Result<Vec<_>, _>>()
        })?;
        Ok(Self { envs, config: config.clone(), paths, failures: Vec::new() })
    }

    pub fn len(&self) -> usize {
        self.envs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.envs.is_empty()
    }

    pub fn env_mut(&mut self, i: usize) -> &mut SubprocessEnv {
        &mut self.envs[i]
    }

    pub fn config(&self) -> &SimConfig {
        &self.config
    }

    /// Replaces worker `i` with a fresh process; the error is kept in `failures`.
    fn restart(&mut self, i: usize, failure: SimError) -> Result<(), SimError> {
        eprintln!("[sim] {failure}\n[sim] restarting worker {i}");
        self.failures.push(failure);
        self.envs[i] = SubprocessEnv::spawn(i, &self.config, &self.paths)?;
        Ok(())
    }

    /// Runs `job` on every selected worker in parallel; `None` skips a worker.
    fn parallel<T: Send, J: Sync>(
        &mut self,
        jobs: &[Option<J>],
        job: impl Fn(&mut SubprocessEnv, &J) -> Result<T, SimError> + Sync,
    ) -> Vec<Option<Result<T, SimError>>> {
        thread::scope(|scope| {
            let handles: Vec<_> = self
                .envs
                .iter_mut()
                .zip(jobs)
                .map(|(env, j)| j.as_ref().map(|j| scope.spawn(|| job(env, j))))
                .collect();
            handles.into_iter().map(|h| h.map(|h| h.join().expect("worker thread"))).collect()
        })
    }

    /// Resets the selected envs (`Some(seed)`); a worker that fails is restarted and the
    /// reset retried once. Returns each selected env's first observation.
    pub fn reset(&mut self, seeds: &[Option<u64>]) -> Result<Vec<Option<Observation>>, SimError> {
        let results = self.parallel(seeds, |env, &seed| env.reset(seed));
        let mut out = Vec::with_capacity(results.len());
        for (i, result) in results.into_iter().enumerate() {
            out.push(match result {
                None => None,
                Some(Ok(obs)) => Some(obs),
                Some(Err(failure)) => {
                    self.restart(i, failure)?;
                    Some(self.envs[i].reset(seeds[i].expect("selected"))?)
                }
            });
        }
        Ok(out)
    }

    /// Steps the selected envs with their chunks ([n][A] each).
    pub fn step(
        &mut self,
        chunks: &[Option<Vec<Vec<f64>>>],
        render: Render,
    ) -> Result<Vec<Option<StepResult>>, SimError> {
        let actions: Vec<Option<Action>> = chunks.iter().map(|c| c.clone().map(Action::Chunk)).collect();
        self.act(&actions, render)
    }

    /// Runs each selected worker's [`Action`] in parallel.
    pub fn act(&mut self, actions: &[Option<Action>], render: Render) -> Result<Vec<Option<StepResult>>, SimError> {
        let results = self.parallel(actions, |env, action| match action {
            Action::Chunk(chunk) => env.step(chunk, render, false),
            &Action::Expert { steps, noise, noise_seed, record_states } => {
                env.expert(steps, render, record_states, noise, noise_seed)
            }
        });
        self.settle(results)
    }

    /// Failure injection through the same path as a step (tests): "raise", "unstable",
    /// "hang" (answered by a timeout) or "exit". The worker is restarted like after any failure.
    pub fn inject_fault(&mut self, i: usize, kind: &str) -> Result<StepResult, SimError> {
        let timeout = self.config.step_timeout_s;
        let result = self.envs[i].inject_fault(kind, timeout).map(|()| ChunkOutcome::default());
        let mut results: Vec<Option<Result<ChunkOutcome, SimError>>> = (0..self.envs.len()).map(|_| None).collect();
        results[i] = Some(result);
        Ok(self.settle(results)?.swap_remove(i).expect("selected"))
    }

    fn settle(
        &mut self,
        results: Vec<Option<Result<ChunkOutcome, SimError>>>,
    ) -> Result<Vec<Option<StepResult>>, SimError> {
        let mut out = Vec::with_capacity(results.len());
        for (i, result) in results.into_iter().enumerate() {
            out.push(match result {
                None => None,
                Some(Ok(outcome)) => Some(StepResult::Ok(outcome)),
                Some(Err(failure)) => {
                    self.restart(i, failure.clone())?;
                    Some(StepResult::WorkerFailed(failure))
                }
            });
        }
        Ok(out)
    }
}
