"""Loading: every user mistake gets one line that says what, why and how to fix it."""

from __future__ import annotations

import json
import re
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import LORA_CONFIGS, build_base, build_lora, build_t5_base
from evogm.cli import main
from evogm.errors import EvogmError
from evogm.errors import EvogmWarning
from evogm.models import load_models, resolve_dtype


@pytest.fixture(scope="module")
def other_base(tmp_path_factory):
    """A base of another shape (hidden 48), and an adapter made for it."""
    root = tmp_path_factory.mktemp("other")
    base = build_base(root / "wide", hidden_size=48, intermediate_size=96)
    return {"base": base, "lora": build_lora(base, root / "wide_lora", seed=3, **LORA_CONFIGS["lora_qv"])}


def copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def expect_error(base, experts, match, **kwargs):
    with pytest.raises(EvogmError, match=match) as info:
        load_models(base, experts, device="cpu", **kwargs)
    assert "fix:" in str(info.value) and "\n" not in str(info.value)


def test_missing_folder(tiny_models, tmp_path):
    expect_error(tmp_path / "nope", {}, "does not exist")
    expect_error(tiny_models["base"], {"x": tmp_path / "nope"}, "expert 'x' folder .* does not exist")


def test_a_file_where_a_folder_is_expected_is_named_a_file(tiny_models):
    adapter_file = tiny_models["lora_qv"] / "adapter_model.safetensors"
    expect_error(tiny_models["base"], {"x": adapter_file},
                 rf"expert 'x' path {re.escape(str(adapter_file))} is a file, not a folder: .*"
                 rf"fix: point it at the folder \(e.g. {re.escape(str(tiny_models['lora_qv']))}\)")
    expect_error(tiny_models["base"] / "model.safetensors", {}, "base model path .* is a file, not a folder")


def test_missing_weights_file(tiny_models, tmp_path):
    base = copy(tiny_models["base"], tmp_path / "base")
    (base / "model.safetensors").unlink()
    expect_error(base, {}, "no weights file")
    adapter = copy(tiny_models["lora_qv"], tmp_path / "adapter")
    (adapter / "adapter_model.safetensors").unlink()
    expect_error(tiny_models["base"], {"a": adapter}, "no adapter_model.safetensors")


@pytest.mark.parametrize("kept", [(), ("tokenizer_config.json",)])
def test_a_base_without_its_tokenizer_files_is_refused(tiny_models, tmp_path, kept):
    # transformers would build an empty Qwen2 tokenizer from config.json alone (1 or 5 tokens)
    base = copy(tiny_models["base"], tmp_path / "base")
    for file in ("tokenizer.json", "tokenizer_config.json"):
        if file not in kept:
            (base / file).unlink()
    expect_error(base, {}, r"no tokenizer files in .*base: evogm needs the base's tokenizer .* reads merges.txt or "
                           r"tokenizer.json or vocab.json; fix: copy the tokenizer files")


def test_merge_without_a_tokenizer_is_one_line_and_writes_nothing(tiny_models, tmp_path, capsys):
    base = copy(tiny_models["base"], tmp_path / "base")
    (base / "tokenizer.json").unlink()
    code = main(["merge", "--base", str(base), "--expert", f"a={tiny_models['lora_qv']}", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "no tokenizer files in" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_a_tokenizer_transformers_cannot_load_is_one_line(tmp_path):
    base = build_t5_base(tmp_path / "t5")
    (base / "tokenizer.json").unlink()  # T5's tokenizer_config.json alone: transformers raises a many-line ValueError
    expect_error(base, {}, r"cannot load the tokenizer of .*t5: ValueError: Couldn't instantiate the backend tokenizer")
    (base / "tokenizer_config.json").unlink()  # nothing: transformers builds a T5 tokenizer of sentinel tokens only
    expect_error(base, {}, r"no tokenizer files in .*t5: .*T5Tokenizer reads spiece.model or tokenizer.json")


def test_full_expert_of_another_architecture(tiny_models, other_base):
    expect_error(tiny_models["base"], {"wide": other_base["base"]}, "hidden_size=48, the base hidden_size=32")


def test_full_expert_with_other_shapes(tiny_models, tmp_path):
    expert = copy(tiny_models["full_all"], tmp_path / "e")
    config = json.loads((expert / "config.json").read_text())
    config.pop("hidden_size")  # an expert whose config does not say; its tensors still differ
    (expert / "config.json").write_text(json.dumps(config))
    state = load_file(expert / "model.safetensors")
    state["model.norm.weight"] = torch.ones(7)
    save_file(state, expert / "model.safetensors", metadata={"format": "pt"})
    expect_error(tiny_models["base"], {"e": expert}, r"model.norm.weight has shape \(7,\)")


def test_adapter_targets_modules_the_base_lacks(tiny_models, tmp_path):
    adapter = copy(tiny_models["lora_qv"], tmp_path / "a")
    state = {k.replace("q_proj", "qkv_proj"): v for k, v in load_file(adapter / "adapter_model.safetensors").items()}
    save_file(state, adapter / "adapter_model.safetensors")
    expect_error(tiny_models["base"], {"a": adapter}, "targets model.layers.0.self_attn.qkv_proj, which the base lacks")


def test_adapter_of_another_base_shape_is_an_error(tiny_models, other_base):
    expect_error(tiny_models["base"], {"a": other_base["lora"]}, "made for another base")


def test_adapter_naming_another_base_warns(tiny_models, tmp_path):
    adapter = copy(tiny_models["lora_qv"], tmp_path / "a")
    config = json.loads((adapter / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = "Qwen/Qwen2.5-7B"
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    with pytest.warns(EvogmWarning, match="names 'Qwen/Qwen2.5-7B' as its base"):
        models = load_models(tiny_models["base"], {"a": adapter}, device="cpu")
    assert models.experts[0].factors


def test_pickled_weights_are_refused_unless_allowed(tiny_models, tmp_path):
    base = copy(tiny_models["base"], tmp_path / "base")
    state = load_file(base / "model.safetensors")
    (base / "model.safetensors").unlink()
    torch.save(state, base / "pytorch_model.bin")
    expect_error(base, {}, "only pickled weights")
    expert = copy(base, tmp_path / "expert")
    models = load_models(tiny_models["base"], {"e": expert}, device="cpu", allow_pickle=True)
    assert models.experts[0].kind == "full" and not models.experts[0].deltas  # same weights: no task vector
    assert load_models(base, {}, device="cpu", allow_pickle=True).model is not None


def test_remote_code_is_never_run_unless_asked(tiny_models, tmp_path):
    base = copy(tiny_models["base"], tmp_path / "base")
    config = json.loads((base / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_evil.EvilModel"}
    (base / "config.json").write_text(json.dumps(config))
    expect_error(base, {}, "needs its own Python code")


def test_dora_adapter_is_refused(tiny_models, tmp_path):
    adapter = copy(tiny_models["lora_qv"], tmp_path / "a")
    config = json.loads((adapter / "adapter_config.json").read_text())
    config["use_dora"] = True
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    expect_error(tiny_models["base"], {"a": adapter}, "DoRA")


def edit_adapter_config(adapter, **changes):
    config = json.loads((adapter / "adapter_config.json").read_text())
    (adapter / "adapter_config.json").write_text(json.dumps({**config, **changes}))


@pytest.mark.parametrize("key, value", [
    ("layer_replication", [[0, 2], [1, 2]]),
    ("lora_bias", True),
    ("bias", "lora_only"),
    ("target_parameters", ["mlp.experts.gate_up_proj"]),
    ("alora_invocation_tokens", [5, 6]),
    ("use_qalora", True),
    ("a_future_peft_option", {"on": True}),  # an option evogm does not know: refused, not ignored
])
def test_adapter_options_evogm_does_not_apply_are_refused_by_name(tiny_models, tmp_path, key, value):
    adapter = copy(tiny_models["lora_qv"], tmp_path / "a")
    edit_adapter_config(adapter, **{key: value})
    expect_error(tiny_models["base"], {"a": adapter}, f"adapter 'a' sets {key}=")


def test_a_truncated_safetensors_file_is_named(tiny_models, tmp_path):
    def truncated(src, name, file):
        folder = copy(src, tmp_path / name)
        data = (folder / file).read_bytes()
        (folder / file).write_bytes(data[: len(data) // 2])
        return folder

    expect_error(truncated(tiny_models["base"], "base", "model.safetensors"), {}, r"cannot read .*base/model.safetensors")
    expect_error(tiny_models["base"], {"f": truncated(tiny_models["full_all"], "full", "model.safetensors")},
                 r"cannot read .*full/model.safetensors: .*damaged")
    expect_error(tiny_models["base"], {"a": truncated(tiny_models["lora_qv"], "lora", "adapter_model.safetensors")},
                 r"cannot read .*lora/adapter_model.safetensors")


def test_a_non_finite_value_in_an_expert_is_named_at_load(tiny_models, tmp_path):
    full = copy(tiny_models["full_all"], tmp_path / "full")
    state = load_file(full / "model.safetensors")
    state["model.layers.1.mlp.up_proj.weight"][3, 4] = float("nan")
    save_file(state, full / "model.safetensors", metadata={"format": "pt"})
    expect_error(tiny_models["base"], {"f": full}, "expert 'f' tensor model.layers.1.mlp.up_proj.weight holds 1 non-finite")
    adapter = copy(tiny_models["lora_qv"], tmp_path / "a")
    state = load_file(adapter / "adapter_model.safetensors")
    key = next(k for k in state if "lora_B" in k)
    state[key][0, 0] = float("inf")
    save_file(state, adapter / "adapter_model.safetensors")
    expect_error(tiny_models["base"], {"a": adapter}, f"expert 'a' tensor {re.escape(key)} holds 1 non-finite")


def test_dtype_rules():
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert resolve_dtype("auto", torch.device("cuda")) == torch.bfloat16
    with pytest.raises(EvogmError, match="unknown dtype"):
        resolve_dtype("float8")


def test_bfloat16_load_merges_in_bfloat16(tiny_models, expert_paths):
    import numpy as np

    from evogm.merge import Merger

    models = load_models(tiny_models["base"], expert_paths, dtype="bfloat16", device="cpu")
    model = Merger(models.model, models.experts)(np.full(5, 0.5))
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())
    assert all(torch.isfinite(p.float()).all() for p in model.parameters())


def test_cli_prints_one_line_and_exits_2(tiny_models, tmp_path, capsys):
    code = main(["merge", "--base", str(tmp_path / "missing"), "--expert", f"a={tiny_models['lora_qv']}",
                 "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("evogm merge: error: base model folder") and len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_a_folder_holding_an_adapter_and_a_full_model_is_ambiguous(tiny_models, tmp_path):
    both = copy(tiny_models["lora_qv"], tmp_path / "both")
    shutil.copy(tiny_models["full_all"] / "model.safetensors", both / "model.safetensors")
    expect_error(tiny_models["base"], {"x": both},
                 r"expert 'x' folder .*both holds both a PEFT adapter \(adapter_config.json, adapter_model.safetensors\) "
                 r"and a full model's weights \(model.safetensors\): .*separate folders")
    # a trainer's checkpoint files beside an adapter are not a model
    checkpoint = copy(tiny_models["lora_qv"], tmp_path / "checkpoint-10")
    torch.save({"step": 10}, checkpoint / "optimizer.pt")
    torch.save({}, checkpoint / "training_args.bin")
    assert load_models(tiny_models["base"], {"c": checkpoint}, device="cpu").experts[0].kind == "lora"
