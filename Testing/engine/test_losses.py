"""Losses on known inputs: gradient correlation (Eq. 6), feature matching (Eq. 2-3), L1 (Eq. 4), adversarial
(LSGAN / log form), combined decomposition loss (Eq. 7) and the stage-3 sample weights (Eq. 9-11)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bmdgan.losses import (
    DecompositionLoss,
    discriminator_adversarial_loss,
    feature_matching_loss,
    generator_adversarial_loss,
    gradient_correlation,
    gradient_correlation_loss,
    l1_loss,
    sample_weights,
    weighted_l1_loss,
)


def _textured(batch: int = 2) -> torch.Tensor:
    torch.manual_seed(0)
    return torch.rand(batch, 1, 24, 20)


def test_gc_of_an_image_with_itself_is_two():
    image = _textured()
    torch.testing.assert_close(gradient_correlation(image, image), torch.full((2,), 2.0))
    assert gradient_correlation_loss(image, image).item() == pytest.approx(0.0, abs=1e-5)
    # NCC ignores intensity scale and offset
    torch.testing.assert_close(gradient_correlation(3 * image + 1, image), torch.full((2,), 2.0))


def test_gc_of_an_image_with_its_negative_is_minus_two():
    image = _textured()
    torch.testing.assert_close(gradient_correlation(-image, image), torch.full((2,), -2.0))
    assert gradient_correlation_loss(-image, image).item() == pytest.approx(2.0, abs=1e-5)


def test_gc_of_unrelated_images_is_near_zero_and_bounded():
    torch.manual_seed(1)
    a, b = torch.rand(4, 1, 64, 64), torch.rand(4, 1, 64, 64)
    gc = gradient_correlation(a, b)
    assert gc.abs().max() < 0.2


def test_gc_of_constant_images_is_finite_with_finite_gradients():
    fake = torch.full((2, 1, 16, 16), 0.5, requires_grad=True)
    for target in (torch.full((2, 1, 16, 16), 0.5), _textured()[:, :, :16, :16]):
        gc = gradient_correlation(fake, target)
        torch.testing.assert_close(gc, torch.zeros(2))
        loss = gradient_correlation_loss(fake, target)
        assert loss.item() == pytest.approx(1.0)
        loss.backward()
        assert torch.isfinite(fake.grad).all()
        fake.grad = None


def test_gc_uses_both_directions():
    # vertical stripes: only x-gradients; the y-gradients are all zero, so NCC_y = 0 and GC = 1
    stripes = torch.arange(12.0).repeat(10, 1)[None, None] % 3
    assert gradient_correlation(stripes, stripes).item() == pytest.approx(1.0, abs=1e-5)


def _features(values: list[float], scales: int = 3) -> list[list[torch.Tensor]]:
    """Fake discriminator output: 4 intermediate maps of the given constants, then a logit map of 0."""
    return [[torch.full((1, 2, 3, 3), v) for v in values] + [torch.zeros(1, 1, 2, 2)] for _ in range(scales)]


def test_feature_matching_identical_is_zero_and_shift_is_known():
    real = _features([1.0, 2.0, 3.0, 4.0])
    assert feature_matching_loss(_features([1.0, 2.0, 3.0, 4.0]), real).item() == 0.0
    # every element of every intermediate layer shifted by 0.25: per scale 4 layers x 0.25 = 1.0; average over scales
    shifted = _features([1.25, 2.25, 3.25, 4.25])
    assert feature_matching_loss(shifted, real).item() == pytest.approx(1.0)
    # a shift on the logits alone does not count
    logits_only = [[*s[:-1], s[-1] + 7.0] for s in real]
    assert feature_matching_loss(logits_only, real).item() == 0.0


def test_feature_matching_detaches_real_features():
    real = [[torch.ones(1, 2, 3, 3, requires_grad=True), torch.zeros(1, 1, 2, 2)]]
    fake = [[torch.zeros(1, 2, 3, 3, requires_grad=True), torch.zeros(1, 1, 2, 2)]]
    feature_matching_loss(fake, real).backward()
    assert real[0][0].grad is None and fake[0][0].grad is not None


def test_l1():
    assert l1_loss(torch.tensor([[1.0, -2.0]]), torch.zeros(1, 2)).item() == pytest.approx(1.5)


def test_adversarial_losses_known_values():
    zeros = [[torch.zeros(1, 1, 4, 4)] for _ in range(3)]
    ones = [[torch.ones(1, 1, 4, 4)] for _ in range(3)]
    # LSGAN: perfect D -> 0; logits 0 everywhere -> per scale 0.5 * (1 + 0), summed over 3 scales
    assert discriminator_adversarial_loss(ones, zeros).item() == 0.0
    assert discriminator_adversarial_loss(zeros, zeros).item() == pytest.approx(1.5)
    assert generator_adversarial_loss(ones).item() == 0.0
    assert generator_adversarial_loss(zeros).item() == pytest.approx(3.0)
    # log form (Eq. 1): logits 0 = probability 1/2 -> log 2 per term
    assert discriminator_adversarial_loss(zeros, zeros, mode="bce").item() == pytest.approx(3 * math.log(2))
    assert generator_adversarial_loss(zeros, mode="bce").item() == pytest.approx(3 * math.log(2))
    with pytest.raises(ValueError):
        generator_adversarial_loss(zeros, mode="hinge")


def test_decomposition_loss_combines_with_paper_weights():
    criterion = DecompositionLoss()
    assert (criterion.lambda_l1, criterion.lambda_gc, criterion.lambda_fm) == (100.0, 1.0, 10.0)
    target = _textured()
    fake = target + 0.1
    pred_real, pred_fake = _features([1.0, 1.0, 1.0, 1.0]), _features([1.5, 1.0, 1.0, 1.0])
    total, parts = criterion.generator_loss(fake, target, pred_fake, pred_real)
    assert parts["l1"].item() == pytest.approx(0.1, abs=1e-6)
    assert parts["gc"].item() == pytest.approx(0.0, abs=1e-5)  # a constant offset keeps the gradients
    assert parts["fm"].item() == pytest.approx(0.5)
    assert parts["gan"].item() == pytest.approx(3.0)  # logits 0 vs label 1, 3 scales
    assert total.item() == pytest.approx(3.0 + 100 * 0.1 + 0.0 + 10 * 0.5, rel=1e-5)
    d_loss, _ = criterion.discriminator_loss(pred_real, pred_fake)
    assert d_loss.item() == pytest.approx(1.5)


def test_sample_weights_hand_computed():
    # mean 0.85; d = 0.25, 0.15, 0.05, 0.35; d_min 0.05, d_max 0.35
    weights = sample_weights([0.6, 0.7, 0.9, 1.2])
    np.testing.assert_allclose(weights, [1.5 - 0.2 / 0.3, 1.5 - 0.1 / 0.3, 1.5, 0.5])
    assert weights.max() == 1.5 and weights.min() == 0.5
    np.testing.assert_array_equal(sample_weights([0.7, 0.9]), [1.0, 1.0])  # equal distances: Eq. 10 is 0/0
    with pytest.raises(ValueError):
        sample_weights([])


def test_weighted_l1():
    prediction, target = torch.tensor([1.0, 2.0]), torch.tensor([1.5, 1.0])
    assert weighted_l1_loss(prediction, target, torch.tensor([1.5, 0.5])).item() == pytest.approx((0.75 + 0.5) / 2)
    assert weighted_l1_loss(prediction[:, None], target[:, None], torch.tensor([1.5, 0.5])).item() == pytest.approx(
        0.625
    )


def test_losses_are_float32_under_autocast():
    torch.manual_seed(2)
    a, b = torch.rand(2, 1, 32, 32), torch.rand(2, 1, 32, 32)
    reference = gradient_correlation(a, b)
    fake = a.bfloat16().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        gc = gradient_correlation(fake, b.bfloat16())
        lsgan = generator_adversarial_loss([[torch.full((1, 1, 2, 2), 0.999, dtype=torch.bfloat16)]])
    assert gc.dtype == torch.float32 and lsgan.dtype == torch.float32
    # inputs rounded to bf16, but gradients and correlations computed in float32: close to the fp32 result
    torch.testing.assert_close(gc, reference, atol=2e-2, rtol=0)
    gc.sum().backward()
    assert fake.grad.dtype == torch.bfloat16 and torch.isfinite(fake.grad.float()).all()
