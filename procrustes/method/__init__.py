"""The method: what a paper figure or a user's own training needs of Procrustean training, and nothing else.

Where major feature weakening (MFW) happens, in reading order:
- `weaken`: the forward hooks a user attaches (`MajorFeatureWeakening`, `ManifoldMixup`), and the staged mixers
  the trainer attaches the same way;
- `mixing`: the random draws (which images are weakened, lam, the partner) and the mixing arithmetic;
- `models`: ResNet-32 / ResNet-18 as named stages, the points where features can be mixed (`choices`);
- `losses`, `samplers`, `augment`, `counts`: the LDAM-DRW protocol's losses and re-weighting, samplers,
  augmentation, and the per-class counts and class groups of the imbalanced benchmarks.

Nothing here imports the trainer, the results or the tooling (tests/test_layout.py checks it)."""
