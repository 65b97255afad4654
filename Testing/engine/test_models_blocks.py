"""Building blocks: relative position bias indexing, local-window attention padding, GroupNorm groups."""

from __future__ import annotations

import itertools

import pytest
import torch

from bmdgan.models.hrformer import LocalWindowAttention
from bmdgan.models.norm import group_norm, num_groups
from bmdgan.models.relpos import RelativePositionBias, relative_position_index

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_relative_index_depends_only_on_offset_and_is_a_bijection():
    h, w = 3, 5
    index = relative_position_index(h, w)
    assert index.shape == (h * w, h * w)
    seen: dict[tuple[int, int], int] = {}
    for q, k in itertools.product(range(h * w), repeat=2):
        offset = (q // w - k // w, q % w - k % w)
        value = int(index[q, k])
        assert seen.setdefault(offset, value) == value  # same offset -> same table row
    assert len(seen) == (2 * h - 1) * (2 * w - 1)
    assert sorted(seen.values()) == list(range((2 * h - 1) * (2 * w - 1)))  # distinct offsets -> distinct rows


def test_relative_bias_reads_the_row_of_the_offset():
    h, w = 4, 3
    bias_module = RelativePositionBias(num_heads=2, height=h, width=w)
    with torch.no_grad():
        bias_module.table.copy_(torch.arange(bias_module.table.numel(), dtype=torch.float32).reshape(-1, 2))
    bias = bias_module()
    assert bias.shape == (2, h * w, h * w)
    # query (row 3, col 0), key (row 1, col 2): offset (2, -2) -> row (2 + 3) * 5 + (-2 + 2) = 25
    q, k = 3 * w + 0, 1 * w + 2
    assert bias[0, q, k] == bias_module.table[25, 0] and bias[1, q, k] == bias_module.table[25, 1]
    # two query positions with the same offset to their keys get the same bias
    q2, k2 = 2 * w + 0, 0 * w + 2
    assert torch.equal(bias[:, q, k], bias[:, q2, k2])
    assert not torch.equal(bias[:, q, k], bias[:, q, q2])


def _reference_window_attention(attn: LocalWindowAttention, x: torch.Tensor) -> torch.Tensor:
    """Attention computed window by window on the valid (unpadded) tokens only, straight from the formula."""
    b, h, w, c = x.shape
    ws, heads = attn.window, attn.num_heads
    d = c // heads
    table, out = attn.rel_bias.table, torch.zeros_like(x)
    wq, wk, wv = attn.qkv.weight.split(c)
    for r0, c0 in itertools.product(range(0, h, ws), range(0, w, ws)):
        pos = [(r, cc) for r in range(r0, min(r0 + ws, h)) for cc in range(c0, min(c0 + ws, w))]
        tokens = torch.stack([x[:, r, cc] for r, cc in pos], dim=1)  # [B, n, C]
        q = (tokens @ wq.T + attn.q_bias).reshape(b, -1, heads, d).transpose(1, 2)
        k = (tokens @ wk.T).reshape(b, -1, heads, d).transpose(1, 2)
        v = (tokens @ wv.T + attn.v_bias).reshape(b, -1, heads, d).transpose(1, 2)
        rel = torch.tensor(
            [[((pr - kr) + ws - 1) * (2 * ws - 1) + (pc - kc) + ws - 1 for kr, kc in pos] for pr, pc in pos]
        )
        logits = q @ k.transpose(-1, -2) / d**0.5 + table[rel].permute(2, 0, 1)
        y = (logits.softmax(-1) @ v).transpose(1, 2).reshape(b, -1, c) @ attn.proj.weight.T + attn.proj.bias
        for i, (r, cc) in enumerate(pos):
            out[:, r, cc] = y[:, i]
    return out


@pytest.mark.parametrize("size", [(8, 12), (10, 13), (3, 5)])
def test_window_attention_pads_and_unpads(size):
    torch.manual_seed(0)
    attn = LocalWindowAttention(dim=8, num_heads=2, window_size=4)
    with torch.no_grad():
        attn.q_bias.normal_()
        attn.v_bias.normal_()
    x = torch.randn(2, *size, 8)
    y = attn(x)
    assert y.shape == x.shape
    torch.testing.assert_close(y, _reference_window_attention(attn, x), atol=1e-5, rtol=1e-4)


def test_window_attention_is_local():
    torch.manual_seed(1)
    attn = LocalWindowAttention(dim=8, num_heads=2, window_size=4)
    x = torch.randn(1, 10, 13, 8)
    x2 = x.clone()
    x2[0, 9, 12] += 5.0  # a token of the last (padded) window
    changed = (attn(x2) - attn(x)).abs().sum(-1)[0] > 1e-6
    assert changed[8:, 12:].all()
    assert not changed[:8].any() and not changed[:, :12].any()


def test_group_norm_groups():
    assert num_groups(64) == 16 and num_groups(2048) == 32
    assert num_groups(18) == 3 and num_groups(78) == 13 and num_groups(8) == 2 and num_groups(3) == 1
    norm = group_norm(72)
    assert isinstance(norm, torch.nn.GroupNorm) and norm.num_groups == 18 and norm.num_channels == 72
