"""What a run depends on: content hashes of its models' and task files, and its resolved config.

Saved in the run directory when a run starts (`config.yaml`, `inputs.json`: `start`); a resume, or a
comparison that would reuse the run, compares them with the inputs as they are now (`changed_inputs`,
`check_unchanged`), so that one log never mixes scores of different experts, tasks or settings.

>>> import tempfile, pathlib
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> _ = (folder / "model.safetensors").write_bytes(b"weights")
>>> before = {"config": {"seed": 1}, "files": {"models.base": folder_hash(folder)}}
>>> _ = (folder / "model.safetensors").write_bytes(b"other weights")
>>> changes(before, {"config": {"seed": 2}, "files": {"models.base": folder_hash(folder)}})
['the files of models.base', 'seed']
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from evogm.config import RunConfig, dump_yaml, load_config, to_dict
from evogm.errors import EvogmError
from evogm.rundir import OUTPUTS, RunDir
from evogm.runlog import read_json, write_atomic, write_json

IGNORED_SUFFIXES = (".md",)  # a model card changes no weight
# what loading a model folder reads (transformers, PEFT, evogm): weights, configs, tokenizer files and
# remote code; any other file in it (notes, training logs) changes nothing a run computes
MODEL_FILES = ("config.json", "generation_config.json", "adapter_config.json", "tokenizer.json",
               "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "vocab.json", "vocab.txt",
               "merges.txt", "chat_template.jinja", "chat_template.json", "preprocessor_config.json")
MODEL_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".model", ".py", ".index.json")

ADAPTIVE_KEYS = ("evaluation", "confidence", "chunks", "keep", "bound")  # search.*: adaptive evaluation's settings


def fingerprint(cfg: RunConfig) -> dict:
    """{"config": the resolved config (without its output), "files": {input: sha256}} of a run."""
    files = {key: folder_hash(path, model=key.startswith("models.")) if path.is_dir() else file_hash(path)
             for key, path in input_paths(cfg).items()}
    return {"config": settings(cfg), "files": files}


def settings(cfg: RunConfig) -> dict:
    """The part of a run's fingerprint that is its resolved config (reads no file)."""
    return comparable(to_dict(cfg))


def comparable(config: dict) -> dict:
    """A resolved config without what changes no score, the one rule for a fingerprint's config:
    its output; where the candidates are scored (`executor`: every executor returns the local
    executor's results, so a run may resume on Ray or with other workers) and whether several
    workers search asynchronously (`search.asynchronous`: a run resumes in the order its log holds,
    synchronous or not); where the merger keeps θ₀
    (`models.base_copy`: the copies are exact); the adaptive knobs when evaluation is full; and where
    the inputs lie (models.base, the experts' and the tasks' paths: their contents are the
    fingerprint's files, so a run moved with its inputs, or made in another checkout, is the same run).
    The experts stay as their names in order, the coordinates of λ. Applied to a saved record too, so
    one written before a rule existed compares the same."""
    config = {k: v for k, v in config.items() if k not in ("output", "executor")}
    if isinstance(config.get("models"), dict):
        config["models"] = {k: v for k, v in config["models"].items() if k not in ("base_copy", "base")}
        if isinstance(config["models"].get("experts"), dict):
            config["models"]["experts"] = list(config["models"]["experts"])
    if isinstance(config.get("tasks"), list):
        config["tasks"] = [{k: v for k, v in task.items() if k not in ("path", "include_path")}
                           if isinstance(task, dict) else task for task in config["tasks"]]
    if isinstance(config.get("search"), dict):  # asynchronous: the log holds the schedule a run follows
        config["search"] = {k: v for k, v in config["search"].items() if k != "asynchronous"}
    if config.get("search", {}).get("evaluation", "full") == "full" and "search" in config:
        config["search"] = {k: v for k, v in config["search"].items() if k not in ADAPTIVE_KEYS}
    return config


def stamps(cfg: RunConfig) -> list:
    """(file, size, mtime) of every input file: a cheap sign that one changed, without reading any."""
    files = [f for path in input_paths(cfg).values() for f in (_files(path) if path.is_dir() else [path])]
    return [(str(f), *((s := f.stat()).st_size, s.st_mtime_ns)) for f in files if f.exists()]


def input_paths(cfg: RunConfig) -> dict[str, Path]:
    """{"models.base" | "models.experts.NAME" | "tasks.NAME" | "tasks.NAME.include_path" |
    "tasks.NAME.function": its folder or file}."""
    paths = {"models.base": Path(cfg.models.base)}
    paths |= {f"models.experts.{name}": Path(path) for name, path in cfg.models.experts.items()}
    paths |= {f"tasks.{t['name']}": Path(t["path"]) for t in cfg.tasks if t.get("path")}
    folders = {f"tasks.{t['name']}.include_path": Path(t["include_path"]) for t in cfg.tasks if t.get("include_path")}
    return paths | folders | fitness_sources(cfg)


def fitness_sources(cfg: RunConfig) -> dict[str, Path]:
    """{"tasks.NAME.function": the source file of a `type: python` task's module}: editing a fitness
    changes its scores. importlib's spec gives the file without running the module again (the config
    check imported it: its spec is the imported module's; a dotted name not yet imported imports its
    parent packages only). The module's own file only, not what it imports; a module without a
    source file adds nothing."""
    import importlib.util

    sources = {}
    for task in cfg.tasks:
        if task.get("type") != "python" or not isinstance(task.get("function"), str):
            continue
        try:
            spec = importlib.util.find_spec(task["function"].partition(":")[0])
        except (ImportError, ValueError):
            spec = None
        if spec is not None and spec.origin and Path(spec.origin).is_file():
            sources[f"tasks.{task['name']}.function"] = Path(spec.origin)
    return sources


def changes(saved: dict, now: dict) -> list[str]:
    """What differs between two fingerprints, in words: changed files first, then config keys
    (compared as `comparable` says)."""
    files = sorted(set(saved["files"]) | set(now["files"]))
    changed = [f"the files of {key}" for key in files if saved["files"].get(key) != now["files"].get(key)]
    return changed + _changed_keys(comparable(saved["config"]), comparable(now["config"]), "")


def _changed_keys(a, b, where: str) -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        return [key for k in sorted(set(a) | set(b), key=str)
                for key in _changed_keys(a.get(k), b.get(k), f"{where}{k}.")]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [key for i, (x, y) in enumerate(zip(a, b)) for key in _changed_keys(x, y, f"{where}{i}.")]
    return [] if a == b else [where.rstrip(".")]


def folder_hash(folder: Path, *, model: bool = False) -> str:
    """sha256 over a folder's files (names and contents; hidden files and model cards aside); of a
    model folder, only the files loading it reads (`MODEL_FILES`, `MODEL_SUFFIXES`)."""
    digest = hashlib.sha256()
    for file in _files(folder, model):
        digest.update(f"{file.name}\0{file_hash(file)}\0".encode())
    return digest.hexdigest()


def _files(folder: Path, model: bool = False) -> list[Path]:
    if not folder.is_dir():
        return []
    return [f for f in sorted(folder.iterdir())
            if f.is_file() and not f.name.startswith(".") and f.suffix not in IGNORED_SUFFIXES
            and (not model or f.name in MODEL_FILES or f.name.endswith(MODEL_SUFFIXES))]


def file_hash(file: Path) -> str:
    digest = hashlib.sha256()
    with open(file, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# --- a run directory's record of its inputs -------------------------------------------------------


def start(run_dir: RunDir, cfg: RunConfig, *, resume: bool, force: bool) -> None:
    """A fresh run writes config.yaml and inputs.json; an existing run is resumed (if its inputs
    are unchanged), or replaced only with force."""
    if resume:
        check_unchanged(run_dir, cfg)
        return
    if any((run_dir.path / name).exists() for name in OUTPUTS):
        if not force:
            state = "a finished run" if run_dir.finished() else "an unfinished run"
            raise EvogmError(f"{run_dir.path} already holds {state}", "a run directory is never overwritten silently",
                             f"resume it with `evogm run --resume {run_dir.path}`, pick another output, or pass --force")
        run_dir.clear(cfg.task_names)
    write_atomic(run_dir.config, dump_yaml(cfg))
    write_json(run_dir.inputs, fingerprint(cfg))


def read_config(run_dir: RunDir) -> RunConfig:
    """The resolved config a run was started with, checked, as a RunConfig."""
    if not run_dir.config.is_file():
        raise EvogmError(f"{run_dir.path} holds no run to resume", f"{run_dir.config} not found",
                         "give the run directory of a started run")
    return load_config(run_dir.config)


def changed_inputs(run_dir: RunDir, cfg: RunConfig) -> list[str]:
    """What differs between the inputs the run started with and `cfg`'s now (resolved); a run whose
    inputs.json is gone cannot show its inputs unchanged, and says so."""
    if not run_dir.inputs.is_file():
        return [f"its record of them ({run_dir.inputs.name} is missing)"]
    return changes(read_json(run_dir.inputs), fingerprint(cfg))


def changed_settings(run_dir: RunDir, cfg: RunConfig) -> list[str]:
    """The config keys that differ between the run's start and `cfg` (resolved), files aside, so it
    reads no weights ([] when the run has no inputs.json)."""
    if not run_dir.inputs.is_file():
        return []
    saved = read_json(run_dir.inputs)["config"]
    return changes({"config": saved, "files": {}}, {"config": settings(cfg), "files": {}})


def check_unchanged(run_dir: RunDir, cfg: RunConfig) -> None:
    """Refuse to go on with a run whose models, task files or config changed since it started."""
    if not run_dir.inputs.is_file():
        raise EvogmError(f"{run_dir.path} has no {run_dir.inputs.name}",
                         "without the record of the inputs the run started with, a resume could mix scores of "
                         "other models, tasks or settings in one log", "restore it, or start a new run "
                         "(another output, or --force)")
    changed = changed_inputs(run_dir, cfg)
    if changed:
        raise EvogmError(f"{run_dir.path} was started with other inputs: {', '.join(changed)} changed",
                         "going on would mix scores of different inputs in one log",
                         "restore them, or start a new run (another output, or --force)")
