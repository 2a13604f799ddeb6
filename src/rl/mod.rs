//! Reinforcement learning pieces of RLDT (docs/algorithm.md §3–§7): [`svgd`] (the transport
//! field; it never sees a critic), [`actor_loss`] and [`actor`] (the actor objective),
//! [`critic`] (Q ensemble, TD loss), [`returns`] (change of reward, success mask, TD(λ)),
//! [`exploration`] (§6), [`trajectory`] and [`replay`] (what the updates read), [`rollout`]
//! (a collection round on the episode engine) and [`rldt`] (one critic or actor update).
//! The loop that drives them is `train::finetune`; the 2-D experiment is `crate::toy`, the
//! probe snapshots of the recordings `viz::probe`.
//!
//! The on-policy baselines (docs/baselines.md): [`ppo`] (GAE, clipped surrogate, running
//! return scale, schedules), [`value`] (V(s)), [`onpolicy`] (their collection round and the
//! learner trait), [`noisy_chain`] and [`reinflow`] (ReinFlow), [`fpo`] and [`fpo_objective`] (FPO++), [`dppo`]
//! (DPPO on a flow policy), [`actor_value`] (the actor and V that FPO++ and DPPO train);
//! their loop is `train::onpolicy`. The off-policy baseline QAM, [`adjoint_matching`] (its
//! actor objective), runs in RLDT's loop with its own critic ensemble (`critic` settings).
//! [`best_of_n`]: a fine-tune's critic ranking n policy proposals per state (`eval --best-of-n`);
//! [`critic_calibration`]: its scores of the executed chunks against the episodes' outcomes
//! (`eval --critic-calibration`); [`q_ascent`]: the executed chunks moved along its ∇_a Q
//! (`eval --q-ascent`).

pub mod actor;
pub mod actor_loss;
pub mod actor_value;
pub mod adjoint_matching;
pub mod best_of_n;
pub mod critic;
pub mod critic_batch;
pub mod critic_calibration;
pub mod dppo;
pub mod exploration;
pub mod fpo;
pub mod fpo_objective;
pub mod mini_batch;
pub mod noisy_chain;
pub mod onpolicy;
pub mod ppo;
pub mod q_ascent;
pub mod reinflow;
pub mod replay;
pub mod returns;
pub mod rldt;
pub mod rollout;
pub mod svgd;
pub mod trajectory;
pub mod value;
