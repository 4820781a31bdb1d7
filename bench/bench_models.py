"""Benchmark the PHNet configurations: ms per image (batch 1) at 256 and 512.

    .venv/bin/python bench/bench_models.py                       # everything
    .venv/bin/python bench/bench_models.py --models phnet-lite --sizes 256 --threads 2

CPU: each configuration with 1 and 2 threads (``torch.set_num_threads``), fp32, eval,
``torch.inference_mode``; after warm-up, the median of several runs (fewer for slow models,
bounded by ``--budget`` seconds per measurement; ``min`` is the fastest single run).
Configurations whose name contains ``lite`` are measured ``--lite-rounds`` times and the best
median is reported with every round's median (the machine may be shared; the best round is
the least disturbed one).
CUDA (if available): fp32 and fp16 autocast, channels_last, synchronised timing.
Weights are random: speed does not depend on them.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vidharm.models import create_model, list_models  # noqa: E402
from vidharm.models.phnet import infer, prepare  # noqa: E402


def _inputs(size: int, device: str = "cpu"):
    g = torch.Generator().manual_seed(0)
    image = torch.rand(1, 3, size, size, generator=g)
    mask = torch.zeros(1, 1, size, size)
    mask[..., size // 6: size, size // 4: 3 * size // 4] = 1.0   # a portrait-like region
    return image.to(device), mask.to(device)


def _median_ms(fn, runs: int, budget_s: float, sync=lambda: None) -> tuple[float, float, int]:
    fn()                                   # warm-up (allocations, oneDNN primitive cache)
    sync()
    t0 = time.perf_counter()
    fn()
    sync()
    first = time.perf_counter() - t0
    n = max(3, min(runs, int(budget_s / max(first, 1e-6))))
    times = [first]
    for _ in range(n - 1):
        t = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000.0, min(times) * 1000.0, len(times)


def bench_cpu(name: str, size: int, threads: int, runs: int, budget: float, rounds: int):
    torch.set_num_threads(threads)
    model = create_model(name).eval()
    image, mask = _inputs(size)
    medians, mins = [], []
    with torch.inference_mode():
        for _ in range(rounds):
            ms, fastest, n = _median_ms(lambda: model(image, mask), runs, budget)
            medians.append(ms)
            mins.append(fastest)
    return min(medians), min(mins), medians, n


def bench_cuda(name: str, size: int, precision: str, runs: int, budget: float):
    model = prepare(create_model(name), "cuda")
    image, mask = _inputs(size, "cuda")
    ms, fastest, n = _median_ms(lambda: infer(model, image, mask, precision=precision), runs,
                                budget, sync=torch.cuda.synchronize)
    return ms, fastest, n


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="*", default=list_models())
    ap.add_argument("--sizes", nargs="*", type=int, default=[256, 512])
    ap.add_argument("--threads", nargs="*", type=int, default=[1, 2])
    ap.add_argument("--runs", type=int, default=15, help="runs per measurement (at most)")
    ap.add_argument("--budget", type=float, default=8.0, help="seconds per measurement (about)")
    ap.add_argument("--lite-rounds", type=int, default=3)
    ap.add_argument("--no-cuda", action="store_true")
    args = ap.parse_args(argv)

    print(f"torch {torch.__version__}, CPU threads available: {torch.get_num_threads()}")
    print(f"{'model':16s} {'params':>11s}  {'device':10s} {'size':>5s} {'ms/img':>9s} "
          f"{'min':>8s}  runs  notes")
    for name in args.models:
        params = sum(p.numel() for p in create_model(name).parameters())
        lite = "lite" in name
        for size in args.sizes:
            for threads in args.threads:
                best, fastest, medians, n = bench_cpu(name, size, threads, args.runs, args.budget,
                                             args.lite_rounds if lite else 1)
                note = ("best of round medians " + ", ".join(f"{m:.1f}" for m in medians)
                        if len(medians) > 1 else "")
                print(f"{name:16s} {params:11,d}  cpu x{threads:<4d} {size:5d} {best:9.1f} "
                      f"{fastest:8.1f}  {n:4d}  {note}", flush=True)
            if torch.cuda.is_available() and not args.no_cuda:
                for precision in ("fp32", "fp16"):
                    ms, fastest, n = bench_cuda(name, size, precision, max(args.runs, 50),
                                                args.budget)
                    print(f"{name:16s} {params:11,d}  cuda {precision:5s} {size:5d} {ms:9.2f} "
                          f"{fastest:8.2f}  {n:4d}", flush=True)


if __name__ == "__main__":
    main()
