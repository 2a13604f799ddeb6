//! Reinforcement learning pieces of RLDT (rldt-algorithm.md §3–§7). So far: [`svgd`], the
//! transport field, pure maths that never sees a critic.

pub mod svgd;
