"""Process-wide settings for frame processing, made once by the entry points.

On a 2-core machine a video pipeline already keeps every core busy (decoder, MediaPipe,
encoder). Letting OpenBLAS start its own threads for small per-frame matrix products then
oversubscribes the CPU: measured here, a 600x700 colour-grid interpolation took 101 ms with
2 BLAS threads under load and 1.9 ms with one; torch's second thread likewise. Library code
changes none of these settings: the commands that process frames call
:func:`one_torch_thread`, :func:`pin_blas_single_thread` and :func:`tune_allocator` through
:func:`vidharm.commands.common.frame_process_settings`, as do the scripts and benchmarks that
time the frame path. ``vidharm train`` pins nothing: training wants its
threads.
"""
from __future__ import annotations

import os
import sys
import threading

_limiter = None
_lock = threading.Lock()


def pin_blas_single_thread() -> None:
    """Limit the BLAS libraries loaded NOW (numpy's OpenBLAS, MediaPipe's own) to one thread
    for the rest of the process.

    A process-wide setting: threadpoolctl limits are global to the process, so entering and
    leaving a limit around each call from several threads races (one thread's exit restored 2
    BLAS threads in the middle of another's matrix product: 53 ms spikes in the live engine).
    It reaches only libraries already loaded: importing mediapipe loads a second OpenBLAS
    with its own pool (measured: pinned before that import, the live engine at 720p used 1.50
    cores instead of 0.57, its pool spinning), so call it after they are imported (see
    :func:`vidharm.commands.common.frame_process_settings`). Calling it again re-applies it.
    """
    global _limiter
    from threadpoolctl import threadpool_limits
    with _lock:
        _limiter = threadpool_limits(limits=1, user_api="blas")


def one_torch_thread() -> None:
    """torch's CPU operations on one thread for the rest of the process: the decoder,
    MediaPipe and the encoder already keep the cores busy, and torch's second thread then
    spins against them (measured: phnet-grid's fit took 315 ms per 720p frame in a transcode
    beside another busy process, about 5 ms on one thread). Before torch is imported it sets
    ``OMP_NUM_THREADS=1``, which torch reads at import (unless the user set it); after, it
    calls ``torch.set_num_threads(1)``."""
    torch = sys.modules.get("torch")
    if torch is None:
        os.environ.setdefault("OMP_NUM_THREADS", "1")
    elif torch.get_num_threads() != 1:
        torch.set_num_threads(1)


_allocator_tuned = False


def tune_allocator() -> None:
    """Keep large per-frame temporaries on the heap instead of fresh mmap()s (glibc only).

    By default glibc serves every allocation over ~128 KiB-32 MiB (a 720p float plane is 3.7 MB)
    with its own mmap and returns it with munmap, so each frame page-faults its buffers in
    again. Raising the mmap and trim thresholds lets freed buffers be reused: measured here,
    the full-resolution colour-grid pass at 720p went from 11.7 to 6.3 ms. The heap then stays
    at its peak size, which for a video process is the steady state anyway.

    It also caps glibc's malloc arenas at 2 (default: 8 per core). Frames are allocated on one
    thread (decoder, capture) and freed on another (frame loop), and the decoder's own threads
    come and go; with many arenas each keeps its own free, fragmented memory and the resident
    size creeps up: measured on the live engine at 720p over 7 minutes, RSS rose 602 -> 710 MB
    with the default arenas (no tuning at all) and 610 -> 625 MB with two, most of it in the
    first minute; over a 30-minute soak with the raised thresholds and default arenas it grew
    9.4 %. Idempotent; a no-op where glibc's mallopt is not available.
    """
    global _allocator_tuned
    if _allocator_tuned:
        return
    _allocator_tuned = True
    try:
        import ctypes
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold, m_arena_max = -1, -3, -8
        libc.mallopt(m_mmap_threshold, 256 << 20)
        libc.mallopt(m_trim_threshold, 512 << 20)
        libc.mallopt(m_arena_max, 2)
    except (OSError, AttributeError):
        pass
