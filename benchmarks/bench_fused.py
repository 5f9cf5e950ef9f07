"""Benchmark: logloss.fused against PyTorch's cross-entropy, forward + backward, on this CPU.

Run: ``.venv/bin/python benchmarks/bench_fused.py [--quick] [--repeats N]``.  Writes
``benchmarks/results/fused.json`` and ``benchmarks/results/fused.md`` (atomically; ``--quick``
writes ``fused-quick.*``).

1. Memory bandwidth: ``dst.copy_(src)`` of a 512 MiB float32 tensor (one read + one write), the
   floor for a loss that must read the logits and write their gradient.
2. Cross-entropy, (N, V) logits, as a user calls it: a leaf tensor with requires_grad, then
   ``loss = f(logits, target); loss.backward()``.  Methods, timed round-robin in one process
   (the machine is shared: medians and ratios taken side by side are what to quote):
   ``fused`` (logloss, gradient in its own buffer), ``fused-inplace`` (``inplace_backward=True``:
   gradient written over the logits), ``eager`` (``F.cross_entropy``), ``compile``
   (``torch.compile(F.cross_entropy)``).  Peak memory: the rise of the process's peak RSS
   (VmHWM, reset through /proc/self/clear_refs) over the resident logits during one call.
   Cases whose estimated footprint exceeds the available memory are skipped and listed.
3. Every option on (class weights, label smoothing, z-loss, softcap) at N=4096, V=32768:
   fused against the same loss composed of PyTorch operations, eager and compiled.
4. linear_cross_entropy (hidden @ weight.T then cross-entropy) at N=8192, H=1024, V=32768 and
   131072: logloss fused vs the unfused ``F.cross_entropy(hidden @ weight.T)`` vs PyTorch's
   ``F.linear_cross_entropy`` reference (``options=None``) and chunked
   (``options=torch.nn.LinearCrossEntropyOptions()``) paths; each call in its own subprocess,
   which reports its peak RSS (VmHWM; ``resource.getrusage``'s ru_maxrss is kept too, but on
   Linux it carries the parent's peak across fork + exec) and time; three round-robin rounds
   (one warm-up and one timed call per method and round), medians.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from logloss import fused
from logloss._atomic import write_text_atomic

RESULTS = Path(__file__).resolve().parent / "results"
GIB = 1 << 30
CE_METHODS = ("fused", "fused-inplace", "eager", "compile")
LINEAR_METHODS = ("fused", "unfused", "torch-reference", "torch-chunked")


def available_bytes() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 8 * GIB


def peak_rss_reset() -> bool:
    """Reset the process's peak RSS (Linux >= 4.0); False when the kernel does not allow it."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def measure_bandwidth(nbytes: int, repeats: int) -> float:
    """Bytes per second of ``dst.copy_(src)``, counting one read and one write (best run: the
    machine's capability, least disturbed by other load)."""
    src = torch.ones(nbytes // 4)
    dst = torch.empty_like(src)
    times = []
    for _ in range(repeats + 1):
        t0 = time.perf_counter()
        dst.copy_(src)
        times.append(time.perf_counter() - t0)
    return 2 * nbytes / min(times[1:])


def footprint(method: str, n: int, v: int, elem: int) -> int:
    """Rough bytes a call needs, the resident logits included (to skip what cannot fit).

    fused: its gradient buffer; fused-inplace: the fresh copy of the logits it overwrites;
    eager/compile: log-softmax output, gradient and temporaries."""
    logits = n * v * elem
    made = n * v * 4  # the float32 random draw the logits are made from
    return {"fused": 1, "fused-inplace": 1, "eager": 3, "compile": 3}[method] * logits + max(
        logits, made
    )


def ce_callable(method: str, compiled: Callable | None) -> Callable:
    if method == "fused":
        return fused.cross_entropy
    if method == "fused-inplace":
        return lambda z, t: fused.cross_entropy(z, t, inplace_backward=True)
    if method == "eager":
        return F.cross_entropy
    assert compiled is not None
    return compiled


def warm_up_fused_loop(base: torch.Tensor, target: torch.Tensor, calls: int = 4) -> dict:
    """Call ``fused.cross_entropy`` ``calls`` times back to back before the timed round robin,
    as a training loop does, and record the first call (which allocates the gradient buffer and
    faults its pages in) against the median of the later ones (which reuse it)."""
    times = []
    base.requires_grad_(True)
    for _ in range(calls):
        base.grad = None
        t0 = time.perf_counter()
        fused.cross_entropy(base, target).backward()
        times.append(time.perf_counter() - t0)
    base.grad = None
    base.requires_grad_(False)
    return {"first_call_s": times[0], "reused_calls_median_s": statistics.median(times[1:])}


def bench_ce(n: int, v: int, dtype: torch.dtype, repeats: int, floor_bw: float) -> dict:
    """Round-robin forward+backward timings of each method on one (N, V, dtype) case."""
    elem = torch.empty(0, dtype=dtype).element_size()
    avail = available_bytes()
    case: dict = {"N": n, "V": v, "dtype": str(dtype).removeprefix("torch."), "methods": {}}
    runnable = []
    for method in CE_METHODS:
        need = footprint(method, n, v, elem)
        if need > 0.6 * avail:  # leave room for the process, the allocator and the page cache
            case["methods"][method] = {
                "skipped": f"needs ~{need / GIB:.1f} GiB, {avail / GIB:.1f} GiB available"
            }
        else:
            runnable.append(method)
    if not runnable:
        return case
    gen = torch.Generator().manual_seed(0)
    base = torch.randn(n, v, generator=gen).mul_(2).to(dtype)  # no second float32 copy
    target = torch.randint(0, v, (n,), generator=gen)
    # a fresh compile per case: dynamo's cache is per code object (F.cross_entropy), and after
    # 8 shapes/dtypes it would stop recompiling and silently run eager
    torch._dynamo.reset()
    compiled = torch.compile(F.cross_entropy) if "compile" in runnable else None
    # the floor, timed in the same round robin: a copy of (at most 512 MiB of) the logits' rows,
    # scaled to all of them (copy time is linear in bytes at these sizes)
    floor_rows = max(1, min(n, (512 << 20) // (v * elem)))
    copy_src = base[:floor_rows]
    copy_dst = torch.empty_like(copy_src)
    times: dict[str, list[float]] = {m: [] for m in [*runnable, "copy"]}
    cpu: dict[str, list[float]] = {m: [] for m in [*runnable, "copy"]}
    peaks: dict[str, int] = {}
    losses: dict[str, float] = {}
    if "fused" in runnable:
        case["loop_warmup"] = warm_up_fused_loop(base, target)
    for rep in range(repeats + 1):  # rep 0 warms up (and compiles)
        for method in runnable:
            fn = ce_callable(method, compiled)
            base.requires_grad_(True)
            base.grad = None
            # in place needs a fresh copy to overwrite, and refuses a leaf: the clone is a
            # non-leaf, as a layer's output is (its gradient still reaches base.grad, uncopied)
            logits = base.clone() if method == "fused-inplace" else base
            resettable = peak_rss_reset()
            before = rss_kib("VmRSS")
            c0, t0 = time.process_time(), time.perf_counter()
            loss = fn(logits, target)
            loss.backward()
            elapsed, cpu_s = time.perf_counter() - t0, time.process_time() - c0
            if resettable:
                peaks[method] = max(peaks.get(method, 0), rss_kib("VmHWM") - before)
            if rep == 0:
                losses[method] = float(loss.detach())
            else:
                times[method].append(elapsed)
                cpu[method].append(cpu_s)
            base.grad = None
            del loss, logits
            base.requires_grad_(False)
        c0, t0 = time.process_time(), time.perf_counter()
        copy_dst.copy_(copy_src)
        if rep:
            times["copy"].append((time.perf_counter() - t0) * n / floor_rows)
            cpu["copy"].append((time.process_time() - c0) * n / floor_rows)
    fused.empty_cache()  # the reused gradient buffer must not crowd the next case
    floor_bytes = 2 * n * v * elem
    floor_s = statistics.median(times["copy"])  # one read + one write of the logits, right now
    case["copy_median_s"] = floor_s
    case["copy_GB_per_s"] = floor_bytes / floor_s / 1e9
    eager = statistics.median(times["eager"]) if "eager" in times else None
    comp = statistics.median(times["compile"]) if "compile" in times else None
    eager_cpu = statistics.median(cpu["eager"]) if "eager" in cpu else None
    comp_cpu = statistics.median(cpu["compile"]) if "compile" in cpu else None
    case["copy_cpu_s"] = statistics.median(cpu["copy"])
    for method in runnable:
        med = statistics.median(times[method])
        med_cpu = statistics.median(cpu[method])
        case["methods"][method] = {
            "median_s": med,
            "times_s": times[method],
            "peak_rss_rise_MiB": peaks[method] / 1024 if method in peaks else None,
            "loss": losses[method],
            "GB_per_s": floor_bytes / med / 1e9,
            "x_floor": med / floor_s,
            "x_floor_best_bandwidth": med / (floor_bytes / floor_bw),
            "speedup_vs_eager": eager / med if eager else None,
            "speedup_vs_compile": comp / med if comp else None,
            "cpu_s": med_cpu,
            "cpu_speedup_vs_eager": eager_cpu / med_cpu if eager_cpu else None,
            "cpu_speedup_vs_compile": comp_cpu / med_cpu if comp_cpu else None,
        }
    return case


OPTIONS = {"label_smoothing": 0.1, "z_loss": 1e-4, "softcap": 30.0}  # and random class weights
OPTION_METHODS = ("fused", "eager", "compile")


def composed_options(z: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The loss with every option, as plain PyTorch operations: softcap, weighted and smoothed
    F.cross_entropy, plus the z-loss over non-ignored rows."""
    cap = OPTIONS["softcap"]
    x = cap * torch.tanh(z / cap)
    ce = F.cross_entropy(x, target, weight=weight, label_smoothing=OPTIONS["label_smoothing"])
    valid = target != -100
    lse = torch.logsumexp(x, dim=1)
    return ce + (OPTIONS["z_loss"] * lse.square()).where(valid, 0.0).sum() / valid.sum()


def bench_options(n: int, v: int, repeats: int) -> dict:
    """fused.cross_entropy with weight, smoothing, z-loss and softcap against the same loss as
    eager PyTorch operations and as their torch.compile, forward + backward, round-robin."""
    gen = torch.Generator().manual_seed(0)
    base = torch.randn(n, v, generator=gen).mul_(2).requires_grad_()
    target = torch.randint(0, v, (n,), generator=gen)
    weight = torch.rand(v, generator=gen) + 0.5
    torch._dynamo.reset()
    compiled = torch.compile(composed_options)
    calls = {
        "fused": lambda: fused.cross_entropy(base, target, weight=weight, **OPTIONS),
        "eager": lambda: composed_options(base, target, weight),
        "compile": lambda: compiled(base, target, weight),
    }
    times: dict[str, list[float]] = {m: [] for m in OPTION_METHODS}
    losses = {}
    for rep in range(repeats + 1):  # rep 0 warms up (and compiles)
        for method in OPTION_METHODS:
            base.grad = None
            t0 = time.perf_counter()
            loss = calls[method]()
            loss.backward()
            if rep:
                times[method].append(time.perf_counter() - t0)
            losses[method] = float(loss.detach())
    fused.empty_cache()
    medians = {m: statistics.median(t) for m, t in times.items()}
    return {
        "N": n,
        "V": v,
        "options": OPTIONS | {"weight": "uniform in [0.5, 1.5)"},
        "median_s": medians,
        "times_s": times,
        "loss": losses,
        "fused_speedup_vs_eager": medians["eager"] / medians["fused"],
        "fused_speedup_vs_compile": medians["compile"] / medians["fused"],
    }


LINEAR_CHILD = r"""
import json, resource, statistics, sys, time, warnings
import torch, torch.nn.functional as F
from logloss import fused
from logloss._atomic import write_text_atomic
method, n, h, v, repeats = sys.argv[1], *map(int, sys.argv[2:6])
gen = torch.Generator().manual_seed(0)
hidden = (torch.randn(n, h, generator=gen) / h**0.5).requires_grad_()
weight = torch.randn(v, h, generator=gen).requires_grad_()
target = torch.randint(0, v, (n,), generator=gen)
def call():
    if method == "fused":
        return fused.linear_cross_entropy(hidden, weight, target)
    if method == "unfused":
        return F.cross_entropy(hidden @ weight.t(), target)
    options = None if method == "torch-reference" else torch.nn.LinearCrossEntropyOptions()
    return F.linear_cross_entropy(hidden, weight, target, options=options)
def hwm_kib():
    # VmHWM: this process's own peak RSS.  (getrusage's ru_maxrss survives fork + exec on Linux,
    # so a child would report its parent's peak when that was higher.)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
base_kib = hwm_kib()
times, cpu = [], []
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    for rep in range(repeats + 1):
        hidden.grad = weight.grad = None
        u0 = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.perf_counter()
        loss = call()
        loss.backward()
        times.append(time.perf_counter() - t0)
        u1 = resource.getrusage(resource.RUSAGE_SELF)
        cpu.append(u1.ru_utime - u0.ru_utime + u1.ru_stime - u0.ru_stime)
        value = float(loss.detach())
        del loss
print(json.dumps({
    "median_s": statistics.median(times[1:]) if repeats else times[0],
    "times_s": times[1:] if repeats else times,
    "cpu_s": statistics.median(cpu[1:]) if repeats else cpu[0],
    "peak_rss_GB": hwm_kib() * 1024 / 1e9,
    "ru_maxrss_GB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9,
    "inputs_rss_GB": base_kib * 1024 / 1e9,
    "loss": value,
    "warnings": sorted({str(w.message)[:200] for w in caught}),
}))
"""


def bench_linear(n: int, h: int, v: int, rounds: int) -> dict:
    """Each method in fresh subprocesses (clean peak RSS), in ``rounds`` round-robin rounds of
    one warm-up and one timed call per method, the order rotated each round, so that a slow
    spell of the shared machine lands on every method alike; medians over the rounds, the
    highest peak.  Times relative to PyTorch chunked."""
    case: dict = {"N": n, "H": h, "V": v, "dtype": "float32", "methods": {}}
    avail = available_bytes()
    runnable = []
    for method in LINEAR_METHODS:
        logits_bytes = n * v * 4
        # the unfused paths hold ~3 N x V float32 matrices at their peak (measured: 13.7 GB at
        # N=8192, V=131072, inputs included)
        need = (3 * logits_bytes if method in ("unfused", "torch-reference") else 0) + 3 * v * h * 4
        if need > 0.85 * avail:
            case["methods"][method] = {
                "skipped": f"needs ~{need / GIB:.1f} GiB, {avail / GIB:.1f} GiB available"
            }
        else:
            runnable.append(method)
    runs: dict[str, list[dict]] = {m: [] for m in runnable}
    for rnd in range(rounds):
        for method in runnable[rnd % len(runnable) :] + runnable[: rnd % len(runnable)]:
            if method in case["methods"]:  # failed in an earlier round
                continue
            args = [sys.executable, "-c", LINEAR_CHILD, method, str(n), str(h), str(v), "1"]
            run = subprocess.run(args, capture_output=True, text=True, check=False)
            if run.returncode != 0:
                case["methods"][method] = {"failed": run.stderr.strip()[-500:]}
                continue
            runs[method].append(json.loads(run.stdout.strip().splitlines()[-1]))
            print(f"  linear {method:16s} {runs[method][-1]['median_s']:.2f} s", flush=True)
    for method, results in runs.items():
        if method in case["methods"] or not results:
            continue
        case["methods"][method] = {
            "median_s": statistics.median(r["median_s"] for r in results),
            "times_s": [r["median_s"] for r in results],
            "cpu_s": statistics.median(r["cpu_s"] for r in results),
            "peak_rss_GB": max(r["peak_rss_GB"] for r in results),
            "inputs_rss_GB": max(r["inputs_rss_GB"] for r in results),
            "loss": results[0]["loss"],
            "warnings": sorted({w for r in results for w in r["warnings"]}),
        }
    chunked = case["methods"].get("torch-chunked", {})
    for result in case["methods"].values():
        if "median_s" in chunked and "median_s" in result:
            result["speedup_vs_torch_chunked"] = chunked["median_s"] / result["median_s"]
            result["cpu_speedup_vs_torch_chunked"] = chunked["cpu_s"] / result["cpu_s"]
    return case


def fmt(x: float | None, spec: str) -> str:
    return "–" if x is None else format(x, spec)


def markdown(report: dict) -> str:
    lines = [
        f"Machine: {report['machine']['cpu']}, {report['machine']['threads']} threads, "
        f"torch {report['machine']['torch']}; copy bandwidth "
        f"{report['bandwidth_GB_per_s']:.1f} GB/s (read + write); fused backend "
        f"`{report['machine']['fused_backend']}`, row loops "
        f"`{report['machine'].get('fused_simd', '?')}`.",
        "",
        "Cross-entropy forward + backward (median seconds; x eager / x compile = speed-up of "
        "logloss fused (default) or fused inplace (`inplace_backward=True`); x floor = time over "
        "a `copy_` of the logits (one read + one write) timed in the same round robin; peak = "
        "rise of peak RSS during the call, MiB).",
        "",
        "| N | V | dtype | fused s | inplace s | eager s | compile s | copy s | fused x eager "
        "| fused x compile | inplace x eager | inplace x compile | fused x floor "
        "| inplace x floor | peak MiB fused / inplace / eager / compile |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    skipped = []
    for case in report["cross_entropy"]:
        m = case["methods"]

        def get(method: str, key: str, m: dict = m) -> float | None:
            return m.get(method, {}).get(key)

        for method, result in m.items():
            if "skipped" in result:
                skipped.append(
                    f"{method} at N={case['N']}, V={case['V']}, {case['dtype']}: "
                    f"{result['skipped']}"
                )
        peaks = " / ".join(fmt(get(k, "peak_rss_rise_MiB"), ".0f") for k in CE_METHODS)
        lines.append(
            f"| {case['N']} | {case['V']} | {case['dtype']} "
            f"| {fmt(get('fused', 'median_s'), '.4f')} "
            f"| {fmt(get('fused-inplace', 'median_s'), '.4f')} "
            f"| {fmt(get('eager', 'median_s'), '.4f')} "
            f"| {fmt(get('compile', 'median_s'), '.4f')} "
            f"| {fmt(case.get('copy_median_s'), '.4f')} "
            f"| {fmt(get('fused', 'speedup_vs_eager'), '.1f')} "
            f"| {fmt(get('fused', 'speedup_vs_compile'), '.1f')} "
            f"| {fmt(get('fused-inplace', 'speedup_vs_eager'), '.1f')} "
            f"| {fmt(get('fused-inplace', 'speedup_vs_compile'), '.1f')} "
            f"| {fmt(get('fused', 'x_floor'), '.2f')} "
            f"| {fmt(get('fused-inplace', 'x_floor'), '.2f')} | {peaks} |"
        )
    lines += [
        "",
        "The same runs in CPU time (all threads; steadier than wall time while other jobs share "
        "the cores): speed-up of fused / fused inplace over eager and compile.",
        "",
        "| N | V | dtype | fused CPU s | inplace CPU s | eager CPU s | compile CPU s "
        "| fused x eager | fused x compile | inplace x eager | inplace x compile |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for case in report["cross_entropy"]:
        m = case["methods"]

        def cget(method: str, key: str, m: dict = m) -> float | None:
            return m.get(method, {}).get(key)

        lines.append(
            f"| {case['N']} | {case['V']} | {case['dtype']} "
            + " ".join(f"| {fmt(cget(k, 'cpu_s'), '.4f')}" for k in CE_METHODS)
            + f" | {fmt(cget('fused', 'cpu_speedup_vs_eager'), '.1f')} "
            f"| {fmt(cget('fused', 'cpu_speedup_vs_compile'), '.1f')} "
            f"| {fmt(cget('fused-inplace', 'cpu_speedup_vs_eager'), '.1f')} "
            f"| {fmt(cget('fused-inplace', 'cpu_speedup_vs_compile'), '.1f')} |"
        )
    if skipped:
        lines += ["", "Skipped (would not fit in memory): " + "; ".join(skipped) + "."]
    lines += [
        "",
        "Before those timings, fused (default) was called 4 times back to back, as in a "
        "training loop: the first call allocates its gradient buffer (a page fault per 4 KiB), "
        "the later ones reuse it (seconds).",
        "",
        "| N | V | dtype | first call | later calls (median) |",
        "|---|---|---|---|---|",
    ]
    for case in report["cross_entropy"]:
        w = case.get("loop_warmup")
        if w:
            lines.append(
                f"| {case['N']} | {case['V']} | {case['dtype']} | {w['first_call_s']:.4f} "
                f"| {w['reused_calls_median_s']:.4f} |"
            )
    lines += [
        "",
        "Every option on (class weights, label smoothing 0.1, z-loss 1e-4, softcap 30), float32, "
        "forward + backward: logloss fused against the same loss composed of PyTorch operations "
        "(eager and torch.compile), round-robin medians (seconds).",
        "",
        "| N | V | fused s | eager s | compile s | fused x eager | fused x compile |",
        "|---|---|---|---|---|---|---|",
    ]
    for case in report.get("options", []):
        med = case["median_s"]
        lines.append(
            f"| {case['N']} | {case['V']} | {med['fused']:.4f} | {med['eager']:.4f} "
            f"| {med['compile']:.4f} | {case['fused_speedup_vs_eager']:.1f} "
            f"| {case['fused_speedup_vs_compile']:.1f} |"
        )
    lines += [
        "",
        "linear_cross_entropy, float32, forward + backward (each call in its own process, "
        "methods round-robin, median of the rounds; peak RSS of the whole process, inputs "
        "included).",
        "",
        "| N | H | V | method | median s | CPU s | peak RSS GB | x PyTorch chunked (wall) "
        "| x PyTorch chunked (CPU) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for case in report["linear_cross_entropy"]:
        for method, r in case["methods"].items():
            if "median_s" not in r:
                why = r.get("skipped") or r.get("failed", "")
                lines.append(
                    f"| {case['N']} | {case['H']} | {case['V']} | {method} | {why} | | | | |"
                )
                continue
            lines.append(
                f"| {case['N']} | {case['H']} | {case['V']} | {method} | {r['median_s']:.2f} "
                f"| {r['cpu_s']:.2f} | {r['peak_rss_GB']:.2f} "
                f"| {fmt(r.get('speedup_vs_torch_chunked'), '.2f')} "
                f"| {fmt(r.get('cpu_speedup_vs_torch_chunked'), '.2f')} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per method")
    args = parser.parse_args(argv)
    if args.quick:
        shapes = [(1024, 10), (1024, 1000), (4096, 32768)]
        dtypes = [torch.float32, torch.bfloat16]
        linear = [(2048, 1024, 32768)]
        repeats = args.repeats or 3
        bw_bytes = 256 << 20
    else:
        shapes = [(n, v) for n in (4096, 16384) for v in (10, 1000, 32768, 131072)]
        dtypes = [torch.float32, torch.bfloat16]
        linear = [(8192, 1024, 32768), (8192, 1024, 131072)]
        repeats = args.repeats or 5
        bw_bytes = 512 << 20
    bandwidth = measure_bandwidth(bw_bytes, 5)
    print(f"copy bandwidth {bandwidth / 1e9:.1f} GB/s", flush=True)
    report: dict = {
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "python": platform.python_version(),
            "fused_backend": fused.kernel_status()["backend"],
            "fused_simd": fused.kernel_status()["simd"],
        },
        "quick": args.quick,
        "repeats": repeats,
        "bandwidth_GB_per_s": bandwidth / 1e9,
        "cross_entropy": [],
        "linear_cross_entropy": [],
    }
    cpu_name = [
        line.split(":", 1)[1].strip()
        for line in Path("/proc/cpuinfo").read_text().splitlines()
        if line.startswith("model name")
    ]
    if cpu_name:
        report["machine"]["cpu"] = cpu_name[0]
    for dtype in dtypes:
        for n, v in shapes:
            case = bench_ce(n, v, dtype, repeats, bandwidth)
            report["cross_entropy"].append(case)
            summary = {k: r.get("median_s") for k, r in case["methods"].items()}
            print(f"CE N={n} V={v} {dtype}: {summary}", flush=True)
    report["options"] = [bench_options(4096, 32768, repeats)]
    print(f"options: {report['options'][0]['median_s']}", flush=True)
    for n, h, v in linear:
        report["linear_cross_entropy"].append(bench_linear(n, h, v, 1 if args.quick else 3))
    report["peak_rss_of_parent_GB"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    stem = "fused-quick" if args.quick else "fused"
    write_text_atomic(RESULTS / f"{stem}.json", json.dumps(report, indent=2) + "\n")
    table = markdown(report)
    write_text_atomic(RESULTS / f"{stem}.md", table)
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
