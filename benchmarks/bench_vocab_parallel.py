"""Benchmark: vocabulary-parallel cross-entropy across 2 processes x 1 thread on this CPU (gloo).

Run: ``python benchmarks/bench_vocab_parallel.py [--quick] [--rounds R] [--repeats K]``; writes
``benchmarks/results/vocab_parallel.{md,json}`` (``vocab_parallel-quick.*`` for ``--quick``).
``--gpu-check`` instead runs :func:`nccl_world_size_1_check` (one process, NCCL, CUDA tensors)
and exits non-zero on failure.

1. Cross-entropy, N=4096, V=131072, float32, forward + backward, the classes split over 2 ranks:
   ``logloss`` (``vocab_parallel_cross_entropy`` on each rank's (N, V/2) logits),
   ``loss_parallel`` (``F.cross_entropy`` under ``loss_parallel()`` on the same logits as a
   DTensor placed Shard(1)), ``allgather`` (all-gather the logits, ``F.cross_entropy`` on the
   (N, V) matrix on every rank, keep the rank's columns of the gradient).  Each method runs in
   a fresh world of 2 processes (clean peak RSS), ``rounds`` rounds with the order rotated;
   per call: the slowest rank's wall time (a barrier before each call), each rank's CPU time.
   Peak memory per rank: the rise of the process's peak RSS (VmHWM, reset before the inputs
   are made) over its RSS before the inputs: inputs included.  Against that, the single-process
   ``logloss.fused.cross_entropy`` on the whole (N, V) logits, measured the same way.
2. Linear + cross-entropy, N=8192, H=1024, V=65536, float32, 2 ranks: ``logloss``
   (``vocab_parallel_linear_cross_entropy``) against the rank's three local matrix products
   (z = h W_r^T, z W_r, z^T h into buffers allocated outside the timing): the floor of any
   implementation that computes the loss and its three gradients.  Alternated in one world per
   round.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from logloss import fused
from logloss._atomic import write_text_atomic
from logloss._json import dumps, restore_non_finite
from logloss.distributed import vocab_parallel_cross_entropy, vocab_parallel_linear_cross_entropy

RESULTS = Path(__file__).resolve().parent / "results"
GIB = 1 << 30
WORLD = 2
CE_METHODS = ("logloss", "loss_parallel", "allgather")
WORLD_TIMEOUT_S = 1800  # a whole world (all its calls); collectives time out after 120 s
COLLECTIVE_TIMEOUT = datetime.timedelta(seconds=120)


# --------------------------------------------------------------------------------------------
# Measuring inside one process
# --------------------------------------------------------------------------------------------


def rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def reset_peak_rss() -> None:
    """Set VmHWM to the current RSS (Linux >= 4.0), so it measures from now on."""
    Path("/proc/self/clear_refs").write_text("5")


def available_bytes() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 8 * GIB


def timed(call: Callable[[], Any], group_sync: bool) -> tuple[float, float]:
    """(wall, CPU) seconds of ``call()``, after a barrier when in a process group."""
    if group_sync:
        dist.barrier()
    c0, t0 = time.process_time(), time.perf_counter()
    call()
    return time.perf_counter() - t0, time.process_time() - c0


def shard_columns(v: int, rank: int) -> slice:
    size = -(-v // WORLD)  # torch.chunk's split, as DTensor's Shard(1) has it
    return slice(rank * size, min(v, (rank + 1) * size))


# --------------------------------------------------------------------------------------------
# The calls (forward + backward)
# --------------------------------------------------------------------------------------------


def ce_call(method: str, local: torch.Tensor, target: torch.Tensor, v: int) -> Callable:
    """A forward + backward of ``method`` on this rank's (N, V_r) leaf ``local``."""
    if method == "logloss":
        return lambda: vocab_parallel_cross_entropy(local, target).backward()
    if method == "loss_parallel":
        from torch.distributed.device_mesh import init_device_mesh  # only this method needs it
        from torch.distributed.tensor import DTensor, Shard
        from torch.distributed.tensor.parallel import loss_parallel

        mesh = init_device_mesh("cpu", (WORLD,))

        def call() -> None:
            logits = DTensor.from_local(local, mesh, [Shard(1)], run_check=False)
            with loss_parallel():
                F.cross_entropy(logits, target).backward()

        return call
    columns = shard_columns(v, dist.get_rank())

    def gathered_call() -> None:
        parts = [torch.empty_like(local) for _ in range(WORLD)]
        dist.all_gather(parts, local.detach())
        full = torch.cat(parts, dim=1).requires_grad_()
        del parts
        F.cross_entropy(full, target).backward()
        local.grad = full.grad[:, columns].clone()

    return gathered_call


def ce_inputs(n: int, v: int, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """This rank's (N, V_r) logits (a leaf with requires_grad) and the (N,) targets."""
    target = torch.randint(v, (n,), generator=torch.Generator().manual_seed(0))
    cols = shard_columns(v, rank)
    gen = torch.Generator().manual_seed(1 + rank)
    local = torch.randn(n, cols.stop - cols.start, generator=gen).mul_(2).requires_grad_()
    return local, target


def linear_calls(n: int, h: int, v: int, rank: int) -> dict[str, Callable]:
    """{"logloss": forward + backward, "gemms": the three local products} on this rank."""
    gen = torch.Generator().manual_seed(0)
    hidden = (torch.randn(n, h, generator=gen) / h**0.5).requires_grad_()
    target = torch.randint(v, (n,), generator=gen)
    cols = shard_columns(v, rank)
    gen_w = torch.Generator().manual_seed(1 + rank)
    weight = torch.randn(cols.stop - cols.start, h, generator=gen_w).requires_grad_()

    def logloss() -> None:
        hidden.grad = weight.grad = None
        vocab_parallel_linear_cross_entropy(hidden, weight, target).backward()

    def gemms() -> None:
        torch.mm(hidden.detach(), weight.detach().t(), out=buffers["z"])
        torch.mm(buffers["z"], weight.detach(), out=buffers["grad_h"])
        torch.mm(buffers["z"].t(), hidden.detach(), out=buffers["grad_w"])

    def make_buffers() -> None:  # outside the timing: allocated and faulted in
        buffers["z"] = torch.zeros(n, weight.shape[0])
        buffers["grad_h"], buffers["grad_w"] = torch.zeros(n, h), torch.zeros_like(weight)

    buffers: dict[str, torch.Tensor] = {}
    return {"logloss": logloss, "gemms": gemms, "make_buffers": make_buffers, "free": buffers.clear}


# --------------------------------------------------------------------------------------------
# Workers (one per rank) and the worlds that run them
# --------------------------------------------------------------------------------------------


def init_world(rank: int, port: int) -> None:
    torch.set_num_threads(1)
    store = dist.TCPStore("127.0.0.1", port, WORLD, False, timeout=COLLECTIVE_TIMEOUT)
    dist.init_process_group(
        "gloo", store=store, rank=rank, world_size=WORLD, timeout=COLLECTIVE_TIMEOUT
    )


def ce_worker(rank: int, spec: dict) -> dict:
    """One rank of a cross-entropy world: ``spec["calls"]`` timed calls after one warm-up."""
    init_world(rank, spec["port"])
    before_inputs = rss_kib("VmRSS")
    reset_peak_rss()
    local, target = ce_inputs(spec["n"], spec["v"], rank)
    call = ce_call(spec["method"], local, target, spec["v"])
    walls, cpus = [], []
    for _ in range(spec["calls"] + 1):
        local.grad = None
        wall, cpu = timed(call, True)
        walls.append(wall)
        cpus.append(cpu)
    peak = (rss_kib("VmHWM") - before_inputs) / 1024
    dist.destroy_process_group()
    return {"wall_s": walls[1:], "cpu_s": cpus[1:], "first_call_s": walls[0], "peak_MiB": peak}


def fused_worker(rank: int, spec: dict) -> dict:
    """The single-process ``logloss.fused.cross_entropy`` on the whole (N, V) logits."""
    torch.set_num_threads(spec["threads"])
    before_inputs = rss_kib("VmRSS")
    reset_peak_rss()
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(spec["n"], spec["v"], generator=gen).mul_(2).requires_grad_()
    target = torch.randint(spec["v"], (spec["n"],), generator=gen)
    walls, cpus = [], []
    for _ in range(spec["calls"] + 1):
        logits.grad = None
        wall, cpu = timed(lambda: fused.cross_entropy(logits, target).backward(), False)
        walls.append(wall)
        cpus.append(cpu)
    peak = (rss_kib("VmHWM") - before_inputs) / 1024
    return {"wall_s": walls[1:], "cpu_s": cpus[1:], "first_call_s": walls[0], "peak_MiB": peak}


def linear_worker(rank: int, spec: dict) -> dict:
    """One rank of a linear world: logloss and the GEMMs alternated, one warm-up each."""
    init_world(rank, spec["port"])
    before_inputs = rss_kib("VmRSS")
    calls = linear_calls(spec["n"], spec["h"], spec["v"], rank)
    out: dict[str, Any] = {
        "logloss": {"wall_s": [], "cpu_s": []},
        "gemms": {"wall_s": [], "cpu_s": []},
    }
    peak = 0
    for rep in range(spec["calls"] + 1):
        for method in ("logloss", "gemms")[:: 1 if rep % 2 else -1]:
            if method == "gemms":
                calls["make_buffers"]()
            reset_peak_rss()
            wall, cpu = timed(calls[method], True)
            if method == "logloss":
                peak = max(peak, rss_kib("VmHWM") - before_inputs)
            calls["free"]()
            if rep:
                out[method]["wall_s"].append(wall)
                out[method]["cpu_s"].append(cpu)
    dist.destroy_process_group()
    out["logloss"]["peak_MiB"] = peak / 1024
    return out


WORKERS = {"ce": ce_worker, "fused": fused_worker, "linear": linear_worker}


def _worker_main(rank: int, spec: dict, folder: str) -> None:
    """Entry point of each spawned process: run the worker, write its JSON result."""
    result = WORKERS[spec["task"]](rank, spec)
    write_text_atomic(Path(folder) / f"rank{rank}.json", dumps(result))


def run_world(spec: dict, size: int) -> list[dict]:
    """Spawn ``size`` fresh processes for ``spec`` (a rendezvous store on a free port here).

    Raises RuntimeError when a process fails (e.g. killed for memory) or the deadline passes.
    """
    store = dist.TCPStore(
        "127.0.0.1", 0, None, True, timeout=COLLECTIVE_TIMEOUT, wait_for_workers=False
    )
    spec = {**spec, "port": store.port}
    os.environ["GLOO_SOCKET_IFNAME"] = "lo"  # inherited by the workers: loopback only
    with tempfile.TemporaryDirectory() as folder:
        context = mp.start_processes(
            _worker_main, args=(spec, folder), nprocs=size, join=False, start_method="spawn"
        )
        deadline = time.monotonic() + WORLD_TIMEOUT_S
        try:
            while not context.join(timeout=max(1.0, deadline - time.monotonic())):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the world passed its {WORLD_TIMEOUT_S} s deadline")
        except (mp.ProcessRaisedException, mp.ProcessExitedException) as exc:
            raise RuntimeError(str(exc).strip().splitlines()[-1]) from None
        finally:
            for process in context.processes:
                if process.is_alive():
                    process.kill()
        return [
            restore_non_finite(json.loads((Path(folder) / f"rank{r}.json").read_text()))
            for r in range(size)
        ]


# --------------------------------------------------------------------------------------------
# The benchmark: worlds round-robin, summaries, the report
# --------------------------------------------------------------------------------------------


def summarize(runs: list[list[dict]]) -> dict:
    """Over every call of every world (``runs``: per world, per rank): the slowest rank's wall
    time per call (median, min, max), its CPU time (median), the largest peak of any rank."""
    walls = [max(call) for run in runs for call in zip(*(r["wall_s"] for r in run), strict=True)]
    cpus = [max(call) for run in runs for call in zip(*(r["cpu_s"] for r in run), strict=True)]
    return {
        "median_s": statistics.median(walls),
        "min_s": min(walls),
        "max_s": max(walls),
        "cpu_s": statistics.median(cpus),
        "times_s": walls,
        "peak_MiB_per_rank": max((r.get("peak_MiB", 0.0) for run in runs for r in run), default=0),
    }


def footprint(method: str, n: int, v: int) -> int:
    """Rough peak bytes per process, inputs included (to skip what cannot fit): logloss holds
    its shard and the shard's gradient; loss_parallel ~5 shard-sized temporaries (measured
    4.7x at N=512, V=8192); all-gather the (N, V) logits plus F.cross_entropy's three N x V
    matrices; the single-process fused call the logits and their gradient."""
    shard = n * (-(-v // WORLD)) * 4
    return {"logloss": 2, "loss_parallel": 5, "allgather": 9, "fused": 2 * WORLD}[method] * shard


def fits(method: str, n: int, v: int, processes: int) -> str | None:
    """None when ``processes`` x the footprint fits in the available memory (less 2 GiB for
    everything else), else why not."""
    need, avail = processes * footprint(method, n, v), available_bytes()
    if need <= avail - 2 * GIB:
        return None
    return f"needs ~{need / GIB:.1f} GiB in all, {avail / GIB:.1f} GiB available"


def bench_cross_entropy(n: int, v: int, rounds: int, calls: int) -> dict:
    case: dict[str, Any] = {"N": n, "V": v, "dtype": "float32", "ranks": WORLD, "methods": {}}
    runnable = []
    for method in CE_METHODS:
        why = fits(method, n, v, WORLD)
        if why:
            case["methods"][method] = {"skipped": why}
        else:
            runnable.append(method)
    runs: dict[str, list[list[dict]]] = {m: [] for m in runnable}
    for rnd in range(rounds):
        for method in runnable[rnd % len(runnable) :] + runnable[: rnd % len(runnable)]:
            if method in case["methods"]:  # failed in an earlier round
                continue
            spec = {"task": "ce", "method": method, "n": n, "v": v, "calls": calls}
            try:
                runs[method].append(run_world(spec, WORLD))
            except RuntimeError as exc:
                case["methods"][method] = {"failed": str(exc)}
                continue
            print(f"  CE {method:14s} {summarize(runs[method][-1:])['median_s']:.3f} s", flush=True)
    for method, method_runs in runs.items():
        if method not in case["methods"]:
            case["methods"][method] = summarize(method_runs)
    why = fits("fused", n, v, 1)
    spec = {"task": "fused", "n": n, "v": v, "calls": calls, "threads": WORLD}
    try:
        case["single_process_fused"] = {"skipped": why} if why else summarize([run_world(spec, 1)])
    except RuntimeError as exc:
        case["single_process_fused"] = {"failed": str(exc)}
    return case


def bench_linear(n: int, h: int, v: int, rounds: int, calls: int) -> dict:
    spec = {"task": "linear", "n": n, "h": h, "v": v, "calls": calls}
    runs = [run_world(spec, WORLD) for _ in range(rounds)]
    result = {"N": n, "H": h, "V": v, "dtype": "float32", "ranks": WORLD}
    for method in ("logloss", "gemms"):
        result[method] = summarize([[rank[method] for rank in run] for run in runs])
    result["x_gemms"] = result["logloss"]["median_s"] / result["gemms"]["median_s"]
    result["x_gemms_cpu"] = result["logloss"]["cpu_s"] / result["gemms"]["cpu_s"]
    return result


def goals(ce: dict, linear: dict) -> list[dict]:
    """The issue's three goals, each measured in wall and CPU time (None: not measured)."""
    ours, theirs = ce["methods"].get("logloss", {}), ce["methods"].get("loss_parallel", {})
    single = ce.get("single_process_fused", {})

    def ratio(a: dict, b: dict, key: str) -> float | None:
        return a[key] / b[key] if key in a and key in b else None

    speedup = (ratio(theirs, ours, "median_s"), ratio(theirs, ours, "cpu_s"))
    memory = ratio(ours, single, "peak_MiB_per_rank")
    gemms = (linear.get("x_gemms"), linear.get("x_gemms_cpu"))
    return [
        {
            "goal": ">= 3x faster than loss_parallel()",
            "wall": speedup[0],
            "cpu": speedup[1],
            "met": _met(speedup[0], 3, 1),
        },
        {
            "goal": "peak per rank <= 0.55x single-process fused",
            "wall": memory,
            "cpu": None,
            "met": _met(memory, 0.55, -1),
        },
        {
            "goal": "linear <= 1.2x its local GEMMs",
            "wall": gemms[0],
            "cpu": gemms[1],
            "met": _met(gemms[0], 1.2, -1),
        },
    ]


def _met(value: float | None, bound: float, sign: int) -> bool | None:
    return None if value is None else (value >= bound if sign > 0 else value <= bound)


def fmt(x: float | None, spec: str) -> str:
    return "–" if x is None else format(x, spec)


def markdown(report: dict) -> str:
    machine, ce, linear = report["machine"], report["cross_entropy"], report["linear"]
    lines = [
        f"Machine: {machine['cpu']}, {machine['cores']} cores; torch {machine['torch']}; "
        f"{WORLD} processes x 1 thread, gloo on 127.0.0.1; {report['rounds']} rounds x "
        f"{report['calls']} timed calls per method (after one warm-up call per world).",
        "",
        "| goal (issue 17) | measured (wall) | in CPU time | met (wall)? |",
        "|---|---|---|---|",
    ]
    for goal in report["goals"]:
        met = {True: "yes", False: "no", None: "not measured"}[goal["met"]]
        lines.append(
            f"| {goal['goal']} | {fmt(goal['wall'], '.2f')} | {fmt(goal['cpu'], '.2f')} | {met} |"
        )
    lines += [
        "",
        f"Cross-entropy forward + backward, N={ce['N']}, V={ce['V']}, float32, classes split "
        f"over {WORLD} ranks (wall: the slowest rank per call, median and range over all "
        "calls; CPU: per rank; peak: rise of a rank's peak RSS over its RSS before the inputs "
        "were made, inputs included).",
        "",
        "| method | median s | min–max s | CPU s | peak MiB per process | x logloss |",
        "|---|---|---|---|---|---|",
    ]
    ours = ce["methods"].get("logloss", {}).get("median_s")
    rows = [
        *ce["methods"].items(),
        ("single-process fused (2 threads)", ce["single_process_fused"]),
    ]
    for method, r in rows:
        if "median_s" not in r:
            lines.append(f"| {method} | {r.get('skipped') or r.get('failed', '')} | | | | |")
            continue
        ratio = r["median_s"] / ours if ours else None
        lines.append(
            f"| {method} | {r['median_s']:.3f} | {r['min_s']:.3f}–{r['max_s']:.3f} "
            f"| {r['cpu_s']:.3f} | {r['peak_MiB_per_rank']:.0f} | {fmt(ratio, '.2f')} |"
        )
    lines += [
        "",
        f"Linear + cross-entropy forward + backward, N={linear['N']}, H={linear['H']}, "
        f"V={linear['V']}, float32, over {WORLD} ranks, against each rank's three local matrix "
        "products (same world, alternated).",
        "",
        "| method | median s | min–max s | CPU s | peak MiB per process |",
        "|---|---|---|---|---|",
    ]
    for method in ("logloss", "gemms"):
        r = linear[method]
        lines.append(
            f"| {method} | {r['median_s']:.3f} | {r['min_s']:.3f}–{r['max_s']:.3f} "
            f"| {r['cpu_s']:.3f} | {fmt(r['peak_MiB_per_rank'] or None, '.0f')} |"
        )
    lines.append(
        f"\nlogloss / GEMMs: {linear['x_gemms']:.2f} (wall), {linear['x_gemms_cpu']:.2f} (CPU)."
    )
    return "\n".join(lines) + "\n"


def machine() -> dict:
    cpu = [
        line.split(":", 1)[1].strip()
        for line in Path("/proc/cpuinfo").read_text().splitlines()
        if line.startswith("model name")
    ]
    return {
        "cpu": cpu[0] if cpu else platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "fused_backend": fused.kernel_status()["backend"],
    }


# --------------------------------------------------------------------------------------------
# The GPU check: one process, NCCL, CUDA tensors
# --------------------------------------------------------------------------------------------


def _rel_err(ours: torch.Tensor, ref: torch.Tensor) -> float:
    ref = ref.detach().double()
    return float((ours.detach().double() - ref).abs().max() / ref.abs().max())


def _gpu_errors(device: torch.device) -> dict[str, float]:
    """Relative errors of both losses (and their gradients) on ``device`` against
    F.cross_entropy in float64 on the same float32 values."""
    gen = torch.Generator(device=device).manual_seed(0)
    n, h_dim, v = 256, 64, 50_000
    z = torch.randn(n, v, device=device, generator=gen).mul_(3).requires_grad_()
    t = torch.randint(v, (n,), device=device, generator=gen)
    t[::7] = -100
    loss = vocab_parallel_cross_entropy(z, t, label_smoothing=0.1)
    loss.backward()
    ref_z = z.detach().double().requires_grad_()
    ref = F.cross_entropy(ref_z, t, label_smoothing=0.1)
    ref.backward()
    errors = {"ce loss": _rel_err(loss, ref), "ce grad": _rel_err(z.grad, ref_z.grad)}
    h = torch.randn(n, h_dim, device=device, generator=gen).requires_grad_()
    w = torch.randn(v, h_dim, device=device, generator=gen).div_(8).requires_grad_()
    loss = vocab_parallel_linear_cross_entropy(h, w, t, chunk_size=96)
    loss.backward()
    ref_h, ref_w = h.detach().double().requires_grad_(), w.detach().double().requires_grad_()
    ref = F.cross_entropy(ref_h @ ref_w.T, t)
    ref.backward()
    errors |= {
        "linear loss": _rel_err(loss, ref),
        "linear grad_hidden": _rel_err(h.grad, ref_h.grad),
        "linear grad_weight": _rel_err(w.grad, ref_w.grad),
    }
    return errors


def nccl_world_size_1_check() -> int:
    """Both losses on CUDA tensors in a one-process NCCL group against F.cross_entropy (1e-4
    relative: float32 logits, TF32 matrix products allowed); prints one line; 0 when all agree."""
    if not (torch.cuda.is_available() and dist.is_nccl_available()):
        print("gpu-check vocab_parallel: FAILED: needs CUDA and NCCL")
        return 1
    torch.backends.cuda.matmul.allow_tf32 = False  # compare float32 products, not TF32's
    device = torch.device("cuda", 0)
    torch.cuda.set_device(device)
    store = dist.TCPStore("127.0.0.1", 0, 1, True, timeout=COLLECTIVE_TIMEOUT)
    dist.init_process_group("nccl", store=store, rank=0, world_size=1, timeout=COLLECTIVE_TIMEOUT)
    try:
        errors = _gpu_errors(device)
    finally:
        dist.destroy_process_group()
    ok = all(e <= 1e-4 for e in errors.values())
    detail = ", ".join(f"{name} {e:.1e}" for name, e in errors.items())
    verdict = "ok" if ok else "FAILED"
    print(
        f"gpu-check vocab_parallel (NCCL, world size 1, {torch.cuda.get_device_name(device)}): "
        f"{detail}: {verdict}"
    )
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, to check the script")
    parser.add_argument("--rounds", type=int, default=None, help="worlds per method (default 3)")
    parser.add_argument("--calls", type=int, default=None, help="timed calls per world (3)")
    parser.add_argument(
        "--gpu-check", action="store_true", help="only the NCCL world-size-1 check on CUDA"
    )
    args = parser.parse_args(argv)
    if args.gpu_check:
        return nccl_world_size_1_check()
    if args.quick:
        ce_size, linear_size, rounds, calls = (512, 8192), (512, 128, 4096), 1, 2
    else:
        ce_size, linear_size, rounds, calls = (4096, 131072), (8192, 1024, 65536), 3, 3
    rounds, calls = args.rounds or rounds, args.calls or calls
    report: dict[str, Any] = {"machine": machine(), "quick": args.quick, "rounds": rounds}
    report["calls"] = calls
    report["cross_entropy"] = bench_cross_entropy(*ce_size, rounds, calls)
    report["linear"] = bench_linear(*linear_size, max(1, rounds - 1), calls)
    report["goals"] = goals(report["cross_entropy"], report["linear"])
    stem = "vocab_parallel-quick" if args.quick else "vocab_parallel"
    write_text_atomic(RESULTS / f"{stem}.json", dumps(report) + "\n")
    table = markdown(report)
    write_text_atomic(RESULTS / f"{stem}.md", table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
