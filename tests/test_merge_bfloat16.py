"""A bfloat16 merge is the float64 merge rounded once: λ, the factors and the sum stay in float32.

The independent computation is PEFT's merge of each adapter in float64: θ₀ (as the bfloat16
model holds it) + Σ λᵢ sᵢ Bᵢ Aᵢ, then one rounding to bfloat16. Full fine-tunes' task vectors are
held in the model's dtype (rounded once when loaded), so their reference starts from those.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from evogm.merge import Merger
from evogm.models import load_models


@pytest.fixture(scope="module")
def bf16(tiny_models, expert_paths):
    return load_models(tiny_models["base"], expert_paths, dtype="bfloat16", device="cpu")


def lora_vectors64(tiny_models, name: str) -> dict:
    """θᵢ − θ₀ of a LoRA expert in float64, merged by PEFT from the adapter's own files."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_models["base"], dtype=torch.float64)
    before = {k: v.clone() for k, v in base.state_dict().items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        merged = PeftModel.from_pretrained(base, tiny_models[name]).merge_and_unload().state_dict()
    return {k: merged[k] - before[k] for k in before}


def reference64(models, tiny_models, lam: np.ndarray, base64: dict) -> dict:
    """θ₀ (as the bfloat16 model holds it) + Σ λᵢ τᵢ, in float64."""
    out = {k: v.clone() for k, v in base64.items()}
    for i, expert in enumerate(models.experts):
        vectors = lora_vectors64(tiny_models, expert.name) if expert.kind == "lora" else None
        for name in expert.params:
            delta = expert.deltas[name].double() if vectors is None else vectors[name]
            out[name] += float(lam[i]) * delta
    return out


def ulps(merged: torch.Tensor, exact: torch.Tensor) -> torch.Tensor:
    """|merged − exact| in units of the bfloat16 spacing at `exact`."""
    _, exponent = torch.frexp(exact.float())
    spacing = torch.ldexp(torch.ones_like(exact, dtype=torch.float64), exponent.double() - 8)
    return (merged.double() - exact).abs() / spacing


@pytest.mark.parametrize("lam", [np.array([0.3, -0.7, 1.8, 0.5, -1.2]), np.array([1e-3, 2.5, -3e-2, 0.0, 7.0])])
def test_bfloat16_merge_is_the_float64_merge_rounded_once(bf16, tiny_models, lam):
    base64 = {k: v.double() for k, v in bf16.model.state_dict().items()}
    merger = Merger(bf16.model, bf16.experts)
    try:
        merged = merger(lam).state_dict()
        exact = reference64(bf16, tiny_models, lam, base64)
        for name in sorted(set().union(*(e.params for e in bf16.experts))):
            assert merged[name].dtype == torch.bfloat16
            error = ulps(merged[name], exact[name])
            assert float(error.max()) <= 1.0, name  # at worst the other neighbour of a near-tie
            rounded_once = exact[name].to(torch.bfloat16)
            assert float((merged[name] != rounded_once).float().mean()) < 0.01, name
    finally:
        merger.reset()


def test_lora_factors_of_a_bfloat16_model_stay_float32(bf16):
    lora = next(e for e in bf16.experts if e.kind == "lora")
    factors = next(iter(lora.factors.values()))
    assert factors.A.dtype == factors.B.dtype == torch.float32
