//! Exponential moving average of weights: after every optimizer step
//!   θ_ema ← d·θ_ema + (1 − d)·θ        (paper: d = 0.995, docs/algorithm.md §8).
//! The EMA weights live in their own VarStore (same variable names as the online one), so
//! they are saved, loaded and evaluated like any policy.

use tch::{nn, Tensor};

pub struct Ema {
    /// (online, ema) variable pairs, matched by name.
    pairs: Vec<(Tensor, Tensor)>,
    decay: f64,
}

impl Ema {
    /// Pairs every variable of `online` with the same-named one of `ema` and copies the
    /// online values over, so both start equal.
    pub fn new(online: &nn::VarStore, ema: &mut nn::VarStore, decay: f64) -> Result<Self, tch::TchError> {
        ema.copy(online)?;
        let ema_vars = ema.variables();
        let mut pairs: Vec<(String, Tensor, Tensor)> = online
            .variables()
            .into_iter()
            .map(|(name, t)| {
                let e = ema_vars.get(&name).unwrap_or_else(|| panic!("EMA store lacks `{name}`")).shallow_clone();
                (name, t, e)
            })
            .collect();
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(Self { pairs: pairs.into_iter().map(|(_, t, e)| (t, e)).collect(), decay })
    }

    pub fn update(&mut self) {
        tch::no_grad(|| {
            for (online, ema) in &mut self.pairs {
                let _ = ema.lerp_(online, 1.0 - self.decay);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn moves_toward_online_by_one_minus_decay() {
        let online = nn::VarStore::new(Device::Cpu);
        let w = online.root().var_copy("w", &Tensor::from_slice(&[1.0f32]));
        let mut ema_vs = nn::VarStore::new(Device::Cpu);
        let _ = ema_vs.root().var_copy("w", &Tensor::from_slice(&[0.0f32]));
        let mut ema = Ema::new(&online, &mut ema_vs, 0.9).unwrap();
        let _ = tch::no_grad(|| w.shallow_clone().fill_(2.0));
        ema.update();
        // 0.9·1 + 0.1·2 = 1.1
        let e = ema_vs.variables()["w"].double_value(&[0]);
        assert!((e - 1.1).abs() < 1e-6, "{e}");
    }
}
