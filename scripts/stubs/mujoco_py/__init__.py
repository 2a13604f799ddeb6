"""Stand-in for mujoco-py, which cannot be installed here. robomimic 0.3.0 imports it at the
top of robomimic/envs/env_robosuite.py (fixed upstream after that release) and uses one name
from it, mujoco_py.builder.MujocoException. Put this directory on PYTHONPATH for robomimic."""
