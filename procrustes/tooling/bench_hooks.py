"""Benchmark of the MFW forward hooks against the same mixing written in line (`python -m procrustes bench --hooks`):
tooling, apart from the method in `procrustes.method.weaken`."""
from __future__ import annotations

import contextlib
import statistics
import time
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..training.config import make_config
from ..method.mixing import BatchMix, mix_features, plan_batch
from ..method.models import resnet32
from ..method.weaken import MajorFeatureWeakening



def inline_mixed_forward(model: nn.Module, x: torch.Tensor, mix: BatchMix) -> torch.Tensor:
    """A StagedNet's forward pass with the plan's mixing written in line (stages called one by one, the feature
    mixed where mix.point says): the trainer's path before it moved onto forward hooks, kept only as the
    baseline of `bench_hook_overhead` and as the tests' reference for the hooks, never to train."""
    def at(point: str, h: torch.Tensor) -> torch.Tensor:
        return mix_features(h, mix.perm, mix.lam) if point == mix.point and mix.perm is not None else h

    h = at("input", x)
    for name, stage in model.stages.items():
        h = at(name, stage(h))
    return model.fc(at("feature", torch.flatten(F.adaptive_avg_pool2d(h, 1), 1)))


def _hook_bench_steps(batch_size: int, layer: str, seed: int):
    """The two training steps compared, on one ResNet-32 and one batch, and what each runs inside: MFW written
    in line (nothing), and MFW through the forward hook (the hook attached, for a whole timed block)."""
    cfg = make_config("paper", method="mfw", mfw_point=layer)
    counts = [5000] * 5 + [50] * 5  # CIFAR-10 step-100: half the classes are weakened
    torch.manual_seed(seed)
    model = resnet32(10).to(memory_format=torch.channels_last).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch_size, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    y = torch.arange(batch_size) % 10
    gen, rng = torch.Generator().manual_seed(seed), np.random.default_rng(seed)
    w = MajorFeatureWeakening.from_config(model, f"stages.{layer}", cfg, counts)

    def sgd(loss: torch.Tensor) -> None:
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def in_line() -> None:
        mix = plan_batch(cfg, y, counts, 0, cfg.epochs, gen, rng)
        sgd(F.cross_entropy(inline_mixed_forward(model, x, mix), y))

    def hooked() -> None:
        w.set_labels(y)
        sgd(F.cross_entropy(model(x), y))

    return {"in line": in_line, "forward hook": hooked}, {"in line": contextlib.nullcontext(), "forward hook": w}


def _timed(step: Callable[[], None], inside, n: int, batch_size: int) -> tuple[float, float]:
    """(images per wall-clock second, images per CPU second of this process) over n steps run inside `inside`."""
    with inside:
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(n):
            step()
    return n * batch_size / (time.perf_counter() - t0), n * batch_size / (time.process_time() - c0)


def bench_hook_overhead(steps: int = 20, rounds: int = 2, batch_size: int = 128, threads: int = 1, layer: str = "stage1",
                        seed: int = 0, out: Callable[[str], None] | None = print) -> dict:
    """Training images/s of `procrustes.method.models.resnet32` with MFW at `layer` (CPU, `threads` threads, batch
    `batch_size`, SGD): the mixing written in line (`inline_mixed_forward`, the trainer's path before it
    moved onto hooks) against `procrustes.method.weaken`'s forward hook (`w.set_labels(y); model(x)`, the path of the
    trainer and of a user's model), same process, same model, `rounds` alternating rounds of `steps` steps each
    (the order flips every round), after one warm-up step of each. Returns (and prints) the median images/s of each
    and their ratio forward hook / in line, in wall-clock time and in this process's CPU time (images per
    CPU-second: less moved by other processes on a busy machine)."""
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        step, inside = _hook_bench_steps(batch_size, layer, seed)
        names = list(step)
        for name in names:
            _timed(step[name], inside[name], 1, batch_size)  # warm-up
        rates: dict[str, list[float]] = {n: [] for n in names}
        cpu_rates: dict[str, list[float]] = {n: [] for n in names}
        for r in range(rounds):
            for name in (names if r % 2 == 0 else names[::-1]):
                wall, cpu = _timed(step[name], inside[name], steps, batch_size)
                rates[name].append(wall)
                cpu_rates[name].append(cpu)
                if out:
                    out(f"round {r + 1}/{rounds}: {name}: {wall:.1f} img/s wall, {cpu:.1f} img per CPU-s")
    finally:
        torch.set_num_threads(old_threads)
    med = {k: statistics.median(v) for k, v in rates.items()}
    cpu_med = {k: statistics.median(v) for k, v in cpu_rates.items()}
    ratio, cpu_ratio = med["forward hook"] / med["in line"], cpu_med["forward hook"] / cpu_med["in line"]
    if out:
        out(f"median: in line {med['in line']:.1f} img/s, forward hook {med['forward hook']:.1f} img/s "
            f"(ResNet-32, batch {batch_size}, CPU, {threads} thread(s), MFW at {layer}); per CPU-second: "
            f"{cpu_med['in line']:.1f} and {cpu_med['forward hook']:.1f}")
        out(f"ratio forward hook/in line: {ratio:.3f} (wall), {cpu_ratio:.3f} (CPU time)")
    return {"rates": rates, "median": med, "ratio": ratio, "cpu_rates": cpu_rates, "cpu_median": cpu_med,
            "cpu_ratio": cpu_ratio}


__all__ = ["inline_mixed_forward", "bench_hook_overhead"]
