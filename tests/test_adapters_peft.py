"""An adapter merges exactly as PEFT merges it: the modules PEFT adapts, with PEFT's ranks and scalings.

The reference is PEFT itself (`PeftModel.from_pretrained(base, folder).merge_and_unload()`), on
adapters whose adapter_config.json selects modules in every way PEFT knows, including adapter
files that hold factors for more modules than their config targets.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import auto_model, build_base, build_lora, build_t5_base
from evogm.cli import main
from evogm.errors import EvogmError
from evogm.errors import EvogmWarning
from evogm.merge import Merger
from evogm.models import load_models


@pytest.fixture(scope="module")
def bases(tmp_path_factory):
    """Tiny Qwen2 (2 layers), T5 (2 encoder, 3 decoder blocks) and GPT-2 (Conv1D layers, fan-in-fan-out) bases."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from evogm.zoo.tokenizer import build_tokenizer

    root = tmp_path_factory.mktemp("bases")
    gpt2 = root / "gpt2"
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(vocab_size=len(build_tokenizer()), n_embd=32, n_layer=2, n_head=4, n_positions=64,
                               bos_token_id=1, eos_token_id=2, pad_token_id=0)).save_pretrained(gpt2)
    build_tokenizer().save_pretrained(gpt2)
    return {"qwen2": build_base(root / "qwen2"), "t5": build_t5_base(root / "t5"), "gpt2": gpt2}


def edit_config(adapter, **changes):
    config = json.loads((adapter / "adapter_config.json").read_text())
    (adapter / "adapter_config.json").write_text(json.dumps({**config, **changes}))
    return adapter


def peft_merged(base, adapter) -> dict[str, torch.Tensor]:
    from peft import PeftModel

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return PeftModel.from_pretrained(auto_model(base), adapter).merge_and_unload().state_dict()


def evogm_merged(base, adapter) -> dict[str, torch.Tensor]:
    models = load_models(base, {"a": adapter}, dtype="float32", device="cpu")
    return Merger(models.model, models.experts)(np.array([1.0])).state_dict()


def changed(state, base_state) -> set[str]:
    return {k for k, v in state.items() if not torch.equal(v, base_state[k])}


def assert_merges_as_peft(base, adapter) -> set[str]:
    """evogm's merge at λ = 1 changes the tensors PEFT's merge changes, by what PEFT's merge changes them; those names."""
    base_state = auto_model(base).state_dict()
    theirs, ours = peft_merged(base, adapter), evogm_merged(base, adapter)
    assert changed(ours, base_state) == changed(theirs, base_state)
    for key, value in theirs.items():
        torch.testing.assert_close(ours[key], value, atol=1e-6, rtol=1e-5, msg=key)
    return changed(theirs, base_state)


CASES = {
    # name: (base, LoraConfig keywords, adapter_config.json edits after saving, tensors PEFT's merge changes)
    "plain targets": ("qwen2", dict(target_modules=["q_proj", "v_proj"]), {}, 4),
    "layers_to_transform": ("qwen2", dict(target_modules=["q_proj", "up_proj"], layers_to_transform=[0]), {}, 2),
    "layers_pattern": ("qwen2", dict(target_modules=["k_proj", "down_proj"], layers_to_transform=[1],
                                     layers_pattern="layers"), {}, 2),
    "regex target_modules": ("qwen2", dict(target_modules=r".*\.1\.self_attn\.(k|o)_proj"), {}, 2),
    "exclude_modules": ("qwen2", dict(target_modules=["q_proj", "v_proj", "gate_proj"],
                                      exclude_modules=["model.layers.0.self_attn.q_proj", "gate_proj"]), {}, 3),
    "rank and alpha patterns": ("qwen2", dict(r=2, lora_alpha=16, target_modules=["up_proj", "o_proj", "embed_tokens"],
                                              rank_pattern={"layers.1.mlp.up_proj": 3}, alpha_pattern={"o_proj": 5}),
                                {}, 5),
    "all-linear": ("qwen2", dict(target_modules="all-linear"), {}, 14),
    # the architecture's default (q_proj, v_proj for Qwen2) when the config names no target_modules
    "target_modules null": ("qwen2", dict(target_modules=["q_proj", "v_proj", "up_proj"]), dict(target_modules=None), 4),
    # the probe: factors for 6 modules in the file, 1 targeted by the config
    "extra factors in the file": ("qwen2", dict(target_modules=["q_proj", "v_proj", "up_proj"]),
                                  dict(target_modules=["q_proj"], layers_to_transform=[0]), 1),
    # PEFT ignores fan_in_fan_out on a torch Linear (and says so): the factors are not transposed
    "fan_in_fan_out on a Linear": ("qwen2", dict(target_modules=["q_proj"]), dict(fan_in_fan_out=True), 2),
    # GPT-2's Conv1D layers store their update transposed
    "gpt2 Conv1D": ("gpt2", dict(target_modules=["c_attn", "c_fc"], fan_in_fan_out=True, layers_to_transform=[1]), {}, 2),
    "t5 layers_to_transform": ("t5", dict(target_modules=["q", "wo"], layers_to_transform=[1], task_type="SEQ_2_SEQ_LM"),
                               {}, 5),
}


@pytest.mark.parametrize("case", CASES)
def test_an_adapter_merges_as_peft_merges_it(bases, tmp_path, case):
    base, lora, edits, n_changed = CASES[case]
    adapter = edit_config(build_lora(bases[base], tmp_path / "a", seed=7, **lora), **edits)
    assert len(assert_merges_as_peft(bases[base], adapter)) == n_changed


def test_factors_the_config_does_not_target_are_ignored_with_a_warning(bases, tmp_path):
    adapter = build_lora(bases["qwen2"], tmp_path / "a", seed=7, target_modules=["q_proj", "v_proj", "up_proj"])
    edit_config(adapter, target_modules=["q_proj"], layers_to_transform=[0])
    with pytest.warns(EvogmWarning, match=r"holds factors for 5 module\(s\) its adapter_config.json does not target"):
        models = load_models(bases["qwen2"], {"a": adapter}, device="cpu")
    assert list(models.experts[0].factors) == ["model.layers.0.self_attn.q_proj.weight"]


def expect_error(base, adapter, match):
    with pytest.raises(EvogmError, match=match) as info:
        load_models(base, {"a": adapter}, device="cpu")
    assert "fix:" in str(info.value) and "\n" not in str(info.value)


def test_targets_the_base_lacks_are_refused_as_peft_refuses_them(bases, tmp_path):
    from peft import PeftModel

    adapter = edit_config(build_lora(bases["qwen2"], tmp_path / "a", seed=7, target_modules=["q_proj"]),
                          target_modules=["nonexistent_proj"])
    with pytest.raises(ValueError, match="not found in the base model"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        PeftModel.from_pretrained(auto_model(bases["qwen2"]), adapter)
    expect_error(bases["qwen2"], adapter, r"PEFT refuses adapter 'a' on this base: .*nonexistent_proj.* not found")
    code = main(["merge", "--base", str(bases["qwen2"]), "--expert", f"a={adapter}", "--out", str(tmp_path / "out")])
    assert code == 2 and not (tmp_path / "out").exists()


def test_a_layer_type_peft_cannot_adapt_is_one_line(bases, tmp_path):
    adapter = edit_config(build_lora(bases["qwen2"], tmp_path / "a", seed=7, target_modules=["q_proj"]),
                          target_modules=["mlp"])  # a whole block, not a layer
    expect_error(bases["qwen2"], adapter, r"PEFT refuses adapter 'a' on this base: ValueError: Target module Qwen2MLP")


def test_targeted_modules_without_factors_are_refused(bases, tmp_path):
    adapter = build_lora(bases["qwen2"], tmp_path / "a", seed=7, target_modules=["q_proj", "v_proj"])
    file = adapter / "adapter_model.safetensors"
    save_file({k: v for k, v in load_file(file).items() if "v_proj" not in k}, file)
    expect_error(bases["qwen2"], adapter, r"has no factors for 2 module\(s\) its adapter_config.json targets "
                                          r"\(e.g. model.layers.0.self_attn.v_proj\)")


def test_factors_of_another_rank_than_the_config_are_refused(bases, tmp_path):
    adapter = edit_config(build_lora(bases["qwen2"], tmp_path / "a", seed=7, r=4, target_modules=["q_proj"]), r=5)
    expect_error(bases["qwen2"], adapter, "has rank-4 factors, its adapter_config.json gives it r=5")


def test_modules_to_save_is_refused(bases, tmp_path):
    adapter = build_lora(bases["qwen2"], tmp_path / "a", seed=7, target_modules=["q_proj"], modules_to_save=["lm_head"])
    assert "base_model.model.lm_head.weight" in load_file(adapter / "adapter_model.safetensors")  # the full copy
    expect_error(bases["qwen2"], adapter, r"adapter 'a' sets modules_to_save=.*full copies, not low-rank")


def test_an_adapter_file_without_tensors_is_refused(bases, tmp_path):
    adapter = build_lora(bases["qwen2"], tmp_path / "a", seed=7, target_modules=["q_proj"])
    save_file({}, adapter / "adapter_model.safetensors")
    expect_error(bases["qwen2"], adapter, r"adapter 'a' file .*adapter_model.safetensors holds no tensors")


@pytest.mark.parametrize("init", ["pissa", "olora"])
def test_an_adapter_whose_init_rewrites_the_base_is_refused(bases, tmp_path, init):
    # PEFT loads an unconverted PiSSA / OLoRA adapter by first rewriting the base's weights: base + s·B·A is not its merge
    from peft import LoraConfig, get_peft_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        config = LoraConfig(r=2, target_modules=["q_proj"], init_lora_weights=init)
        model = get_peft_model(auto_model(bases["qwen2"]), config)
    model.save_pretrained(tmp_path / "a")
    expect_error(bases["qwen2"], tmp_path / "a", rf"adapter 'a' sets init_lora_weights='{init}': PEFT loads it by first "
                                                 r"rewriting the base's weights")
