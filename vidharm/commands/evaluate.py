"""``vidharm eval``: MSE/PSNR/fMSE/fPSNR by foreground-ratio bucket, model vs plain composite."""
from __future__ import annotations

from pathlib import Path

import click


def load_model(spec: str):
    """'default' / a shipped name / a .safetensors or published .pth path -> nn.Module."""
    from ..api import Harmonizer
    return Harmonizer.from_pretrained(spec, device="cpu").model


@click.command("eval", epilog="""\b
Examples:
  vidharm eval --recipes                             # FFHQH, light change, unedited, cross, other photo
  vidharm eval --recipes --harmonizer light --contact-sheet light.png
  vidharm eval --validation                          # held-out sources of the fetched data
  vidharm eval ~/data/iHarmony4 --weights iharmony512.pth --json > scores.json
  vidharm eval my_photos/ --weights default --contact-sheet sheet.png
""")
@click.argument("folder", required=False)
@click.option("--validation", is_flag=True, help="Use the held-out validation split of the fetched training data.")
@click.option("--data-dir", metavar="DIR", help="Fetched training data (default ~/.cache/vidharm/train-data).")
@click.option("--weights", "-w", default="default", show_default=True,
              help="'default', a shipped model name, a .safetensors or a published .pth; 'none' = baseline only.")
@click.option("--split", default="test", show_default=True, help="iHarmony4/FFHQH split.")
@click.option("--size", default=256, show_default=True, help="Model input size.")
@click.option("--samples", default=64, show_default=True, help="Validation composites (--validation).")
@click.option("--max-samples", type=int, help="Evaluate at most this many.")
@click.option("--psnr-max", type=click.Choice(["target", "255"]), default="target", show_default=True,
              help="PSNR MAX: the target image's own maximum (as published) or 255.")
@click.option("--contact-sheet", metavar="PNG", help="Write composite | result | ground truth rows.")
@click.option("--mode", type=click.Choice(["network", "grid"]), default="network", show_default=True,
              help="network: the published protocol (network pixels); grid: how vidharm applies a model "
                   "(its effect fitted as a colour grid on the composite).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--recipes", is_flag=True,
              help="Score a harmonizer as vidharm applies it on the held-out FFHQH, light-change, "
                   "unedited, cross and other-photo sets, against the plain composite and the "
                   "grid fitted with the ground truth.")
@click.option("--harmonizer", default="phnet-grid", show_default=True,
              help="With --recipes: any registered harmonizer (its --weights if learned).")
@click.option("--relative/--absolute", default=True, show_default=True,
              help="With --recipes: apply the harmonizer relative to each pair's source frame, "
                   "as vidharm's commands do (and also report it on the composite alone), or "
                   "on the composite alone only.")
def command(folder, validation, data_dir, weights, split, size, samples, max_samples, psnr_max,
            contact_sheet, mode, as_json, recipes, harmonizer, relative):
    """Evaluate a model against the plain composite on an iHarmony4/FFHQH folder, a folder of
    photos (synthetic composites), the held-out validation split, or (--recipes) any
    harmonizer on the held-out recipes."""
    from ..errors import InputError
    from ..training.evaluate import evaluate, render_table, to_json
    if recipes:
        if folder or validation:
            raise InputError("--recipes takes no FOLDER or --validation", "see `vidharm eval --help`")
        _recipes(data_dir, harmonizer, "" if weights in ("default", "none") else weights, size,
                 contact_sheet, as_json, relative)
        return
    if bool(folder) == bool(validation):
        raise InputError("give either a FOLDER, --validation or --recipes", "see `vidharm eval --help`")
    if validation:
        from ..training.data import build_training_data, default_data_dir
        dd = Path(data_dir).expanduser() if data_dir else default_data_dir()
        dataset = build_training_data(dd, size=size, val_length=samples).val
        if dataset is None:
            raise InputError(f"no held-out photos in {dd}", "run scripts/fetch_training_data.py")
    else:
        where = Path(folder).expanduser()
        if where.exists() and not where.is_dir():
            raise InputError(f"'{folder}' is a file, not a folder",
                             "give a folder of photos, an iHarmony4 or an FFHQH folder")
        if not where.is_dir():
            raise InputError(f"evaluation folder '{folder}' does not exist", "give an existing folder")
        dataset = str(Path(folder).expanduser())
    model = None if weights == "none" else load_model(weights)
    report = evaluate(model, dataset, size=size, split=split, psnr_max=psnr_max,
                      contact_sheet=contact_sheet, max_samples=max_samples, mode=mode,
                      name=None if model is None else f"{Path(weights).stem} ({mode})")
    if as_json:
        click.echo(to_json(report))
    else:
        from rich.console import Console
        Console().print(render_table(report))
    if contact_sheet:
        click.echo(f"wrote {contact_sheet}", err=True)


def _recipes(data_dir, harmonizer, weights, size, contact_sheet, as_json, relative=True):
    from ..training import recipe_eval as R
    from .common import frame_process_settings
    frame_process_settings()
    from ..color import relative_fit_of
    h = R.harmonizer_for(harmonizer, weights)
    sets = R.load_validation(data_dir, size=size,
                             progress=lambda m: None if m.startswith(("mask", "skipped")) else
                             click.echo(m, err=True))
    sheet = [] if contact_sheet else None
    report = R.evaluate_recipes(h.fit, sets, harmonizer + (f" ({weights})" if weights else ""),
                                size, sheet=sheet, relative=relative,
                                relative_fit=relative_fit_of(h))
    click.echo(R.to_json(report) if as_json else R.render(report))
    if contact_sheet:
        R.contact_sheet(sheet, contact_sheet)
        click.echo(f"wrote {contact_sheet}", err=True)
