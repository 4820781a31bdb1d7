"""Thread-pool hygiene for the per-frame hot path.

On a 2-core machine a video pipeline already keeps every core busy (decoder, MediaPipe,
encoder). Letting OpenBLAS start its own threads for small per-frame matrix products then
oversubscribes the CPU: measured here, a 600x700 colour-grid interpolation took 101 ms with
2 BLAS threads under load and 1.9 ms with one. Hot-path code runs inside
:func:`blas_single_thread`.
"""
from __future__ import annotations

import threading

_ctl = None
_lock = threading.Lock()


def blas_single_thread():
    """Context manager limiting BLAS libraries (numpy's OpenBLAS) to one thread."""
    global _ctl
    if _ctl is None:
        with _lock:
            if _ctl is None:
                from threadpoolctl import ThreadpoolController
                _ctl = ThreadpoolController()
    return _ctl.limit(limits=1, user_api="blas")
