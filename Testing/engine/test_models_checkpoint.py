"""Checkpoints: matching weights load, mismatched ones fail clearly and load nothing; old ones are pruned safely."""

from __future__ import annotations

import pytest
import torch

from bmdgan.errors import BMDGANError
from bmdgan.models import CheckpointMismatchError, build_generator, load_state_dict_checked

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_matching_checkpoint_round_trips():
    torch.manual_seed(0)
    source, target = build_generator("hrformer-tiny-cpu"), build_generator("hrformer-tiny-cpu")
    load_state_dict_checked(target, source.state_dict())
    x = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(target(x), source(x))


def test_other_backbone_checkpoint_is_refused_and_nothing_loaded():
    tiny_state = build_generator("hrformer-tiny-cpu").state_dict()
    model = build_generator("hrformer-tiny-cpu", decoder_width=64)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointMismatchError) as info:
        load_state_dict_checked(model, tiny_state, what="g_tiny.safetensors")
    error = info.value
    assert isinstance(error, BMDGANError)
    assert "decoder.project.0.weight" in error.mismatched
    assert error.mismatched["decoder.project.0.weight"] == ((32, 240, 1, 1), (64, 240, 1, 1))
    assert "g_tiny.safetensors" in str(error) and "shape mismatch" in str(error)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_missing_and_unexpected_keys_are_listed():
    model = build_generator("hrformer-tiny-cpu")
    state = dict(model.state_dict())
    state.pop("decoder.head.1.bias")
    state["module.extra"] = torch.zeros(1)
    with pytest.raises(CheckpointMismatchError) as info:
        load_state_dict_checked(model, state)
    assert info.value.missing == ["decoder.head.1.bias"] and info.value.unexpected == ["module.extra"]
    message = str(info.value)
    assert "1 missing key(s): decoder.head.1.bias" in message and "1 unexpected key(s): module.extra" in message


def test_long_lists_are_truncated_in_the_message():
    model = build_generator("hrformer-tiny-cpu")
    with pytest.raises(CheckpointMismatchError, match=r"more\)") as info:
        load_state_dict_checked(model, {})
    assert len(info.value.missing) == len(model.state_dict())


def test_a_restarted_run_keeps_its_new_checkpoints_and_drops_the_abandoned_ones(tmp_path):
    """After `latest.json` was deleted to restart, the old run's later epochs must not outlive (or delete) the new
    ones: the newest checkpoint and the one before it are kept, whatever their names sort like."""
    from bmdgan.training.checkpoint import latest_checkpoint, save_checkpoint

    layer = torch.nn.Linear(2, 1)
    folder = tmp_path / "checkpoints"
    for epoch in (158, 159):
        save_checkpoint(folder, epoch, {"model": layer}, {}, {}, {})
    (folder / "latest.json").unlink()
    for epoch in (0, 1, 2):
        save_checkpoint(folder, epoch, {"model": layer}, {}, {}, {})
        assert latest_checkpoint(folder).name == f"epoch_{epoch:04d}"
    assert sorted(p.name for p in folder.glob("epoch_*")) == ["epoch_0001", "epoch_0002"]
