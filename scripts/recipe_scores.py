#!/usr/bin/env python3
"""Score harmonizers on the held-out recipes and write the model card's tables.

Runs ``vidharm eval --recipes --harmonizer NAME --json`` for every NAME (each as vidharm applies
it: the colour grid on the composite at 256 px, relative to the pair's source frame), then
writes ``OUT.json`` (all reports) and ``OUT.md`` (one table per recipe: composite, each
harmonizer, the fitted-grid ceiling, by foreground bucket; then each harmonizer on the
composite alone, without the source frame).

    .venv/bin/python scripts/recipe_scores.py --out docs/model-card-grid-scores \\
        --harmonizers none light phnet-grid phnet-grid-local phnet-lite fmm
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

BUCKETS = ("all", "0-5%", "5-15%", "15-100%")


def run(name: str, data_dir: str | None) -> dict:
    cmd = [str(Path(sys.executable).parent / "vidharm"), "eval", "--recipes", "--harmonizer", name,
           "--json"] + (["--data-dir", data_dir] if data_dir else [])
    return json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)


def tables(reports: dict[str, dict]) -> str:
    first = next(iter(reports.values()))
    out = []
    for recipe, rows in first["sets"].items():
        out.append(f"### {recipe} ({first['counts'][recipe]} pairs)\n")
        out.append("| bucket | n | composite | " + " | ".join(reports) + " | fitted grid |")
        out.append("|---|---|---|" + "---|" * len(reports) + "---|")
        for b in BUCKETS:
            c = rows["composite"].get(b)
            if not c or not c["count"]:
                continue
            cells = [f"{reports[h]['sets'][recipe]['harmonizer'][b]['psnr']:.2f}" for h in reports]
            out.append(f"| {b} | {c['count']} | {c['psnr']:.2f} | " + " | ".join(cells)
                       + f" | {rows['fitted grid'][b]['psnr']:.2f} |")
        out.append("")
        out.append("PSNR of the mean MSE (all): composite "
                   f"{rows['composite']['all']['psnr_pooled']:.2f}, "
                   + ", ".join(f"{h} {reports[h]['sets'][recipe]['harmonizer']['all']['psnr_pooled']:.2f}"
                               for h in reports)
                   + f", fitted grid {rows['fitted grid']['all']['psnr_pooled']:.2f}\n")
        alone = {h: r["sets"][recipe].get("composite only") for h, r in reports.items()}
        if all(alone.values()):
            out.append("On the composite alone (`--absolute`, no source frame), all / by bucket: "
                       + "; ".join(f"{h} " + " / ".join(f"{a[b]['psnr']:.2f}" for b in BUCKETS
                                                        if a.get(b) and a[b]["count"])
                                   for h, a in alone.items()) + "\n")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="docs/model-card-grid-scores")
    ap.add_argument("--harmonizers", nargs="+", default=["none", "light", "phnet-grid", "phnet-grid-local", "phnet-lite", "fmm"])
    ap.add_argument("--data-dir", default=None)
    args = ap.parse_args()
    reports = {}
    for h in args.harmonizers:
        print(f"scoring {h} ...", file=sys.stderr)
        reports[h] = run(h, args.data_dir)
    Path(args.out + ".json").write_text(json.dumps(reports, indent=1))
    Path(args.out + ".md").write_text(
        "# Held-out recipe scores\n\nMade by `python scripts/recipe_scores.py` (`vidharm eval --recipes` "
        "per harmonizer): mean PSNR in dB (MAX = the target's maximum), 256 px, by foreground "
        "bucket; each harmonizer as vidharm applies it, relative to the pair's source frame "
        "(the person's own image under the person's light); unedited photos are scored "
        "against the input. In ffhqh, light and unedited the source frame shows the same "
        "scene as the composite; in cross it shows other content (another crop of the same "
        "photo), as in use; in other-photo the person is put on another natural photo, as "
        "in use, with an approximate ground truth (two natural photos taken to be under "
        "comparable light). Every pair but the unedited ones changes its region by at least "
        "one grey level on average (a draw that does not is drawn again: "
        "`recipes.changes_region`).\n\n" + tables(reports))
    print(f"wrote {args.out}.json and {args.out}.md", file=sys.stderr)


if __name__ == "__main__":
    main()
