"""Writing an export when things go wrong: a full disk (a real, tiny tmpfs), a file in the way, a
killed export's leftover; and what a good export leaves: the umask's modes, paths mergekit reads as local.

The full-disk tests mount a tmpfs (root only); where mounting is not permitted they are skipped.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from evogm.cli import main
from evogm.errors import EvogmError
from evogm.export import PARTIAL, check_folder_path, export_merged
from evogm.merge import Merger
from evogm.models import load_models


def merge_argv(tiny_models, out, *extra):
    return ["merge", "--base", str(tiny_models["base"]), "--expert", f"qv={tiny_models['lora_qv']}",
            "--expert", f"full={tiny_models['full_all']}", "--device", "cpu", "--dtype", "float32",
            "--out", str(out), *extra]


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def files(folder: Path) -> dict[str, bytes]:
    return {f.name: f.read_bytes() for f in sorted(folder.iterdir())}


@pytest.fixture
def tmpfs(tmp_path):
    """mount(size) → an empty folder on a tmpfs of that size (a small disk that really fills up);
    resize(folder, size) grows it. Unmounted afterwards; skipped where mounting is not permitted."""
    mounted = []

    def mount(size: str) -> Path:
        folder = tmp_path / f"disk{len(mounted)}"
        folder.mkdir()
        try:
            done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                                  capture_output=True, text=True)
        except OSError as exc:
            pytest.skip(f"cannot mount a tmpfs here: {exc}")
        if done.returncode:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
        mounted.append(folder)
        return folder

    yield mount
    for folder in mounted:
        subprocess.run(["umount", str(folder)], check=True)


def resize(folder: Path, size: str) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size}", str(folder)], check=True)


# --- a full disk --------------------------------------------------------------------------------


def test_a_merge_that_fills_the_disk_is_one_line_and_leaves_nothing(tiny_models, tmpfs, capsys):
    disk = tmpfs("64k")  # the tiny model's weights alone are 100 KiB: safetensors hits ENOSPC
    out = disk / "merged"
    assert main(merge_argv(tiny_models, out)) == 2
    assert one_line_error(capsys).endswith(
        f"cannot write {out}: No space left on device; fix: free disk space, or choose another --out")
    assert list(disk.iterdir()) == []  # no half-written folder, hidden or not


def test_a_forced_merge_that_fills_the_disk_keeps_the_export_already_there(tiny_models, tmpfs, capsys):
    disk = tmpfs("200k")  # room for one export, not for a second one beside it
    out = disk / "merged"
    assert main(merge_argv(tiny_models, out)) == 0
    before = files(out)
    assert main(merge_argv(tiny_models, out, "--weights", "qv=0.5", "--force")) == 2
    assert "No space left on device" in one_line_error(capsys)
    assert files(out) == before and [p.name for p in disk.iterdir()] == ["merged"]


def test_a_run_whose_export_fills_the_disk_keeps_its_search_and_resumes(zoo_tiny, tmpfs, capsys):
    from test_run import FAST

    disk = tmpfs("96k")  # the run's log and json files fit, its model (96 KiB of weights) does not
    run = disk / "run"
    assert main(["run", str(zoo_tiny / "run.yaml"), *FAST, f"output={run}", "--quiet"]) == 2
    assert one_line_error(capsys).endswith(
        f"cannot write {run / 'model'}: No space left on device; fix: free disk space, then "
        f"`evogm run --resume {run}` exports it (the search is kept: evaluations.jsonl and best.json)")
    assert len((run / "evaluations.jsonl").read_text().splitlines()) == 14 and (run / "best.json").is_file()
    assert sorted(p.name for p in run.iterdir()) == [".lock", "best.json", "config.yaml", "evaluations.jsonl",
                                                     "inputs.json"]  # no model, no partial folder, no final.json
    resize(disk, "4m")
    assert main(["run", "--resume", str(run), "--quiet"]) == 0
    assert (run / "model" / "model.safetensors").is_file() and (run / "report.md").is_file()
    recipe = yaml.safe_load((run / "model" / "recipe.yaml").read_text())
    for name, lam in json.loads((run / "best.json").read_text())["experts"].items():  # the search's best
        weight = recipe["experts"][name]["weight"]
        assert (weight if isinstance(weight, list) else [weight]) == lam


# --- a file in the way ----------------------------------------------------------------------------


@pytest.mark.parametrize("force", [[], ["--force"]])
def test_a_merge_out_that_is_a_file_is_refused_and_the_file_kept(tiny_models, tmp_path, capsys, force):
    blocker = tmp_path / "notes.txt"
    blocker.write_text("mine")
    assert main(merge_argv(tiny_models, blocker, *force)) == 2
    assert one_line_error(capsys).endswith(f"cannot write {blocker}: it is a file, not a folder; "
                                           "fix: choose another --out (a file is never replaced, even with --force)")
    assert blocker.read_text() == "mine" and sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_the_check_a_run_config_can_make_of_its_output(tmp_path):
    blocker = tmp_path / "notes.txt"
    blocker.write_text("mine")
    with pytest.raises(EvogmError, match=f"cannot write {blocker}: it is a file, not a folder; fix: choose another "
                                         "output "):
        check_folder_path(blocker, "output")
    with pytest.raises(EvogmError, match=f"{blocker} is a file, not a folder"):
        check_folder_path(blocker / "runs" / "a", "output")
    check_folder_path(tmp_path / "new" / "run", "output")  # not there yet: fine, and nothing is made
    assert not (tmp_path / "new").exists()


# --- a killed export, and what a good one leaves -------------------------------------------------------

KILLED_EXPORT = """
import sys, time
from pathlib import Path
import numpy as np
from evogm.export import export_merged
from evogm.merge import Merger
from evogm.models import load_models

base, adapter, out = sys.argv[1:]
models = load_models(base, {"qv": adapter}, dtype="float32", device="cpu")

def stall(folder, *args, **kwargs):  # the weights are written: hang while the tokenizer would be
    (Path(out).parent / "weights-written").write_text(str(folder))
    time.sleep(600)

models.tokenizer.save_pretrained = stall
export_merged(Merger(models.model, models.experts), models.tokenizer, np.array([0.5]), out,
              base=base, experts={"qv": adapter})
"""


def test_a_killed_exports_leftover_is_hidden_and_removed_by_the_next_export(tiny_models, tmp_path):
    out, signal_file = tmp_path / "merged", tmp_path / "weights-written"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}  # this checkout's evogm
    child = subprocess.Popen([sys.executable, "-c", textwrap.dedent(KILLED_EXPORT), str(tiny_models["base"]),
                              str(tiny_models["lora_qv"]), str(out)], env=env)
    try:
        deadline = time.monotonic() + 120
        while not signal_file.exists():
            assert child.poll() is None and time.monotonic() < deadline, "the export never got to its weights"
            time.sleep(0.2)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    leftover = Path(signal_file.read_text())
    assert leftover.parent == tmp_path and leftover.name.startswith(f".merged{PARTIAL}")  # hidden, and no model
    assert (leftover / "model.safetensors").is_file() and not out.exists()

    models = load_models(tiny_models["base"], {"qv": tiny_models["lora_qv"]}, dtype="float32", device="cpu")
    merger = Merger(models.model, models.experts)
    export_merged(merger, models.tokenizer, [0.5], out, base=str(tiny_models["base"]),
                  experts={"qv": str(tiny_models["lora_qv"])})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["merged", "weights-written"]
    assert {"model.safetensors", "tokenizer.json", "recipe.yaml"} <= set(files(out))


def test_a_partial_export_another_process_is_writing_is_left_alone(tiny_models, tmp_path):
    import fcntl

    live = tmp_path / f".merged{PARTIAL}0123abcd"  # as another exporter's, locked while it writes
    live.mkdir()
    fd = os.open(live, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        assert main(merge_argv(tiny_models, tmp_path / "merged")) == 0
        assert live.is_dir() and (tmp_path / "merged" / "recipe.yaml").is_file()
    finally:
        os.close(fd)


def test_an_export_has_the_modes_the_umask_gives(tiny_models, tmp_path):
    old = os.umask(0o027)
    try:
        assert main(merge_argv(tiny_models, tmp_path / "merged")) == 0
        made = tmp_path / "made"
        os.makedirs(made)
        (made / "file").write_text("")
    finally:
        os.umask(old)
    out = tmp_path / "merged"
    assert out.stat().st_mode & 0o7777 == made.stat().st_mode & 0o7777 == 0o750  # not mkdtemp's 0700
    modes = {f.name: f.stat().st_mode & 0o7777 for f in out.iterdir()}
    assert set(modes.values()) == {(made / "file").stat().st_mode & 0o7777} == {0o640}, modes  # safetensors' 0600 too


# --- mergekit.yaml ------------------------------------------------------------------------------------


def test_mergekit_yaml_holds_only_absolute_paths(tiny_models, tmp_path, monkeypatch):
    root = tiny_models["base"].parent
    monkeypatch.chdir(root.parent)
    out = tmp_path / "merged"  # zoo/base-like paths, one slash: mergekit would take them for Hub ids
    assert main(["merge", "--base", f"{root.name}/base", "--expert", f"qv={root.name}/lora_qv",
                 "--expert", f"full=./{root.name}/../{root.name}/full_all", "--method", "ties", "--out", str(out)]) == 0
    config = yaml.safe_load((out / "mergekit.yaml").read_text())
    assert config["base_model"] == str(tiny_models["base"])
    assert [m["model"] for m in config["models"]] == [f"{tiny_models['base']}+{tiny_models['lora_qv']}",
                                                      str(tiny_models["full_all"])]
    recipe = yaml.safe_load((out / "recipe.yaml").read_text())
    assert recipe["base"] == f"{root.name}/base"  # the recipe says what was given


def test_no_mergekit_yaml_for_a_path_mergekit_would_split(tiny_models, tmp_path):
    adapter = tmp_path / "qv@v2"  # mergekit reads PATH@REVISION
    shutil.copytree(tiny_models["lora_qv"], adapter)
    out = tmp_path / "merged"
    assert main(["merge", "--base", str(tiny_models["base"]), "--expert", f"qv={adapter}", "--out", str(out)]) == 0
    assert not (out / "mergekit.yaml").exists()
    note = yaml.safe_load((out / "recipe.yaml").read_text())["mergekit"]
    assert note.startswith("not written: mergekit reads '+' in a model path as BASE+LORA") and str(adapter) in note
