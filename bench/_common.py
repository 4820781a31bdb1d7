"""What the bench scripts share: command-line handling for the scripts that read ``sys.argv``
by hand, the demo sheet's frame and its person, and the hue measure they print."""
import sys

import numpy as np


def script_args(doc: str, flags: tuple[str, ...] = ()) -> list[str]:
    """``sys.argv[1:]`` once ``-h``/``--help`` (prints ``doc``, exit 0) and options the
    script does not know (one line, exit 2) are dealt with, so that neither is taken for a
    weights file. ``flags``: the options the script reads itself."""
    args = sys.argv[1:]
    if "-h" in args or "--help" in args:
        print(doc.strip())
        sys.exit(0)
    unknown = [a for a in args if a.startswith("-") and a not in flags]
    if unknown:
        known = ", ".join(flags) if flags else "none"
        print(f"error: unknown option {unknown[0]} (options: {known}; see --help)", file=sys.stderr)
        sys.exit(2)
    return args


def sheet_frame(index: int = 45) -> tuple[np.ndarray, np.ndarray]:
    """The demo sheet's frame of the sample clip (uint8 RGB) and its person's matte (float32),
    segmented and refined as the creator-quality profile does (no temporal smoothing)."""
    from vidharm import assets
    from vidharm.config import load_config
    from vidharm.mask import MaskRefiner
    from vidharm.registry import registry
    from vidharm.video import VideoReader
    cfg = load_config("creator-quality")
    for i, (rgb, _, _) in enumerate(VideoReader(str(assets.path("sample-clip")))):
        if i == index:
            break
    seg = registry.segmenters.create(cfg.segmentation.segmenter, cfg.segmentation)
    try:
        mask = MaskRefiner(cfg.mask, smooth=False)(seg.segment(rgb, None), rgb)
    finally:
        seg.close()
    return rgb, mask.astype(np.float32)


def warmth(mean_rgb) -> float:
    """Hue as warmth: 100 log(red / blue) of a mean colour, in percent (a darker person at
    the same hue keeps it, where a grey-level difference of red and blue would shrink)."""
    return float(100 * np.log(mean_rgb[0] / mean_rgb[2]))
