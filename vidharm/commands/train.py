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
""")
@click.option("--model", default="phnet-lite", show_default=True, help="Model registry name, e.g. phnet-lite, phnet-lite-s or fmm (README: Models).")
@click.option("--dataset", type=click.Choice(["synthetic", "iharmony4", "ffhqh"]), default="synthetic", show_default=True)
@click.option("--dataset-root", metavar="DIR", help="iHarmony4 / FFHQH folder.")
@click.option("--real-root", metavar="DIR", help="FFHQH: the folder of real images.")
@click.option("--data-dir", metavar="DIR", help="Synthetic: fetched photos (default ~/.cache/vidharm/train-data).")
@click.option("--steps", default=20000, show_default=True)
@click.option("--batch-size", default=16, show_default=True, help="Per process.")
@click.option("--size", default=256, show_default=True)
@click.option("--lr", default=1e-5, show_default=True, type=float)
@click.option("--schedule", type=click.Choice(["constant", "staged"]), default="constant", show_default=True,
              help="staged: the paper's 1e-4 -> 1e-5 -> 1e-7.")
@click.option("--init-weights", metavar="PATH", help="Start from these weights (.safetensors or published .pth).")
@click.option("--device", default="auto", show_default=True)
@click.option("--amp", type=click.Choice(["auto", "off", "bf16", "fp16"]), default="auto", show_default=True)
@click.option("--workers", "num_workers", default=2, show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option("--out-dir", default="runs/train", show_default=True)
@click.option("--checkpoint-every", default=500, show_default=True)
@click.option("--val-every", default=500, show_default=True)
@click.option("--temporal-weight", default=0.0, show_default=True, help="Weight of the two-frame consistency term (0 = published loss).")
@click.option("--resume", is_flag=True, help="Continue from OUT_DIR/checkpoint.pt.")
@click.option("--no-progress", is_flag=True)
def command(no_progress, schedule, temporal_weight, **kw):
    """Train with the published recipe (PSNR + FN-MSE + gradient loss, Lion), checkpoints,
    CSV/TensorBoard logs and validation PSNR/fMSE; writes OUT_DIR/final.safetensors."""
    from ..training.data import TRAIN_CLIPS
    from ..training.train import TrainConfig, train
    cfg = TrainConfig(**kw, lr_schedule=schedule, progress=not no_progress,
                      temporal_weight=temporal_weight,
                      temporal_clips=tuple(TRAIN_CLIPS) if temporal_weight > 0 else ())
    result = train(cfg)
    if result:
        click.echo(f"weights: {result.get('weights', '')}")
