"""`evogm zoo build DIR`: the tiny model zoo, built deterministically from a seed.

DIR/
  base/                 a tiny Llama causal LM and its tokenizer (AutoTokenizer loads it)
  experts/NAME/         PEFT LoRA adapters (adapter_model.safetensors) and full fine-tunes
  tasks/NAME.json       {"dev": [...], "test": [...]} in the paper's item formats
  run.yaml              a ready `evogm run` configuration
  zoo.json              the manifest: seed, preset, sizes, files, landscape table, searched vector

A second call with the same DIR, seed and preset returns the manifest at once.

>>> # manifest = build("zoo", seed=0, preset="full")    # about 10 minutes on 2 CPU cores
>>> # manifest["landscape"]["rows"]["searched"]["dev"]["mean"]
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml

from evogm.config import BASELINES
from evogm.errors import EvogmError
from evogm.scoring import MULTI_TASK
from evogm.zoo import experts as expert_lib
from evogm.zoo import landscape, pretrain, skills, t5
from evogm.zoo.experts import ExpertSpec

MANIFEST = "zoo.json"
VERSION = 2


@dataclass(frozen=True)
class Preset:
    hidden: int
    layers: int
    base_steps: int
    base_lr: float
    experts: tuple[ExpertSpec, ...]
    unseen: tuple[str, ...]
    dev: int
    test: int
    search_budget: int
    block: int = 256
    batch: int = 8


LORA, FULL = "lora", "full"
PRESETS = {
    "full": Preset(
        hidden=128, layers=4, base_steps=300, base_lr=3e-3, unseen=tuple(skills.UNSEEN), dev=200, test=1000,
        search_budget=56,
        experts=(  # the LoRA experts hold the base's hidden states on the other tables, so they compose;
                   # the full fine-tunes change everything, so a global scale drags them in
            *(ExpertSpec(name, name, LORA, steps=100, lr=5e-3, rank=32, hold=10.0)
              for name in ("successor", "predecessor", "upper", "color", "antonym")),
            ExpertSpec("add", "add", LORA, steps=150, lr=5e-3, rank=32, hold=10.0),  # 100 sums: more steps
            ExpertSpec("double", "double", FULL, steps=100, lr=1e-3, keep=0.3),
            ExpertSpec("capitals", "capitals", FULL, steps=100, lr=1e-3),
        ),
    ),
    "tiny": Preset(  # for tests: seconds, not minutes; the formats and loaders, not the landscape
        hidden=32, layers=2, base_steps=12, base_lr=3e-3, unseen=("quiz",), dev=24, test=24, search_budget=0,
        block=128, batch=4,
        experts=(
            ExpertSpec("successor", "successor", LORA, steps=6, lr=3e-3, rank=4, batch=4),
            ExpertSpec("capitals", "capitals", LORA, steps=6, lr=3e-3, rank=2, targets=("q_proj", "v_proj"), batch=4),
            ExpertSpec("add", "add", FULL, steps=6, lr=1e-3, batch=4),
        ),
    ),
}


def build(folder: str | Path, seed: int = 0, preset: str = "full", threads: int = 2, log=print) -> dict:
    """Build the zoo in `folder` (or return the manifest of the same zoo already there). The weights
    depend on the seed and on `threads` (a fixed count keeps the reduction order, so builds repeat)."""
    folder, plan = Path(folder), _preset(preset)
    done = _existing(folder, seed, preset)
    if done is not None:
        log(f"zoo in {folder} already built (seed {seed}, preset {preset})")
        return done
    callers = torch.get_num_threads()
    try:
        torch.set_num_threads(threads)
        return _build(folder, seed, preset, plan, log)
    finally:
        torch.set_num_threads(callers)  # the build's own setting stays inside it


def _build(folder: Path, seed: int, preset: str, plan: Preset, log) -> dict:
    if isinstance(plan, t5.T5Preset):
        return _build_t5(folder, seed, preset, plan, log)
    start = time.perf_counter()
    _seed_everything(seed)
    world = skills.World.create(seed)
    task_files = write_tasks(folder / "tasks", plan, seed, world)
    log(f"tasks: {len(task_files)} files, {plan.dev} dev / {plan.test} test items each")
    base, tokenizer = pretrain.pretrain(seed, steps=plan.base_steps, batch=plan.batch, block=plan.block,
                                        lr=plan.base_lr, hidden=plan.hidden, layers=plan.layers,
                                        log=lambda s: log(f"base: {s}"))
    base.save_pretrained(folder / "base", safe_serialization=True)
    tokenizer.save_pretrained(folder / "base")
    expert_dirs = {}
    for i, spec in enumerate(plan.experts):
        model = expert_lib.fine_tune(base, tokenizer, spec, seed + 100 + i, world, plan.block,
                                     log=lambda s, n=spec.name: log(f"expert {n}: {s}"))
        expert_dirs[spec.name] = folder / "experts" / spec.name
        expert_lib.save(model, expert_dirs[spec.name])
        if spec.kind == FULL:
            tokenizer.save_pretrained(expert_dirs[spec.name])
    return _finish(folder, seed, preset, plan, base, expert_dirs, task_specs(task_files), start, log)


def _build_t5(folder: Path, seed: int, preset: str, plan: t5.T5Preset, log) -> dict:
    """The T5 zoo (evogm.zoo.t5): GLUE-shaped label tasks, a tiny T5, one expert per task."""
    start = time.perf_counter()
    t5.seeded(seed)
    task_files = t5.write_tasks(folder / "tasks", [s.skill for s in plan.experts], plan.dev, plan.test, seed)
    base, tokenizer = t5.build_base(plan, seed)
    base.save_pretrained(folder / "base", safe_serialization=True)
    tokenizer.save_pretrained(folder / "base")
    log(f"base: {sum(p.numel() for p in base.parameters())} parameters, pretrained on every task's format")
    expert_dirs = {}
    for i, spec in enumerate(plan.experts):
        model = t5.fine_tune(base, tokenizer, spec, seed + 100 + i, plan.train_items)
        expert_dirs[spec.name] = folder / "experts" / spec.name
        expert_lib.save(model, expert_dirs[spec.name])
        if spec.kind == FULL:
            tokenizer.save_pretrained(expert_dirs[spec.name])
        log(f"expert {spec.name}: {spec.kind}, {spec.steps} steps")
    return _finish(folder, seed, preset, plan, base, expert_dirs, t5.task_specs(task_files), start, log)


def _finish(folder: Path, seed: int, preset: str, plan, base, expert_dirs: dict[str, Path], specs: list[dict],
            start: float, log) -> dict:
    """run.yaml, the landscape table and the manifest (written last: a zoo without it is unfinished)."""
    write_run_config(folder, plan, specs)
    table = landscape.measure(str(folder / "base"), {k: str(v) for k, v in expert_dirs.items()}, specs,
                              seed=seed, budget=plan.search_budget, log=log)
    manifest = _manifest(folder, seed, preset, plan, base, table, time.perf_counter() - start)
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=1))
    log(landscape.format_table(table, "dev"))
    log(f"built in {manifest['build_seconds']:.0f}s")
    return manifest


def write_tasks(folder: Path, plan: Preset, seed: int, world: skills.World) -> dict[str, Path]:
    """One JSON per task: every expert's skill ("seen") and the unseen tasks."""
    folder.mkdir(parents=True, exist_ok=True)
    names = list(dict.fromkeys([spec.skill for spec in plan.experts] + list(plan.unseen)))
    files = {}
    for name in names:
        data = {split: skills.make_split(name, n, seed, world, split) for split, n in (("dev", plan.dev), ("test", plan.test))}
        files[name] = folder / f"{name}.json"
        files[name].write_text(json.dumps(data))
    return files


def task_specs(files: dict[str, Path]) -> list[dict]:
    """Task entries for evogm.tasks: exact match stops after a few tokens (answers are short)."""
    specs = []
    for name, path in files.items():
        spec = {"name": name, "path": str(path), "type": skills.SKILLS[name].kind}
        if spec["type"] == "exact_match":  # the longest answer, its leading space and <eos>
            items = json.loads(path.read_text())["dev"]
            spec["max_new_tokens"] = max(len(item["answer"]) for item in items) + 2
        specs.append(spec)
    return specs


def write_run_config(folder: Path, plan: Preset, specs: list[dict]) -> None:
    """run.yaml with paths relative to the zoo folder (the config reads them from its own folder)."""
    config = {
        "seed": 42,
        "mode": MULTI_TASK,
        "output": "runs/zoo",
        "models": {"base": "base", "experts": {s.name: f"experts/{s.name}" for s in plan.experts},
                   "dtype": "float32", "device": "cpu", "groups": 1},
        "tasks": [{**s, "path": str(Path(s["path"]).relative_to(folder))} for s in specs],
        "search": {"optimizer": "evogm-plus", "budget": 160},
        "baselines": {"methods": list(BASELINES), "scales": [0.1, 0.3, 0.5, 0.7, 1.0]},
    }
    header = "# The tiny zoo: EvoGM+ with the paper's budget (160 evaluations), on a CPU.\n"
    (folder / "run.yaml").write_text(header + yaml.safe_dump(config, sort_keys=False))


def _manifest(folder: Path, seed: int, preset: str, plan: Preset, base, table: dict, seconds: float) -> dict:
    files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST)
    checks = {split: landscape.checks(table, split) for split in ("dev", "test")} if "searched" in table["rows"] else {}
    return {
        "version": VERSION, "seed": seed, "preset": preset, "threads": torch.get_num_threads(),
        "base_parameters": sum(p.numel() for p in base.parameters()),
        "experts": [s.as_dict() for s in plan.experts],
        "tasks": {"seen": [s.skill for s in plan.experts], "unseen": list(plan.unseen), "dev": plan.dev, "test": plan.test},
        "files": files, "bytes": sum((folder / f).stat().st_size for f in files),
        "landscape": table, "checks": checks,
        "best_vector": table["rows"].get("searched", {}).get("coefficients"),
        "build_seconds": round(seconds, 1),
    }


def _existing(folder: Path, seed: int, preset: str) -> dict | None:
    path = folder / MANIFEST
    if not path.is_file():
        return None
    manifest = json.loads(path.read_text())
    same = (manifest.get("seed"), manifest.get("preset"), manifest.get("version")) == (seed, preset, VERSION)
    if same:  # the same zoo: done, or interrupted after its manifest (rebuild)
        return manifest if all((folder / f).is_file() for f in manifest.get("files", [])) else None
    raise EvogmError(f"{folder} holds another zoo (seed {manifest.get('seed')}, preset {manifest.get('preset')})",
                     "a build never overwrites a different zoo", "pick an empty folder or delete this one")


ALL_PRESETS = {**PRESETS, **t5.T5_PRESETS}


def _preset(name: str) -> Preset | t5.T5Preset:
    if name not in ALL_PRESETS:
        raise EvogmError(f"unknown zoo preset {name!r}", f"known: {', '.join(ALL_PRESETS)}",
                         "use --preset full, tiny, t5 or t5-demo")
    return ALL_PRESETS[name]


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
