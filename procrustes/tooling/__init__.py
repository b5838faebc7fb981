"""Tooling: running many runs, fast, on whatever machine there is, and the command line.

- `cli`: `python -m procrustes {counts,train,reproduce,bench}`;
- `packing`: several runs at once on one device (process pool, submitit);
- `speed`, `bench`, `bench_hooks`: throughput measurements, each a ratio against a baseline run in the same
  process;
- `harvest`: a GPU lease turned into committed results (`make gpu-harvest`, `make harvest-import`).

Nothing in the method, training or results imports it."""
