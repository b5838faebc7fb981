"""procrustes: a reproducible companion to *Procrustean Training for Imbalanced Deep Learning* (ICCV 2021).

Four rooms, each importing only the ones above it:
- `procrustes.method`: major feature weakening (forward hooks), its draws, the models and their mixing points,
  the losses, samplers, augmentation and class counts of the LDAM-DRW protocol;
- `procrustes.training`: the run config, the imbalanced benchmarks, the trainer and the result store;
- `procrustes.results`: the experiments behind each notebook, the selection on validation, the claims, tables
  and plots;
- `procrustes.tooling`: the command line, packing runs onto a device, benchmarks, the GPU harvest.
`procrustes.examples` holds worked examples (notebook 08). The names below are the ones a user needs first."""
from .method.models import build_model, resnet18, resnet32
from .method.weaken import MajorFeatureWeakening, ManifoldMixup, WeakeningError
from .training.config import ConfigError, RunConfig, make_config
from .training.data import benchmark_counts, class_counts, class_groups, load_benchmark
from .training.train import run

__version__ = "0.1.0"
__all__ = ["ConfigError", "RunConfig", "make_config", "benchmark_counts", "class_counts", "class_groups",
           "load_benchmark", "build_model", "resnet18", "resnet32", "run", "MajorFeatureWeakening", "ManifoldMixup",
           "WeakeningError"]
