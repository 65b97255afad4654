"""HRFormer backbone (Yuan et al., NeurIPS 2021, "HRFormer: High-Resolution Transformer for Dense Prediction").

The multi-resolution layout (stem, bottleneck stage 1, stages of 2/3/4 parallel branches with fusion) is
shared with HRNet (:mod:`.hrnet`); HRFormer replaces the residual blocks of the branches by Transformer
blocks made of

* local-window multi-head self-attention: the map is cut into non-overlapping w x w windows (padded at
  the bottom/right when not divisible; padded keys are masked out), attention inside each window with a
  learned relative position bias table of (2w-1)^2 rows per head;
* a depthwise-convolution FFN: 1x1 conv expand, 3x3 depthwise conv, 1x1 conv project (GN + GELU), which
  exchanges information between neighbouring windows.

LayerNorm is used before attention and FFN (pre-norm, as HRFormer); every other norm is GroupNorm
(paper Sec. 4.2.7). The published T/S/B configurations are those of the official ``cls/configs/hrt/*.yaml``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .hrnet import Bottleneck, HighResolutionBackbone, HighResolutionConfig
from .norm import group_norm
from .relpos import RelativePositionBias


class LocalWindowAttention(nn.Module):
    """Multi-head self-attention inside non-overlapping windows. [B, H, W, C] -> [B, H, W, C].

    The query/key/value projection has a query and a value bias but no key bias: a key bias adds the
    same value to every logit of a query row, which softmax ignores (it would never receive a gradient).
    """

    def __init__(self, dim: int, num_heads: int, window_size: int):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads, self.window = num_heads, window_size
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(dim))
        self.v_bias = nn.Parameter(torch.zeros(dim))
        self.proj = nn.Linear(dim, dim)
        self.rel_bias = RelativePositionBias(num_heads, window_size, window_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        ws = self.window
        pad_h, pad_w = (-h) % ws, (-w) % ws
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))  # zero rows/cols at the bottom/right
        hp, wp = h + pad_h, w + pad_w
        windows = _partition(x, ws)  # [B * nW, ws*ws, C]
        qkv = F.linear(windows, self.qkv.weight, torch.cat([self.q_bias, torch.zeros_like(self.v_bias), self.v_bias]))
        q, k, v = qkv.reshape(windows.shape[0], ws * ws, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        bias = self.rel_bias().unsqueeze(0).to(q.dtype)  # [1, heads, N, N]
        if pad_h or pad_w:
            bias = bias + _padding_mask(b, h, w, ws, x.device, q.dtype)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)  # [B*nW, heads, N, C/heads]
        out = self.proj(out.transpose(1, 2).reshape(windows.shape[0], ws * ws, c))
        return _merge(out, b, hp, wp, ws)[:, :h, :w, :]


def _partition(x: torch.Tensor, ws: int) -> torch.Tensor:
    """[B, H, W, C] (H, W multiples of ws) -> [B * (H/ws) * (W/ws), ws * ws, C], windows row-major."""
    b, h, w, c = x.shape
    x = x.reshape(b, h // ws, ws, w // ws, ws, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, ws * ws, c)


def _merge(windows: torch.Tensor, b: int, h: int, w: int, ws: int) -> torch.Tensor:
    """Inverse of :func:`_partition`: [B * nW, ws * ws, C] -> [B, H, W, C]."""
    c = windows.shape[-1]
    x = windows.reshape(b, h // ws, w // ws, ws, ws, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h, w, c)


def _padding_mask(b: int, h: int, w: int, ws: int, device, dtype) -> torch.Tensor:
    """Additive mask [B * nW, 1, 1, N]: -inf for keys in the bottom/right padding, 0 for real tokens.
    Every window keeps its top-left token, so no row is fully masked."""
    hp, wp = h + (-h) % ws, w + (-w) % ws
    padded = torch.ones(1, hp, wp, 1, dtype=torch.bool, device=device)
    padded[:, :h, :w] = False
    padded_keys = _partition(padded, ws)[..., 0]  # [nW, N]
    mask = torch.zeros(padded_keys.shape, dtype=dtype, device=device).masked_fill(padded_keys, float("-inf"))
    return mask[:, None, None, :].repeat(b, 1, 1, 1)


class ConvFFN(nn.Module):
    """HRFormer FFN: 1x1 conv (C -> rC) + GN + GELU, 3x3 depthwise + GN + GELU, 1x1 conv (rC -> C) + GN.
    [B, C, H, W] -> [B, C, H, W]. No activation after the projection, so the residual update stays signed."""

    def __init__(self, dim: int, mlp_ratio: float):
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.body = nn.Sequential(
            nn.Conv2d(dim, hidden, 1, bias=False),
            group_norm(hidden),
            nn.GELU(),
            nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden, bias=False),
            group_norm(hidden),
            nn.GELU(),
            nn.Conv2d(hidden, dim, 1, bias=False),
            group_norm(dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class HRFormerBlock(nn.Module):
    """x + Attn(LN(x)), then x + FFN(LN(x)). [B, C, H, W] -> [B, C, H, W]."""

    def __init__(self, dim: int, num_heads: int, window_size: int, mlp_ratio: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = LocalWindowAttention(dim, num_heads, window_size)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.ffn = ConvFFN(dim, mlp_ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = x.permute(0, 2, 3, 1)  # channels last for LayerNorm / Linear
        t = t + self.attn(self.norm1(t))
        return t.permute(0, 3, 1, 2) + self.ffn(self.norm2(t).permute(0, 3, 1, 2))


@dataclass(frozen=True)
class HRFormerConfig(HighResolutionConfig):
    """HighResolutionConfig plus the Transformer settings per branch."""

    heads: tuple[int, int, int, int] = (1, 2, 4, 8)
    mlp_ratios: tuple[float, float, float, float] = (4, 4, 4, 4)
    window_size: int = 7


HRFORMER_CONFIGS: dict[str, HRFormerConfig] = {
    # Official HRFormer cls/configs/hrt/hrt_{tiny,small,base}.yaml: stage 1 = 2 bottlenecks of 64 planes,
    # 2 blocks per branch per module, window 7, MLP ratio 4.
    "t": HRFormerConfig(channels=(18, 36, 72, 144), modules=(1, 3, 2), heads=(1, 2, 4, 8)),
    "s": HRFormerConfig(channels=(32, 64, 128, 256), modules=(1, 4, 2), heads=(1, 2, 4, 8)),
    "b": HRFormerConfig(channels=(78, 156, 312, 624), modules=(1, 4, 2), heads=(2, 4, 8, 16)),
    # Ours, for 2-core CPU training at 128x256 / 256x512: one block per branch, one module per stage,
    # narrow stem/stage 1, MLP ratio 2, window 8 (divides the 1/4..1/32 maps of 256x512 exactly).
    "tiny-cpu": HRFormerConfig(
        channels=(16, 32, 64, 128),
        modules=(1, 1, 1),
        blocks=1,
        stem_channels=16,
        stage1_planes=8,
        stage1_blocks=1,
        heads=(1, 2, 4, 8),
        mlp_ratios=(2, 2, 2, 2),
        window_size=8,
    ),
}


def hrformer_backbone(size: str | HRFormerConfig, in_channels: int = 1) -> HighResolutionBackbone:
    """HRFormer backbone by size name ('tiny-cpu', 't', 's', 'b') or config. [B, C_in, H, W] -> 4 branch maps."""
    config = HRFORMER_CONFIGS[size] if isinstance(size, str) else size

    def make_block(branch: int, channels: int) -> nn.Module:
        return HRFormerBlock(channels, config.heads[branch], config.window_size, config.mlp_ratios[branch])

    return HighResolutionBackbone(config, make_block, separable_fuse=True, in_channels=in_channels)


class HRFormerClassifier(nn.Module):
    """HRFormer with the official ImageNet classification head; used to check our parameter counts against
    the published model sizes (HRFormer paper, ImageNet table: T 8.0M, S 13.5M, B 50.3M), which include it.

    Head (official ``_make_head``): per branch one depthwise bottleneck raising C_i to 128/256/512/1024,
    depthwise-separable stride-2 convs summing the branches coarse-ward, 1x1 conv to 2048, global average
    pooling, Linear(2048, classes). [B, 3, H, W] -> [B, classes].
    """

    HEAD_PLANES = (32, 64, 128, 256)

    def __init__(self, size: str | HRFormerConfig, in_channels: int = 3, num_classes: int = 1000):
        super().__init__()
        self.backbone = hrformer_backbone(size, in_channels)
        widths = [p * Bottleneck.expansion for p in self.HEAD_PLANES]
        self.incre = nn.ModuleList(
            Bottleneck(c, p, depthwise=True) for c, p in zip(self.backbone.out_channels, self.HEAD_PLANES)
        )
        self.down = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(a, a, 3, 2, 1, groups=a),
                group_norm(a),
                nn.Conv2d(a, b, 1),
                group_norm(b),
                nn.ReLU(inplace=True),
            )
            for a, b in zip(widths[:-1], widths[1:])
        )
        self.final = nn.Sequential(nn.Conv2d(widths[-1], 2048, 1), group_norm(2048), nn.ReLU(inplace=True))
        self.classifier = nn.Linear(2048, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xs = self.backbone(x)
        y = self.incre[0](xs[0])
        for i, down in enumerate(self.down):
            y = self.incre[i + 1](xs[i + 1]) + down(y)
        return self.classifier(self.final(y).mean(dim=(2, 3)))


def count_parameters(module: nn.Module) -> int:
    """Number of learnable scalars (buffers such as relative-position indices are not counted)."""
    return sum(p.numel() for p in module.parameters())
