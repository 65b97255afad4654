"""Shared test fixtures: the real data in ``../shared/data``, the module folders on ``sys.path``, a tiny
synthetic pairs dataset and one smoke training run on it (trained once per test session)."""

from __future__ import annotations

import os
import sys
from dataclasses import replace
from pathlib import Path

import pytest

# Before any test imports torch: spinning OpenMP threads slow a shared 2-core machine several times (as bmdgan does)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
REPOSITORY = Path(__file__).resolve().parents[1]
SHARED_DATA = REPOSITORY.parent / "shared" / "data"
# The Slicer modules' Logic packages (BMDGANLib, ...) sit in the module folders, as in a Slicer install.
for module_folder in ("BMDGAN", "BMDGANRegistration", "BMDGANTraining"):
    sys.path.insert(0, str(REPOSITORY / module_folder))
sys.path.insert(0, str(REPOSITORY / "Testing"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not present")
    return SHARED_DATA


@pytest.fixture()
def one_torch_thread():
    """Small CPU tensors: one intra-op thread avoids OpenMP oversubscription on the shared 2-core machine."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def dataset(tmp_path_factory):
    from bmdgan.datasets.synthetic import make_pairs_dataset

    return make_pairs_dataset(tmp_path_factory.mktemp("pairs"))


@pytest.fixture(scope="session")
def smoke():
    from bmdgan.training.config import load_config

    return load_config("smoke")


@pytest.fixture(scope="session")
def trained(dataset, smoke, tmp_path_factory):
    """A hierarchical smoke run (4 + 2 epochs) on folds 1-3: (run folder, histories)."""
    import torch

    from bmdgan.training.run import train_run

    torch.set_num_threads(2)
    run_folder = tmp_path_factory.mktemp("run")
    config = replace(smoke, epochs={"stage1": 4, "stage2": 2})
    return run_folder, train_run(config, dataset, run_folder, fold=0, progress=False)


@pytest.fixture(scope="session")
def prepared_whole_pelves(shared_data, tmp_path_factory) -> tuple[Path, list[str], dict]:
    """(cache folder, CT ids, skipped) of Pelvic-Ref-002 and -005 prepared for the cohort, both hips each: prepared
    once (about a minute) for the tests that need whole pelves."""
    from bmdgan.cohort.generator import prepare_cts

    folder = tmp_path_factory.mktemp("whole_pelves") / "prepared"
    paths = [shared_data / "ct" / "pelvic_reference" / f"Pelvic-Ref-00{n}.nii.gz" for n in (2, 5)]
    ct_ids, skipped = prepare_cts(paths, folder, progress=False)
    return folder, ct_ids, skipped
