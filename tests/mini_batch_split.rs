//! The actor step's mini-batch split (docs/algorithm.md §5, `actor.mini_batch_split`): the
//! gradient accumulated over parts of the states equals the one-pass gradient, and the
//! reported loss and field scalars are the same. One test in its own binary: the objective draws from
//! libtorch's global generator, which no other test may touch between the seeded runs.
//! (The critic's split has its own test beside the code: `rl::critic_batch`.)

use rldt_vision::policy::{FlowPolicy, ObsBatch};
use rldt_vision::rl::actor::{actor_objective, ActorObjective};
use rldt_vision::toy::toy_spec;
use tch::{nn, Device, Kind, Tensor};

#[test]
fn split_actor_gradient_equals_the_one_pass_gradient() {
    tch::manual_seed(1);
    let vs = nn::VarStore::new(Device::Cpu);
    let policy = FlowPolicy::new(&vs.root(), toy_spec()).unwrap();
    let reference_vs = nn::VarStore::new(Device::Cpu);
    let reference = FlowPolicy::new(&reference_vs.root(), toy_spec()).unwrap();
    // Six different states (the toy's one proprio number), so parts see different conditions.
    let obs = ObsBatch { images: vec![], proprio: Tensor::randn([6, 1, 1], (Kind::Float, Device::Cpu)) };
    // ∇Q depends on the row, so a part handed the wrong rows' scores would change the result.
    let q_grad = |a: &Tensor, first_row: i64| {
        let n = a.size()[0];
        let rows = Tensor::arange_start(first_row, first_row + n, (Kind::Float, Device::Cpu)).view([n, 1]);
        (a * 0.5).sin() * (rows / 24.0 + 0.5)
    };
    let objective = ActorObjective { particles: 4, ..ActorObjective::paper() };
    let run = |split: usize| -> ([f64; 4], Vec<Tensor>) {
        for v in vs.variables().values() {
            let mut grad = v.grad();
            if grad.defined() {
                let _ = grad.zero_();
            }
        }
        tch::manual_seed(9);
        let stats = actor_objective(&policy, &reference, &obs, &q_grad, &objective, split).stats;
        let mut named: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        let scalars = [stats.loss, stats.field.bandwidth, stats.field.alpha, stats.field.field_norm];
        (scalars, named.into_iter().map(|(_, v)| v.grad().copy()).collect::<Vec<Tensor>>())
    };
    let (scalars, gradient) = run(1);
    let norm: f64 = gradient.iter().map(|g| g.abs().sum(Kind::Float).double_value(&[])).sum();
    assert!(norm > 1e-3, "a zero gradient proves nothing");
    for split in [2, 4, 6] {
        let (split_scalars, split_gradient) = run(split);
        for (got, want) in split_scalars.iter().zip(&scalars) {
            assert!((got - want).abs() < 1e-5 * want.abs().max(1.0), "split {split}: {split_scalars:?} vs {scalars:?}");
        }
        for (got, want) in split_gradient.iter().zip(&gradient) {
            assert!(got.allclose(want, 1e-4, 1e-6, false), "split {split}: gradients differ\n{got}\n{want}");
        }
    }
}
