"""``vidharm train``: train a harmonization model (synthetic pairs or a dataset folder)."""
from __future__ import annotations

import click


@click.command("train", epilog="""\b
Examples:
  python scripts/fetch_training_data.py                # once: the registry photos + provenance
  vidharm train --model phnet-lite --steps 3000 --out-dir runs/lite
  vidharm train --resume --out-dir runs/lite            # continue after an interruption
  torchrun --nproc-per-node 2 -m vidharm.cli train --device cpu --steps 100   # DDP (gloo)
  vidharm train --dataset iharmony4 --dataset-root ~/data/iHarmony4 --schedule staged
  vidharm train --model phnet-grid --steps 12000 --batch-size 32 --lr 2e-3 --out-dir runs/grid
                                                        # the default model, on the recipe pairs
  vidharm train --model phnet-grid --device cuda --workers 12 --batch-size 256 --out-dir runs/g
                                                        # on a GPU, pairs built by 12 processes
""")
@click.option("--model", default="phnet-lite", show_default=True, help="Model registry name, e.g. phnet-lite, phnet-lite-s or fmm (README: Models).")
@click.option("--dataset", type=click.Choice(["synthetic", "iharmony4", "ffhqh"]), default="synthetic", show_default=True)
@click.option("--dataset-root", metavar="DIR", help="iHarmony4 / FFHQH folder.")
@click.option("--real-root", metavar="DIR", help="FFHQH: the folder of real images.")
@click.option("--data-dir", metavar="DIR", help="Synthetic: fetched photos (default ~/.cache/vidharm/train-data); "
              "phnet-grid: also a pack of them (scripts/pack_training_data.py).")
@click.option("--steps", default=20000, show_default=True)
@click.option("--batch-size", default=16, show_default=True, help="Per process.")
@click.option("--size", default=256, show_default=True)
@click.option("--lr", default=1e-5, show_default=True, type=float)
@click.option("--schedule", type=click.Choice(["constant", "staged"]), default="constant", show_default=True,
              help="staged: the paper's 1e-4 -> 1e-5 -> 1e-7.")
@click.option("--init-weights", metavar="PATH", help="Start from these weights (.safetensors or published .pth).")
@click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:N or auto (CUDA when there is a GPU).")
@click.option("--amp", type=click.Choice(["auto", "off", "bf16", "fp16"]), default="auto", show_default=True)
@click.option("--workers", "num_workers", default=2, show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option("--out-dir", default="runs/train", show_default=True)
@click.option("--checkpoint-every", default=500, show_default=True)
@click.option("--val-every", default=500, show_default=True)
@click.option("--temporal-weight", default=0.0, show_default=True, help="Weight of the two-frame consistency term (0 = published loss).")
@click.option("--resume", is_flag=True, help="Continue from OUT_DIR/checkpoint.pt.")
@click.option("--no-progress", is_flag=True)
@click.option("--recipe-weights", metavar="JSON", default=None,
              help='phnet-grid: shares of the recipes, e.g. \'{"ffhqh": .3, "light-person": .25, '
                   '"light-scene": .3, "unedited": .15}\'.')
@click.option("--augment-scale", type=float, default=None,
              help="phnet-grid: whole-image colour augmentation, as a share of the light recipes' range.")
@click.option("--augment-share", type=float, default=None,
              help="phnet-grid: share of source images augmented as a whole (default 0.8).")
@click.option("--loss", "grid_loss", type=click.Choice(["published", "per-image"]), default="published",
              show_default=True,
              help="phnet-grid: per-image = the PSNR term per image (mean), not pooled over the batch.")
@click.option("--apply", "grid_apply", type=click.Choice(["grid", "global", "relative", "both", "joint"]),
              default="grid", show_default=True,
              help="phnet-grid: the loss on the model's own grid applied, on the one global "
                   "transform closest to it (what phnet-grid applies), on that transform "
                   "relative to the one for the person's own frame (what vidharm applies), "
                   "on both of the last two, or on both with the joint head's correction "
                   "from the two frames added to the relative one (joint).")
@click.option("--joint-only", is_flag=True,
              help="phnet-grid with --apply joint: train only the joint head; the rest of the "
                   "model (and so the fit without a source frame) stays exactly as it was.")
def command(no_progress, schedule, temporal_weight, recipe_weights, augment_scale, augment_share,
            grid_loss, grid_apply, joint_only, **kw):
    """Train with the published recipe (PSNR + FN-MSE + gradient loss, Lion), checkpoints,
    CSV/TensorBoard logs and validation PSNR/fMSE; writes OUT_DIR/final.safetensors."""
    from ..models import model_config
    if model_config(kw["model"]).get("arch") == "grid":
        _train_grid(kw, recipe_weights, augment_scale, augment_share, grid_loss, grid_apply,
                    joint_only)
        return
    if grid_loss != "published" or grid_apply != "grid" or joint_only:
        from ..errors import InputError
        raise InputError("--loss, --apply and --joint-only are for phnet-grid models", "drop them")
    from ..training.data import TRAIN_CLIPS
    from ..training.train import TrainConfig, train
    cfg = TrainConfig(**kw, lr_schedule=schedule, progress=not no_progress,
                      temporal_weight=temporal_weight,
                      temporal_clips=tuple(TRAIN_CLIPS) if temporal_weight > 0 else ())
    result = train(cfg)
    if result:
        click.echo(f"weights: {result.get('weights', '')}")


def _train_grid(kw: dict, recipe_weights: str | None, augment_scale: float | None,
                augment_share: float | None, grid_loss: str = "published",
                grid_apply: str = "grid", joint_only: bool = False) -> None:
    """Models that predict the colour grid train on the recipe pairs (vidharm.training.grid_train)."""
    import json
    import os

    from ..errors import InputError
    from ..training.grid_train import GridTrainConfig, train_grid
    if kw["dataset"] != "synthetic":
        raise InputError(f"--model {kw['model']} trains on the recipe pairs of the fetched photos",
                         "drop --dataset (iHarmony4/FFHQH folders train the pixel models)")
    extra = {}
    if recipe_weights:
        try:
            extra["weights"] = {str(k): float(v) for k, v in json.loads(recipe_weights).items()}
        except (ValueError, AttributeError, TypeError):
            raise InputError(f"--recipe-weights '{recipe_weights}' is not a JSON object of numbers",
                             'e.g. \'{"ffhqh": 0.3, "unedited": 0.2}\'') from None
        from ..training.recipes import TRAIN_RECIPES, unknown_recipes
        unknown = unknown_recipes(extra["weights"])
        if unknown:
            raise InputError(f"--recipe-weights names unknown recipe {', '.join(unknown)}",
                             f"use {', '.join(TRAIN_RECIPES)}")
    if augment_scale is not None:
        extra["augment_scale"] = augment_scale
    if augment_share is not None:
        extra["p_augment"] = augment_share
    extra["loss"] = grid_loss
    extra["apply"] = grid_apply
    extra["joint_only"] = joint_only
    cfg = GridTrainConfig(model=kw["model"], data_dir=kw["data_dir"] or "", out_dir=kw["out_dir"],
                          steps=kw["steps"], batch=kw["batch_size"], lr=kw["lr"], seed=kw["seed"],
                          val_every=kw["val_every"], device=kw["device"],
                          # one process builds pairs on a 2-core machine; more where there are cores
                          workers=max(0, min(kw["num_workers"], (os.cpu_count() or 2) - 1)),
                          init_weights=kw["init_weights"] or "", **extra)
    path = train_grid(cfg, log=click.echo, resume=kw["resume"])
    click.echo(f"weights: {path}")
