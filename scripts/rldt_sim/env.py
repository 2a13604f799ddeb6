"""Build a robosuite environment from robomimic-style env_args, render only what is asked.

The env is built with the recorded env_kwargs except that robosuite's own camera observables
are turned off (use_camera_obs=False): cameras are rendered here, on demand, so intermediate
steps of an action chunk cost no render. Images come back upright (OpenGL rows flipped once,
here) as u8 HWC, byte-identical to robosuite's camera observables under the "opencv" image
convention.
"""
import numpy as np

# robomimic's names for robosuite 1.4 tasks, and the Rust side's short names.
TASKS = {
    "lift": "Lift",
    "can": "PickPlaceCan",
    "square": "NutAssemblySquare",
    "transport": "TwoArmTransport",
}

# Robosuite's concatenated observation groups, not robomimic keys.
SKIP_KEYS = ("robot0_proprio-state", "robot1_proprio-state")


def make_env(env_args, cameras, image_size):
    import robosuite

    kwargs = dict(env_args["env_kwargs"])
    kwargs.update(
        has_renderer=False,
        has_offscreen_renderer=bool(cameras),
        use_camera_obs=False,
        ignore_done=True,
        hard_reset=False,
        reward_shaping=False,
    )
    for key in ("camera_names", "camera_heights", "camera_widths", "camera_depths", "render_gpu_device_id"):
        kwargs.pop(key, None)
    env = robosuite.make(env_args["env_name"], **kwargs)
    # As robomimic's EnvRobosuite does: joint positions and end-effector velocities are
    # observed too, so the observation keys are exactly those of robomimic's env.
    for name in env.observation_names:
        if "joint_pos" in name or "eef_vel" in name:
            env.modify_observable(observable_name=name, attribute="active", modifier=True)
    return env


def render(env, camera, size):
    """Upright u8 HWC image of `camera` at size x size."""
    image = env.sim.render(camera_name=camera, width=size, height=size, depth=False)
    return np.ascontiguousarray(image[::-1])


def lowdim(obs):
    """robomimic's low-dim keys from a robosuite observation dict (object-state -> object)."""
    out = {}
    for key, value in obs.items():
        if key in SKIP_KEYS or key.endswith("_image") or key.endswith("_depth"):
            continue
        name = "object" if key == "object-state" else key
        out[name] = np.asarray(value, dtype=np.float64).reshape(-1)
    return out
