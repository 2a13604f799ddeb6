//! Reinforcement learning pieces of RLDT (rldt-algorithm.md §3–§7), so far the pure maths:
//! [`svgd`] (the transport field; it never sees a critic) and [`returns`] (change of reward,
//! success mask, TD(λ)).

pub mod returns;
pub mod svgd;
