"""procrustes: a reproducible companion to *Procrustean Training for Imbalanced Deep Learning* (ICCV 2021).

Imbalanced benchmarks (`data`), models with named mixing points (`models`), losses and re-weighting
(`losses`), samplers (`samplers`), major feature weakening and its label-mixing relatives (`mixing`), the
trainer (`train`), the result store (`store`) and the experiments behind each figure (`experiments`)."""
from .config import ConfigError, RunConfig, make_config
from .data import benchmark_counts, class_counts, class_groups, load_benchmark
from .models import build_model, resnet18, resnet32
from .train import run
from .weaken import MajorFeatureWeakening, ManifoldMixup, WeakeningError

__version__ = "0.1.0"
__all__ = ["ConfigError", "RunConfig", "make_config", "benchmark_counts", "class_counts", "class_groups",
           "load_benchmark", "build_model", "resnet18", "resnet32", "run", "MajorFeatureWeakening", "ManifoldMixup",
           "WeakeningError"]
