"""What every notebook does first: read its parameters AFTER papermill has injected them, resolve the
environment defaults, validate each value, and refuse unknown names; and strip what changes on every run
from executed notebooks, so that regenerating them from the same results leaves the git tree clean.

A notebook's parameters cell holds plain literals (None meaning "from the environment"); the cell after it
calls `settings(globals(), ...)`. Papermill injects its values in a cell between the two, so they are seen
here, and a misspelt name (`-p profil smoke`) is an error instead of a silently ignored variable.
"""
from __future__ import annotations

import json
import os
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..training.config import PROFILES

_TRUE, _FALSE = ("true", "yes", "1", "on"), ("false", "no", "0", "off")
# names IPython defines in every kernel (plus anything starting with "_")
_KERNEL_NAMES = {"In", "Out", "get_ipython", "exit", "quit", "open"}


class ParameterError(ValueError):
    """A bad notebook parameter: its name, its value and what is allowed."""


@dataclass
class Settings:
    profile: str
    train_missing: bool
    device: str
    data_root: str | None
    seeds: tuple[int, ...] | None
    extra: dict[str, Any] = field(default_factory=dict)
    defaults: dict[str, Any] = field(default_factory=dict)  # the notebook's own values of its extra parameters
    committed: dict[str, Any] = field(default_factory=dict)  # its parameters cell's seeds / data_root, where not None

    def __getattr__(self, name: str) -> Any:
        extra = self.__dict__.get("extra", {})
        if name in extra:
            return extra[name]
        raise AttributeError(name)

    def custom(self) -> dict[str, Any]:
        """The parameters that differ from the committed run of the notebook (its parameters cell as written):
        those that decide which results it shows (data root, seeds, the notebook's own ones), not where it runs."""
        out = {k: v for k, v in self.extra.items() if _plain(v) != _plain(self.defaults.get(k))}
        seeds = None if self.seeds is None else list(self.seeds)
        if seeds != _plain(self.committed.get("seeds")):
            out = {"seeds": "all" if seeds is None else seeds, **out}
        if self.data_root != self.committed.get("data_root"):
            out = {"data_root": self.data_root, **out}
        return out

    def setting(self) -> str:
        """What produced a notebook's numbers, for each row of claims.md: the profile and every parameter that
        is not the committed one."""
        extra = "".join(f"; {k}={v}" for k, v in self.extra.items())
        seeds = "all" if self.seeds is None else ",".join(map(str, self.seeds))
        return f"profile {self.profile}; seeds {seeds}{extra}"

    @property
    def figures(self) -> Path:
        """Where the notebook writes its figures, tables and claims: figures/ (figures/<profile>/ for a profile
        other than the committed one) when its parameters are the committed ones, else a folder of its own under
        figures/custom/ named by them, so that exploring never overwrites the committed record."""
        from .plots import figures_dir

        base = figures_dir(profile=self.profile)
        custom = self.custom()
        if not custom:
            return base
        slug = "_".join(f"{k}-{_slug(v)}" for k, v in custom.items())[:120]
        d = base / "custom" / slug
        d.mkdir(parents=True, exist_ok=True)
        return d

    def meta(self, source: str) -> dict[str, str]:
        """The keyword arguments of a claims verdict: the notebook, its profile and its setting."""
        return {"source": source, "profile": self.profile, "setting": self.setting()}

    def line(self) -> str:
        """What the notebook's first cell prints: its settings and, for any run but the committed one, where its
        figures, tables and claims go."""
        seeds = "all of the profile" if self.seeds is None else ", ".join(map(str, self.seeds))
        more = "".join(f"; {k}: {v}" for k, v in self.extra.items())
        where = self.where()
        return (f"profile: {self.profile}; train missing runs: {self.train_missing}; device: {self.device}; "
                f"seeds: {seeds}{more}" + (f"\n{where}" if where else ""))

    def where(self) -> str:
        """'' for the committed run (profile cpu, the parameters cell as written); otherwise the folder this run's
        figures, tables and claims go to, so that a reader finds them (figures/ itself is left alone)."""
        from .plots import COMMITTED_PROFILE, REPO

        if self.profile == COMMITTED_PROFILE and not self.custom():
            return ""
        folder = self.figures.resolve()
        shown = folder.relative_to(REPO) if folder.is_relative_to(REPO) else folder
        return f"this run's figures, tables and claims go to {shown}/ (the committed ones in figures/ are left alone)"


def _plain(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v


def _slug(v: Any) -> str:
    text = ",".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v)
    return "".join(ch if ch.isalnum() or ch in ".,-" else "-" for ch in text)


def as_bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, str)) and str(value).strip().lower() in _TRUE + _FALSE:
        return str(value).strip().lower() in _TRUE
    raise ParameterError(f"parameter {name}={value!r}: expected true or false")


def as_list(name: str, value: Any, item=str) -> tuple:
    """A list parameter (seeds, methods, ...): a non-empty list of `item`. An empty one would show nothing, and
    write empty tables under a folder of its own."""
    if isinstance(value, (list, tuple)) and all(isinstance(v, item) and not isinstance(v, bool) for v in value):
        if not value:
            raise ParameterError(f"parameter {name}=[]: give at least one" + (" (or None: every seed of the profile)"
                                                                             if name == "seeds" else ""))
        return tuple(value)
    raise ParameterError(f"parameter {name}={value!r}: expected a list of {item.__name__} "
                         f"(papermill: -y '{name}: [...]', not -p {name} ...)")


def settings(namespace: dict, committed: dict | None = None, **expected: Any) -> Settings:
    """Validated settings from a notebook's globals. Every notebook has profile, train_missing, device,
    data_root and seeds; `expected` names its other parameters with their committed value (its type is the
    parameter's; a list means a list of that element type). `committed`: the parameters cell's seeds or
    data_root where they are not None (notebook 00 shows seed 0), so that a run with them is the committed one."""
    known = {"profile", "train_missing", "device", "data_root", "seeds", *expected}
    unknown = sorted(n for n, v in namespace.items() if not n.startswith("_") and n not in _KERNEL_NAMES
                     and n not in known and not isinstance(v, (types.ModuleType, types.FunctionType, type)))
    if unknown:
        raise ParameterError(f"unknown parameter(s) {', '.join(unknown)}: this notebook takes {', '.join(sorted(known))}")
    profile = namespace.get("profile") or os.environ.get("PROCRUSTES_PROFILE") or "cpu"
    if profile not in PROFILES:
        raise ParameterError(f"parameter profile={profile!r}: choose one of {', '.join(PROFILES)}")
    tm = namespace.get("train_missing")
    if tm is None:
        tm = os.environ.get("PROCRUSTES_TRAIN_MISSING") or ("1" if profile == "smoke" else "0")
    device = namespace.get("device") or os.environ.get("PROCRUSTES_DEVICE") or "auto"
    if not isinstance(device, str):
        raise ParameterError(f"parameter device={device!r}: expected a string such as auto, cpu, cuda")
    data_root = namespace.get("data_root")
    if data_root is not None and not isinstance(data_root, str):
        raise ParameterError(f"parameter data_root={data_root!r}: expected a folder path or None")
    seeds = namespace.get("seeds")
    if seeds is not None:
        seeds = as_list("seeds", seeds, int)
        if any(s < 0 for s in seeds):
            raise ParameterError(f"parameter seeds={seeds!r}: seeds are integers >= 0")
    extra = {}
    for name, example in expected.items():
        value = namespace.get(name, example)
        if isinstance(example, (list, tuple)):
            value = as_list(name, value, type(example[0]) if example else str)
        elif isinstance(example, bool):
            value = as_bool(name, value)
        elif isinstance(example, (int, float)) and not isinstance(value, bool) and isinstance(value, (int, float)):
            value = type(example)(value) if isinstance(example, float) else value
        elif example is not None and not isinstance(value, type(example)):
            raise ParameterError(f"parameter {name}={value!r}: expected a {type(example).__name__}")
        extra[name] = value
    return Settings(profile, as_bool("train_missing", tm), device, data_root, seeds, extra, dict(expected),
                    dict(committed or {}))


# ---------------------------------------------------------------------------------------- clean notebooks


def join_streams(outputs: list[dict]) -> list[dict]:
    """Adjacent stream outputs of the same name (stdout, stderr) as one, its text as lines, as Jupyter shows them."""
    out: list[dict] = []
    for o in outputs:
        if o.get("output_type") == "stream":
            text = o.get("text", "")
            text = "".join(text) if isinstance(text, list) else text
            if out and out[-1].get("output_type") == "stream" and out[-1].get("name") == o.get("name"):
                text = "".join(out[-1]["text"]) + text
                out.pop()
            o = {**o, "text": text.splitlines(keepends=True)}
        out.append(o)
    return out


def strip_volatile(path: str | Path) -> bool:
    """Remove what differs between two executions of the same notebook on the same results: papermill's
    timings and environment, execution timestamps; and join the adjacent chunks of one stream (how a print is cut
    into messages depends on timing), so that `make figures` leaves the git tree clean. Execution counts are
    kept as they are (they depend only on the cells). Returns True when the file changed."""
    p = Path(path)
    nb = json.loads(p.read_text())
    meta = nb.get("metadata", {})
    pm = meta.get("papermill")
    if isinstance(pm, dict):
        for k in ("start_time", "end_time", "duration", "environment_variables", "input_path", "output_path",
                  "version"):
            pm.pop(k, None)
    for cell in nb.get("cells", []):
        cm = cell.get("metadata", {})
        cm.pop("execution", None)
        if isinstance(cm.get("papermill"), dict):
            for k in ("start_time", "end_time", "duration"):
                cm["papermill"].pop(k, None)
        if "outputs" in cell:
            cell["outputs"] = join_streams(cell["outputs"])
    text = json.dumps(nb, sort_keys=True, indent=1, ensure_ascii=False) + "\n"
    if text != p.read_text():
        from ..training.store import atomic_write_text

        atomic_write_text(p, text)
        return True
    return False


def stored_results(profile: str, root: Path | None = None) -> int:
    """How many finished runs of `profile` the result store holds (result.json files; checkpoints of unfinished
    runs do not count): `make figures` regenerates a profile's figures only once it has one."""
    from ..training.store import results_dir

    base = Path(root or results_dir()) / profile
    return sum(1 for _ in base.glob("*/result.json")) if base.is_dir() else 0


USAGE = """usage: python -m procrustes.results.notebook strip NOTEBOOK...
       python -m procrustes.results.notebook check-profile PROFILE   (one-line error for an unknown profile)
       python -m procrustes.results.notebook stored PROFILE          (prints how many finished runs are stored)"""


def main(argv: list[str] | None = None) -> int:
    """strip NOTEBOOK...: strip_volatile each file; check-profile PROFILE; stored PROFILE (for the Makefile)."""
    import sys

    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["strip"]:
        for a in args[1:]:
            strip_volatile(a)
        return 0
    if len(args) == 2 and args[0] in ("check-profile", "stored"):
        if args[1] not in PROFILES:
            print(f"profile {args[1]!r}: choose one of {', '.join(PROFILES)}", file=sys.stderr)
            return 2
        if args[0] == "stored":
            print(stored_results(args[1]))
        return 0
    print(USAGE, file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
