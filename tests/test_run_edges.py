"""A run directory under a hostile user: each case refused in one line, or recovered exactly."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from evogm.cli import main as cli
from evogm.runlog import RunLog

# random search: the run's outputs, not the optimizer, are under test here; seconds per run
FAST = ["search.optimizer=random", "search.budget=8", "search.popsize=4", "baselines.methods=[]"]


@pytest.fixture(scope="module")
def finished(zoo_tiny, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("edges") / "run"
    assert cli(["run", str(zoo_tiny / "run.yaml"), *FAST, f"output={out}", "--quiet"]) == 0
    return out


def copy_of(run: Path, tmp_path: Path) -> Path:
    target = tmp_path / "copy"
    shutil.copytree(run, target)
    config = yaml.safe_load((target / "config.yaml").read_text())
    config["output"] = str(target)
    (target / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return target


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_a_run_without_its_inputs_record_is_refused_on_resume(finished: Path, tmp_path: Path, capsys):
    run = copy_of(finished, tmp_path)
    (run / "inputs.json").unlink()
    (run / "report.md").unlink()  # unfinished, so that a resume would evaluate
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["models"]["experts"] = dict(list(config["models"]["experts"].items())[:1])  # an edited expert list
    (run / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    assert cli(["run", "--resume", str(run), "--quiet"]) == 2
    assert f"{run} has no inputs.json" in one_line_error(capsys)


@pytest.mark.parametrize("override, message", [
    ("seed=-1", "seed is -1"), ("seed=4294967296", "seed is 4294967296")])
def test_a_seed_outside_its_range_is_refused(zoo_tiny: Path, tmp_path: Path, capsys, override, message):
    assert cli(["run", str(zoo_tiny / "run.yaml"), *FAST, override, f"output={tmp_path / 'r'}", "--quiet"]) == 2
    assert message in one_line_error(capsys)


@pytest.mark.parametrize("flag, value", [("--seeds", "0"), ("--workers", "0"), ("--budget", "0")])
def test_compare_needs_at_least_one_seed_worker_and_evaluation(zoo_tiny: Path, tmp_path: Path, capsys, flag, value):
    argv = ["compare", str(zoo_tiny / "run.yaml"), *FAST, "--optimizers", "random", flag, value,
            "--out", str(tmp_path / "cmp")]
    assert cli(argv) == 2
    assert f"{flag} is 0" in one_line_error(capsys) and not (tmp_path / "cmp").exists()


def test_an_output_that_is_a_file_or_inside_an_input_is_refused(zoo_tiny: Path, tmp_path: Path, capsys):
    afile = tmp_path / "notes.txt"
    afile.write_text("mine")
    base = yaml.safe_load((zoo_tiny / "run.yaml").read_text())["models"]["base"]
    for output, message in [(afile, "is a file"), (zoo_tiny / base / "run", "is inside an input (models.base")]:
        assert cli(["run", str(zoo_tiny / "run.yaml"), *FAST, f"output={output}", "--quiet"]) == 2
        assert message in one_line_error(capsys)
    assert afile.read_text() == "mine" and not (zoo_tiny / base / "run").exists()


def test_a_path_of_the_wrong_kind_says_so(zoo_tiny: Path, tmp_path: Path, capsys):
    assert cli(["run", str(zoo_tiny), "--quiet"]) == 2
    assert f"config {zoo_tiny} is a folder" in one_line_error(capsys)
    name, folder = next(iter(yaml.safe_load((zoo_tiny / "run.yaml").read_text())["models"]["experts"].items()))
    weights = next((zoo_tiny / folder).glob("*.safetensors"))
    assert cli(["run", str(zoo_tiny / "run.yaml"), *FAST, f"models.experts.{name}={weights}",
                f"output={tmp_path / 'r'}", "--quiet"]) == 2
    assert f"models.experts.{name}: {weights} is a file" in one_line_error(capsys)


def test_an_extra_file_in_an_expert_folder_changes_no_input(finished: Path, zoo_tiny: Path, tmp_path: Path):
    from evogm.inputs import fingerprint
    from evogm.config import load_config

    zoo = tmp_path / "zoo"
    shutil.copytree(zoo_tiny, zoo)
    cfg = load_config(zoo / "run.yaml", [f"output={tmp_path / 'r'}"])
    before = fingerprint(cfg)["files"]
    expert = Path(next(iter(cfg.models.experts.values())))
    (expert / "training_notes.txt").write_text("lr 1e-3, 3 epochs")
    (expert / "trainer_state.log").write_text("step 1")
    assert fingerprint(cfg)["files"] == before
    weights = next(expert.glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes() + b" ")  # a file loading reads: a change
    assert fingerprint(cfg)["files"] != before


def test_the_log_counts_each_evaluation_once_in_the_searchs_order(finished: Path, tmp_path: Path):
    run = copy_of(finished, tmp_path)
    lines = (run / "evaluations.jsonl").read_text().splitlines(keepends=True)
    shuffled = [lines[3], *lines[:3], *lines[4:], lines[5]]  # one moved, one duplicated
    (run / "evaluations.jsonl").write_text("".join(shuffled))
    assert RunLog(run / "evaluations.jsonl").records() == RunLog(finished / "evaluations.jsonl").records()


def test_a_deleted_log_line_is_evaluated_again_and_the_same_merge_exported(finished: Path, tmp_path: Path):
    run = copy_of(finished, tmp_path)
    lines = (run / "evaluations.jsonl").read_text().splitlines(keepends=True)
    best = json.loads((finished / "best.json").read_text())
    position = best["evaluation"] - 1
    (run / "evaluations.jsonl").write_text("".join(lines[:position] + lines[position + 1:]))  # the best's own line
    for name in ("report.md", "final.json", "best.json"):
        (run / name).unlink()
    shutil.rmtree(run / "model")
    assert cli(["run", "--resume", str(run), "--quiet"]) == 0
    keep = ("gen", "row", "coefficients", "loss")
    assert [{k: r[k] for k in keep} for r in RunLog(run / "evaluations.jsonl").records()] == \
           [{k: r[k] for k in keep} for r in RunLog(finished / "evaluations.jsonl").records()]
    again = json.loads((run / "best.json").read_text())
    assert (again["evaluation"], again["coefficients"]) == (best["evaluation"], best["coefficients"])
    recipe = yaml.safe_load((run / "model" / "recipe.yaml").read_text())
    assert recipe == yaml.safe_load((finished / "model" / "recipe.yaml").read_text())


def test_a_removed_model_folder_is_exported_again_on_resume(finished: Path, tmp_path: Path, capsys):
    run = copy_of(finished, tmp_path)
    shutil.rmtree(run / "model")
    final = (run / "final.json").read_text()
    capsys.readouterr()
    assert cli(["run", "--resume", str(run)]) == 0
    assert (run / "model" / "recipe.yaml").is_file() and (run / "model" / "config.json").is_file()
    assert (run / "final.json").read_text() == final  # nothing scored again
    assert "already finished" not in capsys.readouterr().err
    assert cli(["run", "--resume", str(run)]) == 0
    assert "already finished" in capsys.readouterr().err


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 1 MB tmpfs (needs the right to mount; skipped where there is none)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("no right to mount a small tmpfs here")
    yield mount
    subprocess.run(["umount", str(mount)], capture_output=True)


def test_a_full_disk_during_a_search_is_one_line_and_the_log_stays_whole(zoo_tiny: Path, small_disk: Path,
                                                                         tmp_path: Path, capsys):
    run = small_disk / "run"
    argv = ["run", str(zoo_tiny / "run.yaml"), *FAST, "search.budget=100000", f"output={run}", "--quiet"]
    filler = small_disk / "filler"
    with open(filler, "wb") as f:  # leave about 40 KB: room for the config and some records only
        free = shutil.disk_usage(small_disk).free
        f.write(b"\0" * max(0, free - 40_000))
    assert cli(argv) == 2
    err = one_line_error(capsys)
    assert "No space left on device" in err and "--resume" in err
    records = RunLog(run / "evaluations.jsonl").records()  # every line a whole record
    assert records and (run / "evaluations.jsonl").read_bytes().endswith(b"\n")
    filler.unlink()
    moved = tmp_path / "run"  # resumed where there is room: the same run goes on from its log
    shutil.copytree(run, moved)
    config = yaml.safe_load((moved / "config.yaml").read_text())
    config["output"], config["search"]["budget"] = str(moved), len(records) + 4
    (moved / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    inputs = json.loads((moved / "inputs.json").read_text())
    inputs["config"]["search"]["budget"] = len(records) + 4
    (moved / "inputs.json").write_text(json.dumps(inputs))
    assert cli(["run", "--resume", str(moved), "--quiet"]) == 0
    assert RunLog(moved / "evaluations.jsonl").records()[: len(records)] == records


def children_of(pid: int) -> set[int]:
    """The processes whose parent is `pid` (from /proc)."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.add(int(stat.parent.name))
    return found


def gone(pids: set[int], seconds: float = 30) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not any(Path(f"/proc/{p}").exists() and "zombie" not in _state(p) for p in pids):
            return True
        time.sleep(0.2)
    return False


def _state(pid: int) -> str:
    try:
        return "zombie" if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z" else "alive"
    except OSError:
        return "zombie"


def ctrl_c_as_in_a_shell() -> None:
    """A child's SIGINT as an interactive shell gives it (default, unblocked): a suite started in the
    background by a script (`pytest &`) ignores SIGINT, its children inherit that, and the comparison
    would never see the ctrl-C this test sends."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


@pytest.mark.parametrize("how", ["SIGINT", "SIGKILL"])
def test_a_stopped_comparison_starts_nothing_more_and_leaves_no_worker(zoo_tiny: Path, tmp_path: Path, how):
    import signal

    out = tmp_path / "cmp"
    argv = [sys.executable, "-m", "evogm.cli", "compare", str(zoo_tiny / "run.yaml"), "search.optimizer=random",
            "search.popsize=4", "baselines.methods=[]", "--optimizers", "random", "--seeds", "4", "--budget",
            "100000", "--workers", "2", "--out", str(out)]
    compare = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env={**os.environ, "OMP_NUM_THREADS": "1"}, preexec_fn=ctrl_c_as_in_a_shell)
    logs = [out / "runs" / "random" / f"seed{s}" / "evaluations.jsonl" for s in range(4)]
    deadline = time.monotonic() + 300
    while sum(log.exists() for log in logs) < 2 and time.monotonic() < deadline:  # two runs under way
        assert compare.poll() is None
        time.sleep(0.1)
    workers = children_of(compare.pid)
    assert workers
    os.kill(compare.pid, getattr(signal, how))
    compare.wait(timeout=60)
    assert gone(workers), "a worker outlived its comparison"
    time.sleep(2)
    assert sum(log.parent.exists() for log in logs) == 2  # the queued seeds never started


def test_help_and_a_config_check_load_no_heavy_library(zoo_tiny: Path):
    """`evogm --help` and checking a run config import neither torch nor transformers nor peft (they
    load with the first model); benchmarks/startup.py prints the seconds."""
    code = ("import sys; from evogm.cli import build_parser; from evogm.config import load_config; "
            "build_parser().format_help(); load_config(sys.argv[1], ['output=/tmp/evogm-x']); "
            "print(sorted(m for m in ('torch', 'transformers', 'peft', 'cma', 'optuna', 'matplotlib', 'lm_eval') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code, str(zoo_tiny / "run.yaml")], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


def test_a_pool_whose_workers_die_with_their_parent_closes_cleanly():
    """compare's pool starts replacement workers (one run each) from a thread of its own: tying a
    worker's life to that thread would kill it mid-read of the task queue and hang the pool."""
    code = ("import gc\nfrom multiprocessing import get_context\nfrom evogm.worker import die_with_parent\n"
            "for _ in range(5):\n"
            "    pool = get_context('spawn').Pool(2, initializer=die_with_parent, maxtasksperchild=1)\n"
            "    assert sorted(pool.imap_unordered(abs, range(-3, 3))) == [0, 1, 1, 2, 2, 3]\n"
            "    pool.close(); pool.join(); del pool; gc.collect()\n"
            "print('closed')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "closed"
