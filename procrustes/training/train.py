"""The trainer: the whole training set on the device as uint8, batched augmentation there, bf16 autocast where
the hardware has it, channels_last, fused SGD on CUDA; per-epoch diagnostics (per-class training accuracy,
feature-gradient norms, test accuracy, where minor-class examples are predicted); a checkpoint every epoch so
that an interrupted run resumes and ends with the same result."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import store
from ..method.augment import augment, normalise
from .config import ConfigError, RunConfig, validate
from ..method.counts import group_scale, major_classes, report_group_definition, report_groups
from .data import load_benchmark
from ..method.losses import Criterion, class_weights, reduce
from ..method.mixing import plan_batch, plan_points
from ..method.models import build_model
from ..method.samplers import epoch_indices
from ..method.weaken import staged_point_mixers


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device {device!r}: the trainer runs on cpu or cuda")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but no CUDA device is available")
    return dev


# The commit of the code this process runs, read once when the module is loaded: a worker process of `reproduce`
# trains one run after another while the checkout may move on, and a run is credited to the code that trained it.
CODE_COMMIT = store.git_commit()


def use_bf16(precision: str, device: torch.device) -> bool:
    """precision "auto": bf16 autocast on CUDA where supported, fp32 on every CPU. A CPU run's key must give the
    same numbers on whichever CPU trains it, and only some CPUs have native bf16 (`store.cpu_has_bf16`): there
    `precision="bf16"` is about 2x faster, under its own key."""
    if precision != "auto":
        return precision == "bf16"
    return device.type == "cuda" and torch.cuda.is_bf16_supported()


def check_resume_precision(ck: dict, now: str, precision: str, path) -> None:
    """A checkpoint resumes only under the precision it was trained in (checkpoints from before this check
    carry none and are taken as they are): mixing bf16 and fp32 epochs would give numbers no key describes."""
    had = ck.get("precision")
    if had is not None and had != now:
        raise ValueError(f"{path} was trained in {had}, but precision {precision!r} gives {now} on this device: "
                         f"resume it on a device where it gives {had}, or move the checkpoint aside to start over")


# compile="auto" on a CPU compiles runs that train at least this many images: about 4 minutes at 830 img/s (the
# fastest CPU we measured, where compiling the ResNet-32 step took 42 s and gave +16% in fp32, +25% in bf16).
# Below it (smoke runs, tests) the compilation would cost more than it saves.
COMPILE_MIN_IMAGES_CPU = 200_000
# torch.compile's own modes, each also a compile setting: "reduce-overhead" adds CUDA graphs (one launch a step
# instead of hundreds: what a launch-bound ResNet-32 at batch 128 on a large GPU may need), "max-autotune" also
# searches kernels. "on" is torch's "default" mode.
TORCH_COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
COMPILE_MODES = ("auto", "on", "off") + TORCH_COMPILE_MODES[1:]
# the mode "auto" compiles with. On CUDA "reduce-overhead" is a candidate not yet measured on a GPU here (the
# harvest's bench line measures it, `HARVEST_COMPILE_MODE`); until a number says it pays, auto keeps "default".
AUTO_COMPILE_MODE = "default"


def compile_mode(compile: str | bool | None, device: torch.device, images: int) -> str | None:
    """torch.compile's mode for a run, or None for eager (the model is compiled in place: the state dict keeps
    its keys).

    compile: "on"/True (mode "default"), "off"/False, one of torch's other modes ("reduce-overhead",
    "max-autotune", "max-autotune-no-cudagraphs"), or "auto" (None reads $PROCRUSTES_COMPILE, default "auto"):
    AUTO_COMPILE_MODE on CUDA always, and on the CPU when the run trains at least COMPILE_MIN_IMAGES_CPU images.
    Not part of a run's key: compiled and eager steps agree to floating-point rounding (tests/test_compile.py);
    the result's provenance says which one trained it, and in which mode."""
    import os

    if compile is None:
        compile = os.environ.get("PROCRUSTES_COMPILE", "auto")
    if isinstance(compile, bool):
        return "default" if compile else None
    if compile not in COMPILE_MODES:
        raise ConfigError(f"unknown compile setting {compile!r} (argument or $PROCRUSTES_COMPILE): choose one of "
                          f"{', '.join(COMPILE_MODES)}")
    if compile == "auto":
        auto = device.type == "cuda" or (device.type == "cpu" and images >= COMPILE_MIN_IMAGES_CPU)
        return AUTO_COMPILE_MODE if auto else None
    return {"on": "default", "off": None}.get(compile, compile)


def use_compile(compile: str | bool | None, device: torch.device, images: int) -> bool:
    """Whether a run compiles its model (see compile_mode)."""
    return compile_mode(compile, device, images) is not None


def fresh_compiler() -> None:
    """Forget what torch.compile made before in this process, so that a compiled run starts from an empty cache:
    the guards of earlier runs cannot push it over dynamo's recompile limit (a run over the limit silently trains
    eager), and the evidence `CompileWatch` records counts this run's frames only. Anything else this process
    compiled recompiles on its next call (slower once, same results)."""
    import torch._dynamo

    torch._dynamo.reset()


def compile_counters() -> dict:
    """dynamo's process-wide counters that tell whether compiled code ran: frames seen and compiled, graphs
    captured, graph breaks, recompile-limit hits (a frame over the limit runs eager from then on) and seconds
    spent compiling."""
    from torch._dynamo import utils

    c = utils.counters
    times = getattr(utils, "compilation_time_metrics", {}).get("_compile.compile_inner", [])
    return {"frames": c["frames"]["total"], "frames_ok": c["frames"]["ok"], "graphs": c["stats"]["unique_graphs"],
            "graph_breaks": sum(c["graph_break"].values()),
            "limit_hits": sum(v for k, v in c["unimplemented"].items() if "recompile limit" in k.lower()),
            "compile_s": float(sum(times))}


@dataclass
class CompileWatch:
    """The evidence of one (re)start of a run about the path it trained on: `record` (kept in the checkpoint and
    in provenance.compile_evidence) says which epochs ran, in which compile mode, how many frames and graphs
    were compiled, how many graph breaks and recompile-limit hits there were, and whether (and after which
    epoch) the run fell back to eager. Eager (mode None) segments are recorded too, so a run resumed on the
    other path says so."""

    mode: str | None
    record: dict
    base: dict = field(default_factory=dict)

    @classmethod
    def start(cls, mode: str | None, epoch: int) -> "CompileWatch":
        rec = {"mode": mode, "epochs": [epoch + 1, epoch]}  # first and last epoch (1-based) of this segment
        if mode is not None:
            rec.update(frames_compiled=0, frames_failed=0, graphs=0, graph_breaks=0, recompile_limit_hits=0,
                       compile_s=0.0, fell_back=False, fell_back_after_epoch=None, reason=None)
        return cls(mode, rec, compile_counters() if mode is not None else {})

    def after_epoch(self, done: int) -> None:
        """Update the record after epoch `done` (1-based): a fall-back is a recompile-limit hit, a frame that
        failed to compile (it runs eager), or a first epoch that captured no graph at all."""
        r = self.record
        r["epochs"][1] = done
        if self.mode is None:
            return
        now = compile_counters()
        d = {k: now[k] - self.base[k] for k in now}
        r.update(frames_compiled=d["frames_ok"], frames_failed=d["frames"] - d["frames_ok"], graphs=d["graphs"],
                 graph_breaks=d["graph_breaks"], recompile_limit_hits=d["limit_hits"], compile_s=round(d["compile_s"], 2))
        why = (f"dynamo's recompile limit ({_recompile_limit()}) was hit {d['limit_hits']} time(s)" if d["limit_hits"]
               else f"{r['frames_failed']} frame(s) failed to compile and ran eager" if r["frames_failed"]
               else "no graph was compiled in the first epoch" if d["graphs"] == 0 else None)
        if why and not r["fell_back"]:
            r.update(fell_back=True, fell_back_after_epoch=done, reason=why)


def _recompile_limit():
    import torch._dynamo

    return getattr(torch._dynamo.config, "recompile_limit", None) or getattr(torch._dynamo.config, "cache_size_limit", "?")




def lr_at(cfg: RunConfig, step: int, steps_per_epoch: int) -> float:
    """Linear warm-up over the warm-up epochs (rising each iteration, or each epoch with warmup_per="epoch" as the
    LDAM-DRW reference code does), then step decays at the milestones."""
    warm, miles, factors, _ = cfg.schedule()
    epoch = step // steps_per_epoch
    if cfg.warmup_per == "epoch":
        if epoch < warm:
            return cfg.lr * min(1.0, (epoch + 1) / warm)
    elif warm > 0 and step < warm * steps_per_epoch:
        return cfg.lr * (step + 1) / (warm * steps_per_epoch)
    lr = cfg.lr
    for m, f in zip(miles, factors):
        if epoch >= m:
            lr = cfg.lr * f
    return lr


# Images a forward pass of evaluation takes, by device type. Evaluation is per image (eval mode: BatchNorm
# uses its running statistics), so the batch changes speed, not numbers (beyond floating-point order). On a
# CPU a small batch keeps the activations in cache: `python -m procrustes bench --eval` on an AMD EPYC (ResNet-32,
# fp32) measured 552 img/s at batch 128 against 286 at 1000 with one thread, 1096 against 570 with two (ratio
# 1.9; 64 and 256 were slower than 128). A GPU wants large batches.
EVAL_BATCH = {"cpu": 128, "cuda": 1000}


def eval_batch(device: torch.device | str) -> int:
    """The evaluation batch for a device (EVAL_BATCH by type; 1000 for a type it does not name)."""
    return EVAL_BATCH.get(torch.device(device).type, 1000)


@torch.no_grad()
def evaluate(model, x: torch.Tensor, y: torch.Tensor, num_classes: int, mean, std, bf16: bool,
             batch: int | None = None, is_major: torch.Tensor | None = None):
    """Per-class top-1 correct counts, class sizes and the number of top-5 hits (eval mode, no augmentation);
    with `is_major`, also per class the number of examples predicted as a major class (a 4th value).
    batch: images a forward pass (default: eval_batch(x.device))."""
    model.eval()
    batch = batch or eval_batch(x.device)
    correct = torch.zeros(num_classes, device=x.device)
    total = torch.zeros(num_classes, device=x.device)
    to_major = torch.zeros(num_classes, device=x.device)
    top5 = torch.zeros((), device=x.device)
    for i in range(0, len(y), batch):
        xb, yb = normalise(x[i : i + batch], mean, std), y[i : i + batch]
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = model(xb).float()
        pred = logits.argmax(1)
        correct.index_add_(0, yb, (pred == yb).float())
        total.index_add_(0, yb, torch.ones_like(yb, dtype=torch.float))
        if is_major is not None:
            to_major.index_add_(0, yb, is_major[pred].float())
        k = min(5, num_classes)
        top5 += (logits.topk(k, 1).indices == yb[:, None]).any(1).sum()
    return (correct, total, top5, to_major) if is_major is not None else (correct, total, top5)


@torch.no_grad()
def predictions(model, x: torch.Tensor, mean, std, bf16: bool, batch: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image, the top-1 class and the top-5 classes (eval mode, no augmentation), in the order of x."""
    model.eval()
    batch = batch or eval_batch(x.device)
    top1, top5 = [], []
    for i in range(0, len(x), batch):
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = model(normalise(x[i : i + batch], mean, std)).float()
        top1.append(logits.argmax(1))
        top5.append(logits.topk(min(5, logits.shape[1]), 1).indices)
    return torch.cat(top1), torch.cat(top5)


def class_counts_of(pred: torch.Tensor, top5: torch.Tensor, y: torch.Tensor, num_classes: int):
    """`evaluate`'s (correct per class, images per class, top-5 hits) from per-image predictions."""
    correct = torch.zeros(num_classes, device=y.device).index_add_(0, y, (pred == y).float())
    total = torch.zeros(num_classes, device=y.device).index_add_(0, y, torch.ones_like(y, dtype=torch.float))
    return correct, total, (top5 == y[:, None]).any(1).sum().float()


@torch.no_grad()
def correct_mask(model, x: torch.Tensor, y: torch.Tensor, mean, std, bf16: bool, batch: int | None = None) -> list[bool]:
    """Per image, whether the model's top-1 prediction is right (eval mode, no augmentation), in the order of x."""
    model.eval()
    batch = batch or eval_batch(x.device)
    out = []
    for i in range(0, len(y), batch):
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = model(normalise(x[i : i + batch], mean, std)).float()
        out += (logits.argmax(1) == y[i : i + batch]).tolist()
    return out


def make_model(cfg: RunConfig, num_classes: int, normed: bool, device: torch.device) -> torch.nn.Module:
    """The trainer's model: cfg's architecture on `device` in channels_last memory (seed torch first)."""
    return build_model(cfg.resolved_model(), num_classes, normed=normed).to(device, memory_format=torch.channels_last)


def make_optimizer(model: torch.nn.Module, cfg: RunConfig, device: torch.device) -> torch.optim.Optimizer:
    """SGD with cfg's momentum and weight decay; the fused kernel on CUDA."""
    return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                           **({"fused": True} if device.type == "cuda" else {}))


class TrainStep:
    """One training step of the trainer and the per-class statistics it gathers over an epoch.

    A step: augment the uint8 batch on the device, normalise, plan the batch's mixing, forward under bf16
    autocast (when `bf16`), per-example loss reduced with this epoch's class weights, backward, SGD step, and
    the diagnostics (training accuracy, feature-gradient norms, predictions into major classes). Nothing in it
    waits for the device: the few host numbers a step needs (MFW's lam, the selection probabilities) go through
    pinned memory without a synchronisation (`procrustes.method.transfer`).
    `train` runs it; `procrustes.tooling.bench` times it against the reference pipeline.

    The mixing goes through `procrustes.method.weaken`'s forward hooks, the same mechanism a user attaches to their
    own model: one hook per point the config may choose (`plan_points`), each given the batch's plan when the
    plan mixes there. The feature gradients come from a forward pre-hook on `fc`, registered after the
    mixers, so it sees the feature the classifier sees (mixed, when MFW mixes at "feature"). `close()` removes
    every hook."""

    def __init__(self, cfg: RunConfig, model, opt, criterion: Criterion, counts, spec, bf16: bool,
                 gen: torch.Generator, rng: np.random.Generator, is_major: torch.Tensor):
        self.cfg, self.model, self.opt, self.criterion = cfg, model, opt, criterion
        self.counts, self.spec, self.bf16, self.gen, self.rng, self.is_major = counts, spec, bf16, gen, rng, is_major
        self.device = is_major.device
        mixers = staged_point_mixers(model)
        self.mixers = {p: mixers[p].attach() for p in plan_points(cfg)}
        self.grads: list[torch.Tensor] = []
        self._watch = model.fc.register_forward_pre_hook(self._watch_feature)
        self.new_epoch(0, cfg.schedule()[3], torch.ones(len(counts), device=self.device))

    def _watch_feature(self, module, args) -> None:
        """Keep dL/d(feature) of a training pass (the input of fc) for the gradient diagnostics."""
        if args[0].requires_grad:
            args[0].register_hook(self.grads.append)

    def close(self) -> None:
        """Remove the step's hooks: the model is a plain model again."""
        for m in self.mixers.values():
            m.detach()
        self._watch.remove()

    def new_epoch(self, epoch: int, drw_epoch: int, weights: torch.Tensor) -> None:
        """Set the epoch (for mixing schedules) and its class weights, and zero the epoch's statistics."""
        C, dev = len(self.counts), self.device
        self.epoch, self.drw_epoch, self.weights = epoch, drw_epoch, weights
        self.seen, self.correct, self.gsum, self.to_major = (torch.zeros(C, device=dev) for _ in range(4))
        self.loss_sum, self.weakened = torch.zeros((), device=dev), torch.zeros((), device=dev)

    def __call__(self, x_u8: torch.Tensor, y: torch.Tensor, lr: float) -> None:
        """One SGD step at learning rate lr on the uint8 images x_u8 (B, H, W, C) with labels y."""
        for g in self.opt.param_groups:
            g["lr"] = lr
        xb, _, _ = augment(x_u8, self.spec.pad, self.gen)
        x = normalise(xb, self.spec.mean, self.spec.std)
        mix = plan_batch(self.cfg, y, self.counts, self.epoch, self.drw_epoch, self.gen, self.rng)
        for point, mixer in self.mixers.items():
            mixer.set_plan(mix if point == mix.point else None)
        self.grads.clear()
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            logits = self.model(x)
        losses = [self.criterion.per_example(logits, t) for t in mix.targets]
        loss = reduce(losses, mix.targets, mix.coefs, self.weights)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        with torch.no_grad():
            pred = logits.argmax(1)
            ones = torch.ones_like(y, dtype=torch.float)
            self.seen.index_add_(0, y, ones)
            self.correct.index_add_(0, y, (pred == y).float())
            self.to_major.index_add_(0, y, self.is_major[pred].float())
            # |dL/d feature_i| x batch size: for plain CE, the norm of example i's own loss gradient
            self.gsum.index_add_(0, y, self.grads[0].float().norm(dim=1) * len(y))
            self.loss_sum += loss.detach() * len(y)
            if mix.weakened is not None:
                self.weakened += mix.weakened.sum()


def balanced_subset(y: np.ndarray, per_class: int | None) -> np.ndarray:
    """The first `per_class` images of each class (all when None): the per-epoch test set, and the fixed
    training sample of the clean training accuracy (a class with fewer images gives all of them)."""
    if per_class is None:
        return np.arange(len(y))
    return np.sort(np.concatenate([np.where(y == c)[0][:per_class] for c in np.unique(y)]))


def _synced_clock(dev: torch.device) -> float:
    """perf_counter after the device has finished its queued work (CUDA runs asynchronously: without the sync
    a phase's time would land in the next one)."""
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    return time.perf_counter()


def _val_summary(history: dict) -> dict:
    """The last epoch's validation numbers: the score a selection between runs reads (balanced split, so the
    overall accuracy is the mean over classes)."""
    per_class = history["val_acc"][-1]
    return {"val_error": 100.0 * (1 - history["val_top1"][-1]), "val_acc_per_class": per_class}


class TrainingDiverged(RuntimeError):
    """The training loss became nan or infinite: the run is not stored as a result (its numbers mean nothing)."""


def stop_requested() -> bool:
    """Whether $PROCRUSTES_STOP_FILE names a file that exists: then a training run checkpoints at the end of
    its current epoch and returns unfinished (None), and a run not started yet does not start (the GPU harvest
    asks this at its deadline, so that unfinished runs leave a fresh checkpoint to carry to the next lease)."""
    import os

    path = os.environ.get("PROCRUSTES_STOP_FILE")
    return bool(path) and os.path.exists(path)


def checkpoint_every_s() -> float:
    """Seconds between checkpoints from $PROCRUSTES_CHECKPOINT_S; 0 (unset, the default): every epoch, each
    fsynced. The harvest sets it: its store is a temporary folder whose checkpoints matter only once they are in
    the carry archive, so there a checkpoint is written by time (and at a stop and the last epoch), unsynced."""
    import os

    try:
        return max(0.0, float(os.environ.get("PROCRUSTES_CHECKPOINT_S") or 0))
    except ValueError:
        raise ConfigError(f"$PROCRUSTES_CHECKPOINT_S must be a number of seconds, not "
                          f"{os.environ['PROCRUSTES_CHECKPOINT_S']!r}") from None


def run(cfg: RunConfig, *, device="auto", data_root=None, results: Path | None = None, progress: bool = True,
        stop_after: int | None = None, compile: str | bool | None = None, bar_position: int | None = None) -> dict | None:
    """The stored result of cfg on these data if it is finished, else train it (resuming a checkpoint) and
    store it. The data are loaded first: their content id is part of the run's key.

    stop_after: train at most this many epochs in this call and leave a checkpoint (time-sliced jobs);
    returns None when the run is not finished yet. compile: see `compile_mode` (not part of the run's key).
    bar_position: the line of the progress bar (packed runs in one terminal each keep their own line)."""
    validate(cfg)
    use_compile(compile, torch.device("cpu"), 0)  # a bad setting is an error before anything else
    bench = load_benchmark(cfg, data_root)
    done = store.read_result(cfg, results, bench.data["id"])
    if done is not None:
        return done
    return train(cfg, device=device, data_root=data_root, results=results, progress=progress, stop_after=stop_after,
                 bench=bench, compile=compile, bar_position=bar_position)


def train(cfg: RunConfig, *, device="auto", data_root=None, results: Path | None = None, progress: bool = True,
          stop_after: int | None = None, bench=None, compile: str | bool | None = None,
          bar_position: int | None = None) -> dict | None:
    """Train cfg (resuming its checkpoint when there is one) and store its result; `bench`: the loaded data.
    On CUDA cudnn.benchmark is on while it trains (fixed shapes: it picks the fastest convolutions).
    One training of a run at a time: the run folder's lock (store.lock_run) is held from before the checkpoint is
    read until the result is stored; another process holding it is a store.RunLocked error, and a result that
    process stored meanwhile is returned, not trained again."""
    validate(cfg)
    dev = resolve_device(device)
    bf16 = use_bf16(cfg.precision, dev)
    bench = bench if bench is not None else load_benchmark(cfg, data_root)
    mode = compile_mode(compile, dev, cfg.epochs * len(bench.train_y))
    lock = store.lock_run(store.run_dir(cfg, results, bench.data["id"]), cfg.label())
    old_benchmark = torch.backends.cudnn.benchmark
    try:
        store.check_run_files(store.run_dir(cfg, results, bench.data["id"]))
        import warnings

        with warnings.catch_warnings():  # run() has reported a damaged result already
            warnings.simplefilter("ignore", store.DamagedResult)
            done = store.read_result(cfg, results, bench.data["id"])
        if done is not None:  # stored by another process after run() looked, before this one took the lock
            return done
        if dev.type == "cuda":
            torch.backends.cudnn.benchmark = True
        return _train(cfg, dev, bf16, bench, results, progress, stop_after, mode, bar_position)
    finally:
        torch.backends.cudnn.benchmark = old_benchmark
        lock.close()


@dataclass
class DeviceData:
    """A run's images on the device (uint8) and the index sets its evaluations read."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    curve_idx: torch.Tensor  # the per-epoch test curve (cfg.eval_per_class a class)
    final_idx: torch.Tensor  # the final test set (cfg.test_per_class a class)
    clean_idx: torch.Tensor  # the clean training accuracy's fixed sample (cfg.clean_per_class a class)
    val: tuple[torch.Tensor, torch.Tensor] | None  # the validation split (cfg.val_per_class), or None
    is_major: torch.Tensor


def device_data(cfg: RunConfig, bench, dev: torch.device) -> DeviceData:
    def t(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a).to(dev)

    return DeviceData(t(bench.train_x), t(bench.train_y), t(bench.test_x), t(bench.test_y),
                      t(balanced_subset(bench.test_y, cfg.eval_per_class)), t(balanced_subset(bench.test_y, cfg.test_per_class)),
                      t(balanced_subset(bench.train_y, cfg.clean_per_class)),
                      None if bench.val_x is None else (t(bench.val_x), t(bench.val_y)), t(major_classes(bench.counts)))


HISTORY_KEYS = ("epoch", "lr", "train_loss", "train_acc", "feature_grad", "pred_major_share", "weakened_share", "test_acc",
                "test_top1", "seconds", "train_acc_clean", "pred_major_share_clean")


@dataclass
class Progress:
    """What a checkpoint carries besides the weights and the random states: the history and the clocks."""

    history: dict
    epoch: int = 0  # epochs done
    wall: float = 0.0
    train_wall: float = 0.0
    eval_wall: float = 0.0  # seconds spent evaluating (test curve, clean accuracy, validation, final test); nan:
    # resumed from a checkpoint that predates it
    images: int = 0
    started: str = ""
    commits: list = field(default_factory=list)
    compile_log: list = field(default_factory=list)  # CompileWatch.record of each (re)start
    segments: list = field(default_factory=list)  # segment() of each (re)start: a run resumed elsewhere lists each machine


def resume(ckpt_path: Path, dev: torch.device, used: str, cfg: RunConfig, model, opt, gen, rng, fresh: Progress,
           data_id: str | None = None) -> Progress:
    """Load the run's checkpoint into model, optimiser and generators, and return its progress; `fresh` when there
    is none (a damaged one is set aside by the store and the run starts over). A checkpoint of another run (its
    config or its data id differ from this run's, or it records neither) is set aside the same way, with a
    one-line warning: it is never resumed under this run's key."""
    ck = store.load_checkpoint(ckpt_path, dev)
    if ck is None:
        return fresh
    why = foreign_checkpoint(ck, cfg, data_id)
    if why:
        import warnings

        kept = store.set_aside(ckpt_path, "foreign")
        warnings.warn(f"checkpoint {ckpt_path} {why}: set aside as {kept.name}; the run starts over",
                      store.DamagedResult, stacklevel=2)
        return fresh
    check_resume_precision(ck, used, cfg.precision, ckpt_path)
    model.load_state_dict(ck["model"])
    opt.load_state_dict(ck["opt"])
    gen.set_state(ck["gen"].cpu())
    rng.bit_generator.state = ck["rng"]
    commits = list(dict.fromkeys(ck.get("commits", []) + fresh.commits))  # a resumed run may span commits
    segments = list(ck.get("segments") or [])
    if not segments and ck["epoch"] > 0:  # a checkpoint from before segments were recorded: its machine is unknown
        segments = [{"from_epoch": 0, "device_name": UNRECORDED, "commit": ", ".join(ck.get("commits", [])),
                     "torch": UNRECORDED, "started_utc": ck["started"]}]
    return Progress(ck["history"], ck["epoch"], ck["wall"], ck["train_wall"], ck.get("eval_wall", float("nan")),
                    ck["images"], ck["started"], commits, list(ck.get("compile_log", [])), segments)


UNRECORDED = "unrecorded"


def segment(dev: torch.device, epoch: int) -> dict:
    """Where one (re)start of a run trains from `epoch` (0-based) on: the machine, the code and torch. Numerics
    depend on the machine (its vector instructions), so a run resumed on another one says so in its provenance."""
    return {"from_epoch": epoch, "device_name": store.device_name(dev), "commit": CODE_COMMIT, "torch": str(torch.__version__),
            "started_utc": store.now_utc()}


def foreign_checkpoint(ck: dict, cfg: RunConfig, data_id: str | None) -> str:
    """Why checkpoint `ck` is not one of the run (cfg on the data `data_id`), or "" when it is: its recorded
    config must be cfg's (to_dict) and its data's content id this run's."""
    had = ck.get("config")
    if not isinstance(had, dict):
        return "records no config (it cannot be told from another run's)"
    if had != cfg.to_dict():
        diff = sorted(k for k in set(had) | set(cfg.to_dict()) if had.get(k) != cfg.to_dict().get(k))
        return f"belongs to another run (its config differs in {', '.join(diff)})"
    if data_id is not None:
        rec = ck.get("data")
        rid = rec.get("id") if isinstance(rec, dict) else None
        if rid != data_id:
            return f"was trained on other data ({str(rid)[:8]}, this run's {data_id[:8]})"
    return ""


def train_epoch(step: TrainStep, cfg: RunConfig, data: DeviceData, epoch: int, bar) -> float:
    """One epoch of SGD steps over this epoch's sample order; returns the last step's learning rate."""
    counts, drw_epoch = step.counts, cfg.schedule()[3]
    n, B = len(data.train_y), cfg.batch_size
    steps = math.ceil(n / B)
    step.model.train()
    step.new_epoch(epoch, drw_epoch, class_weights(cfg.loss, counts, epoch, drw_epoch, cfg.cb_beta).to(data.train_y.device))
    idx = epoch_indices(cfg.sampler, data.train_y, counts, epoch, cfg.epochs, drw_epoch, step.gen)
    for s in range(steps):
        lr = lr_at(cfg, epoch * steps + s, steps)
        bi = idx[s * B : (s + 1) * B]
        step(data.train_x[bi], data.train_y[bi], lr)
        bar.update(1)
    return lr


def full_test_epoch(cfg: RunConfig, epoch: int) -> bool:
    """Whether the final test set is evaluated after `epoch` (0-based): at the last epoch always, every
    cfg.full_test_every epochs, and at every epoch at the final learning rate when cfg.full_test_final_lr.
    Best-on-test (`summarise`) is the best of these evaluations."""
    done = epoch + 1
    if done == cfg.epochs:
        return True
    if cfg.full_test_every and done % cfg.full_test_every == 0:
        return True
    return cfg.full_test_final_lr and epoch >= cfg.schedule()[1][-1]


def evaluate_epoch(model, cfg: RunConfig, data: DeviceData, spec, bf16: bool, last: bool, full: bool = False) -> dict:
    """After an epoch: the test set (the curve's subset, the final set at the last epoch, nothing in between when
    eval_per_class is 0), the clean training accuracy and the validation split; counts per class. full (an
    epoch of `full_test_epoch` before the last): the final test set too, under "full" (the curve then also
    comes from it, on the curve's images: one forward pass of each test image)."""
    C = len(data.is_major)
    out = {}
    if full and not last:
        pred, top5 = predictions(model, data.test_x[data.final_idx], spec.mean, spec.std, bf16)
        y = data.test_y[data.final_idx]
        out["full"] = class_counts_of(pred, top5, y, C)
        if cfg.eval_per_class != 0:
            keep = torch.isin(data.final_idx, data.curve_idx)
            out["test"] = class_counts_of(pred[keep], top5[keep], y[keep], C)
    elif last or cfg.eval_per_class != 0:
        ev = data.final_idx if last else data.curve_idx
        out["test"] = evaluate(model, data.test_x[ev], data.test_y[ev], C, spec.mean, spec.std, bf16)
        if last:
            out["full"] = out["test"]
    # clean training accuracy: eval mode, no augmentation, no mixing, a fixed sample of the training set
    out["clean"] = evaluate(model, data.train_x[data.clean_idx], data.train_y[data.clean_idx], C, spec.mean, spec.std,
                            bf16, is_major=data.is_major)
    if data.val is not None:  # the validation split: what a choice between runs may look at (never the test set)
        out["val"] = evaluate(model, data.val[0], data.val[1], C, spec.mean, spec.std, bf16)
    return out


def record(history: dict, step: TrainStep, epoch: int, lr: float, n: int, ev: dict) -> None:
    """Append one epoch's statistics to the history (per class where the key is per class)."""
    seen = step.seen.clamp(min=1)
    history["epoch"].append(epoch + 1)
    history["lr"].append(lr)
    history["train_loss"].append(float(step.loss_sum) / n)
    history["train_acc"].append((step.correct / seen).tolist())
    history["feature_grad"].append((step.gsum / seen).tolist())
    history["pred_major_share"].append((step.to_major / seen).tolist())
    history["weakened_share"].append(float(step.weakened) / n)
    tc, tt, _ = ev.get("test", (None, None, None))
    history["test_acc"].append((tc / tt.clamp(min=1)).tolist() if tc is not None else None)
    history["test_top1"].append(float(tc.sum() / tt.sum()) if tc is not None else None)
    if "full_test_top1" in history:  # the final test set, where this epoch evaluated it (full_test_epoch)
        fc, ft, _ = ev.get("full", (None, None, None))
        history["full_test_top1"].append(float(fc.sum() / ft.sum()) if fc is not None else None)
    cc, ct, _, cm = ev["clean"]
    history["train_acc_clean"].append((cc / ct.clamp(min=1)).tolist())
    history["pred_major_share_clean"].append((cm / ct.clamp(min=1)).tolist())
    if "val" in ev:
        vc, vt, _ = ev["val"]
        history["val_acc"].append((vc / vt.clamp(min=1)).tolist())
        history["val_top1"].append(float(vc.sum() / vt.sum()))


def checkpoint(path: Path, model, opt, gen, rng, p: Progress, cfg: RunConfig, bench, used: str, fsync: bool = True) -> None:
    store.atomic_torch_save(path, {"model": model.state_dict(), "opt": opt.state_dict(), "gen": gen.get_state(),
                                   "rng": rng.bit_generator.state, "history": p.history, "epoch": p.epoch, "wall": p.wall,
                                   "train_wall": p.train_wall, "eval_wall": p.eval_wall, "images": p.images,
                                   "started": p.started, "commits": p.commits, "config": cfg.to_dict(), "data": bench.data,
                                   "precision": used, "compile_log": p.compile_log, "segments": p.segments}, fsync=fsync)


def _train(cfg: RunConfig, dev: torch.device, bf16: bool, bench, results, progress: bool, stop_after: int | None,
           mode: str | None, bar_position: int | None = None) -> dict | None:
    """The training loop: set up, resume, then per epoch train, evaluate, record, checkpoint; then finish."""
    from tqdm.auto import tqdm

    out = store.run_dir(cfg, results, bench.data["id"])
    store.remove_stale_temps(out)
    data = device_data(cfg, bench, dev)
    criterion = Criterion(cfg.loss, bench.counts, focal_gamma=cfg.focal_gamma, ldam_max_margin=cfg.ldam_max_margin,
                          ldam_scale=cfg.ldam_scale, la_tau=cfg.la_tau, device=dev)
    torch.manual_seed(cfg.seed)
    model = make_model(cfg, len(bench.counts), criterion.uses_cosine, dev)
    opt = make_optimizer(model, cfg, dev)
    gen = torch.Generator(device=dev).manual_seed(cfg.seed)  # augmentation, sampling, partners, selection
    rng = np.random.default_rng(cfg.seed)  # laws of lam, random mixing points
    used = "bf16" if bf16 else "fp32"  # what this run computes in: checkpoint, resume check and provenance
    keys = HISTORY_KEYS + (("val_acc", "val_top1") if data.val is not None else ()) + \
        (("full_test_top1",) if cfg.full_test_every or cfg.full_test_final_lr else ())
    fresh = Progress({k: [] for k in keys}, started=store.now_utc(), commits=[CODE_COMMIT])
    p = resume(out / "checkpoint.pt", dev, used, cfg, model, opt, gen, rng, fresh, bench.data["id"])
    store.write_config(out, cfg)
    if mode is not None:
        fresh_compiler()
        model.compile(mode=mode)  # in place, after the checkpoint is loaded: state_dict keys stay those of the plain model

    n, steps = len(data.train_y), math.ceil(len(data.train_y) / cfg.batch_size)
    bar = tqdm(total=cfg.epochs * steps, initial=p.epoch * steps, desc=cfg.label(), disable=not progress,
               unit="step", mininterval=1.0, dynamic_ncols=True, position=bar_position)
    start, end = p.epoch, cfg.epochs if stop_after is None else min(cfg.epochs, p.epoch + stop_after)
    end = start if stop_requested() else end  # asked to stop before it started: nothing new to save
    step = TrainStep(cfg, model, opt, criterion, bench.counts, bench.spec, bf16, gen, rng, data.is_major)
    every_s, saved_at = checkpoint_every_s(), time.perf_counter()
    watch = CompileWatch.start(mode, start)
    if end > start:
        p.compile_log.append(watch.record)
        p.segments.append(segment(dev, start))
    for epoch in range(start, end):
        t0 = time.perf_counter()
        lr = train_epoch(step, cfg, data, epoch, bar)
        train_s = _synced_clock(dev) - t0
        ev = evaluate_epoch(model, cfg, data, bench.spec, bf16, last=epoch == cfg.epochs - 1,
                            full=bool(cfg.full_test_every or cfg.full_test_final_lr) and full_test_epoch(cfg, epoch))
        record(p.history, step, epoch, lr, n, ev)
        watch.after_epoch(epoch + 1)
        if not math.isfinite(p.history["train_loss"][-1]):
            raise TrainingDiverged(f"{cfg.label()} diverged at epoch {epoch + 1} (training loss "
                                   f"{p.history['train_loss'][-1]}): lower lr ({cfg.lr:g}) or check the loss settings")
        epoch_s = _synced_clock(dev) - t0
        p.history["seconds"].append(round(epoch_s, 3))
        p.epoch, p.wall, p.train_wall, p.eval_wall, p.images = (epoch + 1, p.wall + epoch_s, p.train_wall + train_s,
                                                                p.eval_wall + epoch_s - train_s, p.images + n)
        shown = {"val": p.history["val_top1"][-1]} if data.val is not None else {"test": p.history["test_top1"][-1]}
        bar.set_postfix(loss=f"{p.history['train_loss'][-1]:.3f}", **{k: f"{v:.3f}" for k, v in shown.items() if v is not None},
                        refresh=False)
        stop = stop_requested()
        if every_s and not stop and epoch + 1 < end and time.perf_counter() - saved_at < every_s:
            continue  # checkpoints by time ($PROCRUSTES_CHECKPOINT_S): this epoch's is not due yet
        checkpoint(out / "checkpoint.pt", model, opt, gen, rng, p, cfg, bench, used, fsync=not every_s)
        saved_at = time.perf_counter()
        if stop and epoch + 1 < cfg.epochs:
            end = epoch + 1  # asked to stop: unfinished, resumes from this checkpoint
            break
    bar.close()
    step.close()
    if end < cfg.epochs:
        return None
    return finish(cfg, dev, bench, data, model, bf16, ev if end > start else None, p, used, mode, out)


def finish(cfg: RunConfig, dev: torch.device, bench, data: DeviceData, model, bf16: bool, ev: dict | None, p: Progress,
           used: str, mode: str | None, out: Path) -> dict:
    """Store a finished run: the last epoch's evaluation on the final test set (done now when every epoch was
    checkpointed but the result was not stored), which validation images the model gets right, the summary and
    provenance; weights first, then the result, each atomically."""
    t0 = _synced_clock(dev)
    if ev is None:
        ev = {"test": evaluate(model, data.test_x[data.final_idx], data.test_y[data.final_idx], len(bench.counts),
                               bench.spec.mean, bench.spec.std, bf16)}
    val_correct = None
    if data.val is not None:  # which validation images the final model gets right: paired comparisons between runs
        val_correct = "".join("1" if ok else "0" for ok in correct_mask(model, *data.val, bench.spec.mean, bench.spec.std, bf16))
    p.eval_wall += _synced_clock(dev) - t0
    result = {
        "key": store.run_key(cfg, bench.data["id"]),
        "config": cfg.to_dict(),
        "summary": summarise(cfg, bench, ev["test"], p.history, val_correct),
        "history": p.history,
        "data": bench.data,
        "provenance": store.provenance(dev, p.started, p.wall, p.images / max(p.train_wall, 1e-9), used, p.commits,
                                       compile_mode=mode, eval_batch=eval_batch(dev), eval_s=p.eval_wall,
                                       compile_log=p.compile_log, segments=p.segments),
    }
    # weights first, then the result, each atomically: a kill anywhere leaves either a finished run with its
    # weights, or the last checkpoint (at the final epoch), from which a rerun writes both
    store.save_finished(out, model.state_dict(), result)
    (out / "checkpoint.pt").unlink(missing_ok=True)
    return result


def best_on_test(history: dict) -> dict:
    """The best accuracy on the final test set over the epochs that evaluated it (`full_test_epoch`), and that
    epoch: the number the LDAM-DRW reference code reports (it keeps the best test epoch). Chosen on the test set,
    so it is shown beside the last-epoch number, labelled best-on-test, never instead of it. {} when the run
    evaluated the final test set at the last epoch only."""
    full = history.get("full_test_top1")
    if not full:
        return {}
    epochs = [(acc, ep) for acc, ep in zip(full, history["epoch"]) if acc is not None]
    acc, ep = max(epochs, key=lambda t: (t[0], -t[1]))  # the earliest of equal bests
    return {"best_test_acc": acc, "best_test_error": 100.0 * (1 - acc), "best_test_epoch": ep,
            "full_test_epochs": len(epochs)}


def summarise(cfg: RunConfig, bench, test: tuple, history: dict, val_correct: str | None) -> dict:
    """The summary of a finished run: last-epoch errors, per class and per reporting group, and the validation."""
    tc, tt, top5 = test
    counts = bench.counts
    per_class = (tc / tt.clamp(min=1)).cpu().numpy()
    scale = group_scale(cfg.dataset, cfg.max_per_class)
    groups = report_groups(counts, cfg.imbalance, scale)
    warm, miles, factors, drw_epoch = cfg.schedule()
    val = {} if val_correct is None else {**_val_summary(history), "val_correct": val_correct, "val_images": len(val_correct)}
    return {
        "test_acc": float(tc.sum() / tt.sum()),
        "test_error": 100.0 * (1 - float(tc.sum() / tt.sum())),
        "top5_error": 100.0 * (1 - float(top5) / float(tt.sum())),
        "best_epoch_test_acc": max(history["test_top1"]) if cfg.eval_per_class == cfg.test_per_class else None,
        **best_on_test(history),
        **val,
        "test_acc_per_class": per_class.tolist(),
        "group_test_acc": {g: float(per_class[c].mean()) if c else None for g, c in groups.items()},
        "groups": groups,
        "group_definition": report_group_definition(counts, cfg.imbalance, scale),
        "train_counts": list(map(int, counts)),
        "classes": bench.classes,
        "test_images": int(tt.sum()),
        "schedule": {"warmup_epochs": warm, "lr_milestones": list(miles), "lr_factors": list(factors), "drw_epoch": drw_epoch},
    }
