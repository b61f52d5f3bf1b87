"""Joint [text; video] self-attention of the CogVideoX-5B block, and the one place attention is computed.

Source: `tora_spec.md` §5 (attention row): q/k/v projections with bias, per-head LayerNorm on q and k for all tokens,
3-D RoPE on the video tokens only, softmax attention with scale 1/√head_dim and no mask (text padding is attended),
output projection `to_out.0`. Layouts: tokens `[B, S, D]` with S = L text + N video tokens; heads
`[B, heads, S, head_dim]`.

`attention(q, k, v)` is the default kernel (PyTorch SDPA). Another kernel with the same signature — e.g. ComfyUI's
attention choice — is handed to `build_transformer(..., attention_fn=...)` or per call to `ToraTransformer.forward`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from .config import ToraConfig

# (q, k, v) each [B, heads, S, head_dim] -> [B, S, heads·head_dim]
AttentionFn = Callable[[Tensor, Tensor, Tensor], Tensor]


def attention(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """Unmasked scaled-dot-product attention: q, k, v `[B, heads, S, d]` → `[B, S, heads·d]`."""
    out = F.scaled_dot_product_attention(q, k, v)  # [B, heads, S, d]
    return rearrange(out, "b h s d -> b s (h d)")


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor, out: Tensor | None = None) -> Tensor:
    """Rotate interleaved channel pairs: (a, b) ↦ (a·cos − b·sin, b·cos + a·sin). x `[B, N, heads, d]`, tables `[N, d]`.

    `out` (may be x itself or a view of it) receives the result without an intermediate copy.
    """
    a, b = x.unflatten(-1, (-1, 2)).unbind(-1)  # [B, N, heads, d/2] each
    rotated = torch.stack([-b, a], dim=-1).flatten(-2)  # [B, N, heads, d]
    return torch.addcmul(x * cos[:, None], rotated, sin[:, None], out=out)


class JointAttention(nn.Module):
    """`attn1`: to_q / to_k / to_v / to_out.0 (all with bias) and per-head norm_q / norm_k."""

    def __init__(self, config: ToraConfig, device=None, dtype=None) -> None:
        super().__init__()
        factory = dict(device=device, dtype=dtype)
        hidden = config.hidden_dim
        self.num_heads = config.num_heads
        self.to_q = nn.Linear(hidden, hidden, **factory)
        self.to_k = nn.Linear(hidden, hidden, **factory)
        self.to_v = nn.Linear(hidden, hidden, **factory)
        self.norm_q = nn.LayerNorm(config.head_dim, eps=config.qk_norm_eps, **factory)
        self.norm_k = nn.LayerNorm(config.head_dim, eps=config.qk_norm_eps, **factory)
        self.to_out = nn.ModuleList([nn.Linear(hidden, hidden, **factory)])

    def forward(self, x: Tensor, rope: tuple[Tensor, Tensor], attention_fn: AttentionFn) -> Tensor:
        """x `[B, L + N, D]` (text first); rope tables `[N, head_dim]` in x's dtype → `[B, L + N, D]`."""
        q = self._heads_with_rope(self.norm_q(self._heads(self.to_q(x))), rope)  # [B, S, heads, d]
        k = self._heads_with_rope(self.norm_k(self._heads(self.to_k(x))), rope)  # [B, S, heads, d]
        v = self._heads(self.to_v(x))  # [B, S, heads, d]
        out = attention_fn(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))  # [B, S, D]
        return self.to_out[0](out)

    def _heads(self, x: Tensor) -> Tensor:
        return x.unflatten(-1, (self.num_heads, -1))  # [B, S, heads, d]

    @staticmethod
    def _heads_with_rope(x: Tensor, rope: tuple[Tensor, Tensor]) -> Tensor:
        # x is this call's own normalised tensor, so its video rows are rotated in place.
        num_video = rope[0].shape[0]
        video = x[:, -num_video:]  # [B, N, heads, d] view
        # out= records no autograd history, and torch.compile cannot trace out= into a strided view
        if x.requires_grad or torch.compiler.is_compiling():
            x[:, -num_video:] = apply_rope(video, *rope)
        else:  # inference: write straight into the rows (the final addcmul reads only temporaries)
            apply_rope(video, *rope, out=video)
        return x
