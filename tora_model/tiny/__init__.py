"""The tiny Tora's own tooling: everything that makes, trains, measures and demonstrates the CPU-sized demo model.

The library a ComfyUI user runs is the top level of `tora_model`; nothing there imports this subpackage except the
command line (`python -m tora_model demo`, and `train` / `evaluate` / `calibrate-cache`, which forward to the
modules here). Here: `synthetic` (procedural clips) and `path_families` (their paths), `train` (`python -m
tora_model.tiny.train`), `evaluate` (trajectory error by path family, `python -m tora_model.tiny.evaluate`),
`calibrate_cache` (the shipped step-cache fit), `demo_trained` (the `demo` run with the shipped weights) and
`demo_models` (the tiny models with random weights of `demo --weights random` and of the tests). The weights
themselves live in `models/tiny_tora/`.
"""
