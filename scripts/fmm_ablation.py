#!/usr/bin/env python
"""The FMM ablation (Hao, Iizuka and Fukui's Table: baseline, + self-attention, + module
without self-attention, + full module) on vidharm's data and evaluation, plus phnet-lite with
and without FMM. Writes a markdown table into docs/fmm.md and the raw numbers as JSON.

    .venv/bin/python scripts/fmm_ablation.py                  # the table in docs/fmm.md (~1 CPU hour)
    .venv/bin/python scripts/fmm_ablation.py --smoke          # < 1 minute, checks the plumbing
    .venv/bin/python scripts/fmm_ablation.py --bench-module   # module time/memory vs map size

Protocol (every variant alike):
* training data: ``build_training_data(DATA_DIR, size=SIZE, seed=s).train`` for seed s
  (synthetic composites from the fetched photos; the validation SOURCES are held out);
* the same steps, batch size, learning rate (Lion, constant) and loss (the published PHNet
  loss, :mod:`vidharm.training.losses`) through :func:`vidharm.training.train.train`, with
  ``seed = s`` (model init and sample order);
* evaluation on the held-out split ``build_training_data(..., seed=0).val`` (fixed: the same
  composites for every variant and seed) with :func:`vidharm.training.evaluate.evaluate` at
  the training size: PSNR / MSE / fMSE / fPSNR, blended, 0-255, iHarmony4 conventions;
* mean and sample standard deviation over the seeds; paired (same seed, same data)
  differences against the baseline with a t statistic: |t| above the two-sided 95 % critical
  value for n-1 degrees of freedom is reported as "real", otherwise "noise";
* parameters and ms per frame: 256x256, batch 1, CPU, ``--bench-threads`` threads (default
  2), median of ``--bench-reps`` forward passes in inference mode.

Runs go to ``--out-dir`` (default runs/fmm-ablation/<variant>/seed<s>); a run whose weights
and record already exist with the same settings is reused (``--no-reuse`` to retrain), so an
interrupted ablation continues where it stopped. ``--smoke`` writes into the out-dir only,
never into docs/.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

from vidharm._fs import atomic_write_text

ROOT = Path(__file__).resolve().parent.parent

VARIANTS = {
    "fmm-base": "U-Net baseline (no module)",
    "fmm-sa": "+ self-attention only",
    "fmm-nosa": "+ FMM without self-attention",
    "fmm": "+ full FMM (self-attention + modulation)",
    "phnet-lite": "PHNet-lite",
    "phnet-lite-fmm": "PHNet-lite + FMM (decoder stage 1)",
}
#: (variant, reference) pairs whose paired differences are reported
COMPARISONS = [("fmm-sa", "fmm-base"), ("fmm-nosa", "fmm-base"), ("fmm", "fmm-base"),
               ("fmm", "fmm-nosa"), ("fmm", "fmm-sa"), ("phnet-lite-fmm", "phnet-lite")]
#: two-sided 95 % Student t critical values by degrees of freedom
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
       9: 2.262, 10: 2.228, 15: 2.131, 20: 2.086, 30: 2.042}
METRICS = ("psnr", "mse", "fmse", "fpsnr")
HIGHER_IS_BETTER = {"psnr": True, "fpsnr": True, "mse": False, "fmse": False}

ABL_BEGIN, ABL_END = "<!-- fmm-ablation:begin -->", "<!-- fmm-ablation:end -->"
BENCH_BEGIN, BENCH_END = "<!-- fmm-bench:begin -->", "<!-- fmm-bench:end -->"


def t95(df: int) -> float:
    if df in T95:
        return T95[df]
    keys = sorted(k for k in T95 if k <= df)
    return T95[keys[-1]] if df < 120 else 1.96


def mean_std(xs):
    xs = [x for x in xs if x is not None and math.isfinite(x)]
    if not xs:
        return float("nan"), float("nan")
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else float("nan"))


# ------------------------------------------------------------------------------ runs


def run_settings(args, variant: str, seed: int) -> dict:
    return dict(variant=variant, seed=seed, steps=args.steps, size=args.size,
                batch_size=args.batch_size, lr=args.lr, data_dir=str(args.data_dir),
                samples_per_epoch=args.samples_per_epoch)


def settings_key(s: dict) -> str:
    return hashlib.sha256(json.dumps(s, sort_keys=True).encode()).hexdigest()[:16]


def train_one(args, variant: str, seed: int, val_ds, log) -> dict:
    import torch
    from vidharm.models.weights import load_weights
    from vidharm.training.data import build_training_data
    from vidharm.training.evaluate import evaluate
    from vidharm.training.train import TrainConfig, train

    settings = run_settings(args, variant, seed)
    key = settings_key(settings)
    run_dir = Path(args.out_dir) / variant / f"seed{seed}"
    record_path = run_dir / "ablation_record.json"
    weights = run_dir / "final.safetensors"
    if args.reuse and record_path.is_file() and weights.is_file():
        rec = json.loads(record_path.read_text())
        if rec.get("key") == key:
            log(f"  {variant} seed {seed}: reusing {run_dir}")
            return rec
    cfg = TrainConfig(model=variant, steps=args.steps, size=args.size, batch_size=args.batch_size,
                      lr=args.lr, seed=seed, out_dir=str(run_dir), num_workers=args.workers,
                      checkpoint_every=args.checkpoint_every, val_every=0,
                      log_every=max(1, min(50, args.steps)), progress=False, tensorboard=False,
                      device="cpu", samples_per_epoch=args.samples_per_epoch)
    td = build_training_data(args.data_dir, size=args.size, seed=seed,
                             train_length=args.samples_per_epoch, val_length=1)
    torch.manual_seed(seed)
    t0 = time.time()
    res = train(cfg, train_dataset=td.train, val_dataset=None, log=lambda m: None)
    train_s = time.time() - t0
    model = load_weights(res["weights"])
    rep = evaluate(model, val_ds, size=args.size, batch_size=8, device="cpu")
    allm = rep.model["all"]
    rec = dict(key=key, settings=settings, train_seconds=round(train_s, 1),
               final_loss=res.get("final_loss", {}).get("loss"),
               params=sum(p.numel() for p in model.parameters()),
               weights=str(weights), count=rep.count,
               **{m: allm[m] for m in METRICS},
               composite={m: rep.composite["all"][m] for m in METRICS})
    record_path.write_text(json.dumps(rec, indent=1))
    log(f"  {variant} seed {seed}: PSNR {rec['psnr']:.2f} dB, fMSE {rec['fmse']:.1f}, "
        f"fPSNR {rec['fpsnr']:.2f} dB ({train_s:.0f} s training)")
    return rec


def time_variant(variant: str, threads: int, reps: int, size: int = 256) -> dict:
    """Parameters and median ms per frame (batch 1, CPU, inference mode)."""
    import torch
    from vidharm.models import create_model
    prev = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        torch.manual_seed(0)
        net = create_model(variant).eval()
        img = torch.rand(1, 3, size, size)
        mask = torch.zeros(1, 1, size, size)
        mask[..., size // 4:, size // 3: 2 * size // 3] = 1         # ~25 % person-like block
        ts = []
        with torch.inference_mode():
            for _ in range(2):
                net(img, mask)
            for _ in range(reps):
                t = time.perf_counter()
                net(img, mask)
                ts.append(time.perf_counter() - t)
        return dict(params=sum(p.numel() for p in net.parameters()),
                    ms=1000 * statistics.median(ts), threads=threads, size=size, reps=reps)
    finally:
        torch.set_num_threads(prev)


def summarise(records: dict, timings: dict, variants, seeds) -> dict:
    rows = {}
    for v in variants:
        recs = [records[(v, s)] for s in seeds if (v, s) in records]
        row = dict(variant=v, description=VARIANTS.get(v, v), seeds=[r["settings"]["seed"] for r in recs],
                   params=timings.get(v, {}).get("params"), ms=timings.get(v, {}).get("ms"))
        for m in METRICS:
            vals = [r[m] for r in recs]
            row[m] = vals
            row[m + "_mean"], row[m + "_std"] = mean_std(vals)
        rows[v] = row
    comps = []
    for a, b in COMPARISONS:
        if a not in rows or b not in rows:
            continue
        common = [s for s in seeds if (a, s) in records and (b, s) in records]
        if not common:
            continue
        comp = dict(variant=a, reference=b, seeds=common)
        for m in METRICS:
            diffs = [records[(a, s)][m] - records[(b, s)][m] for s in common]
            mu, sd = mean_std(diffs)
            n = len(diffs)
            t = mu / (sd / math.sqrt(n)) if n > 1 and sd and math.isfinite(sd) and sd > 0 else float("nan")
            verdict = "n/a"
            if math.isfinite(t):
                if abs(t) > t95(n - 1):
                    better = (mu > 0) == HIGHER_IS_BETTER[m]
                    verdict = "real: better" if better else "real: worse"
                else:
                    verdict = "noise"
            comp[m] = dict(diffs=diffs, mean=mu, std=sd, t=t, verdict=verdict)
        comps.append(comp)
    composite = None
    any_rec = next(iter(records.values()), None)
    if any_rec:
        composite = any_rec["composite"]
    return dict(rows=rows, comparisons=comps, composite=composite)


def _f(x, nd=2):
    return "-" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.{nd}f}"


def _pm(mu, sd, nd=2):
    return f"{_f(mu, nd)} ± {_f(sd, nd)}"


def markdown(summary: dict, meta: dict) -> str:
    rows, comps = summary["rows"], summary["comparisons"]
    seeds = meta["seeds"]
    lines = [
        f"Generated by `scripts/fmm_ablation.py` on {meta['date']} ({meta['host']}). "
        f"Training: {meta['steps']} steps, batch {meta['batch_size']}, {meta['size']}x{meta['size']} "
        f"synthetic composites, Lion lr {meta['lr']} constant, the PHNet loss; seeds "
        f"{', '.join(map(str, seeds))} (model init, sample order and training-data seed; the "
        f"same for every variant). Evaluation: {meta['val_count']} held-out validation composites "
        f"(sources never trained on), blended, 0-255, PSNR MAX = target maximum; mean ± sample "
        f"std over the seeds. ms/frame: 256x256, batch 1, CPU, {meta['bench_threads']} "
        f"threads, median of {meta['bench_reps']}. {meta.get('note', '')}".rstrip(),
        "",
        "| variant | | params | ms/frame | PSNR (dB) | MSE | fMSE | fPSNR (dB) | PSNR per seed |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    comp = summary.get("composite")
    if comp:
        lines.append(f"| composite (do nothing) | | - | - | {_f(comp['psnr'])} | {_f(comp['mse'], 1)} | "
                     f"{_f(comp['fmse'], 1)} | {_f(comp['fpsnr'])} | |")
    for v, r in rows.items():
        per_seed = ", ".join(_f(x) for x in r["psnr"])
        params = f"{r['params']:,}" if r.get("params") else "-"
        lines.append(
            f"| `{v}` | {r['description']} | {params} | {_f(r.get('ms'), 1)} | "
            f"{_pm(r['psnr_mean'], r['psnr_std'])} | {_pm(r['mse_mean'], r['mse_std'], 1)} | "
            f"{_pm(r['fmse_mean'], r['fmse_std'], 1)} | {_pm(r['fpsnr_mean'], r['fpsnr_std'])} | "
            f"{per_seed} |")
    if comps:
        n = len(comps[0]["seeds"])
        lines += [
            "",
            f"Paired differences (same seeds and data; mean ± std over {n} seeds; verdict: "
            f"|t| > t95({n - 1} df) = {t95(max(n - 1, 1)):.2f} is *real*, else *noise*):",
            "",
            "| variant vs reference | ΔPSNR (dB) | t | verdict | ΔfMSE | t | verdict |",
            "|---|---:|---:|---|---:|---:|---|",
        ]
        for c in comps:
            p, f = c["psnr"], c["fmse"]
            lines.append(f"| `{c['variant']}` vs `{c['reference']}` | {_pm(p['mean'], p['std'])} | "
                         f"{_f(p['t'])} | {p['verdict']} | {_pm(f['mean'], f['std'], 1)} | "
                         f"{_f(f['t'])} | {f['verdict']} |")
    return "\n".join(lines)


def replace_section(path: Path, begin: str, end: str, body: str, title: str) -> None:
    text = path.read_text() if path.is_file() else f"# FMM\n\n## {title}\n\n{begin}\n{end}\n"
    block = f"{begin}\n{body}\n{end}"
    if begin in text and end in text:
        text = re.sub(re.escape(begin) + r".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip() + f"\n\n## {title}\n\n{block}\n"
    atomic_write_text(path, text)


# ------------------------------------------------------------------------------ module bench

_BENCH_CHILD = r"""
import json, resource, sys, time, torch
torch.set_num_threads(int(sys.argv[3]))
from vidharm.models.fmm import FMM
s, C = int(sys.argv[1]), int(sys.argv[2]); train = sys.argv[4] == "train"
torch.manual_seed(0)
m = FMM(C)
with torch.no_grad():
    m.sa.gamma.fill_(0.5)
mk = torch.zeros(1, 1, s, s); mk[..., s // 4:, s // 3: 2 * s // 3] = 1
def run(x, mk):
    if train:
        x = x.clone().requires_grad_(True)
        m(x, mk).square().mean().backward()
    else:
        with torch.inference_mode():
            m(x, mk)
run(torch.randn(1, C, 8, 8), mk)                      # warm-up (the mask is pooled to 8x8)
x = torch.randn(1, C, s, s)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter(); run(x, mk); dt = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps(dict(size=s, channels=C, threads=int(sys.argv[3]), mode=sys.argv[4],
                      seconds=dt, peak_extra_mib=(peak - base) / 1024)))
"""


def bench_module(sizes, channels: int, threads: int, modes, log) -> list:
    out = []
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    for mode in modes:
        for s in sizes:
            p = subprocess.run([sys.executable, "-c", _BENCH_CHILD, str(s), str(channels),
                                str(threads), mode], capture_output=True, text=True, env=env,
                               cwd=str(ROOT))
            if p.returncode != 0:
                log(f"  {mode} {s}x{s}: failed: {p.stderr.strip().splitlines()[-1:]}")
                out.append(dict(size=s, channels=channels, threads=threads, mode=mode, error=p.stderr[-300:]))
                continue
            r = json.loads(p.stdout.strip().splitlines()[-1])
            n = s * s
            r["attention_matrix_mib"] = n * n * 4 / 2 ** 20   # what the unfused math path would hold
            log(f"  {mode} {s}x{s} C={channels}: {r['seconds'] * 1000:.0f} ms, "
                f"+{r['peak_extra_mib']:.1f} MiB (an N x N float32 matrix: {r['attention_matrix_mib']:.0f} MiB)")
            out.append(r)
    return out


def bench_markdown(results: list, meta: dict) -> str:
    lines = [
        f"Generated by `scripts/fmm_ablation.py --bench-module` on {meta['date']} ({meta['host']}): "
        f"the full module (self-attention + background attention + modulation; CPU default "
        f"implementation), batch 1, C={meta['channels']}, foreground ~25 % of the map, "
        f"{meta['threads']} thread(s), one timed call after a warm-up, peak resident memory "
        f"above the pre-call level (a fresh process per row). "
        f"{meta.get('note', '')}".rstrip(),
        "",
        "| map | mode | time | peak extra memory | one N x N float32 matrix (unfused) |",
        "|---|---|---:|---:|---:|",
    ]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['size']}x{r['size']} | {r['mode']} | failed | | |")
            continue
        lines.append(f"| {r['size']}x{r['size']} | {r['mode']} | {r['seconds'] * 1000:.0f} ms | "
                     f"{r['peak_extra_mib']:.1f} MiB | {r['attention_matrix_mib']:.0f} MiB |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------ main


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=os.path.expanduser("~/.cache/vidharm/train-data"))
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--steps", type=int, default=800)
    ap.add_argument("--size", type=int, default=128, help="training and evaluation size")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--samples-per-epoch", type=int, default=None)
    ap.add_argument("--val-samples", type=int, default=64)
    ap.add_argument("--workers", type=int, default=1, help="data-loading processes")
    ap.add_argument("--threads", type=int, default=2, help="torch threads for training/eval")
    ap.add_argument("--bench-threads", type=int, default=2)
    ap.add_argument("--bench-reps", type=int, default=20)
    ap.add_argument("--checkpoint-every", type=int, default=500)
    ap.add_argument("--out-dir", default=str(ROOT / "runs" / "fmm-ablation"))
    ap.add_argument("--doc", default=str(ROOT / "docs" / "fmm.md"))
    ap.add_argument("--json", default=None, help="default: <doc dir>/fmm_ablation.json")
    ap.add_argument("--no-reuse", dest="reuse", action="store_false")
    ap.add_argument("--smoke", action="store_true",
                    help="every variant x 2 seeds x 3 steps at 32 px, 4 validation images, 2 "
                         "timing reps; writes into <out-dir>-smoke only, never docs/ (< 1 minute)")
    ap.add_argument("--bench-module", action="store_true",
                    help="time/memory of the FMM module at --bench-sizes instead of the ablation")
    ap.add_argument("--bench-sizes", nargs="+", type=int, default=[32, 64, 128])
    ap.add_argument("--bench-channels", type=int, default=64)
    ap.add_argument("--bench-modes", nargs="+", default=["forward", "train"],
                    choices=["forward", "train"])
    ap.add_argument("--note", default="", help="a sentence added to the generated text "
                                               "(e.g. what else ran on the machine)")
    args = ap.parse_args(argv)

    def log(msg):
        print(msg, flush=True)

    import platform
    meta_common = dict(date=time.strftime("%Y-%m-%d"),
                       host=f"{platform.machine()}, {os.cpu_count()} CPUs")
    doc = Path(args.doc)

    if args.bench_module:
        log(f"FMM module: sizes {args.bench_sizes}, C={args.bench_channels}, "
            f"{args.bench_threads} thread(s)")
        res = bench_module(args.bench_sizes, args.bench_channels, args.bench_threads,
                           args.bench_modes, log)
        meta = dict(meta_common, channels=args.bench_channels, threads=args.bench_threads,
                    note=args.note)
        if args.smoke:
            out = Path(args.out_dir)
            out.mkdir(parents=True, exist_ok=True)
            doc, jpath = out / "fmm_smoke.md", out / "fmm_module_bench_smoke.json"
        else:
            jpath = doc.with_name("fmm_module_bench.json")
        jpath.write_text(json.dumps(dict(meta=meta, results=res), indent=1))
        replace_section(doc, BENCH_BEGIN, BENCH_END, bench_markdown(res, meta),
                        "The module's cost by feature-map size")
        log(f"wrote {doc} and {jpath}")
        return 0

    if args.smoke:
        args.seeds = args.seeds[:2]
        args.steps, args.size, args.batch_size, args.workers = 3, 32, 2, 0
        args.val_samples, args.bench_reps, args.samples_per_epoch = 4, 2, 16
        args.checkpoint_every = 0
        args.out_dir = str(Path(args.out_dir).with_name(Path(args.out_dir).name + "-smoke"))
        args.doc = str(Path(args.out_dir) / "fmm_smoke.md")
        args.reuse = False
    doc = Path(args.doc)
    jpath = Path(args.json) if args.json else doc.with_name(
        "fmm_ablation.json" if not args.smoke else "fmm_ablation_smoke.json")

    import torch
    torch.set_num_threads(args.threads)
    from vidharm.training.data import build_training_data

    log(f"FMM ablation: {len(args.variants)} variants x {len(args.seeds)} seeds, {args.steps} "
        f"steps at {args.size}px, batch {args.batch_size}, lr {args.lr}, {args.threads} thread(s)")
    val_ds = build_training_data(args.data_dir, size=args.size, seed=0,
                                 val_length=args.val_samples).val
    if val_ds is None or len(val_ds) == 0:
        log("no validation photos in the data dir")
        return 2
    records = {}
    t_start = time.time()
    total = len(args.variants) * len(args.seeds)
    for i, v in enumerate(args.variants):
        for j, s in enumerate(args.seeds):
            records[(v, s)] = train_one(args, v, s, val_ds, log)
            done = i * len(args.seeds) + j + 1
            el = time.time() - t_start
            if done < total:
                log(f"  [{done}/{total}] {el / 60:.1f} min so far, "
                    f"~{el / done * (total - done) / 60:.0f} min to go")
    log("timing (256x256, CPU)")
    timings = {v: time_variant(v, args.bench_threads, args.bench_reps) for v in args.variants}
    for v, t in timings.items():
        log(f"  {v}: {t['params']:,} params, {t['ms']:.1f} ms/frame")
    summary = summarise(records, timings, args.variants, args.seeds)
    meta = dict(meta_common, steps=args.steps, size=args.size, batch_size=args.batch_size,
                lr=args.lr, seeds=args.seeds, threads=args.threads,
                bench_threads=args.bench_threads, bench_reps=args.bench_reps,
                val_count=len(val_ds), smoke=args.smoke, data_dir=str(args.data_dir),
                torch=torch.__version__, note=args.note)
    md = markdown(summary, meta)
    Path(doc).parent.mkdir(parents=True, exist_ok=True)
    replace_section(doc, ABL_BEGIN, ABL_END, md, "Our ablation")
    jpath.write_text(json.dumps(dict(meta=meta, summary=summary,
                                     runs=[records[k] for k in sorted(records)]),
                                indent=1, default=str))
    log(md)
    log(f"wrote {doc} and {jpath} ({(time.time() - t_start) / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
