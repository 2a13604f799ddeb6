//! Reinforcement learning pieces of RLDT (rldt-algorithm.md §3–§7), so far the pure maths:
//! [`svgd`] (the transport field; it never sees a critic), [`actor_loss`] (alignment,
//! consistency, constraint) and [`returns`] (change of reward, success mask, TD(λ)).

pub mod actor;
pub mod actor_loss;
pub mod critic;
pub mod returns;
pub mod svgd;
pub mod toy;
