"""Learned 2D relative position bias shared by HRFormer window attention and CoAtNet relative attention.

For a grid of h x w tokens (flattened row-major, token n = row * w + col) the attention logit between a
query at (r_q, c_q) and a key at (r_k, c_k) gets a learned bias B[r_q - r_k, c_q - c_k], one table per head.
The offsets range over (2h - 1) x (2w - 1) values, so the table has (2h-1)(2w-1) rows: the bias depends on
the relative offset only, never on the input (CoAtNet's "input-independent relative attention", Dai et al. 2021).
"""

from __future__ import annotations

import torch
from torch import nn


def relative_position_index(height: int, width: int) -> torch.Tensor:
    """Long tensor [N, N] (N = height * width): row of the bias table for each (query, key) pair.

    Index = (dr + height - 1) * (2 * width - 1) + (dc + width - 1) with (dr, dc) = query - key offset,
    a bijection from the (2h-1)(2w-1) possible offsets to table rows.
    """
    rows, cols = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    rows, cols = rows.flatten(), cols.flatten()
    d_row = rows[:, None] - rows[None, :] + (height - 1)
    d_col = cols[:, None] - cols[None, :] + (width - 1)
    return d_row * (2 * width - 1) + d_col


class RelativePositionBias(nn.Module):
    """Learned bias table [(2h-1)(2w-1), heads]; ``forward()`` returns the bias [heads, N, N] for an h x w grid."""

    def __init__(self, num_heads: int, height: int, width: int):
        super().__init__()
        self.num_heads, self.height, self.width = num_heads, height, width
        self.table = nn.Parameter(torch.zeros((2 * height - 1) * (2 * width - 1), num_heads))
        nn.init.trunc_normal_(self.table, std=0.02)
        # Derived from the grid size, so it is not saved in checkpoints.
        self.register_buffer("index", relative_position_index(height, width), persistent=False)

    def forward(self) -> torch.Tensor:
        n = self.height * self.width
        return self.table[self.index.reshape(-1)].reshape(n, n, self.num_heads).permute(2, 0, 1)

    def extra_repr(self) -> str:
        return f"heads={self.num_heads}, grid={self.height}x{self.width}"
