"""Memory-mapped state dicts (issue 16, finding 6): a T5 handed to ComfyUI as a dict must not be copied into process
memory beside the model it fills."""

from __future__ import annotations

import torch
from safetensors.torch import save_file

from tora_model.checkpoint_files import mapped_state_dict, read_state_dict


def _resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096


def test_mapped_safetensors_views_cost_no_memory_and_hold_the_file_values(tmp_path):
    path = tmp_path / "t5.safetensors"
    tensors = {
        f"encoder.block.{i}.weight": torch.randn(1024, 4096).to(torch.bfloat16) for i in range(8)
    }  # 64 MiB
    tensors["odd.bias"] = torch.arange(3, dtype=torch.uint8)  # 3 bytes: the next tensor's offset may misalign
    tensors["z.weight"] = torch.randn(5, 7)
    save_file(tensors, str(path))
    before = _resident_bytes()
    mapped = mapped_state_dict(path)
    copied_in = _resident_bytes() - before
    assert isinstance(mapped, dict) and set(mapped) == set(tensors)
    assert copied_in < 8 * 2**20, f"mapping the 64 MiB file made {copied_in} bytes resident"
    for name, tensor in tensors.items():
        assert torch.equal(mapped[name], tensor), name
    lazy = read_state_dict(path)
    assert torch.equal(lazy["z.weight"], mapped["z.weight"])


def test_zip_pickles_come_back_as_their_memory_map(tmp_path):
    path = tmp_path / "t5.pt"
    torch.save({"module": {"a.weight": torch.randn(64, 64)}}, path)
    mapped = mapped_state_dict(path)
    assert torch.equal(mapped["a.weight"], torch.load(path, weights_only=True)["module"]["a.weight"])
