"""Losses of BMD-GAN: decomposition training (paper Eq. 1-8) and stage-3 regression (Eq. 9-11).

Discriminator outputs follow :class:`bmdgan.models.MultiscaleDiscriminator`: a list over scales, each a list
of feature maps whose last element is the patch-logit map.

Adversarial form: least squares (LSGAN, Mao et al. 2017), the default of Pix2PixHD whose settings the paper
follows (Sec. 3.2). Eq. 1 is the classic log form; LSGAN optimises the same min-max game with a
least-squares criterion that keeps penalising fakes that are already on the "real" side of the decision
boundary, so the generator's gradient does not vanish when D becomes confident. That makes training steadier
on the small datasets of this task. ``mode='bce'`` gives the log form of Eq. 1 (discriminator) with the
usual non-saturating generator loss -log D(x, G(x)).

Every loss is computed in float32, also inside a mixed-precision autocast region (bf16 keeps 8 mantissa
bits: too few for normalised cross-correlations and small squared errors).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

DiscriminatorOutput = Sequence[Sequence[torch.Tensor]]
GAN_MODES = ("lsgan", "bce")
NCC_EPS = 1e-8
"""Added to each gradient variance in NCC: keeps GC finite for gradient-free (constant) images, where NCC is
undefined and set to 0 ("no shared structure"); for images on an O(1) scale its effect is negligible."""


def _float32(fn):
    """Run ``fn`` with autocast disabled (on the tensors' device) on float32 versions of its tensor arguments,
    lists of tensors included. ``.float()`` is differentiable, so gradients still reach bf16/fp16 inputs."""

    def cast(value, devices: set):
        if isinstance(value, torch.Tensor):
            devices.add(value.device.type)
            return value.float()
        if isinstance(value, (list, tuple)):
            return [cast(v, devices) for v in value]
        return value

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        devices: set[str] = set()
        args = [cast(a, devices) for a in args]
        kwargs = {k: cast(v, devices) for k, v in kwargs.items()}
        with contextlib.ExitStack() as stack:
            for device in devices:
                stack.enter_context(torch.autocast(device, enabled=False))
            return fn(*args, **kwargs)

    return wrapper


def _gan_criterion(logits: torch.Tensor, real: bool, mode: str) -> torch.Tensor:
    if mode == "lsgan":
        return torch.mean((logits - float(real)) ** 2)
    if mode == "bce":
        return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, float(real)))
    raise ValueError(f"GAN mode must be one of {GAN_MODES}, got {mode!r}")


@_float32
def discriminator_adversarial_loss(
    pred_real: DiscriminatorOutput, pred_fake: DiscriminatorOutput, mode: str = "lsgan"
) -> torch.Tensor:
    """Loss of D_1..D_K (minimised by D): sum over scales of 0.5 * [crit(D(x, y), real) + crit(D(x, G(x)), fake)]
    (Eq. 8's sum over k; pass G(x) detached). Scalar."""
    return sum(
        0.5 * (_gan_criterion(r[-1], True, mode) + _gan_criterion(f[-1], False, mode))
        for r, f in zip(pred_real, pred_fake)
    )


@_float32
def generator_adversarial_loss(pred_fake: DiscriminatorOutput, mode: str = "lsgan") -> torch.Tensor:
    """Adversarial loss of G: sum over scales of crit(D_k(x, G(x)), real). Scalar."""
    return sum(_gan_criterion(f[-1], True, mode) for f in pred_fake)


@_float32
def feature_matching_loss(pred_fake: DiscriminatorOutput, pred_real: DiscriminatorOutput) -> torch.Tensor:
    """Eq. 2-3: per scale, sum over the intermediate layers (logits excluded) of the L1 distance between
    features of the real and fake pairs, each divided by its element count N_i (i.e. a mean); real features are
    detached. Averaged over scales as in Pix2PixHD (Eq. 7 sums over k: that is num_scales x this value; the
    weight lambda_FM = 10 is Pix2PixHD's, which goes with the average). Scalar."""
    per_scale = [
        sum(F.l1_loss(f, r.detach()) for f, r in zip(fake[:-1], real[:-1])) for fake, real in zip(pred_fake, pred_real)
    ]
    return sum(per_scale) / len(per_scale)


@_float32
def l1_loss(fake: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Eq. 4: mean absolute difference over all pixels and the batch. Scalar."""
    return F.l1_loss(fake, target)


def image_gradients(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sobel x- and y-gradients of [B, C, H, W] without padding -> two [B, C, H-2, W-2] maps.

    Unpadded ('valid') so that the image border does not create artificial edges."""
    sobel_x = torch.tensor(
        [[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], dtype=image.dtype, device=image.device
    )
    kernels = torch.stack([sobel_x, sobel_x.T]).unsqueeze(1)  # [2, 1, 3, 3]
    b, c, h, w = image.shape
    grads = F.conv2d(image.reshape(b * c, 1, h, w), kernels).reshape(b, c, 2, h - 2, w - 2)
    return grads[:, :, 0], grads[:, :, 1]


def normalized_cross_correlation(a: torch.Tensor, b: torch.Tensor, eps: float = NCC_EPS) -> torch.Tensor:
    """NCC per sample of [B, ...] tensors -> [B] in [-1, 1]: mean(a'b') / (sqrt(var a + eps) sqrt(var b + eps)),
    a' = a - mean(a). 0 when either input is constant."""
    a = a.flatten(1) - a.flatten(1).mean(dim=1, keepdim=True)
    b = b.flatten(1) - b.flatten(1).mean(dim=1, keepdim=True)
    cov = (a * b).mean(dim=1)
    return cov / (torch.sqrt(a.pow(2).mean(dim=1) + eps) * torch.sqrt(b.pow(2).mean(dim=1) + eps))


@_float32
def gradient_correlation(fake: torch.Tensor, target: torch.Tensor, eps: float = NCC_EPS) -> torch.Tensor:
    """Eq. 6: GC = NCC(grad_x target, grad_x fake) + NCC(grad_y target, grad_y fake), per sample -> [B] in [-2, 2]."""
    fx, fy = image_gradients(fake)
    tx, ty = image_gradients(target)
    return normalized_cross_correlation(tx, fx, eps) + normalized_cross_correlation(ty, fy, eps)


@_float32
def gradient_correlation_loss(fake: torch.Tensor, target: torch.Tensor, eps: float = NCC_EPS) -> torch.Tensor:
    """Eq. 5 as a loss to minimise: mean over the batch of 1 - GC / 2, in [0, 2]; 0 when the gradients are
    perfectly correlated (GC = 2), 1 for unrelated or gradient-free images, 2 for inverted ones. Scalar."""
    return torch.mean(1.0 - gradient_correlation(fake, target, eps) / 2.0)


class DecompositionLoss:
    """Eq. 7-8 with the paper's weights (Sec. 4.2.7): lambda_L1 = 100, lambda_GC = 1, lambda_FM = 10.

    ``generator_loss``: L_GAN(G) + lambda_L1 L1 + lambda_GC L_GC + lambda_FM L_FM;
    ``discriminator_loss``: the adversarial loss of D_1..D_3. Both return (scalar to backpropagate,
    dict of detached components for logging).
    """

    def __init__(
        self, lambda_l1: float = 100.0, lambda_gc: float = 1.0, lambda_fm: float = 10.0, gan_mode: str = "lsgan"
    ):
        if gan_mode not in GAN_MODES:
            raise ValueError(f"GAN mode must be one of {GAN_MODES}, got {gan_mode!r}")
        self.lambda_l1, self.lambda_gc, self.lambda_fm, self.gan_mode = lambda_l1, lambda_gc, lambda_fm, gan_mode

    def generator_loss(
        self, fake: torch.Tensor, target: torch.Tensor, pred_fake: DiscriminatorOutput, pred_real: DiscriminatorOutput
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """fake = G(x), target = GT DRR [B, 1, H, W]; pred_fake = D(x, G(x)) (not detached),
        pred_real = D(x, target)."""
        parts = {
            "gan": generator_adversarial_loss(pred_fake, self.gan_mode),
            "l1": l1_loss(fake, target),
            "gc": gradient_correlation_loss(fake, target),
            "fm": feature_matching_loss(pred_fake, pred_real),
        }
        total = (
            parts["gan"] + self.lambda_l1 * parts["l1"] + self.lambda_gc * parts["gc"] + self.lambda_fm * parts["fm"]
        )
        return total, {**{k: v.detach() for k, v in parts.items()}, "total": total.detach()}

    def discriminator_loss(
        self, pred_real: DiscriminatorOutput, pred_fake: DiscriminatorOutput
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """pred_real = D(x, target), pred_fake = D(x, G(x).detach())."""
        loss = discriminator_adversarial_loss(pred_real, pred_fake, self.gan_mode)
        return loss, {"d": loss.detach()}


def sample_weights(bmd: Sequence[float] | np.ndarray) -> np.ndarray:
    """Eq. 9-10 over a training set: d = |y - mean(y)|, w = 1.5 - (d - d_min) / (d_max - d_min) in [0.5, 1.5].

    The sample nearest the mean gets 1.5, the farthest 0.5. When all distances are equal (Eq. 10 is 0/0;
    equal up to rounding, relative 1e-9) every weight is 1.
    bmd: [N] values of one target (compute separately for DXA and QCT BMD). -> [N] float64.
    """
    y = np.asarray(bmd, dtype=np.float64).reshape(-1)
    if y.size == 0 or not np.all(np.isfinite(y)):
        raise ValueError("sample_weights needs a non-empty array of finite BMD values")
    d = np.abs(y - y.mean())
    span = d.max() - d.min()
    if span <= 1e-9 * d.max():
        return np.ones_like(y)
    return 1.5 - (d - d.min()) / span


@_float32
def weighted_l1_loss(prediction: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Eq. 11: mean over the batch of w * |y - R(x)|. prediction, target [B] or [B, K]; weight [B] (or same
    shape as target). Scalar in the target's units."""
    error = torch.abs(target - prediction)
    if weight.ndim == 1 and error.ndim == 2:
        weight = weight[:, None]
    return torch.mean(weight * error)
