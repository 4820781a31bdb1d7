"""Built-in person segmenter: ``mediapipe`` (MediaPipe selfie segmentation, Tasks API); the
interface is in :mod:`vidharm.protocols`.

A segmenter is created as ``factory(cfg)`` with the :class:`vidharm.config.SegmentationConfig`
(or a whole :class:`~vidharm.config.Config`), e.g.
``registry.segmenters.create("mediapipe", cfg)``.
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

from vidharm.config import SegmentationConfig
from vidharm.errors import InputError
from vidharm.registry import registry

__all__ = ["MediaPipeSegmenter"]


def _seg_cfg(cfg: Any) -> SegmentationConfig:
    if cfg is None:
        return SegmentationConfig()
    if isinstance(cfg, str):            # convenience: a model name or path
        return SegmentationConfig(model=cfg)
    return getattr(cfg, "segmentation", cfg)


class MediaPipeSegmenter:
    """MediaPipe selfie segmentation ('general' 256x256 or 'landscape' 144x256 model, or a
    .tflite path); soft confidence mask at the input frame's size.

    - ``segment(rgb, t)``: ``rgb`` uint8 (H, W, 3) RGB (RGBA and greyscale are accepted and
      converted); ``t`` seconds. Streams run in MediaPipe's VIDEO mode, which needs strictly
      increasing timestamps: times that do not increase (a looping clip, a repeated frame, a
      new clip fed to the same segmenter) are shifted so the stream stays monotonic and keeps
      its frame spacing. ``t=None`` runs IMAGE mode (a separate graph, created on first use).
    - ``threshold`` (config): confidences below it become 0 (0 keeps the soft matte).
    - ``close()`` frees the graphs; also a context manager. Not thread-safe: one per stream.

    Protocols (:mod:`vidharm.protocols`): Segmenter, SizedSegmenter, Closable.
    """

    name = "mediapipe"

    #: (w, h) each built-in model runs at: MediaPipe resizes any frame to it and resizes the
    #: mask back to the frame, so a frame already reduced to (at least) this size gives the
    #: same mask at that size for less work (see :func:`vidharm.mask.segmentation_input`)
    MODEL_SIZES = {"general": (256, 256), "landscape": (256, 144),
                   "selfie_segmentation.tflite": (256, 256),
                   "selfie_segmentation_landscape.tflite": (256, 144)}

    def __init__(self, cfg: Any = None, *, model: str | None = None,
                 threshold: float | None = None):
        c = _seg_cfg(cfg)
        self.model = model if model is not None else c.model
        self.threshold = float(c.threshold if threshold is None else threshold)
        from vidharm.assets import segmentation_model_path
        self.model_path = Path(segmentation_model_path(self.model))
        self._video = None
        self._image = None
        self._lock = threading.Lock()
        self._last_ms: int | None = None
        self._step_ms = 33
        self._offset_ms = 0.0
        self._closed = False
        self._video = self._create("VIDEO")   # validates the model now, not on the first frame

    @property
    def input_size(self) -> tuple[int, int] | None:
        """(w, h) the model sees, for the built-in models; None for another .tflite."""
        return self.MODEL_SIZES.get(self.model) or self.MODEL_SIZES.get(self.model_path.name)

    # ------------------------------------------------------------------ graphs
    def _create(self, mode: str):
        from mediapipe.tasks.python import BaseOptions, vision
        opts = vision.ImageSegmenterOptions(
            base_options=BaseOptions(model_asset_path=str(self.model_path)),
            running_mode=getattr(vision.RunningMode, mode),
            output_confidence_masks=True, output_category_mask=False)
        try:
            return vision.ImageSegmenter.create_from_options(opts)
        except Exception as exc:  # mediapipe raises RuntimeError/ValueError with long text
            first = " ".join(str(exc).split())[:160]
            raise InputError(
                f"segmentation model '{self.model_path}' could not be loaded as a MediaPipe "
                f"segmentation .tflite ({type(exc).__name__}: {first})",
                "use model 'general' or 'landscape', or the path of a valid MediaPipe "
                "selfie-segmentation .tflite file") from None

    # ------------------------------------------------------------------ API
    def segment(self, rgb: np.ndarray, t_seconds: float | None = None) -> np.ndarray:
        """Soft person mask, float32 (H, W) in [0, 1], for the uint8 RGB frame ``rgb``."""
        import mediapipe as mp
        if self._closed:
            raise RuntimeError("segmenter is closed")
        frame = _as_rgb(rgb)
        image = mp.Image(image_format=mp.ImageFormat.SRGB, data=frame)
        with self._lock:
            if t_seconds is None:
                if self._image is None:
                    self._image = self._create("IMAGE")
                result = self._image.segment(image)
            else:
                result = self._video.segment_for_video(image, self._timestamp_ms(t_seconds))
            masks = result.confidence_masks
            if not masks:
                raise InputError("the segmentation model returned no confidence mask",
                                 "use a MediaPipe selfie-segmentation model")
            # the view points into MediaPipe's buffer: copy before the next call
            m = np.array(masks[-1].numpy_view(), dtype=np.float32, copy=True)
        if m.ndim == 3:
            m = m[:, :, 0]
        if m.shape != frame.shape[:2]:  # pragma: no cover - MediaPipe returns the input size
            import cv2
            m = cv2.resize(m, (frame.shape[1], frame.shape[0]), interpolation=cv2.INTER_LINEAR)
        np.clip(m, 0.0, 1.0, out=m)
        if self.threshold > 0:
            m[m < self.threshold] = 0.0
        return m

    __call__ = segment

    def _timestamp_ms(self, t: float) -> int:
        """Strictly increasing integer ms for VIDEO mode, however ``t`` behaves."""
        raw = float(t) * 1000.0
        ts = int(round(raw + self._offset_ms))
        last = self._last_ms
        if last is not None:
            if ts <= last:
                # time went back or stood still: continue from the last stamp, one frame on
                target = last + self._step_ms
                self._offset_ms += target - ts
                ts = target
            else:
                self._step_ms = max(1, min(ts - last, 1000))
        self._last_ms = ts
        return ts

    def reset(self) -> None:
        """A new clip starts (timestamps keep increasing internally; nothing else to forget)."""

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for seg in (self._video, self._image):
            if seg is not None:
                try:
                    seg.close()
                except Exception:  # pragma: no cover - best effort at shutdown
                    pass
        self._video = self._image = None

    def __enter__(self) -> "MediaPipeSegmenter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):  # pragma: no cover - relies on GC timing
        try:
            self.close()
        except Exception:
            pass


def _as_rgb(rgb: np.ndarray) -> np.ndarray:
    a = np.asarray(rgb)
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    elif a.ndim == 3 and a.shape[2] == 4:
        a = a[:, :, :3]
    if a.ndim != 3 or a.shape[2] != 3:
        raise InputError(f"segmenter input must be an RGB image (H, W, 3), got shape {a.shape}",
                         "pass the video frame as uint8 RGB")
    if a.dtype != np.uint8:
        if np.issubdtype(a.dtype, np.floating):
            a = np.clip(a * 255.0 + 0.5, 0, 255).astype(np.uint8)
        else:
            raise InputError(f"segmenter input must be uint8 RGB, got {a.dtype}",
                             "convert the frame to 8-bit RGB")
    return np.ascontiguousarray(a)


registry.segmenters.add("mediapipe", MediaPipeSegmenter,
                        "MediaPipe selfie segmentation: 'general' (256x256) or 'landscape' "
                        "(144x256) model, or a .tflite path")
