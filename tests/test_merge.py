"""The merge engine against an independent computation: PEFT's merge_and_unload and dense arithmetic."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

from evogm import merge as M
from evogm.merge import Merger
from evogm.models import load_models


def dense_task_vectors(tiny_models, names) -> tuple[dict, list[dict]]:
    """θ₀ and, per expert, θᵢ − θ₀ computed the independent way (PEFT merges LoRA into dense weights)."""
    from peft import PeftModel

    base = AutoModelForCausalLM.from_pretrained(tiny_models["base"]).state_dict()
    vectors = []
    for name in names:
        model = AutoModelForCausalLM.from_pretrained(tiny_models["base"])
        if "lora" in name:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model = PeftModel.from_pretrained(model, tiny_models[name]).merge_and_unload()
        else:
            model = AutoModelForCausalLM.from_pretrained(tiny_models[name])
        vectors.append({k: v - base[k] for k, v in model.state_dict().items()})
    return base, vectors


def group_of(name: str, groups: int, layers: int = 2) -> int:
    match = re.search(r"\.layers\.(\d+)\.", name)
    if match:
        return int(match[1]) * groups // layers
    return 0 if "embed_tokens" in name else groups - 1


@pytest.fixture(scope="module")
def loaded(tiny_models, expert_paths):
    return load_models(tiny_models["base"], expert_paths, dtype="float32", device="cpu")


@pytest.fixture
def make_merger(loaded):
    """Mergers on the shared model; each is reset afterwards so the next one finds θ₀ there."""
    made = []
    yield lambda groups=1: made.append(Merger(loaded.model, loaded.experts, groups=groups)) or made[-1]
    for merger in made:
        merger.reset()


@pytest.fixture(scope="module")
def reference(tiny_models, expert_paths):
    return dense_task_vectors(tiny_models, list(expert_paths))


def expected_state(reference, lam: np.ndarray) -> dict:
    base, vectors = reference
    return {k: v + sum(float(lam[i, group_of(k, lam.shape[1])]) * tv[k] for i, tv in enumerate(vectors))
            for k, v in base.items()}


def assert_state(model, expected, atol=1e-5):
    for name, value in model.state_dict().items():
        torch.testing.assert_close(value, expected[name], atol=atol, rtol=1e-5, msg=name)


def test_lora_and_full_experts_load_in_their_forms(loaded):
    kinds = {e.name: e.kind for e in loaded.experts}
    assert kinds == {"lora_qv": "lora", "lora_mlp": "lora", "lora_emb": "lora", "full_all": "full", "full_mlp": "full"}
    mlp = next(e for e in loaded.experts if e.name == "lora_mlp")
    up1 = mlp.factors["model.layers.1.mlp.up_proj.weight"]
    assert up1.rank == 3 and up1.scaling == pytest.approx(16 / 3**0.5)  # rank_pattern + rsLoRA
    assert mlp.factors["model.layers.0.mlp.down_proj.weight"].scaling == pytest.approx(5 / 2**0.5)  # alpha_pattern
    full_mlp = next(e for e in loaded.experts if e.name == "full_mlp")
    assert full_mlp.params and all("mlp" in n for n in full_mlp.params)


@pytest.mark.parametrize("lam", [
    np.array([1.0, 0.0, 0.0, 0.0, 0.0]),
    np.array([0.3, -0.7, 1.8, 0.5, -1.2]),
    np.array([[0.2, 1.1], [-0.4, 0.9], [2.5, -1.0], [0.0, 0.6], [1.3, -0.3]]),
])
def test_merge_matches_peft_and_dense_arithmetic(loaded, make_merger, reference, lam):
    merger = make_merger(1 if lam.ndim == 1 else lam.shape[1])
    model = merger(lam)
    assert_state(model, expected_state(reference, merger.coefficients(lam)))


def test_an_adapter_on_some_layers_only_merges_as_peft_merges_it(tiny_models, tmp_path):
    from conftest import build_lora

    adapter = build_lora(tiny_models["base"], tmp_path / "layer1", seed=5, r=2, lora_alpha=4,
                         target_modules=["q_proj", "up_proj"], layers_to_transform=[1], layers_pattern="layers")
    models = load_models(tiny_models["base"], {"layer1": adapter}, dtype="float32", device="cpu")
    assert {n.split(".")[2] for n in models.experts[0].factors} == {"1"}
    base, (vector,) = dense_task_vectors({**tiny_models, "lora_layer1": adapter}, ["lora_layer1"])
    model = Merger(models.model, models.experts)(np.array([0.7]))
    assert_state(model, {k: v + 0.7 * vector[k] for k, v in base.items()})


def test_flat_vector_is_expert_major(loaded, make_merger):
    merger = make_merger(2)
    lam = np.arange(10, dtype=float).reshape(5, 2)
    np.testing.assert_array_equal(merger.coefficients(lam.reshape(-1)), lam)
    assert merger.dim == 10
    with pytest.raises(ValueError, match="do not fit"):
        merger(np.ones(7))
    with pytest.raises(ValueError, match="finite"):
        merger(np.array([np.nan, 0, 0, 0, 0]))


def test_thousands_of_switches_do_not_drift(loaded, make_merger, reference):
    merger = make_merger()
    rng = np.random.default_rng(0)
    target = np.array([0.5, -0.25, 1.0, 0.75, -2.0])
    merger(target)
    fresh = {k: v.clone() for k, v in loaded.model.state_dict().items()}
    for _ in range(2000):
        merger(rng.uniform(-3, 3, size=5))
    merger(target)
    for name, value in loaded.model.state_dict().items():
        assert torch.equal(value, fresh[name]), name
    merger.reset()
    assert_state(loaded.model, reference[0], atol=0)


def test_task_arithmetic_static_equals_scaled_merge(loaded, make_merger, reference):
    merger = make_merger()
    weights = np.array([1.0, 0.5, -0.5, 1.0, 2.0])
    merger.static("task_arithmetic", weights=weights, scale=0.3)
    assert_state(loaded.model, expected_state(reference, 0.3 * weights[:, None]))


def test_ties_is_trim_elect_disjoint_mean():
    deltas = torch.tensor([[3.0, -1.0, 0.5, 2.0], [-2.0, 4.0, 0.1, 1.0], [1.0, -3.0, -0.2, -5.0]])
    trimmed = M.trim(deltas, density=0.5)  # top 2 of 4 per expert by |τ|
    assert torch.equal(trimmed, torch.tensor([[3.0, 0, 0, 2.0], [-2.0, 4.0, 0, 0], [0, -3.0, 0, -5.0]]))
    merged = M.ties(deltas, torch.ones(3), density=0.5)
    # column 0: sum 1 → +, agreeing {3} → 3;  column 1: sum 1 → +, {4} → 4;  column 3: sum −3 → −, {−5} → −5
    assert torch.equal(merged, torch.tensor([3.0, 4.0, 0.0, -5.0]))


def test_dare_is_seeded_and_unbiased():
    deltas = torch.ones(2, 20000)
    gen = lambda: torch.Generator().manual_seed(7)
    a = M.dare(deltas, torch.ones(2), density=0.25, generator=gen())
    b = M.dare(deltas, torch.ones(2), density=0.25, generator=gen())
    assert torch.equal(a, b)
    assert set(torch.unique(a).tolist()) <= {0.0, 4.0, 8.0}  # survivors rescaled by 1/density
    assert a.mean().item() == pytest.approx(2.0, rel=0.05)


def test_static_merges_are_undone_by_the_next_candidate(loaded, make_merger, reference):
    merger = make_merger(2)
    lam = np.array([[0.2, 1.1], [-0.4, 0.9], [2.5, -1.0], [0.0, 0.6], [1.3, -0.3]])
    for method, options in [("ties", {"density": 0.3}), ("dare", {"density": 0.5, "consensus": True})]:
        merger.static(method, **options)
        merger(lam)
        assert_state(loaded.model, expected_state(reference, lam))


def test_dare_static_merge_depends_on_seed_only(loaded, make_merger):
    merger = make_merger()
    first = {k: v.clone() for k, v in merger.static("dare", seed=3).state_dict().items()}
    merger(np.ones(5))
    again = merger.static("dare", seed=3).state_dict()
    assert all(torch.equal(first[k], again[k]) for k in first)
    other = merger.static("dare", seed=4).state_dict()
    assert any(not torch.equal(first[k], other[k]) for k in first)


def test_experts_keep_their_factors_in_the_mergers_stacks(tiny_models, expert_paths, reference):
    # one copy of the LoRA factors in memory: the experts' own are views of the Merger's stacked ones
    models = load_models(tiny_models["base"], expert_paths, dtype="float32", device="cpu")
    merger = Merger(models.model, models.experts)
    stacks = {slot.A.untyped_storage().data_ptr() for slot in merger._slots if slot.A is not None}
    lora = [e for e in models.experts if e.kind == "lora"]
    assert all(f.A.untyped_storage().data_ptr() in stacks for e in lora for f in e.factors.values())
    _, vectors = reference  # and each expert's task vector is still its own
    for i, expert in enumerate(models.experts):
        for name in expert.factors:
            torch.testing.assert_close(expert.dense(name), vectors[i][name], atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("method, options, message", [
    ("dare", {"density": -0.5}, "density -0.5 is not a number in (0, 1]"),
    ("dare", {"density": 2}, "density 2 is not a number in (0, 1]"),  # was task arithmetic at λ = 0.5
    ("dare", {"density": 0}, "density 0 is not a number in (0, 1]"),  # was nan, blamed on the model
    ("ties", {"density": 0.0}, "density 0.0 is not a number in (0, 1]"),
    ("ties", {"density": 1.5}, "density 1.5 is not a number in (0, 1]"),
    ("ties", {"density": float("nan")}, "density nan is not a number in (0, 1]"),
    ("ties", {"density": "0.5"}, "density '0.5' is not a number in (0, 1]"),
    ("dare", {"scale": float("inf")}, "scale inf is not a finite number"),
    ("dare", {"consensus": "yes"}, "consensus 'yes' is not true or false"),
    ("task_arithmetic", {"density": 0.5}, "density is not an option of task_arithmetic"),
])
def test_static_merges_refuse_options_they_cannot_run_with(loaded, make_merger, method, options, message):
    merger = make_merger()
    before = {k: v.clone() for k, v in loaded.model.state_dict().items()}
    with pytest.raises(M.EvogmError, match=re.escape(message)):
        merger.static(method, **options)
    assert all(torch.equal(before[k], v) for k, v in loaded.model.state_dict().items())  # refused before writing
    # a run config's baselines.options are checked by the same rule, in the config's key names
    with pytest.raises(M.EvogmError, match=re.escape(f"baselines.options.{method}.{message}")):
        M.check_static_options(method, options, f"baselines.options.{method}.")


def test_an_unknown_static_merge_is_named(loaded, make_merger):
    with pytest.raises(M.EvogmError, match="unknown merge method 'slerp': valid names are dare, task_arithmetic, ties"):
        make_merger().static("slerp")


def test_a_density_of_one_is_no_trimming_and_no_dropping(loaded, make_merger, reference):
    merger = make_merger()
    weights = np.array([1.0, 0.5, -0.5, 1.0, 2.0])
    merger.static("dare", weights=weights, density=1.0, scale=0.3)  # keeps every entry, rescales by 1
    assert_state(loaded.model, expected_state(reference, 0.3 * weights[:, None]))
    M.check_static_options("ties", {"density": 1, "scale": 2})  # an int is a number
