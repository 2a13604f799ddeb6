"""The one name robomimic 0.3.0 takes from mujoco-py."""


class MujocoException(Exception):
    pass
