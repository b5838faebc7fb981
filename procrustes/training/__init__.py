"""Training: one run from its config to its stored result.

- `config`: `RunConfig`, every knob in one commented block, its profiles, its validation and its key;
- `data`: the imbalanced benchmarks (CIFAR-10/100, Tiny-ImageNet, any ImageFolder), their validation split and
  the data id;
- `train`: the trainer (`run`, and `TrainStep`, where the method's hooks are attached);
- `store`: the result store: atomic writes, resumable checkpoints, damaged files set aside.

Imports the method, never the results or the tooling."""
