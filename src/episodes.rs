//! The episode engine: runs a list of episodes (one seed each) over N simulator workers, the
//! one loop behind `collect`, `eval` and the fine-tuning rollouts.
//!
//! At every chunk boundary the engine starts the next scheduled episodes on idle workers, asks
//! the **actor** (a callback) for one [`Action`] per running episode in one call — so a policy
//! samples all envs as one batch — steps the workers in parallel, and hands each outcome to
//! the **sink**, which owns what an episode records (a trajectory, a demo, a result line).
//! The actor may return one extra value per episode with its actions (log-probabilities,
//! values: whatever a learner needs per chunk); the sink receives it with that chunk.
//!
//! Order: episodes start in seed order on the lowest idle worker; outcomes and finished
//! episodes are delivered in worker order. Given the same actor, this makes a run
//! reproducible.
//!
//! **Failure policy (one, for every caller).** A worker that fails during a chunk (died, hung,
//! raised, unstable simulation) has already been restarted by [`VecEnv`]. The episode it was
//! running ends there: it counts as one finished, *unsuccessful* episode in the [`Tally`]
//! (`episodes`, `worker_failures`), its partial record is dropped (the sink's
//! [`EpisodeSink::failed`] gets the error, never a truncated record as if complete), and its
//! seed is not run again; the restarted worker takes the next scheduled episode. A worker
//! that fails its reset is restarted and reset once more by [`VecEnv::reset`]; a second
//! failure ends the run with that error.

use crate::error::{Error, Result};
use crate::sim::{Action, ChunkOutcome, Observation, Render, SimError, StepResult, VecEnv};

/// The workers the engine drives: [`VecEnv`] (robosuite processes), or a stand-in in tests.
pub trait EpisodeEnvs {
    fn len(&self) -> usize;
    /// Resets the selected workers (`Some(seed)`); their first observations.
    fn reset(&mut self, seeds: &[Option<u64>]) -> std::result::Result<Vec<Option<Observation>>, SimError>;
    /// Acts on the selected workers in parallel; a failed worker is restarted before this
    /// returns and reported as [`StepResult::WorkerFailed`].
    fn act(
        &mut self,
        actions: &[Option<Action>],
        render: Render,
    ) -> std::result::Result<Vec<Option<StepResult>>, SimError>;
    /// The MuJoCo model (XML) of worker `i`'s current episode.
    fn model_xml(&mut self, i: usize) -> std::result::Result<String, SimError>;
}

impl EpisodeEnvs for VecEnv {
    fn len(&self) -> usize {
        VecEnv::len(self)
    }
    fn reset(&mut self, seeds: &[Option<u64>]) -> std::result::Result<Vec<Option<Observation>>, SimError> {
        VecEnv::reset(self, seeds)
    }
    fn act(
        &mut self,
        actions: &[Option<Action>],
        render: Render,
    ) -> std::result::Result<Vec<Option<StepResult>>, SimError> {
        VecEnv::act(self, actions, render)
    }
    fn model_xml(&mut self, i: usize) -> std::result::Result<String, SimError> {
        self.env_mut(i).model_xml()
    }
}

/// One scheduled episode: its index in the list, its seed, the worker running it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpisodeId {
    pub index: usize,
    pub seed: u64,
    pub worker: usize,
}

/// A running episode as the actor sees it.
pub struct Running<S> {
    pub id: EpisodeId,
    /// The latest observation (after the last executed step).
    pub obs: Observation,
    /// Env steps taken so far.
    pub steps: usize,
    /// Whether any step so far succeeded.
    pub success: bool,
    /// Steps up to and including the first successful one (the episode's length under
    /// stop-on-success), once a step succeeded.
    pub steps_to_success: Option<usize>,
    /// What the sink records for this episode.
    pub record: S,
}

/// The actor's answer for the running episodes, in the order it was given them.
pub struct Decision<X> {
    pub actions: Vec<Action>,
    /// One per action; `()` for actors without extras.
    pub extras: Vec<X>,
    pub render: Render,
}

impl Decision<()> {
    /// Actions without extras.
    pub fn plain(actions: Vec<Action>, render: Render) -> Self {
        let extras = vec![(); actions.len()];
        Self { actions, extras, render }
    }
}

/// What a finished episode looked like to the engine.
#[derive(Debug, Clone, Copy)]
pub struct Ending {
    pub steps: usize,
    pub success: bool,
    /// Steps up to and including the first successful one (None: no success).
    pub steps_to_success: Option<usize>,
}

/// Where episodes go. `Record` is what one episode accumulates; `Extra` what the actor returns
/// per chunk beside the action.
pub trait EpisodeSink {
    type Record;
    type Extra;
    /// A new episode has its first observation; `envs` can be asked about the new episode.
    fn start(&mut self, id: EpisodeId, first: &Observation, envs: &mut dyn EpisodeEnvs) -> Result<Self::Record>;
    /// One executed chunk (`outcome.obs` is the observation after it).
    fn chunk(&mut self, record: &mut Self::Record, extra: Self::Extra, outcome: &ChunkOutcome) -> Result<()>;
    /// The episode ended (success with stop-on-success, or its horizon).
    fn finish(&mut self, id: EpisodeId, record: Self::Record, ending: Ending) -> Result<()>;
    /// The episode's worker failed (see the failure policy in the module header); the partial
    /// record has been dropped.
    fn failed(&mut self, id: EpisodeId, ending: Ending, error: &SimError) -> Result<()> {
        let _ = (id, ending, error);
        Ok(())
    }
}

/// Counts over the episodes the engine ran (failed ones included, as unsuccessful).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    pub episodes: usize,
    pub successes: usize,
    pub worker_failures: usize,
    /// Env steps executed (steps of failed chunks are not known and not counted).
    pub env_steps: usize,
    /// Stopped by `stop()` before every episode finished (running ones are abandoned).
    pub stopped: bool,
}

/// Runs one episode per seed of `seeds` (episode e uses `seeds[e]`) over `envs`.
/// `actor` is called once per chunk boundary with every running episode; `stop` is asked at
/// every chunk boundary (a `true` abandons the running episodes and returns).
pub fn run_episodes<E, S, A>(
    envs: &mut E,
    seeds: &[u64],
    mut actor: A,
    sink: &mut S,
    stop: &dyn Fn() -> bool,
) -> Result<Tally>
where
    E: EpisodeEnvs,
    S: EpisodeSink,
    A: FnMut(&[&Running<S::Record>]) -> Result<Decision<S::Extra>>,
{
    let sim_error = |e: SimError| Error::Sim(Box::new(e));
    let mut running: Vec<Option<Running<S::Record>>> = (0..envs.len()).map(|_| None).collect();
    let mut next = 0usize;
    let mut tally = Tally::default();
    loop {
        if stop() {
            tally.stopped = running.iter().any(Option::is_some) || next < seeds.len();
            return Ok(tally);
        }
        // Idle workers start the next episodes, in seed order.
        let mut starting: Vec<Option<EpisodeId>> = vec![None; running.len()];
        for (worker, slot) in running.iter().enumerate() {
            if slot.is_none() && next < seeds.len() {
                starting[worker] = Some(EpisodeId { index: next, seed: seeds[next], worker });
                next += 1;
            }
        }
        if starting.iter().any(Option::is_some) {
            let reset_seeds: Vec<Option<u64>> = starting.iter().map(|id| id.map(|id| id.seed)).collect();
            let firsts = envs.reset(&reset_seeds).map_err(sim_error)?;
            for (worker, (id, first)) in starting.into_iter().zip(firsts).enumerate() {
                if let (Some(id), Some(obs)) = (id, first) {
                    let record = sink.start(id, &obs, envs)?;
                    running[worker] =
                        Some(Running { id, obs, steps: 0, success: false, steps_to_success: None, record });
                }
            }
        }
        let workers: Vec<usize> = (0..running.len()).filter(|&w| running[w].is_some()).collect();
        if workers.is_empty() {
            return Ok(tally);
        }

        // One call to the actor for every running episode.
        let views: Vec<&Running<S::Record>> = running.iter().flatten().collect();
        let decision = actor(&views)?;
        if decision.actions.len() != workers.len() || decision.extras.len() != workers.len() {
            return Err(Error::Episode(format!(
                "the actor answered {} actions and {} extras for {} running episodes",
                decision.actions.len(),
                decision.extras.len(),
                workers.len()
            )));
        }
        let mut actions: Vec<Option<Action>> = (0..running.len()).map(|_| None).collect();
        let mut extras: Vec<Option<S::Extra>> = (0..running.len()).map(|_| None).collect();
        for ((&worker, action), extra) in workers.iter().zip(decision.actions).zip(decision.extras) {
            actions[worker] = Some(action);
            extras[worker] = Some(extra);
        }

        // Step, then deliver outcomes in worker order.
        let results = envs.act(&actions, decision.render).map_err(sim_error)?;
        for (worker, result) in results.into_iter().enumerate() {
            let Some(result) = result else { continue };
            let extra = extras[worker].take().expect("an extra for every stepped worker");
            match result {
                StepResult::WorkerFailed(error) => {
                    let episode = running[worker].take().expect("a stepped worker runs an episode");
                    tally.episodes += 1;
                    tally.worker_failures += 1;
                    let ending = Ending { steps: episode.steps, success: false, steps_to_success: None };
                    sink.failed(episode.id, ending, &error)?;
                }
                StepResult::Ok(outcome) => {
                    let episode = running[worker].as_mut().expect("a stepped worker runs an episode");
                    if let (None, Some(i)) = (episode.steps_to_success, outcome.successes.iter().position(|&s| s)) {
                        episode.steps_to_success = Some(episode.steps + i + 1);
                    }
                    episode.steps += outcome.actions.len();
                    episode.success |= outcome.successes.iter().any(|&s| s);
                    tally.env_steps += outcome.actions.len();
                    let ended = outcome.done || outcome.truncated;
                    sink.chunk(&mut episode.record, extra, &outcome)?;
                    episode.obs = outcome.obs;
                    if ended {
                        let episode = running[worker].take().expect("running");
                        tally.episodes += 1;
                        tally.successes += episode.success as usize;
                        let ending = Ending {
                            steps: episode.steps,
                            success: episode.success,
                            steps_to_success: episode.steps_to_success,
                        };
                        sink.finish(episode.id, episode.record, ending)?;
                    }
                }
            }
        }
    }
}

/// Seeds `base, base + 1, …` for `n` episodes.
pub fn consecutive_seeds(base: u64, n: usize) -> Vec<u64> {
    (0..n as u64).map(|e| base + e).collect()
}

#[cfg(test)]
mod tests {
    //! The engine against scripted workers (no Python): every episode of a seed runs 3
    //! chunks of 2 steps; seeds divisible by 4 succeed at their 4th step; the chunk of seed 13
    //! that starts at step 2 fails its worker.
    use super::*;
    use crate::sim::SimErrorKind;

    struct ScriptedEnvs {
        /// Per worker: (seed, steps taken) of its episode.
        state: Vec<Option<(u64, usize)>>,
        resets: Vec<(usize, u64)>,
    }

    fn obs(seed: u64, t: usize) -> Observation {
        let mut o = Observation::default();
        o.lowdim.insert("where".into(), vec![seed as f64, t as f64]);
        o
    }

    impl EpisodeEnvs for ScriptedEnvs {
        fn len(&self) -> usize {
            self.state.len()
        }
        fn reset(&mut self, seeds: &[Option<u64>]) -> std::result::Result<Vec<Option<Observation>>, SimError> {
            Ok(seeds
                .iter()
                .enumerate()
                .map(|(w, seed)| {
                    seed.map(|seed| {
                        self.state[w] = Some((seed, 0));
                        self.resets.push((w, seed));
                        obs(seed, 0)
                    })
                })
                .collect())
        }
        fn act(
            &mut self,
            actions: &[Option<Action>],
            _: Render,
        ) -> std::result::Result<Vec<Option<StepResult>>, SimError> {
            Ok(actions
                .iter()
                .enumerate()
                .map(|(w, action)| {
                    let Action::Chunk(chunk) = action.as_ref()? else { panic!("chunks only") };
                    let (seed, t) = self.state[w].expect("reset before acting");
                    if seed == 13 && t == 2 {
                        self.state[w] = None; // restarted: needs a reset
                        let kind = SimErrorKind::Died("killed".into());
                        return Some(StepResult::WorkerFailed(SimError {
                            worker: w,
                            task: "scripted".into(),
                            kind,
                            stderr_tail: String::new(),
                        }));
                    }
                    let steps = chunk.len();
                    let successes: Vec<bool> = (t..t + steps).map(|s| seed % 4 == 0 && s >= 3).collect();
                    self.state[w] = Some((seed, t + steps));
                    Some(StepResult::Ok(ChunkOutcome {
                        obs: obs(seed, t + steps),
                        actions: chunk.clone(),
                        rewards: successes.iter().map(|&s| s as i32 as f64).collect(),
                        successes,
                        truncated: t + steps >= 6,
                        t: t + steps,
                        ..ChunkOutcome::default()
                    }))
                })
                .collect())
        }
        fn model_xml(&mut self, _: usize) -> std::result::Result<String, SimError> {
            Ok(String::new())
        }
    }

    /// Records what the engine delivers.
    #[derive(Default)]
    struct Log {
        finished: Vec<(u64, usize, bool, Vec<u64>)>,
        failed: Vec<(u64, usize)>,
    }

    impl EpisodeSink for Log {
        /// The extras delivered with the episode's chunks.
        type Record = Vec<u64>;
        type Extra = u64;
        fn start(&mut self, id: EpisodeId, first: &Observation, _: &mut dyn EpisodeEnvs) -> Result<Vec<u64>> {
            assert_eq!(first.lowdim["where"], vec![id.seed as f64, 0.0]);
            Ok(Vec::new())
        }
        fn chunk(&mut self, record: &mut Vec<u64>, extra: u64, _: &ChunkOutcome) -> Result<()> {
            record.push(extra);
            Ok(())
        }
        fn finish(&mut self, id: EpisodeId, record: Vec<u64>, ending: Ending) -> Result<()> {
            self.finished.push((id.seed, ending.steps, ending.success, record));
            Ok(())
        }
        fn failed(&mut self, id: EpisodeId, ending: Ending, _: &SimError) -> Result<()> {
            self.failed.push((id.seed, ending.steps));
            Ok(())
        }
    }

    /// The actor: a 2-step chunk per episode; its extra is seed·10 + the steps seen, so a
    /// misrouted extra or observation shows.
    fn actor(running: &[&Running<Vec<u64>>]) -> Result<Decision<u64>> {
        for r in running {
            assert_eq!(r.obs.lowdim["where"], vec![r.id.seed as f64, r.steps as f64], "latest observation");
        }
        Ok(Decision {
            actions: running.iter().map(|_| Action::Chunk(vec![vec![0.0]; 2])).collect(),
            extras: running.iter().map(|r| r.id.seed * 10 + r.steps as u64).collect(),
            render: Render::Last,
        })
    }

    #[test]
    fn runs_every_seed_once_and_a_failed_worker_ends_its_episode_unsuccessfully() {
        let mut envs = ScriptedEnvs { state: vec![None; 2], resets: Vec::new() };
        let mut log = Log::default();
        let seeds = consecutive_seeds(10, 5); // 10 11 12 13 14
        let tally = run_episodes(&mut envs, &seeds, actor, &mut log, &|| false).unwrap();

        // Seeds start in order on idle workers; seed 13's worker takes seed 14 after failing.
        assert_eq!(envs.resets, vec![(0, 10), (1, 11), (0, 12), (1, 13), (1, 14)]);
        assert_eq!(log.failed, vec![(13, 2)], "seed 13 failed after its first chunk");
        let finished: Vec<u64> = log.finished.iter().map(|f| f.0).collect();
        assert_eq!(finished, vec![10, 11, 12, 14], "not retried, never delivered as complete");
        assert_eq!(log.finished[2], (12, 6, true, vec![120, 122, 124]), "extras travel with their chunks");
        assert!(!log.finished[0].2 && !log.finished[3].2);
        let expected = Tally { episodes: 5, successes: 1, worker_failures: 1, env_steps: 4 * 6 + 2, stopped: false };
        assert_eq!(tally, expected);
    }

    #[test]
    fn a_stop_abandons_running_episodes() {
        let mut envs = ScriptedEnvs { state: vec![None; 2], resets: Vec::new() };
        let mut log = Log::default();
        let calls = std::cell::Cell::new(0);
        let stop = || {
            calls.set(calls.get() + 1);
            calls.get() > 2
        };
        let tally = run_episodes(&mut envs, &consecutive_seeds(0, 4), actor, &mut log, &stop).unwrap();
        assert!(tally.stopped && tally.episodes == 0 && log.finished.is_empty());
        assert_eq!(tally.env_steps, 2 * 2 * 2, "two chunk boundaries on two workers");
    }
}
