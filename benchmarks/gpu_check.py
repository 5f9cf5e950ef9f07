"""The GPU check of logloss.fused: one prepared script for a machine with a CUDA GPU.

Run: ``python benchmarks/gpu_check.py`` (``--part NAME`` runs one part alone).  Writes
``benchmarks/results/fused-gpu.md`` and ``.json`` (atomically) and prints the table.  Budget:
about 6 minutes in all; every part runs in its own process with its own timeout, so one that
fails, hangs or crashes the process does not stop the others, and the report says which failed
and why.

Parts:
1. ``environment``: torch sees a CUDA device, Triton imports (fails fast and says what is
   missing; the other parts still run and fail on their own).
2. ``tests``: the fused test modules with ``LOGLOSS_TEST_DEVICE=cuda`` (the losses run on the
   GPU through the Triton kernel; the C-kernel tests stay on the CPU).
3. ``triton``: tests/test_fused_triton.py compiled on the GPU (not Triton's interpreter).
4. ``benchmark``: forward + backward of fused against eager PyTorch, ``torch.compile`` and Liger
   Kernel (when it imports), cross-entropy, every option, and the linear loss.
5. ``distributed``: NCCL with world size 1: a short DDP training run under torchrun, and the
   vocabulary-parallel loss on CUDA tensors against ``F.cross_entropy``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

# torch, Triton, logloss and Liger are imported inside the parts: each part runs in its own child
# process, and the parent, which only schedules them and writes the report, must not need them.
ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
TIMEOUTS = {"environment": 30, "tests": 200, "triton": 60, "benchmark": 120, "distributed": 150}
TEST_MODULES = [
    "tests/test_fused.py",
    "tests/test_fused_options.py",
    "tests/test_fused_rows.py",
    "tests/test_nn.py",
]


def part_environment() -> dict:
    import torch

    if not torch.cuda.is_available():
        raise RuntimeError(f"torch {torch.__version__} sees no CUDA device (a CPU-only build?)")
    try:
        import triton
    except ImportError as error:
        raise RuntimeError(f"Triton does not import ({error}): pip install triton") from None
    return {
        "device": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "triton": triton.__version__,
        "liger_kernel": _liger_version(),
    }


def _liger_version() -> str:
    try:
        from importlib.metadata import version

        import liger_kernel.transformers  # noqa: F401 (what the benchmark imports)

        return version("liger-kernel")
    except Exception as error:  # not installed, or broken: the benchmark leaves it out
        return f"not used ({type(error).__name__}: {error})"


def _pytest(args: list[str], timeout: float, log: str) -> dict:
    """pytest on the GPU; its whole output goes to ``results/LOG`` as it runs (kept when the
    part times out), the summary and the failures' names into the report."""
    env = dict(os.environ, LOGLOSS_TEST_DEVICE="cuda", PYTHONPATH=str(ROOT / "src"))
    cmd = [sys.executable, "-m", "pytest", "-q", "-rfEs", "-p", "no:cacheprovider", *args]
    path = RESULTS / log
    with open(path, "w", encoding="utf-8") as out:
        run = subprocess.run(
            cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, text=True,
            timeout=timeout, check=False,
        )  # fmt: skip
    lines = path.read_text(encoding="utf-8").strip().splitlines()
    failed = [line for line in lines if line.startswith(("FAILED", "ERROR"))]
    summary = {"summary": lines[-1] if lines else "", "failed": failed[:40], "log": log}
    if run.returncode != 0:
        raise RuntimeError(json.dumps(summary))
    return summary


def part_tests() -> dict:
    return _pytest(TEST_MODULES, TIMEOUTS["tests"] - 10, "gpu-tests.log")


def part_triton() -> dict:
    return _pytest(["tests/test_fused_triton.py"], TIMEOUTS["triton"] - 10, "gpu-triton.log")


def _time(fn: Callable[[], object], repeats: int = 10) -> tuple[float, float]:
    """(median seconds, peak GiB allocated) of fn() + backward on the GPU, after a warm-up."""
    import torch

    fn()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), torch.cuda.max_memory_allocated() / 2**30


def _liger() -> dict[str, Callable] | None:
    try:
        from liger_kernel.transformers import (
            LigerCrossEntropyLoss,
            LigerFusedLinearCrossEntropyLoss,
        )
    except Exception:  # optional: left out where it does not import (the environment part says why)
        return None
    return {"ce": LigerCrossEntropyLoss, "linear": LigerFusedLinearCrossEntropyLoss}


def _step(loss_of: Callable[[], object], *leaves) -> Callable[[], None]:
    """One training step's loss + backward, the leaves' gradients dropped first (as
    ``zero_grad(set_to_none=True)``): no method pays for accumulating into an old gradient."""

    def step() -> None:
        for leaf in leaves:
            leaf.grad = None
        loss_of().backward()

    return step


def _cross_entropy_methods(z, target, liger) -> dict[str, Callable[[], None]]:
    import torch
    import torch.nn.functional as F

    from logloss import fused

    compiled = torch.compile(F.cross_entropy)
    methods = {
        "fused": _step(lambda: fused.cross_entropy(z, target), z),
        # writing the gradient over its input, as Liger does: on a copy, as the logits of a
        # model's last layer would be (the copy is part of the time, as it is for Liger)
        "fused inplace (copy)": _step(
            lambda: fused.cross_entropy(z.clone(), target, inplace_backward=True), z
        ),
        "eager": _step(lambda: F.cross_entropy(z, target), z),
        "compile": _step(lambda: compiled(z, target), z),
    }
    out = torch.empty_like(z)
    methods["copy_ (floor: one read, one write)"] = lambda: out.copy_(z.detach())
    if liger is not None:
        loss = liger["ce"]()
        methods["liger (copy)"] = _step(lambda: loss(z.clone(), target), z)
    return methods


def part_benchmark() -> dict:
    import torch

    liger, rows = _liger(), []
    for n, v, dtype in [
        (4096, 32768, torch.float32),
        (4096, 32768, torch.bfloat16),
        (8192, 131072, torch.bfloat16),
    ]:
        torch._dynamo.reset()
        z = torch.randn(n, v, device="cuda").mul_(2).to(dtype).requires_grad_()
        target = torch.randint(0, v, (n,), device="cuda")
        for name, fn in _cross_entropy_methods(z, target, liger).items():
            seconds, peak = _time(fn)
            rows.append({"case": f"CE N={n} V={v} {str(dtype)[6:]}", "method": name,
                         "ms": seconds * 1e3, "peak_GiB": peak})  # fmt: skip
    rows += _bench_options() + _bench_linear(liger)
    return {"rows": rows}


def _bench_options() -> list[dict]:
    import torch

    from bench_fused import OPTIONS, composed_options
    from logloss import fused

    torch._dynamo.reset()
    z = torch.randn(4096, 32768, device="cuda").mul_(2).requires_grad_()
    target = torch.randint(0, 32768, (4096,), device="cuda")
    weight = torch.rand(32768, device="cuda") + 0.5
    compiled = torch.compile(composed_options)
    methods = {
        "fused": _step(lambda: fused.cross_entropy(z, target, weight=weight, **OPTIONS), z),
        "eager": _step(lambda: composed_options(z, target, weight), z),
        "compile": _step(lambda: compiled(z, target, weight), z),
    }
    rows = []
    for name, fn in methods.items():
        seconds, peak = _time(fn)
        rows.append({"case": "every option, N=4096 V=32768 float32", "method": name,
                     "ms": seconds * 1e3, "peak_GiB": peak})  # fmt: skip
    return rows


def _bench_linear(liger) -> list[dict]:
    import torch
    import torch.nn.functional as F

    from logloss import fused

    n, h, v = 8192, 2048, 131072
    hidden = (torch.randn(n, h, device="cuda") / h**0.5).bfloat16().requires_grad_()
    weight = torch.randn(v, h, device="cuda").bfloat16().requires_grad_()
    target = torch.randint(0, v, (n,), device="cuda")
    leaves = (hidden, weight)
    methods = {
        "fused": _step(lambda: fused.linear_cross_entropy(hidden, weight, target), *leaves),
        "unfused": _step(lambda: F.cross_entropy((hidden @ weight.t()).float(), target), *leaves),
    }
    if hasattr(F, "linear_cross_entropy"):  # PyTorch's own chunked loss, where this torch has it
        options = torch.nn.LinearCrossEntropyOptions()
        methods["torch-chunked"] = _step(
            lambda: F.linear_cross_entropy(hidden, weight, target, options=options), *leaves
        )
    if liger is not None:
        loss = liger["linear"]()
        methods["liger"] = _step(lambda: loss(weight, hidden, target), *leaves)
    rows = []
    for name, fn in methods.items():
        seconds, peak = _time(fn, repeats=5)
        rows.append({"case": f"linear N={n} H={h} V={v} bfloat16", "method": name,
                     "ms": seconds * 1e3, "peak_GiB": peak})  # fmt: skip
    return rows


def part_distributed() -> dict:
    """NCCL, world size 1: DDP training under torchrun (bench_ddp.py --gpu-check) and the
    vocabulary-parallel loss on CUDA tensors (bench_vocab_parallel.py --gpu-check).  Each prints
    one result line and exits non-zero on failure."""
    results = {}
    for name in ("ddp", "vocab_parallel"):
        script = ROOT / "benchmarks" / f"bench_{name}.py"
        env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
        run = subprocess.run(
            [sys.executable, str(script), "--gpu-check"], cwd=ROOT, env=env,
            capture_output=True, text=True, timeout=TIMEOUTS["distributed"] / 2, check=False,
        )  # fmt: skip
        lines = (run.stdout + run.stderr).strip().splitlines()
        results[name] = lines[-1] if lines else f"exit {run.returncode}, no output"
        if run.returncode != 0:
            raise RuntimeError(f"{name}: {results[name]} / " + " / ".join(lines[-8:]))
    return results


PARTS = {
    "environment": part_environment,
    "tests": part_tests,
    "triton": part_triton,
    "benchmark": part_benchmark,
    "distributed": part_distributed,
}


def run_part(name: str) -> dict:
    """Run one part in a child process with its timeout; never raises."""
    t0 = time.perf_counter()
    cmd = [sys.executable, str(Path(__file__).resolve()), "--part", name]
    env = dict(os.environ, PYTHONPATH=f"{ROOT / 'src'}{os.pathsep}{ROOT / 'benchmarks'}")
    try:
        run = subprocess.run(
            cmd, cwd=ROOT, env=env, capture_output=True, text=True,
            timeout=TIMEOUTS[name], check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return {
            "ok": False,
            "error": f"timed out after {TIMEOUTS[name]} s",
            "seconds": TIMEOUTS[name],
        }
    seconds = time.perf_counter() - t0
    last = run.stdout.strip().splitlines()[-1:] or [""]
    try:
        result = json.loads(last[0])
    except json.JSONDecodeError:
        result = {"ok": False, "error": (run.stderr or run.stdout).strip()[-3000:]}
    return result | {"seconds": round(seconds, 1)}


def child(name: str) -> int:
    """In the child process: run the part, print one JSON line (ok and its result, or why not)."""
    try:
        print(json.dumps({"ok": True, "result": PARTS[name]()}))
        return 0
    except Exception as error:  # reported, not raised: the parent goes on with the next part
        print(json.dumps({"ok": False, "error": f"{type(error).__name__}: {error}"}))
        return 1


def markdown(report: dict) -> str:
    lines = ["GPU check of logloss.fused (benchmarks/gpu_check.py).", ""]
    lines += ["| part | ok | seconds | result |", "|---|---|---|---|"]
    for name, part in report.items():
        detail = part.get("error") or json.dumps(part.get("result", {}))[:300]
        if name == "benchmark" and part.get("ok"):
            detail = "table below"
        detail = detail.replace("|", "/").replace("\n", " ")
        lines.append(f"| {name} | {part.get('ok')} | {part.get('seconds')} | {detail} |")
    rows = report.get("benchmark", {}).get("result", {}).get("rows", [])
    if rows:
        lines += ["", "Forward + backward, median of 10 calls (5 for linear), peak GPU memory.", ""]
        lines += ["| case | method | ms | peak GiB |", "|---|---|---|---|"]
        for row in rows:
            lines.append(
                f"| {row['case']} | {row['method']} | {row['ms']:.2f} | {row['peak_GiB']:.2f} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--part", choices=sorted(PARTS), help="run one part, print JSON")
    args = parser.parse_args(argv)
    if args.part:
        return child(args.part)
    sys.path.insert(0, str(ROOT / "src"))
    from logloss._atomic import write_text_atomic
    from logloss._json import dumps

    report = {}
    for name in PARTS:
        report[name] = run_part(name)
        print(f"{name}: {'ok' if report[name].get('ok') else 'FAILED'} "
              f"({report[name].get('seconds')} s)", flush=True)  # fmt: skip
    write_text_atomic(RESULTS / "fused-gpu.json", dumps(report) + "\n")
    table = markdown(report)
    write_text_atomic(RESULTS / "fused-gpu.md", table)
    print(table)
    return 0 if all(part.get("ok") for part in report.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
