"""Major feature weakening (MFW) for any PyTorch model, at a submodule named by its dotted path.

    w = MajorFeatureWeakening(model, layer="layer2", class_counts=counts, select="median", lam="uniform",
                              lam_min=0.5, prob=1.0, seed=0)
    with w:                                    # or w.attach() ... w.detach()
        for x, y in loader:
            w.set_labels(y)                    # before EACH training forward pass
            loss = F.cross_entropy(model(x), y)  # the label is KEPT (not mixed)
            opt.zero_grad(); loss.backward(); opt.step()

A standard forward hook (`register_forward_hook`, returning the mixed output) replaces the layer's output h by
lam_i h_i + (1 - lam_i) h_perm(i) for the examples MFW selects; the model's code is not touched and `detach()`
(or leaving the `with` block) removes the hook. The draws and the math are those of the trainer, one
implementation in `procrustes.method.mixing` (`selection_probs`, `draw_lam`, `draw_mfw`, `mix_features`): with the
same generators, weakening the output of "stages.stage1" of `procrustes.method.models.resnet32` computes exactly
what the trainer computes, since the trainer mixes through these very hooks (`staged_point_mixers`;
tests/test_weaken.py checks it bit for bit against the mixing written in line).

`ManifoldMixup` is the same path for the label-mixing relatives (manifold mixup, and Remix at a layer): it
mixes labels too, so the loss needs the plan's targets and coefficients: `loss = w.loss(model(x))`.

Rules (each broken one raises `WeakeningError`, a ValueError, with a one-line message):
- set_labels(y) before each forward pass in training mode (`model.training`); a training forward pass without
  fresh labels is an error (stale labels from the previous pass are never reused). Eval mode is untouched and
  needs no labels. For another training-mode pass (without weakening) use `with w.paused(): ...`.
- the layer's output (or, with where="input", its first positional input) is a tensor with one axis per
  example, `batch_dim` (NCHW or channels_last maps, (B, N, D) tokens, (B, D) vectors: 0), or a tuple whose FIRST
  element is such a tensor: only that element is mixed, the others pass unchanged (e.g. nn.MultiheadAttention's
  (out, weights)). batch_dim defaults to 1 for torch's sequence-first modules (`batch_first=False`: nn.LSTM,
  nn.GRU, nn.RNN, nn.MultiheadAttention, nn.Transformer*Layer), else 0; pass it for any other layout (e.g. your
  own (L, B, D) module). Only the size at batch_dim is checked: a tensor whose size there merely equals the batch
  size (sequence length L == B, a non-batch tensor) is mixed along that axis, so name the right axis and layer.
- an RNN's final state h_n (and an LSTM's c_n) is not mixed, only its output sequence: a head that reads h_n
  sees no weakening (a WeakeningWarning says so): hook the head's input instead (where="input").
- single device: the plan follows the feature's device, but a module run on several replicas
  (nn.DataParallel) sees parts of the batch and fails the batch-size check. A layer called twice in one
  forward pass, or re-run by activation checkpointing, also fails (its labels are stale on the second call).
- mixing happens in the dtype of the hooked tensor, as in the trainer: under bf16 autocast that is bf16 after a
  convolution or a linear layer (the trainer's ResNets), but fp32 after an operation autocast runs in fp32
  (LayerNorm, softmax, ...) or one that promotes to fp32 (a product with an fp32 parameter): torchvision's
  ConvNeXt blocks end with one (layer scale), so their output (features.1, features.3, ...) is fp32, and so is
  its mixing, while its downsampling layers (features.2, ...) give bf16.
- "the others stay as they were" holds at the hooked layer only: an example MFW does not select keeps its
  feature there bit for bit, but a BatchNorm after the layer in training mode normalises with batch statistics
  that include the mixed examples, so the non-selected (minor-class) examples' later features and logits change
  too (slightly). Eval mode, and layers without batch statistics (LayerNorm, GroupNorm), do not mix examples.
- a deep copy (or pickle) of a model with an attached hook is a plain model: its copy of the hook does nothing
  (`detach()` could not reach it, nor `set_labels`).
"""
from __future__ import annotations

import contextlib
import difflib
import math
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .choices import MFW_LAM, MFW_SELECT
from .mixing import BatchMix, draw_mfw, mix_features, mixup_targets, selection_probs

WHERE = ("output", "input")


class WeakeningError(ValueError):
    """Misuse of MajorFeatureWeakening / ManifoldMixup: a one-line message that says what to do."""


def find_layer(model: nn.Module, layer: str) -> nn.Module:
    """model's submodule at the dotted path `layer` ("layer2", "features.6", "encoder.layers.3"); "" is the
    model itself. WeakeningError with the closest names when there is none."""
    if not isinstance(layer, str):
        raise WeakeningError(f"layer must be a dotted submodule name (str), not {type(layer).__name__}")
    try:
        return model.get_submodule(layer)
    except AttributeError:
        names = [n for n, _ in model.named_modules() if n]
        close = difflib.get_close_matches(layer, names, n=5, cutoff=0.6)
        hint = f"close matches: {', '.join(close)}" if close else \
            f"its top-level submodules: {', '.join(n for n, _ in model.named_children()) or '(none)'}"
        raise WeakeningError(f"no submodule {layer!r} in {type(model).__name__}; {hint}") from None


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise WeakeningError(message)


def _number(value: Any, name: str, lo: float, hi: float = math.inf, strict: bool = False) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > lo if strict else value >= lo) and value <= hi
    _check(ok, f"impossible {name} {value!r}: a finite number in {'(' if strict else '['}{lo:g}, {hi:g}]")
    return float(value)


class _Used:
    """The state after a training forward pass consumed the labels (stale until set_labels again)."""


_UNSET, _USED = object(), _Used()


class LayerMixing:
    """Mix the feature at one named submodule with a per-batch plan (a `procrustes.method.mixing.BatchMix`), through a
    forward hook (where="output", the module's output) or a forward pre-hook (where="input", its first
    positional input; with layer="" that is the model's input). The subclasses make the plans from labels;
    `set_plan` gives one directly (None: nothing to mix in the next pass)."""

    def __init__(self, model: nn.Module, layer: str, where: str = "output", batch_dim: int | None = None):
        _check(isinstance(model, nn.Module), f"model must be a torch.nn.Module, not {type(model).__name__}")
        _check(where in WHERE, f"unknown where {where!r}: choose output or input")
        _check(layer != "" or where == "input",
               'layer "" is the whole model: name a submodule, or mix the model\'s input with where="input"')
        _check(batch_dim is None or (isinstance(batch_dim, int) and not isinstance(batch_dim, bool) and batch_dim >= 0),
               f"impossible batch_dim {batch_dim!r}: the index (>= 0) of the batch axis of the mixed tensor, or None")
        self.model, self.layer, self.where = model, layer, where
        self.module = find_layer(model, layer)
        self.batch_dim = default_batch_dim(self.module) if batch_dim is None else batch_dim
        _warn_unmixed_state(self.module, layer, where)
        self.plan: BatchMix | None = None  # the plan of the last set_labels / set_plan
        self._state: Any = _UNSET
        self._handle = None
        self._paused = False

    def __repr__(self) -> str:
        at = "input of" if self.where == "input" else "output of"
        state = "attached" if self.attached else "detached"
        return f"{type(self).__name__}({at} {self.layer or type(self.model).__name__!r}, {state})"

    # ---- attach / detach ----------------------------------------------------------------------------
    @property
    def attached(self) -> bool:
        return self._handle is not None

    def attach(self) -> "LayerMixing":
        """Register the hook (returns self); WeakeningError when already attached. Labels set before stay set."""
        _check(not self.attached, f"{self!r} is already attached")
        if self.where == "output":
            self._handle = self.module.register_forward_hook(_Hook(self._forward_hook))
        else:
            self._handle = self.module.register_forward_pre_hook(_Hook(self._pre_hook))
        return self

    def detach(self) -> None:
        """Remove the hook and forget unused labels: the model is exactly as before attach(). Safe to call
        when not attached."""
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
        self._state = _UNSET

    def __enter__(self) -> "LayerMixing":
        return self.attach()

    def __exit__(self, *exc) -> None:
        self.detach()

    @contextlib.contextmanager
    def paused(self):
        """Training-mode forward passes inside the block are left alone and consume no labels."""
        old, self._paused = self._paused, True
        try:
            yield self
        finally:
            self._paused = old

    # ---- plans ----------------------------------------------------------------------------------------
    def set_plan(self, plan: BatchMix | None) -> None:
        """The plan of the next training forward pass (perm and lam per example); None: mix nothing in it."""
        self.plan = plan
        self._state = plan

    def _labels(self, y) -> torch.Tensor:
        y = torch.as_tensor(y)
        _check(y.dim() == 1 and not y.is_floating_point() and not y.is_complex() and y.dtype != torch.bool,
               f"labels must be a 1-D tensor of class indices, got {tuple(y.shape)} {y.dtype}")
        _check(y.numel() >= 1, "labels of an empty batch")
        return y.long()

    def loss(self, logits: torch.Tensor, loss_fn: Callable = F.cross_entropy) -> torch.Tensor:
        """The batch loss with the plan's targets and coefficients: sum_k sum_i coef_ki l(logits_i, t_ki) /
        sum_k sum_i coef_ki (`procrustes.method.losses.reduce`, unit class weights). For MFW it is the plain mean of
        loss_fn(logits, y) (labels kept); for manifold mixup / Remix the mixed-label loss. loss_fn(logits,
        target, reduction="none") must give per-example losses."""
        from .losses import reduce

        _check(self.plan is not None, f"{self!r}: no plan: call set_labels(y) before the forward pass")
        dev = logits.device
        targets, coefs = [t.to(dev) for t in self.plan.targets], [c.to(dev) for c in self.plan.coefs]
        losses = [loss_fn(logits, t, reduction="none") for t in targets]
        return reduce(losses, targets, coefs, torch.ones(logits.shape[-1], device=dev))

    # ---- the hooks --------------------------------------------------------------------------------------
    def _take(self) -> BatchMix | None:
        """The plan of this forward pass (consumed), or None to leave the feature alone."""
        if not self.model.training or self._paused:
            return None
        state = self._state
        if state is _UNSET:
            raise WeakeningError(f"{self!r}: no labels for this training forward pass: call set_labels(y) "
                                 f"before each one (or run it in eval mode, or inside `with w.paused():`)")
        if state is _USED:
            raise WeakeningError(f"{self!r}: stale labels: the last set_labels(y) was already used by a forward "
                                 f"pass; call set_labels(y) before each training forward pass")
        self._state = _USED
        return state if state is not None and state.perm is not None else None

    def _mix(self, h: Any, plan: BatchMix, what: str) -> torch.Tensor:
        _check(isinstance(h, torch.Tensor),
               f"{what} of {self.layer!r} is a {type(h).__name__}: expected a tensor, or a tuple whose first element is one")
        b, d = plan.perm.numel(), self.batch_dim
        _check(h.dim() > d, f"{what} of {self.layer!r} has no batch dimension {d} (shape {tuple(h.shape)}); "
                            f"labels are for {b} examples")
        _check(h.shape[d] == b, f"batch size differs: labels for {b} examples, {what} of {self.layer!r} has shape "
                                f"{tuple(h.shape)} (batch_dim {d}: pass the batch axis as batch_dim=)")
        perm, lam = plan.perm.to(h.device), plan.lam.to(h.device)
        if d == 0:
            return mix_features(h, perm, lam)
        return mix_features(h.movedim(d, 0), perm, lam).movedim(0, d)

    def _forward_hook(self, module: nn.Module, args: tuple, output: Any) -> Any:
        plan = self._take()
        if plan is None:
            return None  # output unchanged
        if isinstance(output, tuple) and output:  # mix the first element, keep the others
            rest = [self._mix(output[0], plan, "the first element of the output")] + list(output[1:])
            return type(output)(*rest) if hasattr(output, "_fields") else tuple(rest)
        return self._mix(output, plan, "the output")

    def _pre_hook(self, module: nn.Module, args: tuple) -> Any:
        plan = self._take()
        if plan is None:
            return None
        _check(len(args) >= 1, f"{self.layer or 'the model'!r} was called without a positional input to mix")
        return (self._mix(args[0], plan, "the input"),) + tuple(args[1:])

    # ---- generators -------------------------------------------------------------------------------------
    def _init_generators(self, seed: int, generator: torch.Generator | None, rng: np.random.Generator | None) -> None:
        _check(isinstance(seed, int) and not isinstance(seed, bool) and 0 <= seed < 2**63, f"impossible seed {seed!r}")
        self.seed, self._gen, self.rng = seed, generator, rng if rng is not None else np.random.default_rng(seed)

    def _generator(self, device: torch.device) -> torch.Generator:
        """The torch generator of the draws on the labels' device (made from `seed` on first use)."""
        if self._gen is None:
            self._gen = torch.Generator(device=device).manual_seed(self.seed)
        gdev = torch.device(self._gen.device)
        _check(gdev.type == device.type, f"labels on {device} but the generator is on {gdev}: keep the labels "
                                         f"on one device (or pass generator= on theirs)")
        return self._gen


class WeakeningWarning(UserWarning):
    """A hooked layer whose output the mixing may not reach (e.g. an RNN's h_n)."""


class _Hook:
    """The registered hook: calls the mixer's method. A deep copy of the model (an EMA copy, copy.deepcopy) gets
    a hook that does nothing, and so does an unpickled one: the copy's mixer would be out of reach of
    `detach()` and of `set_labels`, so the copy is a plain model."""

    def __init__(self, fn: Callable):
        self.fn = fn

    def __call__(self, *args):
        return self.fn(*args)

    def __deepcopy__(self, memo) -> Callable:
        return _inert_hook

    def __reduce__(self):
        return (_make_inert_hook, ())


def _inert_hook(*args) -> None:
    """What a copied model's hook does: nothing (the output or input stays as it is)."""
    return None


def _make_inert_hook() -> Callable:
    return _inert_hook


def default_batch_dim(module: nn.Module) -> int:
    """The batch axis of a module's output and first input: 1 for the sequence-first torch modules
    (`batch_first=False`: nn.RNN/LSTM/GRU, nn.MultiheadAttention, nn.Transformer*Layer), else 0. A tensor
    whose batch axis is elsewhere, or a layer whose output is not per example, needs batch_dim= (or another
    layer): a size that merely equals the batch size there cannot be told apart from the batch."""
    return 1 if getattr(module, "batch_first", None) is False else 0


def _warn_unmixed_state(module: nn.Module, layer: str, where: str) -> None:
    """An RNN's output is (output, h_n) (LSTM: (output, (h_n, c_n))): only `output` is mixed, so a head that
    reads h_n would see no weakening at all."""
    import warnings

    if where == "output" and isinstance(module, nn.RNNBase):
        warnings.warn(f"{layer!r} is an {type(module).__name__}: only its output sequence is mixed, its final state "
                      f"h_n{' and c_n' if isinstance(module, nn.LSTM) else ''} is not; a head that reads h_n sees no "
                      f"weakening (mix the input of the head instead: where='input' at its layer)",
                      WeakeningWarning, stacklevel=3)


def staged_point_mixers(model: nn.Module) -> dict[str, LayerMixing]:
    """One (detached) LayerMixing per mixing point of this package's StagedNet (`procrustes.method.models`): "input"
    is the model's input, "feature" the input of `fc`, any other point the output of `stages.<point>`. Giving a
    batch's BatchMix to the mixer of mix.point (and None to the others) mixes there and nowhere else: how
    `procrustes.training.train.TrainStep` mixes (bit for bit what `procrustes.tooling.bench_hooks.inline_mixed_forward` computes)."""
    _check(hasattr(model, "points") and hasattr(model, "stages"), f"{type(model).__name__} is not a procrustes StagedNet")
    where = {"input": ("", "input"), "feature": ("fc", "input")}
    return {p: LayerMixing(model, *where.get(p, (f"stages.{p}", "output"))) for p in model.points}


class MajorFeatureWeakening(LayerMixing):
    """MFW at the output (or input) of `model`'s submodule `layer`, the reconstructed method of the paper.

    Per training batch (after set_labels(y)): example i is selected with probability p(y_i) from the class
    counts (`select`: median, power, inverse, all; `prob` the largest, `gamma` the exponent of power), a partner
    perm(i) is drawn from the batch and lam_i from `lam` (uniform on [lam_min, 1], beta(alpha, alpha),
    beta-folded); the feature h_i of a selected example becomes lam_i h_i + (1 - lam_i) h_perm(i), the others
    stay exactly as they were at this layer (a train-mode BatchNorm after it still mixes batch statistics into
    them: see the module's notes), and the label y_i is kept. `batch_dim`: the batch axis of the hooked tensor
    (None: 1 for sequence-first torch modules, else 0). `until_epoch`: weakening stops from that epoch on
    (set_epoch(e) each epoch; None: always), like mfw_active="until-drw". Draws come from `generator` (torch,
    partners and coins) and `rng` (numpy, lam), made from `seed` unless given: the trainer's two streams.
    `set_labels` returns the plan (a `BatchMix`: perm, lam, the `weakened` mask).
    """

    def __init__(self, model: nn.Module, layer: str, class_counts, *, select: str = "median", prob: float = 1.0,
                 gamma: float = 1.0, lam: str = "uniform", lam_min: float = 0.5, alpha: float = 1.0,
                 until_epoch: int | None = None, seed: int = 0, generator: torch.Generator | None = None,
                 rng: np.random.Generator | None = None, where: str = "output", batch_dim: int | None = None):
        _check(select in MFW_SELECT, f"unknown select {select!r}: choose one of {', '.join(MFW_SELECT)}")
        _check(lam in MFW_LAM, f"unknown law of lam {lam!r}: choose one of {', '.join(MFW_LAM)}")
        self.prob = _number(prob, "prob", 0.0, 1.0)
        self.gamma = _number(gamma, "gamma", 0.0)
        self.lam_min = _number(lam_min, "lam_min", 0.0, 1.0)
        self.alpha = _number(alpha, "alpha", 0.0, strict=True)
        counts = np.asarray(class_counts, dtype=np.float64)
        _check(counts.ndim == 1 and counts.size >= 1 and np.all(np.isfinite(counts)) and np.all(counts >= 0)
               and counts.sum() > 0, f"class_counts must be the training images per class (>= 0), got {class_counts!r}")
        _check(until_epoch is None or (isinstance(until_epoch, int) and until_epoch >= 0),
               f"impossible until_epoch {until_epoch!r}: an epoch >= 0, or None")
        super().__init__(model, layer, where, batch_dim)
        self.class_counts = [int(c) if float(c).is_integer() else float(c) for c in counts]
        self.select, self.lam_law, self.until_epoch = select, lam, until_epoch
        with np.errstate(divide="ignore", invalid="ignore"):
            self.probs = selection_probs(counts, select, self.prob, self.gamma)  # p(c), the trainer's rule
        self.epoch = 0
        self._probs_t: torch.Tensor | None = None
        self._init_generators(seed, generator, rng)

    @classmethod
    def from_config(cls, model: nn.Module, layer: str, cfg, counts, **kwargs) -> "MajorFeatureWeakening":
        """MFW with a RunConfig's choices: mfw_select, mfw_prob, mfw_gamma, mfw_lam, mfw_lam_min, mfw_alpha,
        mfw_active ("until-drw": until the config's DRW epoch), seed. The layer is given here (mfw_point names
        a point of this package's models). kwargs (generator, rng, where, seed) override."""
        _check(cfg.mixer in (None, "mfw"), f"config method {cfg.method!r} mixes labels: use ManifoldMixup.from_config")
        until = cfg.schedule()[3] if cfg.mfw_active == "until-drw" else None
        opts = dict(select=cfg.mfw_select, prob=cfg.mfw_prob, gamma=cfg.mfw_gamma, lam=cfg.mfw_lam,
                    lam_min=cfg.mfw_lam_min, alpha=cfg.mfw_alpha, until_epoch=until, seed=cfg.seed)
        return cls(model, layer, counts, **{**opts, **kwargs})

    @property
    def active(self) -> bool:
        return self.until_epoch is None or self.epoch < self.until_epoch

    def set_epoch(self, epoch: int) -> None:
        """The current epoch (0-based), for until_epoch."""
        self.epoch = int(epoch)

    def set_labels(self, y) -> BatchMix:
        """The labels of the next training forward pass; draws its plan (no draw when inactive, as the trainer)."""
        y = self._labels(y)
        _check_label_range(y, len(self.probs))
        ones = torch.ones(y.numel(), device=y.device)
        if not self.active:
            plan = BatchMix([y], [ones])
        else:
            gen = self._generator(y.device)
            if self._probs_t is None or self._probs_t.device != y.device:
                self._probs_t = torch.as_tensor(self.probs, dtype=torch.float32, device=y.device)
            perm, lam, chosen = draw_mfw(y, self._probs_t, self.lam_law, self.lam_min, self.alpha, gen, self.rng)
            plan = BatchMix([y], [ones], self.layer, perm, lam, chosen)
        self.set_plan(plan)
        return plan


def _check_label_range(y: torch.Tensor, n: int) -> None:
    """WeakeningError unless every label indexes one of the n class counts: a label outside them would index the
    counts out of range (a device-side assert on CUDA), or, when negative, silently take another class's count.
    On a GPU the check waits for the labels (a user's loop; the trainer plans its batches itself)."""
    lo, hi = int(y.min()), int(y.max())
    _check(lo >= 0 and hi < n, f"labels must lie in 0..{n - 1} (one class count each), got {lo}..{hi}: "
                               f"class_counts must have one count per class of the labels")


class ManifoldMixup(LayerMixing):
    """Manifold mixup at one named layer (Verma et al. 2019), and Remix there when remix=True (Chou et al.
    2020; needs class_counts): one lam ~ Beta(alpha, alpha) per batch, h_i -> lam h_i + (1 - lam) h_perm(i) for
    every example, and the label mixed too, so compute the loss with `w.loss(logits)`. Same draws as the
    trainer's (partners from the torch generator, lam from rng), without its random choice of point."""

    def __init__(self, model: nn.Module, layer: str, *, alpha: float = 1.0, class_counts=None, remix: bool = False,
                 remix_kappa: float = 3.0, remix_tau: float = 0.5, seed: int = 0,
                 generator: torch.Generator | None = None, rng: np.random.Generator | None = None, where: str = "output",
                 batch_dim: int | None = None):
        self.alpha = _number(alpha, "alpha", 0.0, strict=True)
        self.remix_kappa = _number(remix_kappa, "remix_kappa", 0.0, strict=True)
        self.remix_tau = _number(remix_tau, "remix_tau", 0.0, 1.0)
        _check(not remix or class_counts is not None, "remix=True needs class_counts")
        super().__init__(model, layer, where, batch_dim)
        self.remix, self.class_counts = remix, class_counts
        self._init_generators(seed, generator, rng)

    @classmethod
    def from_config(cls, model: nn.Module, layer: str, cfg, counts=None, **kwargs) -> "ManifoldMixup":
        """From a RunConfig whose method mixes labels (mixup, manifold-mixup, remix) at `layer`."""
        _check(cfg.mixer in ("mixup", "manifold-mixup", "remix"),
               f"config method {cfg.method!r} does not mix labels: use MajorFeatureWeakening.from_config")
        opts = dict(alpha=cfg.mixup_alpha, class_counts=counts, remix=cfg.mixer == "remix",
                    remix_kappa=cfg.remix_kappa, remix_tau=cfg.remix_tau, seed=cfg.seed)
        return cls(model, layer, **{**opts, **kwargs})

    def set_labels(self, y) -> BatchMix:
        y = self._labels(y)
        if self.remix:
            _check_label_range(y, len(self.class_counts))
        perm = torch.randperm(y.numel(), generator=self._generator(y.device), device=y.device)
        lam = float(self.rng.beta(self.alpha, self.alpha))
        targets, coefs, lam_x = mixup_targets(y, perm, lam, self.class_counts if self.remix else None,
                                              self.remix_kappa, self.remix_tau)
        plan = BatchMix(targets, coefs, self.layer, perm, lam_x)
        self.set_plan(plan)
        return plan


__all__ = ["WeakeningError", "WeakeningWarning", "LayerMixing", "MajorFeatureWeakening", "ManifoldMixup", "find_layer",
           "staged_point_mixers"]
