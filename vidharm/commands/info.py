"""``vidharm plugins`` and ``vidharm profiles``: what is registered, what is built in."""
from __future__ import annotations

import click

from .common import echo_err


@click.command("plugins")
def plugins():
    """List registered sources, segmenters, sinks and harmonizers (built-in and third-party)."""
    from ..registry import plugin_errors, registry
    for kind in ("sources", "segmenters", "sinks", "harmonizers"):
        reg = getattr(registry, kind)
        click.echo(f"{kind}:")
        for name, doc in reg.describe():
            click.echo(f"  {name:16s} {doc}")
    for e in plugin_errors:
        echo_err(f"warning: {e}")


@click.command("profiles")
def profiles():
    """List the built-in profiles."""
    from ..config import PROFILES_DIR, available_profiles, load_config
    for name in available_profiles():
        click.echo(f"{name:20s} {load_config(name).description}")
    click.echo(f"(in {PROFILES_DIR}; pass --profile PATH for your own .toml)")
