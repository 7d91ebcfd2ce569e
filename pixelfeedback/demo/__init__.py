"""The main job: the whole thesis on generated data, on a CPU (tools/demo.py)."""
