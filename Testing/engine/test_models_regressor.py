"""Stage-3 regressor R = {M_E, M_R}: CoAtNet relative-attention head, output scaling, encoder freezing."""

from __future__ import annotations

import pytest
import torch

from bmdgan.errors import InputError
from bmdgan.models import (
    BMDRegressor,
    CoAtNetHead,
    RelativeAttention,
    RelTransformerBlock,
    build_generator,
    build_regressor,
    count_parameters,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


IMAGE = (128, 64)  # (H, W); the head sees (32, 16)


@pytest.fixture(scope="module")
def generator():
    torch.manual_seed(0)
    return build_generator("hrformer-tiny-cpu")


def test_downsampling_block_halves_resolution_with_full_size_bias_table():
    block = RelTransformerBlock(24, 32, (9, 6), downsample=True, head_dim=16)
    assert block.out_size == (5, 3)
    assert block.attn.rel_bias.table.shape == ((2 * 5 - 1) * (2 * 3 - 1), 2)  # (2H-1)(2W-1) rows per head
    y = block(torch.randn(2, 24, 9, 6))
    assert y.shape == (2, 32, 5, 3)
    plain = RelTransformerBlock(32, 32, (5, 3))
    assert plain(y).shape == y.shape and plain.attn.rel_bias.table.shape == (9 * 5, 1)


def test_downsampling_pool_is_3x3_max_stride_2():
    block = RelTransformerBlock(4, 4, (4, 4), downsample=True, head_dim=4)
    x = torch.zeros(1, 4, 4, 4)
    x[0, :, 1, 1] = 7.0  # the max of the top-left 3x3 pooling window
    torch.testing.assert_close(block.pool(x)[0, :, 0, 0], torch.full((4,), 7.0))


def test_relative_attention_adds_the_bias_table_to_the_logits():
    torch.manual_seed(0)
    attn = RelativeAttention(8, 8, (3, 4), head_dim=4)
    with torch.no_grad():
        attn.qkv.weight[:16].zero_()  # q = k = 0: the logits are the relative bias alone
        attn.rel_bias.table.normal_()
    x = torch.randn(2, 12, 8)
    v = (x @ attn.qkv.weight[16:].T + attn.v_bias).reshape(2, 12, 2, 4).transpose(1, 2)
    expected = (attn.rel_bias().softmax(-1) @ v).transpose(1, 2).reshape(2, 12, 8)
    torch.testing.assert_close(attn(x), attn.proj(expected))


def test_head_rejects_other_map_sizes():
    head = CoAtNetHead(16, (8, 8), dims=(32, 64), depths=(1, 1))
    assert head(torch.randn(1, 16, 8, 8)).shape == (1, 1)
    with pytest.raises(InputError, match="built for"):
        head(torch.randn(1, 16, 16, 8))


def test_regressor_outputs_bmd_in_target_units(generator):
    regressor = build_regressor(generator, IMAGE, head="tiny-cpu", target_mean=0.759, target_std=0.151)
    with torch.no_grad():
        regressor.head.fc.weight.zero_()
        regressor.head.fc.bias.fill_(2.0)  # standardised output z = 2
        y = regressor(torch.randn(3, 1, *IMAGE))
    assert y.shape == (3, 1)
    torch.testing.assert_close(y, torch.full((3, 1), 0.759 + 2 * 0.151))
    assert set(regressor.state_dict()) >= {"target_mean", "target_std"}


def test_encoder_is_an_independent_copy(generator):
    regressor = build_regressor(generator, IMAGE, head="tiny-cpu")
    for (name, p), q in zip(generator.encoder.named_parameters(), regressor.encoder.parameters()):
        assert torch.equal(p, q) and p.data_ptr() != q.data_ptr(), name


def test_freeze_encoder(generator):
    torch.manual_seed(0)
    regressor = build_regressor(generator, IMAGE, head="tiny-cpu")
    regressor.train()
    regressor.freeze_encoder(True)
    assert not regressor.encoder.training and regressor.head.training
    regressor.train()  # stays frozen in eval mode
    assert not regressor.encoder.training
    regressor(torch.randn(2, 1, *IMAGE)).sum().backward()
    assert all(p.grad is None for p in regressor.encoder.parameters())
    head_params = list(regressor.head.parameters())
    assert all(p.grad is not None and p.grad.abs().max() > 0 for p in head_params)
    assert len(regressor.trainable_parameters()) == len(head_params)
    regressor.freeze_encoder(False)
    assert regressor.encoder.training
    assert all(p.requires_grad for p in regressor.encoder.parameters())
    regressor(torch.randn(2, 1, *IMAGE)).sum().backward()
    assert all(p.grad is not None for p in regressor.encoder.parameters())


def test_named_head_sizes(generator):
    small = build_regressor(generator, IMAGE, head="tiny-cpu")
    assert count_parameters(small.head) < 500_000
    with pytest.raises(InputError, match="coatnet-0"):
        build_regressor(generator, IMAGE, head="coatnet-9")
    assert isinstance(small, BMDRegressor)
