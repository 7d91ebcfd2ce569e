"""The library of the per-pixel feedback toolkit (Ganeshan 2017, on BVLC Caffe).

One module or subpackage per concept; the command-line scripts in ``tools/`` are thin
wrappers around it (see DEVELOPING.md for the map and who may import whom). Importing any
module changes no process state, and Caffe itself is imported only when a function needs it.
"""
