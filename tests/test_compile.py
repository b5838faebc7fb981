"""torch.compile of the trainer's model (issue 7): when it is on, that it is not part of a run's key, that the
provenance says so, that compiled and eager steps agree to rounding, and that the mixing hooks compile without
graph breaks."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from procrustes.training.config import ConfigError, make_config
from procrustes.training.data import spec
from procrustes.method.losses import Criterion
from procrustes.method.models import resnet32
from procrustes.training.train import (AUTO_COMPILE_MODE, COMPILE_MIN_IMAGES_CPU, TORCH_COMPILE_MODES, TrainStep, compile_mode, run,
                              use_compile)
from procrustes.method.weaken import staged_point_mixers

COUNTS = [100] * 5 + [10] * 5
CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def test_auto_compiles_on_cuda_and_long_cpu_runs(monkeypatch):
    monkeypatch.delenv("PROCRUSTES_COMPILE", raising=False)
    assert use_compile("auto", CUDA, 10) and use_compile(None, CUDA, 10)
    assert use_compile("auto", CPU, COMPILE_MIN_IMAGES_CPU) and not use_compile("auto", CPU, COMPILE_MIN_IMAGES_CPU - 1)
    assert use_compile("on", CPU, 1) and not use_compile("off", CUDA, 10**9)
    assert use_compile(True, CPU, 1) and not use_compile(False, CUDA, 1)
    monkeypatch.setenv("PROCRUSTES_COMPILE", "off")
    assert not use_compile(None, CUDA, 10**9) and use_compile("on", CPU, 1)  # the argument wins over the variable
    monkeypatch.delenv("PROCRUSTES_COMPILE")
    assert compile_mode("auto", CUDA, 10) == AUTO_COMPILE_MODE and compile_mode("on", CPU, 1) == "default"
    assert compile_mode(True, CPU, 1) == "default" and compile_mode("off", CUDA, 1) is None
    assert compile_mode("auto", CPU, 1) is None
    for mode in TORCH_COMPILE_MODES[1:]:  # torch's own modes are settings too, and mean "on in that mode"
        assert compile_mode(mode, CPU, 1) == mode and use_compile(mode, CPU, 1)
    monkeypatch.setenv("PROCRUSTES_COMPILE", "yes")
    with pytest.raises(ConfigError, match="PROCRUSTES_COMPILE"):
        use_compile(None, CPU, 1)


def test_a_bad_setting_is_refused_before_the_data_are_read(monkeypatch, tmp_path):
    monkeypatch.setattr("procrustes.training.train.load_benchmark", lambda *a, **k: pytest.fail("data read"))
    with pytest.raises(ConfigError, match="unknown compile setting 'fast'"):
        run(make_config("smoke"), compile="fast", results=tmp_path)


def test_the_profiles_compile_where_it_pays():
    from procrustes.training.data import benchmark_counts

    for profile, expected in (("smoke", False), ("cpu", True)):
        cfg = make_config(profile, dataset="cifar10", imbalance="step", ratio=100)
        n = sum(benchmark_counts("cifar10", "step", 100, cfg.max_per_class))
        assert use_compile("auto", CPU, cfg.epochs * n) is expected, profile


def _compile_eager(monkeypatch, calls: list):
    """nn.Module.compile through dynamo with the "eager" backend: dynamo's tracing, guards and recompile limit as
    in a real compile (the fall-back detection reads those), without inductor's minutes of code generation."""
    real = torch.nn.Module.compile
    monkeypatch.setattr(torch.nn.Module, "compile",
                        lambda self, *a, **k: calls.append((type(self).__name__, k)) or real(self, backend="eager"))


def test_compile_is_not_in_the_key_and_the_provenance_says(cifar10_root, tmp_path, monkeypatch):
    """compile="on" compiles the model in place (nn.Module.compile, through dynamo with the eager backend here:
    a smoke run compiled by inductor takes minutes on a CPU) and the result says compiled: true, with the
    evidence (frames and graphs compiled, no fall-back); the key does not move."""
    calls = []
    _compile_eager(monkeypatch, calls)
    cfg = make_config("smoke", dataset="cifar10", imbalance="step", ratio=100, epochs=1)
    on = run(cfg, device="cpu", data_root=cifar10_root, results=tmp_path / "on", progress=False, compile="on")
    off = run(cfg, device="cpu", data_root=cifar10_root, results=tmp_path / "off", progress=False, compile="off")
    assert calls == [("StagedNet", {"mode": "default"})]
    assert on["provenance"]["compiled"] is True and off["provenance"]["compiled"] is False
    assert on["provenance"]["compile_mode"] == "default" and off["provenance"]["compile_mode"] is None
    [seg] = on["provenance"]["compile_evidence"]
    assert seg["mode"] == "default" and seg["epochs"] == [1, 1] and seg["fell_back"] is False and seg["reason"] is None
    assert seg["frames_compiled"] > 0 and seg["graphs"] > 0 and seg["recompile_limit_hits"] == 0
    assert off["provenance"]["compile_evidence"] == [{"mode": None, "epochs": [1, 1]}]
    assert on["key"] == off["key"]
    assert on["provenance"]["eval_batch"] == 128  # train.EVAL_BATCH["cpu"]: speed only, recorded beside


def test_a_run_over_the_recompile_limit_is_recorded_eager(cifar10_root, tmp_path, monkeypatch):
    """A compiled run that hits dynamo's recompile limit trains (from then on) eager: its provenance must say
    compiled: false, with the reason and the epoch, not the compile setting it asked for. The limit is forced
    to 1 here: the epoch's last, smaller batch needs a second graph."""
    import torch._dynamo

    _compile_eager(monkeypatch, [])
    cfg = make_config("smoke", dataset="cifar10", imbalance="step", ratio=100, epochs=2)
    # config.patch, not monkeypatch: recompile_limit is an alias in torch's config module, and monkeypatch's undo
    # leaves it missing for every later compile of the session
    with torch._dynamo.config.patch(recompile_limit=1):
        res = run(cfg, device="cpu", data_root=cifar10_root, results=tmp_path, progress=False, compile="on")
    p = res["provenance"]
    assert p["compiled"] is False and p["compile_mode"] == "default"
    [seg] = p["compile_evidence"]
    assert seg["fell_back"] is True and seg["fell_back_after_epoch"] == 1 and seg["epochs"] == [1, 2]
    assert "recompile limit (1)" in seg["reason"] and seg["recompile_limit_hits"] >= 1
    from procrustes.results.selection import code_path

    # the first graph compiled, the second variant ran eager: neither path throughout
    assert seg["frames_compiled"] >= 1 and p["code_path"] == "partly compiled" and code_path(res) == "partly compiled"


def test_the_code_path_of_a_run_from_its_compile_records():
    from procrustes.training.store import code_path_of

    ok = {"mode": "default", "frames_compiled": 6, "fell_back": False}
    assert code_path_of([ok]) == "compiled" and code_path_of([{"mode": None}]) == "eager"
    assert code_path_of([{"mode": "default", "frames_compiled": 0, "fell_back": True}]) == "eager"  # nothing captured
    assert code_path_of([dict(ok, fell_back=True)]) == "partly compiled"  # the limit hit after some graphs
    assert code_path_of([{"mode": None}, ok]) == "partly compiled"  # resumed on the other path


@pytest.mark.parametrize("method,point", [("mfw", "stage1"), ("mfw", "input"), ("mfw", "feature"), ("manifold-mixup", None)])
def test_the_mixing_hooks_compile_without_graph_breaks(method, point):
    cfg = make_config("smoke", method=method, **({"mfw_point": point} if point else {}), seed=0)
    from procrustes.method.mixing import plan_batch, plan_points

    torch.manual_seed(0)
    model = resnet32(10).to(memory_format=torch.channels_last).train()
    mixers = staged_point_mixers(model)
    y = torch.arange(16) % 10
    mix = plan_batch(cfg, y, COUNTS, 0, 100, torch.Generator().manual_seed(0), np.random.default_rng(0))
    for p in plan_points(cfg):
        mixers[p].attach().set_plan(mix if p == mix.point else None)
    torch._dynamo.reset()
    # traced through model(...), hooks included, as nn.Module.compile (what the trainer calls) compiles it
    ex = torch._dynamo.explain(lambda x: model(x))(torch.randn(16, 3, 32, 32).contiguous(memory_format=torch.channels_last))
    assert ex.graph_break_count == 0, [b.reason for b in ex.break_reasons]
    assert ex.graph_count == 1


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """|a - b| / |b| (Frobenius): rounding differences of single elements of a small value do not count."""
    return float((a.float() - b.float()).norm() / b.float().norm().clamp(min=1e-12))


def test_compiled_steps_agree_with_eager_steps():
    """Two TrainStep steps of MFW (stage1) with the model compiled against the same steps eager, from the same
    weights and generators. Relative norms of the differences, measured / allowed: after the first step the
    feature gradients 4.5e-7 / 1e-5, all weights as one vector 6.9e-5 / 5e-4 (the backward through 31 fused
    batch norms sums in another order); after the second step 6.6e-4 and 8.0e-4 / 1e-2 (SGD with momentum at
    this lr amplifies rounding about tenfold a step at the start of training). The feature-gradient
    diagnostic (a tensor hook on fc's input) is the one graph break, and it still sees the gradients."""
    cfg = make_config("smoke", method="mfw", mfw_point="stage1", seed=1)
    s = spec("cifar10")
    torch.manual_seed(0)
    models = [resnet32(10).to(memory_format=torch.channels_last)]
    models.append(copy.deepcopy(models[0]))
    steps = []
    for m in models:
        opt = torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9)
        steps.append(TrainStep(cfg, m, opt, Criterion("ce", COUNTS), COUNTS, s, False, torch.Generator().manual_seed(2),
                               np.random.default_rng(2), torch.tensor([True] * 5 + [False] * 5)))
    torch._dynamo.reset()
    models[1].compile()
    g = torch.Generator().manual_seed(3)
    y = torch.arange(32) % 10
    for k, (tol_g, tol_w) in enumerate(((1e-5, 5e-4), (1e-2, 1e-2))):
        x = torch.randint(0, 256, (32, 32, 32, 3), dtype=torch.uint8, generator=g)
        for m, st in zip(models, steps):
            m.train()
            st(x, y, 0.05)
        assert torch.equal(steps[1].weakened, steps[0].weakened) and steps[0].weakened > 0  # the same plans
        assert _rel(steps[1].grads[0], steps[0].grads[0]) < tol_g, k
        flat = [torch.cat([p.detach().flatten() for p in m.parameters()]) for m in models]
        assert _rel(flat[1], flat[0]) < tol_w, k
    assert list(models[1].state_dict()) == list(models[0].state_dict())  # in place: the same keys
