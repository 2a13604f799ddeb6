//! Reinforcement learning pieces of RLDT (rldt-algorithm.md §3–§7): [`svgd`] (the transport
//! field; it never sees a critic), [`actor_loss`] and [`actor`] (the actor objective),
//! [`critic`] (Q ensemble, TD loss), [`returns`] (change of reward, success mask, TD(λ)),
//! [`exploration`] (§6), [`toy`] (the paper's 2-D figure). The fine-tuning loop is not here yet.

pub mod actor;
pub mod actor_loss;
pub mod critic;
pub mod exploration;
pub mod probe;
pub mod replay;
pub mod returns;
pub mod rldt;
pub mod rollout;
pub mod svgd;
pub mod toy;
