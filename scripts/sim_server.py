"""rldt-vision simulator worker: one robosuite environment behind JSON lines on stdin/stdout.

Spawned by the Rust side (fork+exec, one process per worker, headless via MUJOCO_GL). This is
the only Python in the project that imports robosuite. stdout carries protocol messages only
(fd 1 is re-pointed at stderr after start-up, so C-level prints from MuJoCo cannot reach it);
logs and tracebacks go to stderr, whose tail the Rust side reports when a worker fails.

Requests (one JSON object per line) and replies ({"ok": true, ...} or {"ok": false, "error"}):
  init   {env_args, cameras, image_size, stop_on_success, horizon}
         -> {protocol, action_dim, lowdim_dims, state_dim, env_name}
  reset  {seed} -> {obs}                  the seed alone decides the episode's start: the
                                          simulator state saved after the env was built
                                          (construction and first reset seeded with 0) is
                                          restored, then np.random.seed(seed), env.reset()
  step   {actions: [[A]*n], render: "last"|"every", record_states, expert: null}
  expert {n, render, record_states, noise, noise_seed}
         -> {obs (after the last executed step), frames (every step, when render="every"),
             actions (executed), rewards, successes, states (before each step, when asked;
             then every observation is that of the state after the step, as robomimic's
             reset_to reads it),
             done (success and stop_on_success), truncated (horizon reached), t}
  model_xml {} -> {xml}
  fault  {kind: "raise" | "hang" | "exit" | "unstable"}   (failure injection for tests)
Images travel as base64 of raw u8 HWC bytes.
"""
import base64
import json
import os
import sys
import time
import traceback

PROTOCOL = 1


def log(*parts):
    print("[sim_server %s]" % os.getpid(), *parts, file=sys.stderr, flush=True)


class UnstableSimulation(RuntimeError):
    pass


class Worker:
    def __init__(self):
        self.env = None
        self.expert = None

    def init(self, msg):
        import numpy as np
        from rldt_sim.env import make_env
        from rldt_sim.experts import EXPERTS

        self.np = np
        self.env_args = msg["env_args"]
        self.cameras = list(msg["cameras"])
        self.size = int(msg["image_size"])
        self.stop_on_success = bool(msg["stop_on_success"])
        self.horizon = int(msg["horizon"])
        started = time.time()
        # robosuite places objects from the global numpy RNG while it builds and first resets
        # the env; with hard_reset=False later resets keep traces of the state before them
        # (the cube's height differed by ~0.4 mm). Seeding the construction and restoring the
        # state saved here before every reset makes an episode's start a function of its
        # seed alone, whatever the worker ran before.
        np.random.seed(0)
        self.env = make_env(self.env_args, self.cameras, self.size)
        task = msg.get("task")
        self.expert_cls = EXPERTS.get(task)
        obs = self.env.reset()
        self.initial_state = self.env.sim.get_state().flatten()
        from rldt_sim.env import lowdim

        dims = {k: int(v.shape[0]) for k, v in lowdim(obs).items()}
        log("built %s in %.1fs" % (self.env_args["env_name"], time.time() - started))
        return {
            "protocol": PROTOCOL,
            "env_name": self.env_args["env_name"],
            "action_dim": int(self.env.action_dim),
            "lowdim_dims": dims,
            "state_dim": int(self.env.sim.get_state().flatten().shape[0]),
        }

    def observation(self, obs, with_images=True):
        from rldt_sim.env import lowdim, render

        out = {"lowdim": {k: v.tolist() for k, v in lowdim(obs).items()}, "images": {}}
        if with_images:
            for cam in self.cameras:
                out["images"][cam + "_image"] = base64.b64encode(render(self.env, cam, self.size).tobytes()).decode("ascii")
        return out

    def reset(self, msg):
        self.env.sim.set_state_from_flattened(self.initial_state)
        self.env.sim.forward()
        self.np.random.seed(int(msg["seed"]) % (2**32))
        obs = self.env.reset()
        self.t = 0
        self.warnings = self.warning_count()
        if self.expert_cls is not None:
            self.expert = self.expert_cls(self.env)
        self.last_obs = obs
        return {"obs": self.observation(obs)}

    def warning_count(self):
        data = self.env.sim.data._data
        return int(sum(w.number for w in data.warning))

    def run(self, n, next_action, render, record_states):
        np = self.np
        frames, actions, rewards, successes, states = [], [], [], [], []
        done = truncated = False
        obs = self.last_obs
        for i in range(n):
            if record_states:
                states.append(self.env.sim.get_state().flatten().tolist())
            action = np.asarray(next_action(i), dtype=np.float64)
            obs, reward, _, _ = self.env.step(action)
            if self.warning_count() > self.warnings:
                raise UnstableSimulation("MuJoCo reported an unstable simulation (NaN/Inf or huge accelerations) at step %d" % self.t)
            self.t += 1
            success = bool(self.env._check_success())
            if record_states:
                # A recorded observation is the observation *of the recorded state*, as
                # robomimic's reset_to(states[t]) reads it: kinematics recomputed from the new
                # qpos and every observable sampled now (robosuite samples them during the
                # substeps, up to one substep early). Rollouts keep robosuite's step() value,
                # as robomimic's env wrapper does; forward() leaves the dynamics unchanged.
                self.env.sim.forward()
                obs = self.env._get_observations(force_update=True)
            actions.append(action.tolist())
            rewards.append(float(reward))
            successes.append(success)
            last = i == n - 1
            done = success and self.stop_on_success
            truncated = self.t >= self.horizon
            stop = done or truncated
            if render == "every":
                frames.append(self.observation(obs))
            if stop or last:
                break
        self.last_obs = obs
        reply = {
            "obs": frames[-1] if render == "every" else self.observation(obs),
            "actions": actions, "rewards": rewards, "successes": successes,
            "done": done, "truncated": truncated and not done, "t": self.t,
        }
        if render == "every":
            reply["frames"] = frames
        if record_states:
            reply["states"] = states
        return reply

    def step(self, msg):
        chunk = msg["actions"]
        return self.run(len(chunk), lambda i: chunk[i], msg.get("render", "last"), bool(msg.get("record_states", False)))

    def expert_chunk(self, msg):
        if self.expert is None:
            raise ValueError("no scripted expert for this task")
        np = self.np
        rng = np.random.RandomState(int(msg.get("noise_seed", 0)) % (2**32))
        noise = float(msg.get("noise", 0.0))

        def next_action(_):
            a = self.expert.act()
            if noise > 0:
                a = a + rng.normal(0.0, noise, size=a.shape)
            return np.clip(a, -1.0, 1.0)

        return self.run(int(msg["n"]), next_action, msg.get("render", "last"), bool(msg.get("record_states", False)))

    def fault(self, msg):
        kind = msg["kind"]
        if kind == "raise":
            raise RuntimeError("injected failure")
        if kind == "hang":
            time.sleep(3600)
        if kind == "exit":
            os._exit(3)
        if kind == "unstable":
            self.env.sim.data.qvel[:] = 1e12
            return self.run(1, lambda i: self.np.zeros(self.env.action_dim), "last", False)
        raise ValueError("unknown fault %r" % kind)


def main():
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    worker = Worker()
    handlers = {
        "init": worker.init, "reset": worker.reset, "step": worker.step, "expert": worker.expert_chunk,
        "model_xml": lambda msg: {"xml": worker.env.sim.model.get_xml()}, "fault": worker.fault,
    }
    # Protocol messages get a private copy of the original stdout; fd 1 itself is pointed at
    # stderr, so anything MuJoCo's C code or a library prints cannot corrupt the protocol.
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            msg = json.loads(line)
            cmd = msg.get("cmd")
            if cmd == "close":
                break
            if cmd not in handlers:
                raise ValueError("unknown command %r" % cmd)
            if cmd != "init" and worker.env is None:
                raise ValueError("command %r before init" % cmd)
            reply = handlers[cmd](msg)
            reply["ok"] = True
        except Exception as e:  # reported to the Rust side, which decides what to do
            log(traceback.format_exc())
            reply = {"ok": False, "error": "%s: %s" % (type(e).__name__, e), "unstable": isinstance(e, UnstableSimulation)}
        out.write(json.dumps(reply) + "\n")
        out.flush()


if __name__ == "__main__":
    main()
