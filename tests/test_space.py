"""The search space (`space:`): its map between a vector and a merge, its refusals, the in-place merges of
every method against mergekit's own definitions (its source, 0.1.5, re-done here: mergekit is not a
dependency), and the exported mergekit.yaml resolving, tensor by tensor, to the merge that was searched."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from evogm import merge as M
from evogm.config import from_dict, load_config, resolve, to_dict
from evogm.errors import EvogmError
from evogm.export import mergekit_config, space_recipe
from evogm.merge import GROUP_RULES, Merger
from evogm.models import load_models
from evogm.space import Space, SpaceConfig, check_space


# --- the map ---------------------------------------------------------------------------------------


def test_the_default_space_is_todays_task_arithmetic():
    space = Space(SpaceConfig(), ["a", "b", "c"], groups=2)
    assert space.plain and space.dim == 6 and space.per_expert == 2 and space.params == ("weight",)
    x = np.arange(6.0)
    assert space.decode(x).weight[:, 0, :].tolist() == x.reshape(3, 2).tolist()  # expert-major, as λ


def test_a_vector_maps_to_weights_and_densities_and_back():
    space = Space(SpaceConfig(method="ties", density=[0.2, 0.6], filters=("attn", "mlp")), ["a", "b"], groups=2)
    assert space.cells == ("attn", "mlp", "rest") and space.per_expert == 2 * 3 * 2 and space.dim == 24
    assert space.names()[:3] == ["a.weight.attn.g0", "a.weight.attn.g1", "a.weight.mlp.g0"]
    assert space.names()[6] == "a.density.attn.g0" and space.names()[12] == "b.weight.attn.g0"
    x = np.random.default_rng(0).uniform(-1, 1, space.dim)
    c = space.decode(x)
    assert c.weight.shape == c.density.shape == (2, 3, 2)
    assert c.weight[1, 2, 1] == x[12 + 5]  # b's weight, rest, group 1
    assert c.density[0, 0, 0] == pytest.approx(0.2 + (x[6] + 1) / 2 * 0.4)
    np.testing.assert_allclose(space.encode(c), x, atol=1e-12)
    outside = space.decode(np.where(np.arange(24) % 12 >= 6, 5.0, x))  # density coordinates past the box
    assert np.all(outside.density == 0.6) and c.normalize is True  # clipped to the range; TIES normalizes


def test_a_fixed_density_is_no_coordinate():
    space = Space(SpaceConfig(method="dare_ties", density=0.4), ["a", "b"])
    assert space.dim == 2 and space.decode([1.0, 2.0]).density.ravel().tolist() == [0.4, 0.4]
    assert space.normalize is False  # mergekit's default for dare_ties


# --- refusals at config load -----------------------------------------------------------------------


@pytest.mark.parametrize("space, groups, message", [
    ({"method": "slerp"}, 1, "space.method is 'slerp'"),
    ({"method": "ties", "density": [0.0, 1.0]}, 1, "space.density [0.0, 1.0] is not a density in (0, 1]"),
    ({"method": "ties", "density": [0.5, 1.5]}, 1, "is not a density in (0, 1]"),
    ({"method": "dare_ties", "density": 0}, 1, "space.density 0 is not a density in (0, 1]"),
    ({"method": "ties", "density": [0.6, 0.2]}, 1, "space.density [0.6, 0.2] is an empty range"),
    ({"method": "ties", "density": "high"}, 1, "is not a density in (0, 1]"),
    ({"density": 0.5}, 1, "space.density is set for task_arithmetic"),
    ({"smooth": True}, 1, "space.smooth is true with one layer group"),
    ({"normalize": True}, 1, "space.normalize is set for task_arithmetic"),
    ({"method": "linear", "scale": 2}, 1, "space.scale is set for linear"),
    ({"filters": ["mlp", "mlp"]}, 1, "space.filters holds 'mlp' twice"),
    ({"filters": [""]}, 1, "space.filters.0 is ''"),
])
def test_a_bad_space_is_refused_in_one_line(space, groups, message):
    with pytest.raises(EvogmError, match=re.escape(message)) as error:
        check_space(SpaceConfig(**space), groups)
    assert len(str(error.value).splitlines()) == 1 and "fix:" in str(error.value)


def test_a_config_with_a_space_loads_resolves_and_saves_it(zoo_tiny, tmp_path):
    over = ["space.method=ties", "space.density=[0.2, 0.9]", "space.filters=[self_attn, mlp]", "models.groups=2",
            f"output={tmp_path / 'run'}", "search.optimizer=pso", "search.budget=4"]
    cfg = resolve(load_config(zoo_tiny / "run.yaml", over), tmp_path / "run")
    assert cfg.search.options["groups"] == 2 * 3 * 2  # coordinates per expert: the hybrid start's blocks
    data = to_dict(cfg)
    assert data["space"]["filters"] == ["self_attn", "mlp"] and from_dict(data).space == cfg.space
    plain = load_config(zoo_tiny / "run.yaml", [f"output={tmp_path / 'run'}"])
    assert "space" not in to_dict(plain)  # a run without `space:` saves the config it always did
    with pytest.raises(EvogmError, match=re.escape("space.smooth is true with one layer group")):
        load_config(zoo_tiny / "run.yaml", ["space.smooth=true", f"output={tmp_path / 'run'}"])


def test_a_space_config_check_loads_no_heavy_library(zoo_tiny):
    code = ("import sys; from evogm.config import load_config; load_config(sys.argv[1], ['output=/tmp/evogm-x', "
            "'space.method=ties', 'space.filters=[mlp]']); "
            "print(sorted(m for m in ('torch', 'transformers', 'peft') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code, str(zoo_tiny / "run.yaml")], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


# --- mergekit's merge, as its source defines it ----------------------------------------------------


def mk_setting(setting, name: str, t: float):
    """mergekit.config.evaluate_setting: a number, a gradient over t, or the first matching filter's value."""
    if isinstance(setting, (bool, int, float, str)):
        return setting
    if all(isinstance(e, (int, float)) for e in setting):
        scaled = t * (len(setting) - 1)
        i0 = int(scaled)
        i1 = min(len(setting) - 1, i0 + 1)
        frac = scaled - i0
        return (1 - frac) * setting[i0] + frac * setting[i1]
    for cond in setting:
        if cond.get("filter") in (None, "*") or cond["filter"] in name:
            return mk_setting(cond["value"], name, t)
    return None


def mk_sources(config: dict, name: str, order: list[str]) -> tuple[list[dict], float]:
    """The sources (model, parameters) mergekit merges a tensor from, and its t (mergekit.plan): a layer's
    slice of its stack, t its place in the slice; before the layers the first slice, after them the last,
    both at t = 0."""
    if "modules" in config:
        stacks = {stack: module["slices"] for stack, module in config["modules"].items()}
    else:
        stacks = {"": config["slices"] if "slices" in config else [{"sources": config["models"]}]}
    seq2seq = "modules" in config
    match = M.LAYER.search(name)
    if match is None:
        stack = ("decoder" if "decoder." in name or "lm_head" in name else "encoder") if seq2seq else ""
        first_layer = next(i for i, n in enumerate(order) if M.LAYER.search(n))
        return stacks[stack][0 if order.index(name) < first_layer else -1]["sources"], 0.0
    stack = M.stack_of(name, match, seq2seq)
    depth = 1 + max(int(m[1]) for n in order if (m := M.LAYER.search(n)) and M.stack_of(n, m, seq2seq) == stack)
    index = int(match[1])
    for piece in stacks[stack]:
        start, end = piece["sources"][0].get("layer_range") or (0, depth)
        if start <= index < end:
            return piece["sources"], (index - start) / (end - start - 1) if end - start > 1 else 1.0
    raise AssertionError(name)


def mk_magnitude(delta: torch.Tensor, density: float) -> torch.Tensor:
    """mergekit.sparsify.magnitude, line for line."""
    if density >= 1:
        return delta
    k = max(1, int(density * delta.numel()))
    mask = torch.zeros(delta.numel(), dtype=delta.dtype)
    w = delta.abs().reshape(-1).float()
    mask[torch.argsort(w, descending=True)[:k]] = 1
    return delta * mask.reshape_as(delta)


def mk_tensor(config: dict, name: str, order: list[str], base: dict, experts: dict[str, dict]) -> torch.Tensor:
    """One tensor as mergekit merges it from `config` (no random drops: DARE at density 1)."""
    sources, t = mk_sources(config, name, order)
    method, shared = config["merge_method"], config["parameters"]
    inputs = [(experts[s["model"]][name], s.get("parameters") or {}) for s in sources if s["model"] in experts]
    value = {p: [mk_setting(params[p], name, t) if p in params else None for _, params in inputs]
             for p in ("weight", "density")}
    if method == "linear":
        w = torch.tensor(value["weight"], dtype=torch.float32)
        return sum(wi * theta for wi, theta in zip(w, (th for th, _ in inputs))) / w.sum()
    b = base[name]
    deltas = []
    for (theta, _), density in zip(inputs, value["density"]):
        delta = theta - b
        if method == "ties":
            delta = mk_magnitude(delta, 1.0 if density is None else density)
        deltas.append(delta)
    deltas = torch.stack(deltas)
    w = torch.tensor(value["weight"], dtype=torch.float32).view(-1, *[1] * b.dim())
    deltas = deltas * w
    if method in ("ties", "dare_ties"):
        mask = deltas.sign() == ((deltas.sum(0) >= 0).float() * 2 - 1)
        mixed, divisor = (deltas * mask).sum(0), (w * mask).sum(0)
        divisor[divisor == 0] = 1
    else:
        mixed, divisor = deltas.sum(0), w.sum(0)
        divisor[divisor.abs() < 1e-8] = 1
    if shared.get("normalize"):
        mixed = mixed / divisor
    if shared.get("lambda", 1.0) != 1:
        mixed = mixed * shared["lambda"]
    return b + mixed


def models_as_mergekit_reads_them(paths: dict, auto) -> tuple[dict, dict[str, dict]]:
    """θ₀ and every expert's full weights, LoRA experts merged by PEFT (mergekit's --lora-merge-cache),
    keyed by the references mergekit.yaml names them with."""
    from peft import PeftModel

    base = auto.from_pretrained(paths["base"]).state_dict()
    experts = {}
    for name, path in paths.items():
        if name == "base":
            continue
        if "lora" in name:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model = PeftModel.from_pretrained(auto.from_pretrained(paths["base"]), path).merge_and_unload()
            experts[f"{paths['base']}+{path}"] = model.state_dict()
        else:
            experts[str(path)] = auto.from_pretrained(path).state_dict()
    return base, experts


CASES = {  # name: (experts, the space, groups)
    "ties": (["full_all", "full_mlp", "lora_qv", "lora_emb"], dict(method="ties"), 1),
    "ties-filters-groups": (["full_all", "full_mlp", "lora_mlp"], dict(method="ties", filters=("self_attn", "mlp")), 2),
    "ties-smooth-no-normalize": (["full_all", "lora_emb"], dict(method="ties", smooth=True, normalize=False, scale=0.8), 2),
    "dare-ties-at-density-1": (["full_all", "full_mlp", "lora_qv"], dict(method="dare_ties", density=1.0), 2),
    "task-arithmetic-smooth-filters": (["full_all", "lora_mlp", "lora_emb"], dict(filters=("mlp",), smooth=True), 2),
    "linear-filters-groups": (["full_all", "full_mlp", "lora_qv"], dict(method="linear", filters=("self_attn",)), 2),
}


@pytest.fixture(scope="module")
def as_mergekit_reads(tiny_models):
    from transformers import AutoModelForCausalLM

    return models_as_mergekit_reads_them({k: str(v) for k, v in tiny_models.items()}, AutoModelForCausalLM)


def searched(paths: dict, names: list[str], space_kw: dict, groups: int, seed: int = 0):
    """A random candidate of a space on these experts: the model merged in place, and its mergekit.yaml."""
    models = load_models(paths["base"], {n: paths[n] for n in names}, dtype="float32", device="cpu")
    space = Space(SpaceConfig(**space_kw), names, groups, seed=3)
    merger = Merger(models.model, models.experts, groups=groups, space=space)
    x = np.random.default_rng(seed).uniform(0.1, 1.0, space.dim)
    state = {k: v.clone() for k, v in merger.candidate(x).state_dict().items()}
    recipe = space_recipe(space, space.decode(x), base=str(paths["base"]), experts={n: str(paths[n]) for n in names},
                          kinds={e.name: e.kind for e in models.experts},
                          layers=merger.depths if merger.seq2seq else merger.n_layers,
                          group_rule=GROUP_RULES[merger.seq2seq], after_layers=merger.after_layers())
    return merger, state, recipe


@pytest.mark.parametrize("case", CASES)
def test_an_in_place_merge_is_mergekits_merge_of_its_exported_config(tiny_models, as_mergekit_reads, case):
    names, space_kw, groups = CASES[case]
    paths = {k: str(v) for k, v in tiny_models.items()}
    merger, state, recipe = searched(paths, names, space_kw, groups)
    config = mergekit_config(recipe)
    assert config["merge_method"] == space_kw.get("method", "task_arithmetic")
    assert ("slices" in config) == (groups > 1 and not space_kw.get("smooth"))  # groups: per-slice parameters
    base, experts = as_mergekit_reads
    order = list(state)
    touched = {slot.name for slot in merger._slots}
    for name in touched:
        expected = mk_tensor(config, name, order, base, experts)
        torch.testing.assert_close(state[name], expected, atol=1e-6, rtol=1e-6, msg=name)  # rtol: one float32 ulp at |θ| ≈ 13
    for name in set(order) - touched:
        assert torch.equal(state[name], base[name]), name  # what no expert changes stays θ₀
    merger.reset()


def test_a_t5_merge_with_filters_and_groups_is_mergekits_merge_of_its_modules_config(tiny_t5):
    from transformers import AutoModelForSeq2SeqLM

    paths = {k: str(v) for k, v in tiny_t5.items()}
    names = ["full_all", "full_ffn", "lora_qv"]
    merger, state, recipe = searched(paths, names, dict(method="ties", filters=("SelfAttention", "DenseReluDense")), 2)
    config = mergekit_config(recipe)
    assert set(config["modules"]) == {"encoder", "decoder"}  # mergekit's T5 stacks, one slice per group each
    assert [s["sources"][0]["layer_range"] for s in config["modules"]["decoder"]["slices"]] == [[0, 2], [2, 3]]
    base, experts = models_as_mergekit_reads_them(paths, AutoModelForSeq2SeqLM)
    for slot in merger._slots:
        torch.testing.assert_close(state[slot.name], mk_tensor(config, slot.name, list(state), base, experts),
                                   atol=1e-6, rtol=0, msg=slot.name)
    merger.reset()


def test_the_recipe_says_every_value_and_how_the_space_maps(tiny_models):
    paths = {k: str(v) for k, v in tiny_models.items()}
    _, _, recipe = searched(paths, ["full_all", "lora_qv"], dict(method="ties", density=[0.3, 0.9], filters=("mlp",),
                                                                 smooth=True), 2)
    spec = recipe["experts"]["lora_qv"]
    assert recipe["method"] == "ties" and recipe["filters"] == ["mlp"] and recipe["smooth"] is True
    assert set(spec["weight"]) == {"mlp", "rest"} and len(spec["density"]["mlp"]) == 2  # anchors per cell
    assert all(0.3 <= d <= 0.9 for cell in spec["density"].values() for d in cell)
    assert recipe["after_layers"] == ["model.norm.weight", "lm_head.weight"][:len(recipe["after_layers"])]
    assert "searched in [0.3, 0.9]" in recipe["space"]["density"] and recipe["options"]["normalize"] is True
    assert "interpolation at t = k/(n−1)" in recipe["group_rule"]


# --- TIES' trim: exactly ⌊density·n⌋ entries, as mergekit keeps them --------------------------------


def bfloat16_deltas(n: int, seed: int = 0) -> torch.Tensor:
    """Task vectors of a bfloat16 checkpoint, in float32: a bfloat16 fine-tune minus its bfloat16 base
    (norm weights near 1), which take few distinct values, so that many tie in magnitude."""
    gen = torch.Generator().manual_seed(seed)
    base = (1 + 0.01 * torch.randn(n, generator=gen)).to(torch.bfloat16)
    tuned = (base.float() + 0.01 * torch.randn(n, generator=gen)).to(torch.bfloat16)
    return tuned.float() - base.float()


@pytest.mark.parametrize("n, density", [(128, 0.5), (896, 0.3), (5000, 0.2), (20000, 0.7)])
def test_trim_keeps_exactly_the_entries_mergekit_keeps_when_magnitudes_tie(n, density):
    deltas = torch.stack([bfloat16_deltas(n, seed) for seed in range(3)])
    k = max(1, int(density * n))
    threshold = deltas.abs().kthvalue(n - k + 1, dim=1).values
    assert all(int((row.abs() >= t).sum()) > k for row, t in zip(deltas, threshold))  # ties at the k-th: the old trim kept more
    kept = M.trim(deltas, density)
    for row, mine in zip(deltas, kept):
        assert int((mine != 0).sum()) <= k and torch.equal(mine, mk_magnitude(row, density))
    assert [int((r != 0).sum()) for r in M.trim(deltas, [0.5, 1.0, 0.01])] == \
           [int((mk_magnitude(r, d) != 0).sum()) for r, d in zip(deltas, [0.5, 1.0, 0.01])]  # a density per expert


def test_ties_on_a_bfloat16_checkpoint_loaded_in_float32_is_mergekits(tmp_path):
    """The case of the issue: a bfloat16 base and fine-tune, merged in float32; every norm tensor keeps
    exactly ⌊density·n⌋ of its entries, and the merge is mergekit's."""
    from conftest import build_base
    from transformers import AutoModelForCausalLM

    base = build_base(tmp_path / "base", hidden_size=64, intermediate_size=128)
    tuned = AutoModelForCausalLM.from_pretrained(base)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in tuned.parameters():
            p.add_(0.01 * torch.randn(p.shape, generator=gen))
    tuned.to(torch.bfloat16).save_pretrained(tmp_path / "tuned")
    AutoModelForCausalLM.from_pretrained(base).to(torch.bfloat16).save_pretrained(tmp_path / "base16")
    for file in base.glob("tokenizer*"):
        (tmp_path / "base16" / file.name).write_bytes(file.read_bytes())
    paths = {"base": str(tmp_path / "base16"), "tuned": str(tmp_path / "tuned")}
    merger, state, recipe = searched(paths, ["tuned"], dict(method="ties", density=0.5), 1)
    norm = "model.layers.0.input_layernorm.weight"
    delta = state[norm] - merger.base.get(next(s.index for s in merger._slots if s.name == norm)).float()
    assert int((delta != 0).sum()) == 32  # ⌊0.5 · 64⌋
    experts = {paths["tuned"]: AutoModelForCausalLM.from_pretrained(paths["tuned"], dtype=torch.float32).state_dict()}
    theta0 = AutoModelForCausalLM.from_pretrained(paths["base"], dtype=torch.float32).state_dict()
    config = mergekit_config(recipe)
    for slot in merger._slots:
        torch.testing.assert_close(state[slot.name], mk_tensor(config, slot.name, list(state), theta0, experts),
                                   atol=1e-6, rtol=0, msg=slot.name)


# --- DARE-TIES: mergekit's drops, seeded ------------------------------------------------------------


def test_dare_drops_keep_the_density_and_the_l1_norm():
    deltas = torch.randn(3, 40000, generator=torch.Generator().manual_seed(0))
    kept = M.dare_drop(deltas, [0.3, 0.8, 1.0], torch.Generator().manual_seed(5))
    for row, mine, density in zip(deltas, kept, [0.3, 0.8, 1.0]):
        share = float((mine != 0).float().mean())
        assert abs(share - density) < 5 * (density * (1 - density) / 40000) ** 0.5 + 1e-9  # Bernoulli(density)
        torch.testing.assert_close(mine.abs().sum(), row.abs().sum(), rtol=1e-5, atol=0)  # mergekit's rescale: L1
        nonzero = mine != 0
        ratio = mine[nonzero] / row[nonzero]
        assert torch.allclose(ratio, ratio[0])  # one factor per task vector
    again = M.dare_drop(deltas, [0.3, 0.8, 1.0], torch.Generator().manual_seed(5))
    assert torch.equal(kept, again)
    wider = M.dare_drop(deltas, [0.5, 0.8, 1.0], torch.Generator().manual_seed(5))
    assert bool(((kept[0] != 0) <= (wider[0] != 0)).all())  # one draw per entry: a higher density keeps a superset


def test_a_dare_ties_candidate_is_one_merge_per_seed(tiny_models):
    paths = {k: str(v) for k, v in tiny_models.items()}
    names = ["full_all", "full_mlp"]
    models = load_models(paths["base"], {n: paths[n] for n in names}, dtype="float32", device="cpu")
    merger = Merger(models.model, models.experts)
    states = []
    for seed in (1, 1, 2):
        merger.use_space(Space(SpaceConfig(method="dare_ties", density=[0.2, 0.6]), names, seed=seed))
        merger.candidate([0.5, 0.0, 1.0, 0.3])
        states.append({k: v.clone() for k, v in models.model.state_dict().items()})
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    assert any(not torch.equal(states[0][k], states[2][k]) for k in states[0])


# --- filters need the model ------------------------------------------------------------------------


@pytest.mark.parametrize("filters, message", [
    (("attention_block",), "space.filters.0 'attention_block' matches no module"),
    (("mlp", "up_proj"), "space.filters.1 'up_proj' matches no module: every tensor it matches"),
])
def test_a_filter_that_takes_no_tensor_the_experts_change_is_refused_when_the_models_load(tiny_models, filters,
                                                                                          message):
    paths = {k: str(v) for k, v in tiny_models.items()}
    models = load_models(paths["base"], {"full_mlp": paths["full_mlp"]}, dtype="float32", device="cpu")
    with pytest.raises(EvogmError, match=re.escape(message)) as error:
        Merger(models.model, models.experts, space=Space(SpaceConfig(filters=filters), ["full_mlp"]))
    assert len(str(error.value).splitlines()) == 1


# --- a run ---------------------------------------------------------------------------------------


def test_a_run_searches_a_space_and_exports_reports_and_scores_its_best(zoo_tiny, tmp_path):
    from evogm.cli import main as cli
    from evogm.evaluate import evaluate

    out = tmp_path / "run"
    over = ["space.method=ties", "space.filters=[self_attn, mlp]", "search.optimizer=random", "search.budget=6",
            "search.popsize=3", "baselines.methods=[uniform]", f"output={out}"]
    assert cli(["run", str(zoo_tiny / "run.yaml"), *over, "--quiet"]) == 0
    log = [yaml.safe_load(line) for line in (out / "evaluations.jsonl").read_text().splitlines()]
    experts = len(yaml.safe_load((zoo_tiny / "run.yaml").read_text())["models"]["experts"])
    assert len(log) == 6 and all(len(r["coefficients"]) == experts * 2 * 3 for r in log)
    final = yaml.safe_load((out / "final.json").read_text())
    assert final["space"]["method"] == "ties" and final["space"]["cells"] == ["self_attn", "mlp", "rest"]
    recipe = yaml.safe_load((out / "model" / "recipe.yaml").read_text())
    assert recipe["method"] == "ties" and recipe["filters"] == ["self_attn", "mlp"]
    assert yaml.safe_load((out / "model" / "mergekit.yaml").read_text())["merge_method"] == "ties"
    report = (out / "report.md").read_text()
    assert "search space: method ties" in report and "## Best merge (ties)" in report
    best = yaml.safe_load((out / "best.json").read_text())
    again = evaluate(str(out / "config.yaml"), candidate=best["coefficients"], split="dev",
                     load={"dtype": "float32", "device": "cpu"})
    assert again.score == pytest.approx(best["fitness"], abs=1e-12)  # `evogm eval --candidate` merges as the search did


# --- real mergekit, where it is installed ----------------------------------------------------------


def mergekit_yaml() -> Path | None:
    """mergekit's command, where it is installed: EVOGM_MERGEKIT_YAML (another virtualenv's), next to this
    Python (`pip install mergekit` beside evogm: it changes none of evogm's dependencies), or on PATH."""
    for found in (os.environ.get("EVOGM_MERGEKIT_YAML"), Path(sys.executable).with_name("mergekit-yaml"),
                  shutil.which("mergekit-yaml")):
        if found and Path(found).is_file():
            return Path(found)
    return None


MERGEKIT = mergekit_yaml()


def merged_by_both(paths: dict, names: list[str], space_kw: dict, groups: int, tmp_path: Path, seed: int = 0):
    """(evogm's exported tensors, mergekit's tensors from the exported mergekit.yaml)."""
    from safetensors.torch import load_file

    from evogm.export import export_merged

    models = load_models(paths["base"], {n: paths[n] for n in names}, dtype="float32", device="cpu")
    space = Space(SpaceConfig(**space_kw), names, groups, seed=seed)
    merger = Merger(models.model, models.experts, groups=groups, space=space)
    x = np.random.default_rng(0).uniform(0.1, 1.0, space.dim)
    out = export_merged(merger, models.tokenizer, x, tmp_path / "evogm", base=paths["base"],
                        experts={n: paths[n] for n in names})
    subprocess.run([str(MERGEKIT), str(out / "mergekit.yaml"), str(tmp_path / "mergekit"), "--lora-merge-cache",
                    str(tmp_path / "cache")], check=True, capture_output=True)
    return load_file(out / "model.safetensors"), load_file(tmp_path / "mergekit" / "model.safetensors")


needs_mergekit = pytest.mark.skipif(MERGEKIT is None,
                                    reason="mergekit is not installed (EVOGM_MERGEKIT_YAML names its mergekit-yaml)")


@needs_mergekit
@pytest.mark.parametrize("case", ["ties-filters-groups", "task-arithmetic-smooth-filters", "linear-filters-groups",
                                  "dare-ties-at-density-1"])
def test_mergekit_itself_reproduces_an_exported_merge(tiny_models, tmp_path, case):
    names, space_kw, groups = CASES[case]
    ours, theirs = merged_by_both({k: str(v) for k, v in tiny_models.items()}, names, space_kw, groups, tmp_path)
    for name, value in ours.items():
        torch.testing.assert_close(theirs[name], value, atol=1e-6, rtol=1e-6, msg=name)


@needs_mergekit
def test_mergekit_itself_reproduces_an_exported_t5_merge(tiny_t5, tmp_path):
    paths = {k: str(v) for k, v in tiny_t5.items()}
    ours, theirs = merged_by_both(paths, ["full_all", "full_ffn", "lora_qv"],
                                  dict(method="ties", filters=("SelfAttention", "DenseReluDense")), 2, tmp_path)
    for name, value in theirs.items():  # (mergekit writes T5's shared embedding under its stacks' names only)
        torch.testing.assert_close(value, ours[name], atol=1e-6, rtol=1e-6, msg=name)


@needs_mergekit
def test_mergekits_dare_ties_drops_are_evogms_in_distribution(tiny_models, tmp_path):
    paths = {k: str(v) for k, v in tiny_models.items()}
    ours, theirs = merged_by_both(paths, ["full_all"], dict(method="dare_ties", density=0.5), 1, tmp_path)
    base = load_models(paths["base"], {}, dtype="float32", device="cpu").model.state_dict()
    tuned = load_models(paths["full_all"], {}, dtype="float32", device="cpu").model.state_dict()
    ratios = []
    for name in ("model.layers.0.mlp.up_proj.weight", "model.layers.1.self_attn.q_proj.weight"):
        kept = {who: tensors[name] - base[name] for who, tensors in (("evogm", ours), ("mergekit", theirs))}
        l1 = (tuned[name] - base[name]).abs().sum()
        for who, delta in kept.items():
            share = float((delta != 0).float().mean())
            assert abs(share - 0.5) < 5 * (0.25 / delta.numel()) ** 0.5, (who, share)
            ratios.append(float(delta.abs().sum() / l1))  # the weight: the kept entries keep the L1 norm
        assert not torch.equal(kept["evogm"], kept["mergekit"])  # random drops: the same law, not the same tensor
    assert max(ratios) - min(ratios) < 1e-4 * max(ratios)
