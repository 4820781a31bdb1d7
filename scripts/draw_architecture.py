"""Draw vidharm's architecture from its own code: docs/architecture.png.

    .venv/bin/python scripts/draw_architecture.py [--out docs/architecture.png]

Left: the data flow of one frame (the frame graph and its two drivers). Right: the modules
of ``vidharm/`` and ``plugins/`` (as ``vidharm_plugins``) by layer, read from their imports:
a module stands one layer above the highest module it imports, so every import points down.
Prints the import cycles, the modules over 600 lines and the functions over 80 (all should be
none).
"""
from __future__ import annotations

import argparse
import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: folders drawn as one box
GROUPS = ("vidharm/live", "vidharm/video", "vidharm/models", "vidharm/training",
          "vidharm/harmonize", "vidharm/commands", "plugins")


def modules() -> dict[str, Path]:
    """Dotted module name -> file, for vidharm and vidharm_plugins (examples excluded)."""
    out = {}
    for top, name in (("vidharm", "vidharm"), ("plugins", "vidharm_plugins")):
        for p in sorted((ROOT / top).rglob("*.py")):
            rel = p.relative_to(ROOT / top)
            if "examples" in rel.parts or "build" in rel.parts:
                continue
            parts = [name, *rel.with_suffix("").parts]
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = p
    return out


def imports(mods: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the internal modules it imports (relative imports resolved)."""
    deps: dict[str, set[str]] = defaultdict(set)
    for name, path in mods.items():
        pkg = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                    base = ".".join(up + ([base] if base else []))
                targets = [base] + [f"{base}.{a.name}" for a in node.names]
            for t in targets:
                while t and t not in mods:
                    t = t.rpartition(".")[0]
                if t and t != name:
                    deps[name].add(t)
    return deps


def group_of(name: str, mods: dict[str, Path]) -> str:
    rel = str(mods[name].relative_to(ROOT))
    for g in GROUPS:
        if rel.startswith(g + "/"):
            return g + "/"
    return rel


def layers(nodes: set[str], deps: dict[str, set[str]]) -> tuple[dict[str, int], list[list[str]]]:
    """Layer of each node (1 = imports nothing) and the cycles found."""
    level: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(n: str, stack: list[str]) -> int:
        if n in level:
            return level[n]
        if n in stack:
            cycles.append(stack[stack.index(n):] + [n])
            return 0
        below = [visit(d, stack + [n]) for d in deps.get(n, ()) if d in nodes]
        level[n] = 1 + max(below, default=0)
        return level[n]

    for n in sorted(nodes):
        visit(n, [])
    return level, cycles


def draw(out: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

    mods = modules()
    deps = imports(mods)
    gdeps: dict[str, set[str]] = defaultdict(set)
    size: dict[str, int] = defaultdict(int)
    for n, p in mods.items():
        g = group_of(n, mods)
        size[g] += p.read_text().count("\n")
        gdeps[g] |= {group_of(d, mods) for d in deps[n]} - {g}
    level, cycles = layers(set(size), gdeps)
    long = [str(p.relative_to(ROOT)) for p in mods.values() if p.read_text().count("\n") > 600]
    long_fns = [f"{p.relative_to(ROOT)}:{n.name}" for p in mods.values()
                for n in ast.walk(ast.parse(p.read_text()))
                if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
                and n.end_lineno - n.lineno + 1 > 80]

    fig = plt.figure(figsize=(16, 9), dpi=110)
    ax = fig.add_axes([0.01, 0.02, 0.36, 0.9])
    ax.set_xlim(0, 10), ax.set_ylim(0, 12), ax.axis("off")
    ax.set_title("one frame (vidharm/graph.py), live and offline", fontsize=12, loc="left")

    def box(a, x, y, w, h, text, color):
        a.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.05", fc=color, ec="#333"))
        a.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=8.5)

    def arrow(a, p, q, text=""):
        a.add_patch(FancyArrowPatch(p, q, arrowstyle="-|>", mutation_scale=12, color="#333"))
        if text:
            a.text((p[0] + q[0]) / 2 - 0.6, (p[1] + q[1]) / 2 + 0.15, text, fontsize=7.5, color="#555")

    core, prov, io = "#dbe8f6", "#fde9c9", "#e4dcf3"
    box(ax, 0.2, 10.6, 3.2, 0.9, "source (camera / file)", io)
    box(ax, 0.2, 9.0, 3.2, 0.9, "segmenter (MediaPipe)", io)
    box(ax, 0.2, 7.4, 3.2, 0.9, "check_mask + person check", core)
    box(ax, 0.2, 5.8, 3.2, 0.9, "refine + smooth the mask", core)
    box(ax, 0.2, 4.2, 3.2, 0.9, "background provider", core)
    box(ax, 0.2, 2.2, 3.2, 1.1, "fused pass at full resolution\nbg + m·(T(frame) − bg)", core)
    box(ax, 0.2, 0.4, 3.2, 0.9, "sink (virtual camera / MP4)", io)
    box(ax, 5.2, 4.0, 4.4, 1.3, "grid provider\nSyncGrids (offline, in the loop,\nat most offline_hz fits/s)\nHarmonizerWorker (live, thread)", prov)
    box(ax, 5.2, 6.2, 4.4, 1.3, "GridFitter: fit(composite) with\nfit(camera frame) undone -> ColorGrid\n+ GridTracker (one smoother)", prov)
    for y0, y1 in ((10.6, 9.9), (9.0, 8.3), (7.4, 6.7), (5.8, 5.1), (4.2, 3.3), (2.2, 1.3)):
        arrow(ax, (1.8, y0), (1.8, y1))
    ax.text(3.5, 7.2, "garbage / nobody:\nbackground only", fontsize=7.5, color="#a33")
    arrow(ax, (3.4, 4.5), (5.2, 4.5), "low-res job")
    arrow(ax, (7.4, 5.3), (7.4, 6.2))
    arrow(ax, (6.6, 6.2), (6.6, 5.3))
    arrow(ax, (5.2, 4.2), (3.4, 2.9), "grid at t, × strength")

    ax2 = fig.add_axes([0.39, 0.02, 0.6, 0.9])
    top = max(level.values())
    ax2.set_xlim(0, 12), ax2.set_ylim(0.3, top + 0.8), ax2.axis("off")
    ax2.set_title(f"modules by layer (an import always points down): {len(cycles)} cycles, "
                  f"{len(long)} modules over 600 lines", fontsize=12, loc="left")
    rows: dict[int, list[str]] = defaultdict(list)
    for g, lv in level.items():
        rows[lv].append(g)
    pos = {}
    for lv, names in rows.items():
        names.sort(key=lambda g: -size[g])
        total = sum(max(size[g], 400) for g in names)
        x = 0.1
        for g in names:
            w = 11.8 * max(size[g], 400) / total
            c = prov if g in ("vidharm/graph.py", "vidharm/fitting.py", "vidharm/temporal.py",
                              "vidharm/pipeline.py", "vidharm/live/") else \
                io if g.startswith("plugins") or g.startswith("vidharm/video") else core
            box(ax2, x, lv - 0.35, w - 0.12, 0.7,
                f"{g.replace('vidharm/', '')}\n{size[g]}", c)
            pos[g] = (x + w / 2, lv)
            x += w
    for g, ds in gdeps.items():
        for d in ds:
            if d in pos and level[d] == level[g] - 1:
                ax2.plot([pos[g][0], pos[d][0]], [pos[g][1] - 0.35, pos[d][1] + 0.35],
                         color="#999", lw=0.6, zorder=0)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    print(f"wrote {out}: {len(size)} boxes on {top} layers; cycles: "
          f"{[' -> '.join(c) for c in cycles] or 'none'}; modules over 600 lines: {long or 'none'}; "
          f"functions over 80 lines: {long_fns or 'none'}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "docs" / "architecture.png"))
    draw(Path(ap.parse_args().out))


if __name__ == "__main__":
    main()
