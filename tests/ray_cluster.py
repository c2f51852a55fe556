"""A Ray cluster of real nodes on this machine, for the tests: a head and further nodes, each started by
`ray start` in a session of its own, so that one node can be killed alone (every process of its session:
raylet, agents, and the workers, which Ray puts in process groups of their own), as when a machine of a
cluster is lost; `stop` kills them all. Linux: a session's processes are read from /proc.

The nodes bind 127.0.0.1 on free ports, keep their files in a short folder of their own under /tmp
(`--temp-dir`, which Ray accepts per node; Ray's socket paths must stay under 108 bytes) and share a
token of their own (`RAY_AUTH_MODE=token`), so a test cluster neither meets nor reads another Ray
instance on the machine. The head's health checks are fast, so a lost node is declared dead in
seconds. Their workers import evogm from this checkout (PYTHONPATH), as a real cluster's nodes each
have evogm installed.

Run as a script, it is the driver the cluster test starts in its own process: it joins the cluster
(`executor.address: auto`, found through RAY_ADDRESS), runs the config's search to `LOG`, and writes
where the workers ran to `SUMMARY`:

    python tests/ray_cluster.py CONFIG.yaml LOG.jsonl SUMMARY.json

>>> cluster = Cluster()                              # doctest: +SKIP
>>> address = cluster.start_head(cpus=2)              # doctest: +SKIP
>>> second = cluster.add_node(cpus=1)                 # doctest: +SKIP
>>> cluster.kill(second); cluster.stop()              # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RAY = Path(sys.executable).with_name("ray") if Path(sys.executable).with_name("ray").exists() else shutil.which("ray")
FAST_HEALTH_CHECKS = {"RAY_health_check_period_ms": "1000", "RAY_health_check_failure_threshold": "5"}  # ~5 s


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """Nodes started with `ray start`; node 0 is the head. `env` is what a driver needs to join it."""

    def __init__(self):
        self.folder, self.sessions, self.address = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp")), [], None
        self.env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token",
                    "RAY_AUTH_TOKEN": secrets.token_hex(32), "OMP_NUM_THREADS": "1",
                    "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}

    def start_head(self, cpus: int) -> str:
        self.address = f"127.0.0.1:{free_port()}"
        self._start(["--head", f"--port={self.address.split(':')[1]}", "--include-dashboard=false",
                     f"--dashboard-port={free_port()}"], cpus,
                    FAST_HEALTH_CHECKS)
        self.env["RAY_ADDRESS"] = self.address  # what `address: auto` finds
        return self.address

    def add_node(self, cpus: int) -> int:
        """A further node joined to the head; returns its index (for `kill`)."""
        return self._start([f"--address={self.address}"], cpus)

    def kill(self, index: int) -> None:
        """Every process of node `index` (SIGKILL): the node is lost, as a machine that goes down."""
        for _ in range(2):  # a second pass for a worker its raylet was starting as the first one ran
            for pid in in_session(self.sessions[index]):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass  # already gone

    def stop(self) -> None:
        """Kill every node, and remove their files."""
        for index in reversed(range(len(self.sessions))):
            self.kill(index)
        shutil.rmtree(self.folder, ignore_errors=True)

    def _start(self, args: list[str], cpus: int, extra_env: dict | None = None) -> int:
        index = len(self.sessions)
        ports = [f"--{name}-port={free_port()}" for name in
                 ("dashboard-agent-listen", "dashboard-agent-grpc", "metrics-export", "runtime-env-agent")]
        command = [str(RAY), "start", *args, *ports, "--node-ip-address=127.0.0.1", f"--num-cpus={cpus}",
                   "--num-gpus=0", f"--temp-dir={self.folder / f'node{index}'}", "--object-store-memory=100000000",
                   "--disable-usage-stats"]
        starter = subprocess.Popen(command, env={**self.env, **(extra_env or {})}, start_new_session=True,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.sessions.append(starter.pid)  # the session it leads: every process of the node stays in it
        output, _ = starter.communicate(timeout=120)  # `ray start` returns once the node is up
        if starter.returncode != 0:
            raise RuntimeError(f"ray start failed ({starter.returncode}): {output[-2000:]}")
        return index


def in_session(sid: int) -> list[int]:
    """The process ids of session `sid` (the sixth field of /proc/PID/stat), this process excepted."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # ended while read
        if int(fields[3]) == sid and int(stat.parent.name) != os.getpid():
            pids.append(int(stat.parent.name))
    return pids


def drive(config: Path, log_path: Path, summary: Path) -> None:
    """The search of `config` on its Ray executor, logged to `log_path`; where it ran, to `summary`."""
    from evogm.config import load_config, build_optimizer, resolve
    from evogm.executors import make_executor
    from evogm.runlog import RunLog
    from evogm.scoring import MULTI_TASK
    from evogm.search.loop import search
    from evogm.workspace import objective_factory

    cfg = resolve(load_config(config), log_path.parent)
    executor = make_executor(cfg.executor.kind, objective_factory(cfg, MULTI_TASK), **cfg.executor.options)
    executor.ready()  # every worker built its models: the search starts on all of them at once
    started = sorted(set(executor.nodes.values()))
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        log = RunLog(log_path, fresh=True)
        search(build_optimizer(cfg), executor, log, cfg.search.budget)
        log.close()
    summary.write_text(json.dumps({"started_on": started, "ended_on": sorted(set(executor.nodes.values())),
                                   "live_workers": len(executor.nodes),
                                   "evaluations": dict(executor.evaluations), "restarts": executor.restarts,
                                   "warnings": [str(w.message) for w in said]}))
    executor.close()


if __name__ == "__main__":
    drive(*map(Path, sys.argv[1:4]))
