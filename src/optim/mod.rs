//! AdamW (Loshchilov & Hutter) over one VarStore, with its state saved and restored, which
//! tch's built-in optimizer cannot do (exact resume needs the moments). Same arithmetic as
//! `torch.optim.AdamW` (single-tensor path):
//!   p ← p·(1 − lr·λ)
//!   m ← β1·m + (1 − β1)·g,  v ← β2·v + (1 − β2)·g²
//!   p ← p − (lr / (1 − β1ᵗ)) · m / (√v / √(1 − β2ᵗ) + ε)
//! plus the learning-rate schedule of pretraining: linear warm-up, then cosine to `min_lr`.

pub mod ema;

use std::path::Path;

use tch::{nn, Tensor};

use crate::error::{Error, Result};

pub struct AdamW {
    /// (name, parameter, first moment, second moment), sorted by name.
    params: Vec<(String, Tensor, Tensor, Tensor)>,
    /// Learning-rate factor of each parameter (parameter groups: 1.0 unless set).
    lr_factors: Vec<f64>,
    steps_taken: i64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl AdamW {
    /// Over the trainable variables of `vs` (one optimizer per VarStore).
    pub fn new(vs: &nn::VarStore, beta1: f64, beta2: f64, eps: f64, weight_decay: f64) -> Self {
        let mut named: Vec<(String, Tensor)> = vs.variables().into_iter().filter(|(_, t)| t.requires_grad()).collect();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        let params: Vec<(String, Tensor, Tensor, Tensor)> = named
            .into_iter()
            .map(|(name, p)| {
                let (m, v) = (p.zeros_like().detach(), p.zeros_like().detach());
                (name, p, m, v)
            })
            .collect();
        let lr_factors = vec![1.0; params.len()];
        Self { params, lr_factors, steps_taken: 0, beta1, beta2, eps, weight_decay }
    }

    /// Parameter groups: every parameter whose name starts with `prefix` steps with
    /// `factor` × the learning rate (e.g. the critic's encoder at 4e-5 beside heads at 1e-3).
    pub fn with_lr_factor(mut self, prefix: &str, factor: f64) -> Self {
        for (i, (name, ..)) in self.params.iter().enumerate() {
            if name.starts_with(prefix) {
                self.lr_factors[i] = factor;
            }
        }
        self
    }

    pub fn steps_taken(&self) -> i64 {
        self.steps_taken
    }

    pub fn zero_grad(&mut self) {
        for (_, p, _, _) in &mut self.params {
            let mut g = p.grad();
            if g.defined() {
                let _ = g.detach_().zero_();
            }
        }
    }

    /// One update with learning rate `lr`; parameters without a gradient are skipped.
    pub fn step(&mut self, lr: f64) {
        self.steps_taken += 1;
        let t = self.steps_taken as i32;
        let bias1 = 1.0 - self.beta1.powi(t);
        let bias2_sqrt = (1.0 - self.beta2.powi(t)).sqrt();
        tch::no_grad(|| {
            for ((_, p, m, v), factor) in self.params.iter_mut().zip(&self.lr_factors) {
                let lr = lr * factor;
                let g = p.grad();
                if !g.defined() {
                    continue;
                }
                // In place wherever libtorch allows: two temporaries per parameter.
                let _ = p.g_mul_scalar_(1.0 - lr * self.weight_decay);
                let _ = m.lerp_(&g, 1.0 - self.beta1);
                let _ = v.g_mul_scalar_(self.beta2).addcmul_(&(&g * (1.0 - self.beta2)), &g);
                // p += m / d with d = (√v / √(1 − β2ᵗ) + ε) / (−lr / (1 − β1ᵗ)).
                let mut denom = v.sqrt();
                let _ = denom.g_div_scalar_(bias2_sqrt).g_add_scalar_(self.eps).g_div_scalar_(-lr / bias1);
                let _ = p.addcdiv_(m, &denom);
            }
        });
    }

    /// Moments as `m.<name>` / `v.<name>` tensors in one safetensors file.
    pub fn save(&self, path: &Path) -> Result<()> {
        let named: Vec<(String, Tensor)> = self
            .params
            .iter()
            .flat_map(|(name, _, m, v)| {
                [(format!("m.{name}"), m.shallow_clone()), (format!("v.{name}"), v.shallow_clone())]
            })
            .collect();
        Tensor::write_safetensors(&named, path).map_err(|source| Error::Tch { path: path.into(), source })
    }

    /// Restores moments written by [`save`](Self::save) and the step count.
    pub fn load(&mut self, path: &Path, steps_taken: i64) -> Result<()> {
        let stored: std::collections::HashMap<String, Tensor> = Tensor::read_safetensors(path)
            .map_err(|source| Error::Tch { path: path.into(), source })?
            .into_iter()
            .collect();
        for (name, p, m, v) in &mut self.params {
            for (prefix, moment) in [("m", &mut *m), ("v", &mut *v)] {
                let key = format!("{prefix}.{name}");
                let saved = stored.get(&key).ok_or_else(|| Error::RunDir {
                    dir: path.into(),
                    message: format!("optimizer state lacks `{key}`"),
                })?;
                if saved.size() != p.size() {
                    return Err(Error::RunDir {
                        dir: path.into(),
                        message: format!(
                            "optimizer state `{key}` has shape {:?}, parameter has {:?}",
                            saved.size(),
                            p.size()
                        ),
                    });
                }
                tch::no_grad(|| moment.copy_(saved));
            }
        }
        self.steps_taken = steps_taken;
        Ok(())
    }
}

/// Learning rate at `step` (0-based): linear warm-up over `warmup` steps to `lr`, then
/// cosine decay to `min_lr` at `total` steps.
pub fn warmup_cosine(step: i64, total: i64, warmup: i64, lr: f64, min_lr: f64) -> f64 {
    if step < warmup {
        return lr * (step + 1) as f64 / warmup as f64;
    }
    let progress = ((step - warmup) as f64 / (total - warmup).max(1) as f64).min(1.0);
    min_lr + 0.5 * (lr - min_lr) * (1.0 + (std::f64::consts::PI * progress).cos())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    /// Reference: torch.optim.AdamW(lr=0.1, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)
    /// on p = [1.0, −2.0] with loss sum(p²) gives after two steps
    /// [0.7985190749168396, −1.7962726354599] (PyTorch 2.11.0, float32).
    #[test]
    fn matches_adamw_reference() {
        let vs = nn::VarStore::new(Device::Cpu);
        let p = vs.root().var_copy("p", &Tensor::from_slice(&[1.0f32, -2.0]));
        let mut opt = AdamW::new(&vs, 0.9, 0.999, 1e-8, 0.01);
        for _ in 0..2 {
            opt.zero_grad();
            p.square().sum(Kind::Float).backward();
            opt.step(0.1);
        }
        let got: Vec<f32> = p.detach().try_into().unwrap();
        assert!((got[0] - 0.798_519_1).abs() < 1e-6 && (got[1] + 1.796_272_6).abs() < 1e-6, "{got:?}");
    }

    #[test]
    fn schedule_warms_up_then_decays() {
        assert!((warmup_cosine(0, 100, 10, 1e-3, 1e-5) - 1e-4).abs() < 1e-12);
        assert!((warmup_cosine(9, 100, 10, 1e-3, 1e-5) - 1e-3).abs() < 1e-12);
        assert!((warmup_cosine(10, 100, 10, 1e-3, 1e-5) - 1e-3).abs() < 1e-12);
        assert!((warmup_cosine(100, 100, 10, 1e-3, 1e-5) - 1e-5).abs() < 1e-12);
        assert!((warmup_cosine(55, 100, 10, 1e-3, 1e-5) - (1e-5 + 0.5 * (1e-3 - 1e-5))).abs() < 1e-9);
    }
}
