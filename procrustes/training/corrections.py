"""Corrections to stored results, applied when they are read, never written into them.

A committed `result.json` is what its run wrote; when one of its fields is later found to be wrong (a run that
recorded `compiled: true` but trained eager, say), the fix goes into `<results>/corrections.json`, with the
reason and the evidence, and every reader of the store (`store.read_result`, hence every notebook, table and
verdict) sees the corrected value and a `corrections` list saying what was changed. The result's own bytes
stay as they were written, so the correction can be read, checked and undone.

The file:

    {"about": "...",
     "runs": {"<config key, 12 hex>": {
         "label": "what the run is, for a reader",
         "finished_utc": "<the stored result's provenance.finished_utc>",
         "fields": {"provenance.compiled": {"value": false, "reason": "...", "evidence": "..."}}}}}

An entry applies only to the stored result it was written for (the same `finished_utc`): a run trained again
is not corrected by its predecessor's entry. A value may be "unknown" where the truth cannot be recovered.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

FILE = "corrections.json"
UNKNOWN = "unknown"


class CorrectionsError(ValueError):
    """The corrections file cannot be used (not JSON, or an entry without value or reason): one line naming it."""


_CACHE: dict[tuple, dict] = {}


def load(root: Path) -> dict:
    """The runs of the corrections file of the result store at root ({} when there is none), checked once per
    version of the file. (The store passes its root: this module sits below it.)"""
    path = Path(root) / FILE
    try:
        st = path.stat()
    except OSError:
        return {}
    stamp = (str(path), st.st_mtime_ns, st.st_size, st.st_ino)
    if stamp not in _CACHE:
        _CACHE[stamp] = _check(path)
    return _CACHE[stamp]


def _check(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise CorrectionsError(f"{path}: not a readable JSON file ({e})") from None
    runs = data.get("runs") if isinstance(data, dict) else None
    if not isinstance(runs, dict):
        raise CorrectionsError(f"{path}: needs an object 'runs' (config key -> entry)")
    for key, entry in runs.items():
        fields = entry.get("fields") if isinstance(entry, dict) else None
        if not isinstance(fields, dict) or not fields or not entry.get("finished_utc"):
            raise CorrectionsError(f"{path}: run {key} needs 'finished_utc' and a non-empty object 'fields'")
        for name, fix in fields.items():
            if not isinstance(fix, dict) or "value" not in fix or not fix.get("reason"):
                raise CorrectionsError(f"{path}: run {key}, field {name}: needs 'value' and 'reason'")
    return runs


def apply(result: dict, root: Path) -> dict:
    """result with the corrections written for it applied (a copy; `result` itself is left alone), and a list
    `corrections` of {field, was, value, reason, evidence}; result itself when none applies."""
    entry = load(root).get(str(result.get("key", "")).split("-")[0])
    if not entry or entry["finished_utc"] != result.get("provenance", {}).get("finished_utc"):
        return result
    out = copy.deepcopy(result)
    done = []
    for name, fix in entry["fields"].items():
        *parents, leaf = name.split(".")
        node = out
        for p in parents:
            node = node.setdefault(p, {})
        done.append({"field": name, "was": node.get(leaf), "value": fix["value"], "reason": fix["reason"],
                     "evidence": fix.get("evidence", "")})
        node[leaf] = fix["value"]
    out["corrections"] = done
    return out


def listed(root: Path, profile: str | None = None) -> list[dict]:
    """Every correction of the file, one a field: {key, label, field, value, reason, evidence}; with profile,
    only those whose run folder is in that profile's store."""
    base = Path(root)
    rows = []
    for key, entry in sorted(load(root).items()):
        if profile is not None and not any((base / profile).glob(f"{key}-*")):
            continue
        for name, fix in entry["fields"].items():
            rows.append({"key": key, "label": entry.get("label", ""), "field": name, "value": fix["value"],
                         "reason": fix["reason"], "evidence": fix.get("evidence", "")})
    return rows


PATHS = ("compiled", "eager", "partly compiled", UNKNOWN)


def code_path(result: dict) -> str:
    """How a stored run trained, from its (corrected) provenance: "compiled" (torch.compile, and no fall-back to
    eager was seen), "eager", "partly compiled" (it fell back to eager after some graphs were compiled), or
    "unknown" (a correction says the record cannot be trusted and the truth cannot be recovered). Runs that
    record no `code_path` (before the fall-back was watched) read from `compiled`; runs from before the compile
    setting was recorded trained eager."""
    prov = result.get("provenance", {})
    if prov.get("code_path") in PATHS:
        return prov["code_path"]
    if prov.get("compiled") == UNKNOWN:
        return UNKNOWN
    return "compiled" if prov.get("compiled") else "eager"
