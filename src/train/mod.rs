//! Training loops, each written out top to bottom in its own file, and the small pieces they
//! share: the batch loader thread, the metrics log (EMA weights: `optim::ema`).

pub mod finetune;
pub mod loader;
pub mod metrics;
pub mod pretrain;
