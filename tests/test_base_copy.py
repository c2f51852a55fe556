"""Where θ₀ is kept changes nothing in the merge: host and disk copies give the device copy's bytes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from evogm.base_copy import BaseCopy
from evogm.errors import EvogmError
from evogm.merge import Merger
from evogm.models import load_models


@pytest.fixture(scope="module")
def loaded(tiny_models, expert_paths):
    return load_models(tiny_models["base"], expert_paths, dtype="float32", device="cpu")


def state(model) -> dict:
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_disk_copy_restores_the_exact_bytes(dtype):
    tensors = [torch.randn(3, 5).to(dtype), torch.randn(7).to(dtype)]
    saved = [t.clone() for t in tensors]
    copy = BaseCopy.of("disk", tensors)
    for t in tensors:
        t.mul_(3.0)
    copy.restore(1, tensors[1])
    assert torch.equal(tensors[1], saved[1]) and not torch.equal(tensors[0], saved[0])
    assert torch.equal(copy.get(0), saved[0])
    wider = torch.empty(3, 5, dtype=torch.float64)  # another dtype: read, then cast
    copy.restore(0, wider)
    assert torch.equal(wider, saved[0].double())


@pytest.mark.parametrize("place", ["host", "disk"])
def test_merges_resets_and_static_merges_match_the_device_copy(loaded, place):
    rng = np.random.default_rng(0)
    lams = [rng.uniform(-2, 2, size=5) for _ in range(3)]
    outcomes = {}
    for where in ("device", place):
        merger, seen = Merger(loaded.model, loaded.experts, base_copy=where), []
        for lam in lams:
            seen.append(state(merger(lam)))
        seen.append(state(merger.static("ties", density=0.5)))
        seen.append(state(merger.reset()))
        outcomes[where] = seen
    for ours, theirs in zip(outcomes[place], outcomes["device"]):
        for name, value in theirs.items():
            assert torch.equal(ours[name], value), name


def test_switches_from_a_disk_copy_do_not_drift(loaded):
    merger = Merger(loaded.model, loaded.experts, base_copy="disk")
    target = np.array([0.5, -0.25, 1.0, 0.75, -2.0])
    fresh = state(merger(target))
    rng = np.random.default_rng(1)
    for _ in range(200):
        merger(rng.uniform(-3, 3, size=5))
    for name, value in state(merger(target)).items():
        assert torch.equal(value, fresh[name]), name
    merger.reset()


def test_an_unknown_place_is_one_line_with_the_choices(loaded):
    with pytest.raises(EvogmError, match="device"):
        Merger(loaded.model, loaded.experts, base_copy="ssd")
