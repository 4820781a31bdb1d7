"""How much of the relative figures a harmonizer could get WITHOUT looking at the person: the
"scene shortcut". In the held-out ``ffhqh``, ``light`` and ``unedited`` sets the pair's source
frame shows the same scene as the composite under another light (see
:mod:`vidharm.training.recipe_eval`), so matching the source frame's scene to the composite's
(per channel, mean and standard deviation over the background pixels) and applying that to the
person recovers most of the change. In use the new background is another picture, and the same
rule then compares two different contents: the ``cross`` and ``other-photo`` sets show what
it does there.

    .venv/bin/python bench/scene_shortcut.py            # about two minutes

It prints the same table as ``vidharm eval --recipes``; "harmonizer" is the shortcut relative
to the source frame, "composite only" is the identity (the rule needs a source frame).
A harmonizer's relative figures on ffhqh / light are only worth what they add over a rule
that fails in use; read them next to cross and other-photo.
"""
import numpy as np

from vidharm.color import ColorGrid
from vidharm.training.recipe_eval import evaluate_recipes, load_validation, render


def scene_match(composite: np.ndarray, mask: np.ndarray, source: np.ndarray | None) -> ColorGrid:
    """Per channel: the source frame's scene statistics mapped onto the composite's, applied
    to the person (gains bounded to [0.5, 2])."""
    if source is None:
        return ColorGrid.identity()
    bg = mask < 0.5
    s = source[bg].astype(np.float64) / 255.0
    c = composite[bg].astype(np.float64) / 255.0
    gain = np.clip(c.std(0) / np.maximum(s.std(0), 1e-3), 0.5, 2.0)
    coeffs = np.zeros((1, 1, 3, 4), np.float32)
    for k in range(3):
        coeffs[0, 0, k, k] = gain[k]
        coeffs[0, 0, k, 3] = c.mean(0)[k] - gain[k] * s.mean(0)[k]
    return ColorGrid(coeffs)


if __name__ == "__main__":
    from _common import script_args
    script_args(__doc__)
    sets = load_validation(size=256, per_image=4)
    report = evaluate_recipes(lambda comp, mask: ColorGrid.identity(), sets, name="scene shortcut",
                              relative_fit=scene_match)
    print(render(report))
