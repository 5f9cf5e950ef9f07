"""Run a function in a world of processes on 127.0.0.1 (gloo) and collect what each rank returns.

The parent hosts the rendezvous store on a port the OS picks (``TCPStore`` on port 0, so no race
for a free port) and starts one ``python tests/_distributed_cases.py`` per rank, with stdout and
stderr in files (no pipe can fill and block).  Every rank's process group has a 30 s timeout, so
a rank that dies makes the others fail rather than wait; the parent kills everything still
running at its own deadline and fails with the ranks' output.
"""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch.distributed as dist

from logloss._json import restore_non_finite

WORKER = Path(__file__).with_name("_distributed_cases.py")
COLLECTIVE_TIMEOUT_S = 30


def _worker_env() -> dict[str, str]:
    env = dict(os.environ)
    src = str(Path(__file__).resolve().parents[1] / "src")  # this checkout's package first
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    env["GLOO_SOCKET_IFNAME"] = "lo"  # gloo's own connections on the loopback interface only
    env["OMP_NUM_THREADS"] = "1"
    return env


def _stop(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
    for proc in procs:
        proc.wait(timeout=10)


def _outputs(folder: Path, world: int) -> str:
    parts = []
    for rank in range(world):
        for stream in ("out", "err"):
            text = (folder / f"rank{rank}.{stream}").read_text(errors="replace")[-3000:]
            if text.strip():
                parts.append(f"--- rank {rank} std{stream} ---\n{text}")
    return "\n".join(parts)


def run_world(world: int, timeout_s: float = 180.0) -> list[dict[str, Any]]:
    """Every rank's results (``_distributed_cases.run_all``'s dict), rank order.

    Raises AssertionError (with the ranks' output) when a rank fails or the deadline passes.
    """
    store = dist.TCPStore(
        "127.0.0.1",
        0,
        None,
        True,
        timeout=datetime.timedelta(seconds=COLLECTIVE_TIMEOUT_S),
        wait_for_workers=False,
    )
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        procs = []
        try:
            for rank in range(world):
                command = [sys.executable, str(WORKER), str(rank), str(world), str(store.port), tmp]
                with (
                    open(folder / f"rank{rank}.out", "wb") as out,
                    open(folder / f"rank{rank}.err", "wb") as err,
                ):
                    procs.append(
                        subprocess.Popen(command, stdout=out, stderr=err, env=_worker_env())
                    )
            deadline = time.monotonic() + timeout_s
            for proc in procs:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _stop(procs)
            raise AssertionError(
                f"world of {world} passed its {timeout_s:.0f} s deadline\n{_outputs(folder, world)}"
            ) from None
        finally:
            _stop(procs)
        codes = [proc.returncode for proc in procs]
        if any(codes):
            raise AssertionError(f"exit codes {codes}\n{_outputs(folder, world)}")
        return [
            restore_non_finite(json.loads((folder / f"rank{rank}.json").read_text()))
            for rank in range(world)
        ]
