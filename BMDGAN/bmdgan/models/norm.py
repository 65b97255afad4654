"""Group Normalization helper used everywhere instead of BatchNorm/InstanceNorm (paper Sec. 4.2.7).

Why GroupNorm: the decomposition networks train with small batches (large 256x512 images), where
BatchNorm statistics are noisy; InstanceNorm normalises each channel of each image on its own and so
throws away the absolute intensity level, which carries the density information of a DRR.
"""

from __future__ import annotations

from torch import nn

MAX_GROUPS = 32
"""Wu & He (2018) default number of groups."""
MIN_CHANNELS_PER_GROUP = 4
"""Keep at least this many channels per group, so narrow layers do not degenerate into InstanceNorm."""


def num_groups(channels: int, max_groups: int = MAX_GROUPS, min_channels: int = MIN_CHANNELS_PER_GROUP) -> int:
    """Largest divisor g of ``channels`` with g <= max_groups and channels / g >= min_channels (at least 1)."""
    if channels < 1:
        raise ValueError(f"channels must be positive, got {channels}")
    best = 1
    for groups in range(1, min(max_groups, channels) + 1):
        if channels % groups == 0 and channels // groups >= min_channels:
            best = groups
    return best


def group_norm(channels: int, max_groups: int = MAX_GROUPS, min_channels: int = MIN_CHANNELS_PER_GROUP) -> nn.GroupNorm:
    """``nn.GroupNorm`` over ``channels`` (input [B, C, H, W]) with the group count of :func:`num_groups`."""
    return nn.GroupNorm(num_groups(channels, max_groups, min_channels), channels)
