"""Host numbers onto the training device without making the host wait.

A copy from pageable host memory to a CUDA device synchronises the stream first: the host waits until every
queued kernel has run, once per copy. The trainer draws a few host numbers each step (MFW's lam from numpy, the
selection probabilities, Remix's class counts, the normalisation constants), so each such copy goes through
pinned memory with `non_blocking=True` (PyTorch's caching host allocator keeps the buffer alive until the copy
has run). The values are those of a plain copy, bit for bit; on a CPU it is a plain copy."""
from __future__ import annotations

import functools

import numpy as np
import torch


def to_device(values, device, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """`values` (array, list, numbers) as a `dtype` tensor on `device`; on CUDA a non-blocking copy from pinned
    memory (no host synchronisation), elsewhere a plain one."""
    device = torch.device(device)
    t = torch.as_tensor(np.asarray(values), dtype=dtype)
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


@functools.lru_cache(maxsize=64)
def constant(values: tuple, device: str, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A tensor that never changes (normalisation mean and std), copied to `device` once and reused: do not
    modify it in place."""
    return to_device(list(values), device, dtype)
