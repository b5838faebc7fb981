"""`python -m procrustes bench`: images/s of our trainer's step against the reference pipeline, in one process.

Both pipelines train the same ResNet-32 on the same CIFAR-10 exp-100 LDAM-DRW subset (12,406 images) at
batch 128, SGD (momentum 0.9, weight decay 2e-4, lr 0.1):

(a) reference, as the LDAM-DRW code does it: a Dataset that turns each uint8 image into a PIL image,
    Compose([RandomCrop(32, padding=4), RandomHorizontalFlip(), ToTensor(), Normalize(mean, std)]), a DataLoader
    (shuffle, `--workers` processes, pinned memory on CUDA, persistent workers), fp32, contiguous NCHW, plain
    cross-entropy, torch's default (foreach) SGD, `cudnn.benchmark = True` as its main script sets, and the
    per-step `loss.item()` and top-1/top-5 accuracy of its training loop (a host synchronisation every step);
(b) ours: `procrustes.training.train.TrainStep`, the very step `train()` runs: the training set as a uint8 tensor on
    the device, batched augmentation (`procrustes.method.augment`), channels_last, bf16 autocast where
    `use_bf16("auto", device)` says so, fused SGD on CUDA, the per-class diagnostics, no host synchronisation.

After a warm-up of each, (a) and (b) alternate for `--rounds` rounds of `--steps` steps (the order flips every
round) so that drift of the machine cancels; CUDA is synchronised before each clock reading. The medians and,
as the last line, `ratio ours/reference: X.XX` are printed.

Also: the augmentation statistics of both pipelines (offsets 0..8 in each axis and flips, read back from an
image whose pixels encode their own coordinates, each crop checked pixel for pixel), `--accuracy-steps K`
(train both K steps from the same initial weights, test on a balanced 1000-image subset) and `--packed N`
(N short runs one after another against N packed concurrently, `bench_packing`), `--compile` (a third
pipeline: ours with the model compiled, as `train()` compiles it; the ratio compiled/reference is printed before
the last line) and `--hooks` (MFW through
forward hooks, the path of the trainer and of `procrustes.method.weaken`, against the same mixing written in line:
`procrustes.tooling.bench_hooks.bench_hook_overhead`, ratio last) and `--eval [N]` (the trainer's evaluation at several
batches on N random images, `bench_eval`: the ratio of the trainer's batch against 1000, last).
"""
from __future__ import annotations

import math
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..method.augment import augment
from ..training.config import RunConfig, make_config
from ..training.data import Benchmark, load_benchmark, major_classes
from ..method.losses import Criterion, class_weights
from ..method.models import build_model
from ..method.samplers import epoch_indices
from ..training.train import (TORCH_COMPILE_MODES, TrainStep, balanced_subset, evaluate, lr_at, make_model, make_optimizer,
                    resolve_device, use_bf16)

# chi-square critical values at p = 0.001 (df 8: nine offset bins) and the matching two-sided normal quantile
CHI2_8_P001 = 26.124
Z_P001 = 3.291


def bench_config() -> RunConfig:
    """The benchmarked setting: the paper profile's CIFAR-10 exp-100 ERM run (ResNet-32, batch 128, lr 0.1)."""
    return make_config("paper", dataset="cifar10", imbalance="exp", ratio=100)


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


# ---------------------------------------------------------------- (a) the reference pipeline


class ReferenceDataset(torch.utils.data.Dataset):
    """The LDAM-DRW IMBALANCECIFAR10 __getitem__: uint8 HWC array -> PIL image -> torchvision transform."""

    def __init__(self, x: np.ndarray, y: np.ndarray, transform):
        self.x, self.y, self.transform = x, y, transform

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        from PIL import Image

        return self.transform(Image.fromarray(self.x[i])), int(self.y[i])


def reference_transform(mean, std, size: int = 32, pad: int = 4):
    from torchvision import transforms

    return transforms.Compose([transforms.RandomCrop(size, padding=pad), transforms.RandomHorizontalFlip(),
                               transforms.ToTensor(), transforms.Normalize(mean, std)])


class Reference:
    """The reference training loop over an endless iterator of its DataLoader (persistent workers)."""

    def __init__(self, bench: Benchmark, cfg: RunConfig, dev: torch.device, workers: int, seed: int = 0):
        self.dev = dev
        ds = ReferenceDataset(bench.train_x, bench.train_y, reference_transform(bench.spec.mean, bench.spec.std,
                                                                                bench.spec.image_size, bench.spec.pad))
        torch.manual_seed(seed)
        self.model = build_model(cfg.resolved_model(), len(bench.counts)).to(dev).train()  # fp32, contiguous NCHW
        self.opt = torch.optim.SGD(self.model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        self.loader = torch.utils.data.DataLoader(
            ds, batch_size=cfg.batch_size, shuffle=True, num_workers=workers, pin_memory=dev.type == "cuda",
            persistent_workers=workers > 0, generator=torch.Generator().manual_seed(seed))
        self._it = self._endless()
        self.last_loss = float("nan")

    def _endless(self):
        while True:
            yield from self.loader

    def step(self, lr: float) -> int:
        torch.backends.cudnn.benchmark = True  # the LDAM-DRW main script sets it
        for g in self.opt.param_groups:
            g["lr"] = lr
        x, y = next(self._it)
        x, y = x.to(self.dev, non_blocking=True), y.to(self.dev, non_blocking=True)
        out = self.model(x)
        loss = torch.nn.functional.cross_entropy(out, y)
        top = out.topk(min(5, out.shape[1]), 1).indices == y[:, None]  # its accuracy(output, target, (1, 5))
        acc1, acc5 = top[:, :1].float().sum() * 100 / len(y), top.any(1).float().sum() * 100 / len(y)
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        self.last_loss = loss.item()  # losses.update(loss.item(), ...): one host synchronisation a step
        del acc1, acc5
        return len(y)

    def close(self) -> None:
        it = getattr(self.loader, "_iterator", None)
        if it is not None and hasattr(it, "_shutdown_workers"):
            it._shutdown_workers()


# ---------------------------------------------------------------- (b) our trainer's step


class Ours:
    """`TrainStep` fed the way `train()` feeds it: epoch permutations of the device-resident uint8 set."""

    def __init__(self, bench: Benchmark, cfg: RunConfig, dev: torch.device, seed: int = 0):
        self.cfg, self.dev, self.counts = cfg, dev, bench.counts
        self.bf16 = use_bf16(cfg.precision, dev)
        self.train_x = torch.from_numpy(bench.train_x).to(dev)
        self.train_y = torch.from_numpy(bench.train_y).to(dev)
        criterion = Criterion(cfg.loss, bench.counts, focal_gamma=cfg.focal_gamma, ldam_max_margin=cfg.ldam_max_margin,
                              ldam_scale=cfg.ldam_scale, la_tau=cfg.la_tau, device=dev)
        torch.manual_seed(seed)
        self.model = make_model(cfg, len(bench.counts), criterion.uses_cosine, dev).train()
        self.opt = make_optimizer(self.model, cfg, dev)
        self.gen = torch.Generator(device=dev).manual_seed(seed)
        is_major = torch.from_numpy(major_classes(bench.counts)).to(dev)
        self.train_step = TrainStep(cfg, self.model, self.opt, criterion, bench.counts, bench.spec, self.bf16, self.gen,
                                    np.random.default_rng(seed), is_major)
        self.drw_epoch = cfg.schedule()[3]
        self.epoch, self.pos, self.idx = -1, 0, torch.empty(0, dtype=torch.long)
        # train() turns cudnn.benchmark on while it trains on CUDA, and leaves it as it finds it elsewhere
        self.benchmark_flag = True if dev.type == "cuda" else torch.backends.cudnn.benchmark

    def _next_epoch(self) -> None:
        self.epoch += 1
        self.idx = epoch_indices(self.cfg.sampler, self.train_y, self.counts, self.epoch, self.cfg.epochs, self.drw_epoch, self.gen)
        w = class_weights(self.cfg.loss, self.counts, self.epoch, self.drw_epoch, self.cfg.cb_beta).to(self.dev)
        self.train_step.new_epoch(self.epoch, self.drw_epoch, w)
        self.pos = 0

    def step(self, lr: float) -> int:
        torch.backends.cudnn.benchmark = self.benchmark_flag
        if self.pos >= len(self.idx):
            self._next_epoch()
        bi = self.idx[self.pos : self.pos + self.cfg.batch_size]
        self.pos += self.cfg.batch_size
        self.train_step(self.train_x[bi], self.train_y[bi], lr)
        return len(bi)

    def close(self) -> None:
        pass


def timed_steps(step: Callable[[float], int], steps: int, lr: float, dev: torch.device) -> tuple[int, float]:
    sync(dev)
    t0 = time.perf_counter()
    n = sum(step(lr) for _ in range(steps))
    sync(dev)
    return n, time.perf_counter() - t0


def time_pipelines(bench: Benchmark, cfg: RunConfig, dev: torch.device, *, steps: int, rounds: int, workers: int,
                   warmup: int | None = None, compiled: bool | str = False, out=print) -> dict:
    """Alternate the pipelines for `rounds` rounds of `steps` steps (the order rotates every round); images/s
    per round and medians. compiled: a third pipeline, ours with the model compiled in place as `train()` does
    with compile on, True for torch's default mode or a mode's name (its first warm-up step compiles; the time it
    took is printed and returned)."""
    pipes = {"reference": Reference(bench, cfg, dev, workers), "ours": Ours(bench, cfg, dev)}
    compile_s = None
    if compiled:
        pipes["ours compiled"] = Ours(bench, cfg, dev)
        pipes["ours compiled"].model.compile(mode="default" if compiled is True else compiled)
    warmup = max(1, min(10, steps // 2)) if warmup is None else warmup
    names = list(pipes)
    try:
        for name, p in pipes.items():
            t0 = time.perf_counter()
            timed_steps(p.step, warmup, cfg.lr, dev)
            if name == "ours compiled":
                compile_s = time.perf_counter() - t0
                out(f"compiled: the first {warmup} step(s) of ours compiled took {compile_s:.1f} s (compilation included)")
        out(f"warm-up: {warmup} step{'s' if warmup > 1 else ''} of each pipeline")
        rates: dict[str, list[float]] = {n: [] for n in names}
        for r in range(rounds):
            order = names[r % len(names):] + names[: r % len(names)]
            row = {}
            for name in order:
                n, s = timed_steps(pipes[name].step, steps, cfg.lr, dev)
                rates[name].append(n / s)
                row[name] = n / s
            cells = "   ".join(f"{n} {row[n]:9.1f} img/s" for n in names)
            out(f"round {r + 1}/{rounds}: {cells}   (ours/reference {row['ours'] / row['reference']:.2f}; {order[0]} first)")
    finally:
        for p in pipes.values():
            p.close()
    med = {k: statistics.median(v) for k, v in rates.items()}
    out("median: " + ", ".join(f"{n} {med[n]:.1f} img/s" for n in names))
    res = {"rates": rates, "median": med, "ratio": med["ours"] / med["reference"], "bf16": pipes["ours"].bf16,
           "compile_s": compile_s}
    if compiled:
        res["ratio_compiled"] = med["ours compiled"] / med["reference"]
        res["compiled_over_eager"] = med["ours compiled"] / med["ours"]
    return res


# ---------------------------------------------------------------- augmentation statistics


def coordinate_image(size: int = 32) -> np.ndarray:
    """(size, size, 3) uint8: channel 0 = row + 1, channel 1 = column + 1, channel 2 = 255. Zero padding shows
    as 0, so every crop tells its offsets and whether it was flipped."""
    r, c = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    return np.stack([r + 1, c + 1, np.full_like(r, 255)], -1).astype(np.uint8)


def decode_crops(out: np.ndarray, pad: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Offsets (n, 2), flips (n,) of crops of `coordinate_image`, and whether each crop equals, pixel for
    pixel, the crop of the zero-padded image at those offsets (flipped when so)."""
    n, h, w, _ = out.shape
    rowv = out[..., 0].max(axis=2).astype(np.int64)  # (n, h): 1 + source row of each output row, 0 = padding
    colv = out[..., 1].max(axis=1).astype(np.int64)  # (n, w)
    i0 = (rowv > 0).argmax(1)
    off_r = rowv[np.arange(n), i0] - 1 - i0 + pad
    j0 = (colv > 0).argmax(1)
    u0 = colv[np.arange(n), j0] - 1
    u1 = colv[np.arange(n), np.minimum(j0 + 1, w - 1)] - 1
    flip = u1 < u0
    off_c = np.where(flip, u0 + pad - (w - 1 - j0), u0 - j0 + pad)
    padded = np.pad(coordinate_image(h), ((pad, pad), (pad, pad), (0, 0)))
    exact = np.empty(n, bool)
    for k in range(n):
        crop = padded[off_r[k] : off_r[k] + h, off_c[k] : off_c[k] + w]
        exact[k] = np.array_equal(out[k], crop[:, ::-1] if flip[k] else crop)
    return np.stack([off_r, off_c], 1), flip, exact


def _chi2(counts: np.ndarray) -> float:
    e = counts.sum() / len(counts)
    return float(((counts - e) ** 2 / e).sum())


def _chi2_homogeneity(a: np.ndarray, b: np.ndarray) -> float:
    t = np.stack([a, b]).astype(np.float64)
    e = t.sum(1, keepdims=True) * t.sum(0, keepdims=True) / t.sum()
    m = e > 0
    return float((((t - e) ** 2)[m] / e[m]).sum())


def augmentation_stats(n: int = 10000, device="cpu", seed: int = 0, pad: int = 4, size: int = 32) -> dict:
    """Sample n crops from each pipeline on `coordinate_image` and test them.

    reference: the Dataset's full transform (RandomCrop, flip, ToTensor, Normalize) then un-normalised back to
    uint8; ours: `augment` on the device. For each: offset histograms (0..2*pad) per axis, flip rate, the share
    of crops that are exact, chi-square of uniformity (df 8, p = 0.001) and a z test of the flip rate; then
    chi-square homogeneity and a two-proportion z test between the pipelines."""
    dev = resolve_device(device)
    img = coordinate_image(size)
    mean, std = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)
    ds = ReferenceDataset(np.repeat(img[None], 1, 0), np.zeros(1, np.int64), reference_transform(mean, std, size, pad))
    torch.manual_seed(seed)
    ref = torch.stack([ds[0][0] for _ in range(n)])  # (n, 3, h, w) normalised floats
    m, s = torch.tensor(mean)[:, None, None], torch.tensor(std)[:, None, None]
    ref_u8 = ((ref * s + m) * 255).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    gen = torch.Generator(device=dev).manual_seed(seed)
    x = torch.from_numpy(img).to(dev)[None].expand(n, -1, -1, -1).contiguous()
    ours_u8, off, flip = augment(x, pad, gen)
    res = {}
    for name, arr in (("reference", ref_u8), ("ours", ours_u8.cpu().numpy())):
        o, f, exact = decode_crops(arr, pad)
        hist = [np.bincount(o[:, a], minlength=2 * pad + 1) for a in (0, 1)]
        fr = float(f.mean())
        z = (f.sum() - n / 2) / math.sqrt(n / 4)
        chis = [_chi2(h) for h in hist]
        res[name] = {"hist_rows": hist[0].tolist(), "hist_cols": hist[1].tolist(), "flip_rate": fr, "exact": float(exact.mean()),
                     "chi2": chis, "flip_z": float(z), "offsets": o, "flips": f,
                     "uniform": bool(all(c < CHI2_8_P001 for c in chis) and abs(z) < Z_P001 and exact.all()
                                     and all(len(h) == 2 * pad + 1 for h in hist))}
    ours_off, ours_flip = res["ours"]["offsets"], res["ours"]["flips"]
    res["ours"]["reported_match"] = bool((ours_off == off.cpu().numpy()).all() and (ours_flip == flip.cpu().numpy()).all())
    a, b = res["reference"], res["ours"]
    hom = [_chi2_homogeneity(np.asarray(a[k]), np.asarray(b[k])) for k in ("hist_rows", "hist_cols")]
    p = (a["flips"].sum() + b["flips"].sum()) / (2 * n)
    z2 = (a["flip_rate"] - b["flip_rate"]) / math.sqrt(max(p * (1 - p) * 2 / n, 1e-12))
    res["agree"] = bool(all(h < CHI2_8_P001 for h in hom) and abs(z2) < Z_P001)
    res["homogeneity_chi2"], res["flip_diff_z"], res["n"] = hom, float(z2), n
    return res


def print_augmentation_stats(st: dict, out=print) -> None:
    n = st["n"]
    out(f"augmentation: {n} crops of a coordinate-coded image from each pipeline (offsets 0..8, chi-square df 8, "
        f"critical {CHI2_8_P001} at p=0.001)")
    for name in ("reference", "ours"):
        r = st[name]
        out(f"  {name:9s} rows {r['hist_rows']}  chi2 {r['chi2'][0]:.1f}")
        out(f"  {'':9s} cols {r['hist_cols']}  chi2 {r['chi2'][1]:.1f}")
        extra = f", offsets/flips it reports match: {r['reported_match']}" if "reported_match" in r else ""
        out(f"  {'':9s} flip rate {r['flip_rate']:.4f} (z {r['flip_z']:+.2f}), exact crops {100 * r['exact']:.1f}%{extra}"
            f" -> {'uniform' if r['uniform'] else 'NOT UNIFORM'}")
    out(f"  reference vs ours: homogeneity chi2 rows {st['homogeneity_chi2'][0]:.1f}, cols {st['homogeneity_chi2'][1]:.1f}, "
        f"flip-rate z {st['flip_diff_z']:+.2f} -> {'agree' if st['agree'] else 'DIFFER'}")


# ---------------------------------------------------------------- accuracy after K steps


def accuracy_compare(bench: Benchmark, cfg: RunConfig, dev: torch.device, k: int, workers: int, seed: int = 0,
                     per_class: int = 100, out=print) -> dict:
    """Train each pipeline k steps from the same initial weights (the same lr schedule: the paper's, scaled to
    the epochs k steps span), then test both on the first `per_class` test images of each class."""
    spe = math.ceil(len(bench.train_y) / cfg.batch_size)
    sched = cfg.replace(epochs=max(1, math.ceil(k / spe)))
    ref, ours = Reference(bench, cfg, dev, workers, seed), Ours(bench, cfg, dev, seed)
    same_init = all(torch.equal(a.detach().float(), b.detach().float())
                    for a, b in zip(ref.model.state_dict().values(), ours.model.state_dict().values()))
    C = len(bench.counts)
    ev = balanced_subset(bench.test_y, per_class)
    tx, ty = torch.from_numpy(bench.test_x[ev]).to(dev), torch.from_numpy(bench.test_y[ev]).to(dev)
    accs = {}
    try:
        for name, p, bf16 in (("reference", ref, False), ("ours", ours, ours.bf16)):
            t0 = time.perf_counter()
            for s in range(k):
                p.step(lr_at(sched, s, spe))
            sync(dev)
            tc, tt, _ = evaluate(p.model, tx, ty, C, bench.spec.mean, bench.spec.std, bf16)
            accs[name] = float(tc.sum() / tt.sum())
            out(f"accuracy after {k} steps: {name:9s} {100 * accs[name]:.2f}% on {int(tt.sum())} balanced test images "
                f"({time.perf_counter() - t0:.1f} s)")
    finally:
        ref.close()
    n = len(ev)
    se = math.sqrt(sum(a * (1 - a) for a in accs.values()) / n)  # s.e. of the difference of two test accuracies
    diff = accs["ours"] - accs["reference"]
    verdict = "within noise" if abs(diff) <= 2 * max(se, 1e-12) else "OUTSIDE test-sampling noise"
    out(f"accuracy: ours - reference = {100 * diff:+.2f} points, 2 s.e. of test sampling = {200 * se:.2f} points -> {verdict} "
        f"(same initial weights: {same_init}; seed-to-seed spread of training is larger than this)")
    return {"accuracy": accs, "diff": diff, "se": se, "within_noise": abs(diff) <= 2 * se, "same_init": same_init}


# ---------------------------------------------------------------- packing


def bench_packing(k: int, *, device="auto", epochs: int | None = None, data_root=None, out=print) -> float:
    """Time k short runs one after another (`run_many(..., workers=1)`) against the same k runs packed
    (`workers=k`), both through the process executor into throw-away stores; print and return the aggregate
    ratio packed/serial of images trained per second of wall time (process start-up included in both).

    CUDA: paper-profile CIFAR-10 exp-100 ERM runs of `epochs` (default 5) epochs, testing on 100 images a class;
    CPU: smoke-profile runs (a check of the machinery, not a measurement worth reporting)."""
    from .packing import run_many

    dev = resolve_device(device)
    if dev.type == "cuda":
        cfgs = [make_config("paper", dataset="cifar10", imbalance="exp", ratio=100, epochs=epochs or 5, eval_per_class=100,
                            test_per_class=100, seed=1000 + i) for i in range(k)]
    else:
        cfgs = [make_config("smoke", dataset="cifar10", imbalance="exp", ratio=10, max_per_class=20, epochs=epochs or 1,
                            seed=1000 + i) for i in range(k)]
    b = load_benchmark(cfgs[0], data_root)  # decodes and caches the images once, before any timing
    images = len(b.train_y) * cfgs[0].epochs * k
    out(f"packing: {k} runs of {cfgs[0].label().replace(' seed 1000', '')}, {cfgs[0].epochs} epoch(s) of "
        f"{len(b.train_y)} images each, device {dev}")
    walls = {}
    for name, w in (("serial", 1), ("packed", k)):
        with tempfile.TemporaryDirectory(prefix="procrustes-pack-") as tmp:
            t0 = time.perf_counter()
            res = run_many(cfgs, device=str(dev), workers=w, executor="process", data_root=data_root, results=Path(tmp),
                           progress=False)
            walls[name] = time.perf_counter() - t0
        steady = sum(r["provenance"]["train_images_per_s"] for r in res)
        out(f"  {name:6s} (workers={w}): {walls[name]:.1f} s wall, {images / walls[name]:.1f} img/s aggregate "
            f"(sum of the runs' own training rates {steady:.1f} img/s)")
    ratio = walls["serial"] / walls["packed"]
    out(f"ratio packed/serial: {ratio:.2f}")
    return ratio


# ---------------------------------------------------------------- precision


def bench_precision(dev: torch.device, *, steps: int, rounds: int, data_root=None, compiled: bool = False,
                    out=print) -> dict:
    """img/s of the trainer's step (`Ours`, the paper profile's exp-100 ERM run) in fp32 against the same step under
    bf16 autocast, alternating `rounds` rounds of `steps` steps in one process (the order flips every round); the
    last line is the ratio bf16/fp32. This is how the precision of CPU runs is chosen on the machine at hand: a CPU
    without native bf16 emulates it and runs many times slower. compiled: both models compiled as train() does."""
    from ..training.store import cpu_has_bf16, device_name

    base = bench_config()
    bench = load_benchmark(base, data_root)
    pipes = {p: Ours(bench, base.replace(precision=p), dev) for p in ("fp32", "bf16")}
    if compiled:
        for p in pipes.values():
            p.model.compile()
    out(f"precision: {device_name(dev)}, native bf16: {cpu_has_bf16() if dev.type == 'cpu' else 'n/a'}, "
        f"{'compiled' if compiled else 'eager'}, {steps} steps a round, batch {base.batch_size}")
    for p in pipes.values():  # warm-up (and compilation)
        timed_steps(p.step, 3, base.lr, dev)
    rates: dict[str, list[float]] = {k: [] for k in pipes}
    for r in range(rounds):
        for name in (("fp32", "bf16") if r % 2 == 0 else ("bf16", "fp32")):
            n, s = timed_steps(pipes[name].step, steps, base.lr, dev)
            rates[name].append(n / s)
        out(f"round {r + 1}/{rounds}: fp32 {rates['fp32'][-1]:.1f} img/s, bf16 {rates['bf16'][-1]:.1f} img/s")
    med = {k: statistics.median(v) for k, v in rates.items()}
    out(f"median: fp32 {med['fp32']:.1f} img/s, bf16 {med['bf16']:.1f} img/s")
    out(f"ratio bf16/fp32: {med['bf16'] / med['fp32']:.2f}")
    return {"median": med, "ratio": med["bf16"] / med["fp32"]}


# ---------------------------------------------------------------- command line


EVAL_BASELINE_BATCH = 1000  # the evaluation batch the trainer used everywhere before EVAL_BATCH
EVAL_BATCHES = (32, 64, 128, 256, 1000)


def bench_eval(dev: torch.device, images: int | None = None, batches: tuple[int, ...] = EVAL_BATCHES,
               rounds: int = 3, out=print) -> dict[int, float]:
    """img/s of the trainer's evaluate() (ResNet-32, channels_last, eval mode) at each batch, on random uint8
    images, each batch timed `rounds` times in alternation (best kept); the last line is the ratio of the
    trainer's batch on this device (train.eval_batch) against EVAL_BASELINE_BATCH. Returns batch -> img/s."""
    from ..training.train import eval_batch

    images = images or (10000 if dev.type == "cuda" else 2000)
    ours = eval_batch(dev)
    batches = tuple(sorted(set(batches) | {ours, EVAL_BASELINE_BATCH}))
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (images, 32, 32, 3), dtype=torch.uint8, generator=g).to(dev)
    y = torch.randint(0, 10, (images,), generator=g).to(dev)
    torch.manual_seed(0)
    model = build_model("resnet32", 10, normed=False).to(dev, memory_format=torch.channels_last)
    bf16 = use_bf16("auto", dev)
    args = (model, x, y, 10, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), bf16)
    best = {b: 0.0 for b in batches}
    for b in batches:  # warm-up: allocator, oneDNN/cuDNN plans
        evaluate(*args, batch=b)
    for r in range(rounds):
        for b in (batches if r % 2 == 0 else batches[::-1]):
            sync(dev)
            t = time.perf_counter()
            evaluate(*args, batch=b)
            sync(dev)
            best[b] = max(best[b], images / (time.perf_counter() - t))
    out(f"eval: ResNet-32 forward, {images} images, {'bf16' if bf16 else 'fp32'}, {torch.get_num_threads()} "
        f"thread(s), best of {rounds}: " + ", ".join(f"batch {b} {v:.0f} img/s" for b, v in best.items()))
    out(f"ratio eval batch {ours} (the trainer's on {dev.type})/batch {EVAL_BASELINE_BATCH}: "
        f"{best[ours] / best[EVAL_BASELINE_BATCH]:.2f}")
    return best


def main(args) -> int:
    """`python -m procrustes bench`: see the module docstring. args: device, steps, rounds, workers, data_root,
    and optionally accuracy_steps, aug_samples, packed, packed_epochs, compile (time ours compiled too), hooks
    (the MFW hook overhead instead)."""
    from ..training.store import device_name

    from ..training.config import ConfigError

    try:
        dev = resolve_device(args.device)
    except (ValueError, RuntimeError) as e:
        raise ConfigError(str(e)) from None
    for name in ("steps", "rounds"):
        if getattr(args, name) < 1:
            raise ConfigError(f"impossible --{name} {getattr(args, name)}: must be at least 1")
    if args.workers < 0:
        raise ConfigError(f"impossible --workers {args.workers}: must be at least 0")
    mode = getattr(args, "compile", False)
    if isinstance(mode, str) and mode not in TORCH_COMPILE_MODES:
        raise ConfigError(f"unknown compile mode {mode!r}: choose one of {', '.join(TORCH_COMPILE_MODES)}")
    if getattr(args, "hooks", False):
        from .bench_hooks import bench_hook_overhead

        bench_hook_overhead(steps=args.steps, rounds=args.rounds, threads=torch.get_num_threads())
        return 0
    n_eval = getattr(args, "eval", None)
    if n_eval is not None:
        if n_eval != "default" and not (n_eval.isdigit() and int(n_eval) >= 1):
            raise ConfigError(f"impossible --eval {n_eval!r}: a number of images, at least 1 (or nothing for the default)")
        bench_eval(dev, None if n_eval == "default" else int(n_eval), rounds=args.rounds)
        return 0
    if getattr(args, "precision", False):
        bench_precision(dev, steps=args.steps, rounds=args.rounds, data_root=args.data_root,
                        compiled=bool(getattr(args, "compile", False)))
        return 0
    packed = getattr(args, "packed", None)
    if packed:
        bench_packing(packed, device=dev, epochs=getattr(args, "packed_epochs", None), data_root=args.data_root)
        return 0
    cfg = bench_config()
    bench = load_benchmark(cfg, args.data_root)
    ours_bf16 = use_bf16(cfg.precision, dev)
    print(f"bench: {cfg.dataset} {cfg.imbalance}-{cfg.ratio:g} ({len(bench.train_y)} training images), "
          f"{cfg.resolved_model()}, batch {cfg.batch_size}, device {dev} ({device_name(dev)}), torch {torch.__version__}")
    print(f"reference: PIL + torchvision transforms, DataLoader(workers={args.workers}, pin_memory={dev.type == 'cuda'}, "
          f"persistent_workers={args.workers > 0}), fp32 NCHW, SGD, cross-entropy, loss.item() each step")
    print(f"ours: procrustes.training.train.TrainStep: uint8 set on {dev.type}, batched augment, channels_last, "
          f"{'bf16 autocast' if ours_bf16 else 'fp32'}, {'fused ' if dev.type == 'cuda' else ''}SGD")
    print_augmentation_stats(augmentation_stats(getattr(args, "aug_samples", None) or 10000, dev))
    timing = time_pipelines(bench, cfg, dev, steps=args.steps, rounds=args.rounds, workers=args.workers,
                            compiled=getattr(args, "compile", False))
    k = getattr(args, "accuracy_steps", None)
    if k:
        accuracy_compare(bench, cfg, dev, k, args.workers)
    sys.stdout.flush()
    if "ratio_compiled" in timing:
        name = mode if isinstance(mode, str) else "default"
        print(f"ratio ours compiled/reference: {timing['ratio_compiled']:.2f} ({name} mode; compiled/eager "
              f"{timing['compiled_over_eager']:.2f}; compilation {timing['compile_s']:.0f} s)")
    print(f"ratio ours/reference: {timing['ratio']:.2f}")
    return 0
