"""Estimated GPU time from the simulated run: a per-op roofline on named cards (an estimate, never a measurement).

For every op the simulated run sees on the GPU, time ≥ max(FLOPs / peak math rate, bytes read + written / memory
bandwidth); a stage's estimate is the sum over its ops. Peak rates are the vendors' dense bf16 tensor-core figures
with fp32 accumulation (what PyTorch's bf16 GEMMs and flash attention use) and the memory bandwidth of the card.
Real kernels reach roughly 50–75 % of these peaks, so a real step takes longer than the roofline: `plan` prints the
roofline and the roofline at `TYPICAL_EFFICIENCY`, both labelled as estimates. Host→device copies (block swap) are
timed at the effective PCIe rate: added to the step when synchronous, overlapped with compute when prefetched.
"""

from __future__ import annotations

from dataclasses import dataclass

TYPICAL_EFFICIENCY = 0.6  # share of the roofline that large bf16 GEMMs and flash attention typically reach


@dataclass(frozen=True)
class GPU:
    name: str
    memory_gib: float  # device memory (the marketing GB figure of these cards is GiB)
    bf16_tflops: float  # dense bf16 tensor math with fp32 accumulation, TFLOP/s
    bandwidth_gbs: float  # device memory bandwidth, GB/s
    pcie_gbs: float  # effective host→device rate from pinned memory, GB/s

    def op_seconds(self, flops: float, nbytes: float) -> float:
        return max(flops / (self.bf16_tflops * 1e12), nbytes / (self.bandwidth_gbs * 1e9))


# Vendor datasheet peaks (dense, no sparsity); PCIe as commonly measured from pinned memory.
GPUS = (
    GPU("H100 SXM", 80, 989.0, 3350.0, 50.0),  # PCIe 5 x16
    GPU("A100 80GB", 80, 312.0, 2039.0, 25.0),  # PCIe 4 x16
    GPU("RTX 4090", 24, 165.2, 1008.0, 25.0),  # Ada: 165.2 TFLOPS bf16 with fp32 accumulate
    GPU("RTX 3060 12GB", 12, 25.4, 360.0, 25.0),  # GA106: 28 SMs at 1.78 GHz, fp32 accumulate at half rate
)


def gpu_named(name: str) -> GPU:
    for gpu in GPUS:
        if gpu.name.lower().replace(" ", "") == name.lower().replace(" ", ""):
            return gpu
    raise KeyError(name)
