"""Where a robosuite control step goes: exclusive milliseconds per control step, by part.

Used for the rollout figures of docs/speed.md. Builds the env two ways and steps it with
random actions in chunks of Ta:
  rldt   as scripts/rldt_sim/env.py builds it (camera observables off) plus one render per
         chunk, the way the Rust workers ask for a frame only at a chunk's end;
  dppo   robosuite's camera observables on, so every control step renders (the access
         pattern of scripts/bench_rollout_dppo_style.py).
Each part is timed by wrapping the robosuite method that does it; a part's time excludes the
parts nested inside it (a render inside an observable update counts as render):
  forward      sim.forward() before each of the 25 substeps
  controller   _pre_action: the OSC controller in Python (Jacobians, mass matrix, torques)
  physics      sim.step(): MuJoCo's integrator
  observables  _update_observables() after each substep and _get_observations() at the end
  reward       _post_action: reward, success check
  render       sim.render(): the offscreen camera
  other        the rest of env.step() (Python loop, bookkeeping)
Prints one JSON object. Single process, single thread; run it alone for absolute figures
(the shares hold under load as long as the process gets a core to itself part of the time).

    .venv/bin/python scripts/profile_control_step.py [--task square] [--steps 200] [--exec-horizon 4]
"""
import argparse
import json
import os
import time


def build(env_name, dppo, size):
    import robosuite
    from robosuite import macros
    from robosuite.controllers import load_controller_config

    macros.IMAGE_CONVENTION = "opencv"
    return robosuite.make(
        env_name, robots="Panda", controller_configs=load_controller_config(default_controller="OSC_POSE"),
        has_renderer=False, has_offscreen_renderer=True, use_camera_obs=dppo,
        camera_names=["agentview"], camera_heights=size, camera_widths=size,
        control_freq=20, horizon=10_000, ignore_done=True, hard_reset=False, reward_shaping=False,
    )


class Timers:
    """Exclusive time per named part; nested parts are subtracted from their parent."""

    def __init__(self):
        self.total = {}
        self.stack = []  # [name, start, time spent in children]

    def wrap(self, owner, attribute, name):
        inner = getattr(owner, attribute)

        def timed(*args, **kwargs):
            self.stack.append([name, time.perf_counter(), 0.0])
            try:
                return inner(*args, **kwargs)
            finally:
                part, start, children = self.stack.pop()
                spent = time.perf_counter() - start
                self.total[part] = self.total.get(part, 0.0) + spent - children
                if self.stack:
                    self.stack[-1][2] += spent

        setattr(owner, attribute, timed)


def profile(env_name, dppo, steps, exec_horizon, size, seed):
    import numpy as np

    env = build(env_name, dppo, size)
    env.reset()
    rng = np.random.default_rng(seed)
    low, high = env.action_spec
    timers = Timers()
    for attribute, name in (("forward", "forward"), ("step", "physics"), ("render", "render")):
        timers.wrap(env.sim, attribute, name)
    for attribute, name in (("_pre_action", "controller"), ("_update_observables", "observables"),
                            ("_get_observations", "observables"), ("_post_action", "reward")):
        timers.wrap(env, attribute, name)
    timers.wrap(env, "step", "other")
    for _ in range(2 * exec_horizon):  # warm-up: first renders set up the GL context
        env.step(rng.uniform(low, high))
    timers.total.clear()
    start = time.perf_counter()
    for t in range(steps):
        env.step(rng.uniform(low, high))
        if not dppo and (t + 1) % exec_horizon == 0:
            env.sim.render(camera_name="agentview", width=size, height=size, depth=False)
    wall = time.perf_counter() - start
    env.close()
    per_step = {part: 1000.0 * seconds / steps for part, seconds in sorted(timers.total.items())}
    return {"ms_per_control_step": round(1000.0 * wall / steps, 3),
            "parts_ms": {k: round(v, 3) for k, v in per_step.items()},
            "parts_share": {k: round(v / (1000.0 * wall / steps), 3) for k, v in per_step.items()}}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--task", default="square", choices=["square", "lift"])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--exec-horizon", type=int, default=4)
    ap.add_argument("--image-size", type=int, default=84)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    os.environ.setdefault("MUJOCO_GL", "egl")
    env_name = {"square": "NutAssemblySquare", "lift": "Lift"}[a.task]
    out = {"task": a.task, "steps": a.steps, "exec_horizon": a.exec_horizon, "image_size": a.image_size}
    for mode in ("rldt", "dppo"):
        out[mode] = profile(env_name, mode == "dppo", a.steps, a.exec_horizon, a.image_size, a.seed)
    out["ratio_dppo_over_rldt"] = round(out["dppo"]["ms_per_control_step"] / out["rldt"]["ms_per_control_step"], 3)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
