"""Strict, explained loading of network weights: a checkpoint that does not fit the model never half-loads."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from ..errors import BMDGANError

MAX_LISTED = 8
"""Keys listed per category in the error message (the count of the rest is given)."""


class CheckpointMismatchError(BMDGANError):
    """The weights do not fit the network; ``missing``, ``unexpected`` and ``mismatched`` hold the details
    (mismatched: key -> (shape in checkpoint, shape in model))."""

    def __init__(
        self,
        missing: list[str],
        unexpected: list[str],
        mismatched: dict[str, tuple[tuple, tuple]],
        what: str = "checkpoint",
    ):
        self.missing, self.unexpected, self.mismatched = missing, unexpected, mismatched
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing key(s): {_listing(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s): {_listing(unexpected)}")
        if mismatched:
            shown = [f"{k} {tuple(a)} in {what} vs {tuple(b)} in model" for k, (a, b) in mismatched.items()]
            parts.append(f"{len(mismatched)} shape mismatch(es): {_listing(shown)}")
        super().__init__(
            f"the {what} does not fit this network ({'; '.join(parts)}); nothing was loaded "
            "(check that the checkpoint was trained with the same backbone, size and options)"
        )


def _listing(items: list[str]) -> str:
    shown = ", ".join(items[:MAX_LISTED])
    return shown + (f", ... ({len(items) - MAX_LISTED} more)" if len(items) > MAX_LISTED else "")


def load_state_dict_checked(model: nn.Module, state: Mapping[str, torch.Tensor], what: str = "checkpoint") -> None:
    """Load ``state`` into ``model`` only if keys and shapes match exactly; else raise
    :class:`CheckpointMismatchError` listing missing, unexpected and mismatched-shape keys, leaving the model
    untouched. ``what`` names the source in the message (e.g. the file name)."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = {
        k: (tuple(state[k].shape), tuple(v.shape))
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    }
    if missing or unexpected or mismatched:
        raise CheckpointMismatchError(missing, unexpected, mismatched, what)
    model.load_state_dict(state, strict=True)
