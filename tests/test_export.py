"""Export: the folder transformers loads gives the in-memory merge's logits; recipe and mergekit config."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM, AutoTokenizer

from evogm.cli import main
from evogm.export import export_merged
from evogm.merge import Merger
from evogm.models import load_models


def logits(model, tokenizer, text="Question: 12+7?\nAnswer:"):
    ids = tokenizer(text, return_tensors="pt").input_ids
    with torch.no_grad():
        return model(ids).logits


def test_exported_model_reproduces_the_merge(tiny_models, expert_paths, tmp_path):
    models = load_models(tiny_models["base"], expert_paths, dtype="float32", device="cpu")
    merger = Merger(models.model, models.experts, groups=2)
    lam = np.array([[0.5, 1.0], [-0.2, 0.3], [1.2, 0.0], [0.4, 0.4], [0.0, -0.5]])
    out = export_merged(merger, models.tokenizer, lam, tmp_path / "model", base=str(tiny_models["base"]),
                        experts={k: str(v) for k, v in expert_paths.items()}, groups=2)
    expected = logits(merger(lam), models.tokenizer)
    loaded = AutoModelForCausalLM.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    torch.testing.assert_close(logits(loaded, tokenizer), expected, atol=1e-5, rtol=1e-5)
    generated = loaded.generate(tokenizer("ab", return_tensors="pt").input_ids, max_new_tokens=3, do_sample=False)
    assert generated.shape[1] == len(tokenizer("ab").input_ids) + 3
    recipe = yaml.safe_load((out / "recipe.yaml").read_text())
    assert recipe["experts"]["lora_mlp"] == {"path": str(expert_paths["lora_mlp"]), "kind": "lora", "weight": [-0.2, 0.3]}
    mergekit = yaml.safe_load((out / "mergekit.yaml").read_text())
    assert mergekit["merge_method"] == "task_arithmetic" and mergekit["parameters"]["normalize"] is False
    refs = [m["model"] for m in mergekit["models"]]
    assert refs[0] == f"{tiny_models['base']}+{expert_paths['lora_qv']}" and refs[3] == str(expert_paths["full_all"])
    assert mergekit["models"][1]["parameters"]["weight"][1] == {"filter": "layers.1.", "value": 0.3}
    merger.reset()


def test_cli_merge_then_load(tiny_models, tmp_path):
    out = tmp_path / "cli"
    argv = ["merge", "--base", str(tiny_models["base"]), "--expert", f"qv={tiny_models['lora_qv']}",
            "--expert", f"full={tiny_models['full_all']}", "--weights", "qv=0.7", "--weights", "full=-0.3", "--out", str(out)]
    assert main(argv) == 0
    models = load_models(tiny_models["base"], {"qv": tiny_models["lora_qv"], "full": tiny_models["full_all"]}, device="cpu")
    expected = logits(Merger(models.model, models.experts)(np.array([0.7, -0.3])), models.tokenizer)
    torch.testing.assert_close(logits(AutoModelForCausalLM.from_pretrained(out), models.tokenizer), expected,
                               atol=1e-5, rtol=1e-5)
    assert main(argv) == 2  # exists: refused without --force
    assert main(argv + ["--force", "--method", "ties", "--density", "0.5"]) == 0
    assert all(m["parameters"]["density"] == 0.5 for m in yaml.safe_load((out / "mergekit.yaml").read_text())["models"])


@pytest.mark.parametrize("weights, message", [
    (["qv=abc"], "not a number"),
    (["nope=1"], "unknown expert 'nope'"),
    (["qv"], "expected NAME=VALUE"),
    (["qv=nan"], "--weights qv=nan is not a finite number"),
    (["qv=0.5,inf"], "--weights qv=0.5,inf is not a finite number"),
    (["qv=0.5", "qv=0.7"], "--weights 'qv' is given twice"),
    (["qv=1,1,1"], "3 layer groups asked for: the model has only 2 layers"),
])
def test_cli_merge_bad_weights(tiny_models, tmp_path, capsys, weights, message):
    argv = ["merge", "--base", str(tiny_models["base"]), "--expert", f"qv={tiny_models['lora_qv']}", "--out", str(tmp_path / "x")]
    for w in weights:
        argv += ["--weights", w]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def merge_argv(tiny_models, out, *extra):
    return ["merge", "--base", str(tiny_models["base"]), "--expert", f"qv={tiny_models['lora_qv']}",
            "--out", str(out), *extra]


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_cli_merge_refuses_an_expert_name_given_twice(tiny_models, tmp_path, capsys):
    argv = merge_argv(tiny_models, tmp_path / "x", "--expert", f"qv={tiny_models['full_all']}")
    assert main(argv) == 2
    assert "--expert 'qv' is given twice" in one_line_error(capsys) and not (tmp_path / "x").exists()


def test_cli_merge_refuses_an_out_that_cannot_be_written(tiny_models, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    assert main(merge_argv(tiny_models, blocker / "merged")) == 2
    assert f"cannot write {blocker / 'merged'}" in one_line_error(capsys) and blocker.read_text() == "not a folder"


@pytest.mark.parametrize("flags, message", [
    (["--method", "dare", "--density", "-0.5"], "--density -0.5 is not a number in (0, 1]"),  # exported the base
    (["--method", "dare", "--density", "2"], "--density 2.0 is not a number in (0, 1]"),  # task arithmetic at λ=0.5
    (["--method", "dare", "--density", "0"], "--density 0.0 is not a number in (0, 1]"),  # blamed on nan
    (["--method", "ties", "--density", "0"], "fix: give a density above 0 and at most 1 (0.2 is ties's default)"),
    (["--method", "ties", "--density", "1.5"], "--density 1.5 is not a number in (0, 1]"),
    (["--density", "0.5"], "--density is not an option of task_arithmetic: task_arithmetic takes --scale; "
                           "fix: remove --density, or merge with ties or dare"),
    (["--method", "ties", "--scale", "nan"], "--scale nan is not a finite number"),
])
def test_cli_merge_refuses_bad_options_before_loading_anything(tiny_models, tmp_path, capsys, monkeypatch,
                                                               flags, message):
    import evogm.models

    monkeypatch.setattr(evogm.models, "load_models", lambda *a, **k: pytest.fail("loaded models"))
    out = tmp_path / "x"
    assert main(merge_argv(tiny_models, out, *flags)) == 2
    assert message in one_line_error(capsys) and not out.exists()


def test_cli_merge_never_writes_a_non_finite_model(tiny_models, tmp_path, capsys):
    out = tmp_path / "overflow"  # finite λ, but float16 overflows: refused, and nothing is written
    argv = ["merge", "--base", str(tiny_models["base"]), "--expert", f"full={tiny_models['full_all']}",
            "--weights", "full=1e9", "--dtype", "float16", "--device", "cpu", "--out", str(out)]
    assert main(argv) == 2
    assert "holds non-finite values" in one_line_error(capsys)
    assert not out.exists() or not any(out.iterdir())


# mergekit's generalized task arithmetic as its documentation and source define it (mergekit is not a
# dependency): merge_method → (sign consensus, sparsification)
MERGEKIT_GTA = {"task_arithmetic": (False, None), "ties": (True, "magnitude"),
                "dare_linear": (False, "random"), "dare_ties": (True, "random")}


def mergekit_tensor(config: dict, base: torch.Tensor, deltas: list[torch.Tensor]) -> torch.Tensor:
    """One tensor as mergekit merges it from `config` (deterministic methods only)."""
    consensus, sparsification = MERGEKIT_GTA[config["merge_method"]]
    params = [m["parameters"] for m in config["models"]]
    kept = []
    for p, delta in zip(params, deltas):
        density = p.get("density", config["parameters"].get("density", 1.0))
        if sparsification == "magnitude" and density < 1:  # the top ⌊density·n⌋ entries by magnitude
            mask = torch.zeros(delta.numel())
            mask[torch.argsort(delta.abs().view(-1), descending=True)[: int(density * delta.numel())]] = 1
            delta = delta * mask.view(delta.shape)
        kept.append(delta)
    stacked = torch.stack(kept)
    w = torch.tensor([float(p["weight"]) for p in params]).view(-1, *[1] * base.dim())
    weighted = stacked * w
    if consensus:  # the sign of the weighted sum (zero counts as +); only agreeing entries
        mask = weighted.sign() == torch.where(weighted.sum(0) >= 0, 1.0, -1.0)
        mixed, divisor = (weighted * mask).sum(0), (w * mask).sum(0)
        divisor[divisor == 0] = 1
    else:
        mixed, divisor = weighted.sum(0), w.sum(0)
        divisor[divisor.abs() < 1e-8] = 1
    if config["parameters"].get("normalize"):
        mixed = mixed / divisor
    return base + mixed * config["parameters"].get("lambda", 1.0)


def test_the_mergekit_yaml_of_a_ties_merge_gives_evogms_tensors(tiny_models, tmp_path):
    out = tmp_path / "ties"
    assert main(["merge", "--base", str(tiny_models["base"]), "--expert", f"a={tiny_models['full_all']}",
                 "--expert", f"b={tiny_models['full_mlp']}", "--weights", "a=0.7", "--weights", "b=-0.4",
                 "--method", "ties", "--scale", "0.9", "--device", "cpu", "--dtype", "float32", "--out", str(out)]) == 0
    text = (out / "mergekit.yaml").read_text()
    config = yaml.safe_load(text)
    assert "--lora-merge-cache" in text and config["parameters"]["normalize"] is True
    assert [m["parameters"]["density"] for m in config["models"]] == [0.2, 0.2]  # evogm's default, not mergekit's 1
    base = AutoModelForCausalLM.from_pretrained(tiny_models["base"]).state_dict()
    experts = [AutoModelForCausalLM.from_pretrained(tiny_models[n]).state_dict() for n in ("full_all", "full_mlp")]
    merged = AutoModelForCausalLM.from_pretrained(out).state_dict()
    for name, value in base.items():
        expected = mergekit_tensor(config, value, [e[name] - value for e in experts])
        torch.testing.assert_close(merged[name], expected, atol=1e-6, rtol=1e-5, msg=name)


@pytest.mark.parametrize("consensus, method, normalize", [([], "dare_linear", False), (["--consensus"], "dare_ties", True)])
def test_the_mergekit_yaml_of_a_dare_merge_names_its_density_and_how_mergekit_differs(
        tiny_models, tmp_path, consensus, method, normalize):
    out = tmp_path / "dare"
    assert main(merge_argv(tiny_models, out, "--method", "dare", "--seed", "3", *consensus)) == 0
    text = (out / "mergekit.yaml").read_text()
    config = yaml.safe_load(text)
    assert (config["merge_method"], config["parameters"]["normalize"], config["parameters"]["rescale"]) == \
           (method, normalize, True)
    assert config["models"][0]["parameters"]["density"] == 0.5 and "L1 norm" in text
    recipe = yaml.safe_load((out / "recipe.yaml").read_text())
    assert recipe["options"] == {"density": 0.5, "scale": 1.0, "consensus": bool(consensus), "seed": 3}


def test_the_finiteness_check_reads_every_slice():
    from evogm.errors import EvogmError
    from evogm.export import all_finite, check_finite_model

    values = torch.ones(1000)
    assert all_finite(values, chunk=7)
    values[-1] = float("inf")  # in the last, short slice
    assert not all_finite(values, chunk=7)
    layer = torch.nn.Linear(4, 3)
    with torch.no_grad():
        layer.bias[2] = float("nan")
    with pytest.raises(EvogmError, match="bias holds non-finite values"):
        check_finite_model(layer)
