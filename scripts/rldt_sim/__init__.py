"""Python side of rldt-vision's simulator bridge: environment construction from robomimic-style
env_args, rendering, and scripted experts with privileged state. Imported only by
scripts/sim_server.py (the one process that imports robosuite) and by the Python checks."""
