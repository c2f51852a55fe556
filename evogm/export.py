"""Export a merge: a Hugging Face folder that transformers loads, `recipe.yaml`, and a mergekit config.

The folder is written into a hidden `.NAME.partial-XXXXXXXX` folder next to its destination and
renamed into place, so an interrupted export never leaves a half-written model where a finished one is
expected; the partial folder of an export that was killed is removed by the next export to the same
place. Any failure to write (a full disk, no permission) is one line (`ExportFailed`), and leaves
what was there before as it was. The folder and its files get the modes the umask gives, as any
folder and file the user makes (safetensors writes its files 0600 by itself).

>>> export_merged(merger, tokenizer, best_lambda, "runs/demo/model",
...               base="zoo/base", experts={"add": "zoo/experts/add"})   # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import secrets
import shutil
import tempfile
from pathlib import Path

import numpy as np
import yaml

from evogm.errors import EvogmError
from evogm.merge import GROUP_RULES, check_static_options
from evogm.space import REST, SMOOTH_RULE, filter_matches, interpolate

# evogm method → (mergekit method, its `normalize`): TIES and DARE-TIES divide by the agreeing experts'
# weights (normalize: true), task arithmetic and DARE sum (normalize: false)
MERGEKIT_METHODS = {"task_arithmetic": ("task_arithmetic", False), "ties": ("ties", True),
                    "dare": ("dare_linear", False), "dare-ties": ("dare_ties", True)}
MERGEKIT_HEADER = """\
# The same merge for mergekit:  mergekit-yaml mergekit.yaml OUT_DIR --lora-merge-cache CACHE_DIR
# (--lora-merge-cache is needed for the BASE+ADAPTER entries of LoRA experts)
"""
DARE_NOTE = """\
# DARE in mergekit is not evogm's DARE tensor for tensor, by definition: its drops are random
# (unseeded) where evogm's are seeded per parameter, and in recent mergekit versions its `rescale`
# matches the kept entries' L1 norm to the task vector's where evogm (as the DARE paper, and older
# mergekit) divides them by the density. Only evogm's recipe.yaml reproduces evogm's tensors exactly.
"""
DARE_TIES_NOTE = """\
# DARE-TIES: evogm's drops are seeded per parameter (recipe.yaml's seed), mergekit's are random; both keep
# each entry with probability `density` and rescale the kept ones to the task vector's L1 norm (mergekit's
# `rescale: true`), so this file gives a merge of the same distribution, not the same tensors. Only evogm's
# recipe.yaml reproduces evogm's tensors exactly.
"""
FILTER_RULE = "a tensor takes the first filter that is a part of its name (mergekit's `filter`), else the rest"
MERGEKIT_ENCODER_DECODERS = ("t5",)  # mergekit's architectures include T5ForConditionalGeneration, not BART & co.
MERGEKIT_SEPARATORS = "+@"  # mergekit splits a model reference at '+' (BASE+LORA) and '@' (PATH@REVISION)
PARTIAL = ".partial-"  # an export in progress is written as .NAME.partial-XXXXXXXX next to NAME
OUT_FIX = "free disk space, or choose another --out"


class ExportFailed(EvogmError):
    """An export could not be written (a full disk, no permission, a file in the way): `cannot write
    OUT: why; fix`. Nothing already there was changed. `out` and `why` are kept, so that a caller with
    another way out (a run: resume it) can say its own fix."""

    def __init__(self, out: Path, why: str, fix: str = OUT_FIX):
        self.out, self.why = out, why
        super().__init__(f"cannot write {out}", why, fix)


def merge_and_export(base: str, experts: dict[str, str], lam: np.ndarray, out_dir, *,
                     method: str = "task_arithmetic", force: bool = False, load: dict | None = None,
                     seed: int = 0, **options) -> Path:
    """Load the base and experts, merge them (task arithmetic with λ (experts × groups), or a static
    method with λ as per-expert weights and its options) and export the folder; what `evogm merge` does.
    `load`: load_models' keywords (dtype, device, allow_pickle, trust_remote_code). Options, weights and
    the output are checked before anything loads."""
    from evogm.merge import Merger
    from evogm.models import load_models

    check_static_options(method, options)
    static = not (method == "task_arithmetic" and options.get("scale", 1.0) == 1.0)
    if static and lam.shape[1] > 1:
        raise EvogmError(f"--method {method} takes one weight per expert", "group weights are for task arithmetic",
                         "give one value per expert")
    check_output(out_dir, force)
    models = load_models(base, experts, **(load or {}))
    merger = Merger(models.model, models.experts, groups=lam.shape[1])
    common = dict(base=base, experts=experts, force=force)
    if not static:
        return export_merged(merger, models.tokenizer, lam, out_dir, **common)
    return export_static(merger, models.tokenizer, method, out_dir, weights=lam[:, 0], seed=seed, **common, **options)


def export_merged(merger, tokenizer, coefficients, out_dir, *, base: str, experts: dict[str, str],
                  groups: int = 1, force: bool = True, extra: dict | None = None) -> Path:
    """Merge `coefficients` into the resident model and export it: a candidate of the merger's search
    space (`Merger.candidate`), which for the default space (none) is task arithmetic with λ."""
    space = merger.space
    if space is not None and not space.plain:
        merger.candidate(coefficients)
        recipe = space_recipe(space, space.decode(coefficients), base=base, experts=experts, kinds=_kinds(merger),
                              layers=merger.depths if merger.seq2seq else merger.n_layers,
                              group_rule=GROUP_RULES[merger.seq2seq], after_layers=merger.after_layers(), extra=extra)
        return export_model(merger.model, tokenizer, out_dir, recipe, force=force)
    lam = merger.coefficients(coefficients)
    merger(lam)
    recipe = make_recipe("task_arithmetic", lam, base=base, experts=experts, kinds=_kinds(merger),
                         layers=merger.depths if merger.seq2seq else merger.n_layers,
                         group_rule=GROUP_RULES[merger.seq2seq], extra=extra)
    return export_model(merger.model, tokenizer, out_dir, recipe, force=force)


def export_static(merger, tokenizer, method: str, out_dir, *, base: str, experts: dict[str, str],
                  weights=None, seed: int = 0, force: bool = True, **options) -> Path:
    """Write a static merge (task_arithmetic, ties, dare) into the resident model and export it."""
    from evogm.merge import static_options

    options = static_options(method, **options)  # the recipe names every option the merge ran with
    merger.static(method, weights=weights, seed=seed, **options)
    if method == "dare":
        options["seed"] = seed  # its drops' seed: the same seed gives the same merge
    lam = np.ones((len(experts), 1)) if weights is None else np.asarray(weights, dtype=float)[:, None]
    recipe = make_recipe(method, lam, base=base, experts=experts, kinds=_kinds(merger), options=options,
                         group_rule=GROUP_RULES[merger.seq2seq])
    return export_model(merger.model, tokenizer, out_dir, recipe, force=force)


def export_model(model, tokenizer, out_dir, recipe: dict, *, force: bool = True) -> Path:
    """Save model (safetensors) + tokenizer + recipe.yaml + mergekit.yaml into out_dir, atomically
    (see the module docstring); a failure to write is an `ExportFailed`."""
    out = check_output(out_dir, force)
    recipe = {**recipe, **_mergekit_note(model.config, recipe)}
    check_finite_model(model)
    try:
        with _partial_folder(out) as tmp:
            model.save_pretrained(tmp, safe_serialization=True)
            tokenizer.save_pretrained(tmp)
            _write_yaml(tmp / "recipe.yaml", recipe)
            if "mergekit" not in recipe:
                note = {"dare": DARE_NOTE, "dare_ties": DARE_TIES_NOTE}.get(recipe["method"], "")
                _write_yaml(tmp / "mergekit.yaml", mergekit_config(recipe), MERGEKIT_HEADER + note)
            _umask_modes(tmp)
            _put_in_place(tmp, out)
    except Exception as exc:
        why = write_failure(exc)
        if why is None:
            raise
        raise ExportFailed(out, why) from None
    return out


def check_output(out_dir, force: bool) -> Path:
    """Refuse a file, a non-empty folder unless forced, and a place that cannot be written
    (call it before any long work)."""
    out = Path(out_dir)
    check_folder_path(out, "--out")
    if out.exists() and any(out.iterdir()) and not force:
        raise EvogmError(f"{out} already exists and is not empty", "evogm does not overwrite outputs silently",
                         "choose another --out, or pass --force")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        os.rmdir(tempfile.mkdtemp(prefix=_partial_prefix(out), dir=out.parent))
    except OSError as exc:
        raise ExportFailed(out, write_failure(exc)) from None
    return out


def check_folder_path(path, key: str) -> None:
    """Refuse a path that should become a folder but cannot: an existing file, or a path under a
    file. Reads only (a config loader can call it: `check_folder_path(cfg.output, "output")`).

    >>> check_folder_path("/dev/null", "--out")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    evogm.export.ExportFailed: cannot write /dev/null: it is a file, not a folder; fix: choose another --out ...
    """
    path = Path(path)
    for place in (path, *path.parents):
        if place.is_dir():
            return
        if place.exists() or place.is_symlink():
            why = "it is a file, not a folder" if place == path else f"{place} is a file, not a folder"
            raise ExportFailed(path, why, f"choose another {key} (a file is never replaced, even with --force)")


def write_failure(exc: BaseException) -> str | None:
    """The OS's reason why a write failed ("No space left on device"), or None when `exc` is no failure
    to write. Python's OSError carries it as strerror; safetensors and tokenizers (Rust) raise their
    own types (SafetensorError, Exception) whose text ends with "(os error 28)"."""
    from safetensors import SafetensorError

    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    code = re.search(r"\(os error (\d+)\)", str(exc))
    if code:
        return os.strerror(int(code[1]))
    return str(exc) if isinstance(exc, SafetensorError) else None


def _partial_prefix(out: Path) -> str:
    return f".{out.name}{PARTIAL}"


@contextlib.contextmanager
def _partial_folder(out: Path):
    """A new hidden folder next to `out` to write the export into, made by os.mkdir (the umask's mode)
    and locked (flock) while this process writes it. The partial folders of earlier exports to `out`
    whose lock died with their process (killed) are removed first; one another process still writes
    is left alone. The folder is gone afterwards: renamed into place, or removed."""
    _remove_leftovers(out)
    tmp = out.parent / f"{_partial_prefix(out)}{secrets.token_hex(4)}"
    os.mkdir(tmp)
    fd = os.open(tmp, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        os.close(fd)


def _remove_leftovers(out: Path) -> None:
    """Remove what killed exports to `out` left next to it (see `_partial_folder`)."""
    prefix = _partial_prefix(out)
    for entry in out.parent.iterdir():
        if not entry.name.startswith(prefix):
            continue
        if entry.is_symlink():
            entry.unlink()
        elif entry.is_dir():
            try:
                fd = os.open(entry, os.O_RDONLY)
            except OSError:
                continue  # not ours to read (another user's): left as it is
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # another process is exporting there now
            finally:
                os.close(fd)  # (unlocks)
            shutil.rmtree(entry, ignore_errors=True)


def _put_in_place(tmp: Path, out: Path) -> None:
    """Rename the finished folder to `out`. A folder already there (--force) is renamed aside first
    (a name `_remove_leftovers` knows) and removed after, so that `out` never mixes the two."""
    if not (out.exists() or out.is_symlink()):
        os.replace(tmp, out)
        return
    aside = tmp.with_name(f"{tmp.name}-replaced")
    os.replace(out, aside)
    os.replace(tmp, out)
    if aside.is_symlink():
        aside.unlink()
    else:
        shutil.rmtree(aside, ignore_errors=True)


def _umask_modes(folder: Path) -> None:
    """Give every file in `folder` the mode the umask gives a new file (0644 under umask 022), as
    open() would: the folder's own mode (os.mkdir's, 0755 under 022) without the execute bits."""
    mode = folder.stat().st_mode & 0o666
    for root, _, files in os.walk(folder):
        for name in files:
            os.chmod(os.path.join(root, name), mode)


def check_finite_model(model) -> None:
    """Refuse to export a model holding nan or inf (it would load, and answer nonsense)."""
    for name, param in model.named_parameters():
        if not all_finite(param.detach()):
            raise EvogmError(f"the merged model's {name} holds non-finite values (nan or inf)",
                             "an exported model must be usable", "check the experts and the weights; nothing was written")


FINITE_CHUNK = 1 << 22  # elements checked at once: `isfinite` makes float and bool temporaries of its input's size


def all_finite(tensor, chunk: int = FINITE_CHUNK) -> bool:
    """Whether every value is finite, checked a slice at a time so that the temporaries stay small (a
    whole 0.5B model's embedding at once would take half its size again).

    >>> import torch
    >>> all_finite(torch.ones(10), chunk=3), all_finite(torch.tensor([1.0, 2.0, float("nan")]), chunk=2)
    (True, False)
    """
    flat = tensor.reshape(-1)
    return all(bool(flat[start:start + chunk].isfinite().all()) for start in range(0, flat.numel(), chunk))


def _mergekit_note(config, recipe: dict) -> dict:
    """{"mergekit": why none is written} where mergekit could not run it: an encoder-decoder it has no
    architecture for, or a path it would misread (it splits a model reference at '+' and '@'); {} otherwise."""
    if getattr(config, "is_encoder_decoder", False) and config.model_type not in MERGEKIT_ENCODER_DECODERS:
        return {"mergekit": f"not written: mergekit has no {config.model_type} architecture "
                            f"(of encoder-decoders it supports {', '.join(MERGEKIT_ENCODER_DECODERS)})"}
    paths = [recipe["base"], *(spec["path"] for spec in recipe["experts"].values())]
    odd = next((p for p in map(mergekit_path, paths) if any(c in p for c in MERGEKIT_SEPARATORS)), None)
    if odd:
        return {"mergekit": f"not written: mergekit reads '+' in a model path as BASE+LORA and '@' as "
                            f"PATH@REVISION, and {odd} holds one (rename the folder to write one)"}
    return {}


def mergekit_path(path) -> str:
    """A model path as mergekit.yaml holds it: absolute. mergekit reads a path that is not there
    from where it runs as a Hugging Face Hub id (zoo/base would be one), so no path is left relative."""
    return os.path.abspath(path)


def make_recipe(method: str, lam: np.ndarray, *, base: str, experts: dict[str, str], kinds: dict[str, str],
                layers: int | dict[str, int] | None = None, options: dict | None = None, extra: dict | None = None,
                group_rule: str = GROUP_RULES[False]) -> dict:
    """What was merged, as plain data: λ per expert (a list per group when there are several groups).
    `layers`: the layer count, or an encoder-decoder's {"encoder": n, "decoder": m}."""
    groups = lam.shape[1]
    recipe = {
        "method": method,
        "base": str(base),
        "groups": groups,
        "group_rule": group_rule,
        "experts": {name: {"path": str(path), "kind": kinds.get(name, "full"),
                           "weight": float(lam[i, 0]) if groups == 1 else [float(v) for v in lam[i]]}
                    for i, (name, path) in enumerate(experts.items())},
    }
    if groups > 1:
        recipe["layers"] = layers
    if options:
        recipe["options"] = dict(options)
    if extra:
        recipe.update(extra)
    return recipe


def space_recipe(space, candidate, *, base: str, experts: dict[str, str], kinds: dict[str, str],
                 layers: int | dict[str, int], group_rule: str, after_layers: list[str], extra: dict | None = None) -> dict:
    """A merge of a search space (`evogm.space`) as plain data: each expert's weight (and density) per
    filter cell and group, the method's options, and the space that was searched. Values are a number
    (one cell, one group), a list per group (with `smooth`: anchors across depth), or with filters a
    mapping from each filter (and `rest`) to one of those."""
    groups, cells = space.groups, space.cells

    def values(array: np.ndarray, i: int):
        per_cell = {cell: float(array[i, c, 0]) if groups == 1 else [float(v) for v in array[i, c]]
                    for c, cell in enumerate(cells)}
        return per_cell[REST] if len(cells) == 1 else per_cell

    recipe = {"method": candidate.method, "base": str(base), "groups": groups,
              "group_rule": SMOOTH_RULE if candidate.smooth else group_rule}
    if groups > 1:
        recipe["layers"] = layers
    if len(cells) > 1:
        recipe["filters"] = list(space.config.filters)
        recipe["filter_rule"] = FILTER_RULE
    if candidate.smooth:
        recipe["smooth"] = True
        recipe["after_layers"] = list(after_layers)  # tensors after the layers: t = 1
    recipe["experts"] = {}
    for i, (name, path) in enumerate(experts.items()):
        spec = {"path": str(path), "kind": kinds.get(name, "full"), "weight": values(candidate.weight, i)}
        if candidate.density is not None:
            spec["density"] = values(candidate.density, i)
        recipe["experts"][name] = spec
    options = {}
    if candidate.method in ("ties", "dare_ties"):
        options["normalize"] = candidate.normalize
    if candidate.method != "linear":
        options["scale"] = candidate.scale
    if candidate.method == "dare_ties":
        options.update(rescale="l1", seed=candidate.seed)
    if options:
        recipe["options"] = options
    recipe["space"] = space.describe()
    if extra:
        recipe.update(extra)
    return recipe


def mergekit_config(recipe: dict) -> dict:
    """The same merge as a mergekit YAML config (LoRA experts as `base+adapter` references, which
    need mergekit's `--lora-merge-cache DIR`), every path absolute (`mergekit_path`).

    Layer groups become per-layer weight filters (`layers.K.`). `normalize` is what evogm does: off
    for task arithmetic and DARE (λ are raw coefficients), on for TIES and DARE-TIES (the disjoint
    mean divides by the agreeing experts' weights); the density evogm used is written for every expert,
    since mergekit's default is 1 (no trimming).
    """
    if "space" in recipe:
        return space_mergekit_config(recipe)
    base, options = mergekit_path(recipe["base"]), recipe.get("options", {})
    method = "dare-ties" if recipe["method"] == "dare" and options.get("consensus") else recipe["method"]
    name, normalize = MERGEKIT_METHODS[method]
    models = []
    for spec in recipe["experts"].values():
        path = mergekit_path(spec["path"])
        reference = f"{base}+{path}" if spec["kind"] == "lora" else path
        parameters = {"weight": _mergekit_weight(spec["weight"], recipe.get("layers"))}
        if "density" in options:
            parameters["density"] = options["density"]
        models.append({"model": reference, "parameters": parameters})
    parameters = {"normalize": normalize, "lambda": options.get("scale", 1.0)}
    if recipe["method"] == "dare":
        parameters["rescale"] = True
    return {"merge_method": name, "base_model": base, "models": models, "parameters": parameters,
            "dtype": "float32"}


def space_mergekit_config(recipe: dict) -> dict:
    """A search space's merge (`space_recipe`) as mergekit writes one: mergekit's method of the same name,
    each expert's parameters as filter lists (`[{filter: F, value: V}, …, {value: REST}]`) where there are
    filters, per-slice parameters for layer groups (one slice per group and stack, mergekit giving the
    tensors before the layers the first slice's and those after them the last's, as evogm's groups do),
    and for `smooth` gradients (mergekit interpolates a list of values across each stack's depth as
    evogm does), the tensors after the layers named with the value they take at t = 1 (mergekit reads
    them at t = 0)."""
    base, method, options = mergekit_path(recipe["base"]), recipe["method"], recipe.get("options", {})
    groups, layers, smooth = recipe["groups"], recipe.get("layers"), recipe.get("smooth", False)
    gta = method != "linear"  # mergekit's generalized task arithmetic: a base model, its task vectors
    parameters = {}
    if method in ("ties", "dare_ties"):
        parameters["normalize"] = options["normalize"]
    elif method == "task_arithmetic":
        parameters["normalize"] = False
    if gta:
        parameters["lambda"] = options.get("scale", 1.0)
    if method == "dare_ties":
        parameters["rescale"] = True
    names = {name: mergekit_path(spec["path"]) for name, spec in recipe["experts"].items()}
    refs = {name: f"{base}+{path}" if recipe["experts"][name]["kind"] == "lora" else path
            for name, path in names.items()}

    def settings(spec: dict, group: int | None) -> dict:
        out = {"weight": _setting(spec["weight"], group, recipe)}
        if "density" in spec:
            out["density"] = _setting(spec["density"], group, recipe)
        return out

    config = {"merge_method": method}
    if gta:
        config["base_model"] = base
    if groups == 1 or smooth:
        config["models"] = [{"model": refs[name], "parameters": settings(spec, None)}
                            for name, spec in recipe["experts"].items()]
    else:
        stacks = layers if isinstance(layers, dict) else {"": layers}
        modules = {stack: {"slices": [
            {"sources": [{"model": refs[name], "layer_range": list(span), "parameters": settings(spec, g)}
                         for name, spec in recipe["experts"].items()]
             + ([{"model": base, "layer_range": list(span)}] if gta else [])}
            for g, span in enumerate(group_spans(depth, groups))]} for stack, depth in stacks.items()}
        if "" in modules:
            config["slices"] = modules[""]["slices"]
        else:
            config["modules"] = modules
    config["parameters"] = parameters
    config["dtype"] = "float32"
    return config


def group_spans(depth: int, groups: int) -> list[tuple[int, int]]:
    """Each layer group's [start, end) in a stack of `depth` layers: layer k is in group k·groups // depth.

    >>> group_spans(5, 2)
    [(0, 3), (3, 5)]
    """
    starts = [min(k for k in range(depth) if k * groups // depth == g) for g in range(groups)]
    return list(zip(starts, [*starts[1:], depth]))


def _setting(value, group: int | None, recipe: dict):
    """One parameter of one expert in mergekit's terms: a number or a gradient, or a filter list over the
    cells; with `smooth`, the tensors after the layers first, each with its value at t = 1."""
    def at(v):
        return v[group] if group is not None and isinstance(v, list) else v

    if not isinstance(value, dict):
        cells = {REST: at(value)}
    else:
        cells = {cell: at(v) for cell, v in value.items()}
    entries = []
    if recipe.get("smooth"):
        filters = recipe.get("filters", [])
        for name in recipe.get("after_layers", []):
            cell = next((f for f in filters if filter_matches(f, name)), REST)
            entries.append({"filter": name, "value": interpolate(cells[cell], 1.0)})
    entries += [{"filter": cell, "value": v} for cell, v in cells.items() if cell != REST]
    if not entries:
        return cells[REST]
    return entries + [{"value": cells[REST]}]


def _mergekit_weight(weight, layers: int | dict[str, int] | None):
    """A scalar, or per-layer filters for grouped λ (embeddings the first group, the rest the last)."""
    if not isinstance(weight, list):
        return weight
    if isinstance(layers, dict):  # T5: each stack's blocks by depth (evogm.merge.GROUP_RULES)
        groups = len(weight)
        filters = [{"filter": f"{stack}.block.{k}.", "value": weight[k * groups // n]}
                   for stack, n in layers.items() for k in range(n)]
        return filters + [{"filter": "shared", "value": weight[0]}, {"filter": "embed_tokens", "value": weight[0]},
                          {"value": weight[-1]}]
    groups, layers = len(weight), layers or len(weight)
    filters = [{"filter": f"layers.{k}.", "value": weight[k * groups // layers]} for k in range(layers)]
    return filters + [{"filter": "embed_tokens", "value": weight[0]}, {"value": weight[-1]}]


def _kinds(merger) -> dict[str, str]:
    return {e.name: e.kind for e in merger.experts}


def _write_yaml(path: Path, data: dict, header: str = "") -> None:
    path.write_text(header + yaml.safe_dump(data, sort_keys=False))
