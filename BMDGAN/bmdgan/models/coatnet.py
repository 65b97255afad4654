"""Stage-3 regression head M_R: CoAtNet Transformer blocks with relative attention (paper Sec. 3.3, 4.2.7).

Dai et al. 2021 ("CoAtNet"), TFM_Rel blocks, pre-norm:

* relative attention over all tokens of the h x w map: softmax(q k^T / sqrt(d) + B[i - j]) v, with an
  input-independent learned bias table of (2h-1)(2w-1) rows per head (:mod:`.relpos`);
* the first block of a stage halves the resolution: x <- Proj(Pool(x)) + Attn(Pool(LN(x))), Pool = 3x3
  max-pool stride 2, Proj = 1x1 conv (CoAtNet's S3/S4 first blocks); the others: x <- x + Attn(LN(x));
* each block then does x <- x + FFN(LN(x)), FFN = Linear(C, 4C), GELU, Linear(4C, C).

Unlike CoAtNet (whose S3 sees a 1/8 map) the head takes the encoder's 1/4 representation: S3 runs at 1/8,
S4 at 1/16 of the image, then global average pooling, LayerNorm and a fully connected layer.
The bias tables fix the grid size, so the head is built for one input size (512x256 -> 1/4 = 128x64).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError
from .relpos import RelativePositionBias


def _half(size: tuple[int, int]) -> tuple[int, int]:
    """Grid size after a 3x3 stride-2 max-pool with padding 1 (ceil division)."""
    return (size[0] + 1) // 2, (size[1] + 1) // 2


class RelativeAttention(nn.Module):
    """Multi-head attention over all tokens of an h x w grid with a relative position bias.

    [B, N, C_in] (N = h * w, row-major) -> [B, N, C_out]; heads = C_out / head_dim.
    No key bias (a per-row constant that softmax cancels).
    """

    def __init__(self, dim_in: int, dim_out: int, grid: tuple[int, int], head_dim: int = 32):
        super().__init__()
        if dim_out % head_dim:
            raise ValueError(f"dim {dim_out} is not a multiple of head_dim {head_dim}")
        self.heads, self.dim_out = dim_out // head_dim, dim_out
        self.qkv = nn.Linear(dim_in, 3 * dim_out, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(dim_out))
        self.v_bias = nn.Parameter(torch.zeros(dim_out))
        self.proj = nn.Linear(dim_out, dim_out)
        self.rel_bias = RelativePositionBias(self.heads, *grid)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        bias = torch.cat([self.q_bias, torch.zeros_like(self.v_bias), self.v_bias])
        q, k, v = F.linear(x, self.qkv.weight, bias).reshape(b, n, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=self.rel_bias().unsqueeze(0).to(q.dtype))
        return self.proj(out.transpose(1, 2).reshape(b, n, self.dim_out))


class RelTransformerBlock(nn.Module):
    """CoAtNet TFM_Rel block. [B, C_in, h, w] -> [B, C_out, h', w'] (h', w' halved when ``downsample``)."""

    def __init__(
        self,
        dim_in: int,
        dim_out: int,
        in_size: tuple[int, int],
        downsample: bool = False,
        head_dim: int = 32,
        mlp_ratio: int = 4,
    ):
        super().__init__()
        self.in_size = tuple(in_size)
        self.out_size = _half(self.in_size) if downsample else self.in_size
        self.pool = nn.MaxPool2d(3, 2, 1) if downsample else nn.Identity()
        self.shortcut = nn.Conv2d(dim_in, dim_out, 1) if (downsample or dim_in != dim_out) else nn.Identity()
        self.norm1 = nn.LayerNorm(dim_in)
        self.attn = RelativeAttention(dim_in, dim_out, self.out_size, head_dim)
        self.norm2 = nn.LayerNorm(dim_out)
        hidden = mlp_ratio * dim_out
        self.ffn = nn.Sequential(nn.Linear(dim_out, hidden), nn.GELU(), nn.Linear(hidden, dim_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) != self.in_size:
            raise InputError(
                None,
                f"regression head built for a {self.in_size} map, got {tuple(x.shape[-2:])}",
                "build the regressor with the image size used for training",
            )
        shortcut = self.shortcut(self.pool(x))
        y = self.pool(self.norm1(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2))
        b, _, h, w = shortcut.shape
        x = shortcut.flatten(2).transpose(1, 2) + self.attn(y.flatten(2).transpose(1, 2))  # [B, N, C_out]
        x = x + self.ffn(self.norm2(x))
        return x.transpose(1, 2).reshape(b, -1, h, w)


class CoAtNetHead(nn.Module):
    """M_R: stages of TFM_Rel blocks (each starting with a downsampling block), GAP, LayerNorm, Linear.

    [B, in_channels, *in_size] -> [B, num_outputs] (standardised units; :class:`~.regressor.BMDRegressor`
    rescales). Defaults = CoAtNet-0's S3 (5 blocks, 384) and S4 (2 blocks, 768), head dim 32.
    """

    def __init__(
        self,
        in_channels: int,
        in_size: tuple[int, int],
        dims: Sequence[int] = (384, 768),
        depths: Sequence[int] = (5, 2),
        head_dim: int = 32,
        num_outputs: int = 1,
    ):
        super().__init__()
        blocks, c, size = [], in_channels, tuple(in_size)
        for dim, depth in zip(dims, depths):
            for i in range(depth):
                block = RelTransformerBlock(c, dim, size, downsample=(i == 0), head_dim=head_dim)
                blocks.append(block)
                c, size = dim, block.out_size
        self.blocks = nn.Sequential(*blocks)
        self.norm = nn.LayerNorm(c)
        self.fc = nn.Linear(c, num_outputs)
        self.in_size, self.num_outputs = tuple(in_size), num_outputs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.norm(self.blocks(x).mean(dim=(2, 3))))
