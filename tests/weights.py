"""Seeded random weights for tests that compare a module with a reference holding the same tensors.

Default initialisation leaves many layers at zero or identity (adaLN, fusers, BatchNorm statistics), which would let a
wrong wiring pass; these values make every tensor matter while keeping activations O(1).
"""

import torch

NORM_SCALES = (".norm.weight", "norm_q.weight", "norm_k.weight", "norm_final.weight")


def randomise(module: torch.nn.Module, seed: int = 0, vector_scale: float = 0.3) -> dict[str, torch.Tensor]:
    """Replace every float parameter and buffer in place; returns a detached copy of the new state.

    Matrices and kernels get unit-variance outputs (noise / sqrt(fan-in)), BatchNorm running variances |noise| + 0.5,
    the layer-norm scales named in NORM_SCALES 1 + 0.2·noise, every other vector vector_scale·noise.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in module.state_dict().items():
            if not tensor.is_floating_point():
                continue
            noise = torch.randn(tensor.shape, generator=gen)
            if name.endswith("running_var"):
                noise = noise.abs() + 0.5
            elif name.endswith(NORM_SCALES):
                noise = 1 + 0.2 * noise
            elif tensor.ndim >= 2:
                noise = noise / tensor[0].numel() ** 0.5
            else:
                noise = vector_scale * noise
            tensor.copy_(noise)
    return {k: v.clone() for k, v in module.state_dict().items()}
