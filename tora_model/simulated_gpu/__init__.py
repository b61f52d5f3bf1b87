"""The real Tora pipeline on a simulated CUDA GPU (fake tensors: shapes, dtypes, devices, no storage), measured.

`fake_cuda` makes fake `cuda` tensors work on a CPU-only torch build; `accounting` measures device memory, FLOPs and
host↔device traffic and raises on device mixes, host syncs and fp32 promotions in the step loop; `chain` runs one
generation stage by stage as the nodes do; `roofline` turns the counts into per-card time estimates; `plan` prints
the table and recommends Load Tora Model settings for a card (`python -m tora_model plan`).
"""
