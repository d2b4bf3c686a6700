"""Fingerprint what flowroutes computes, to show that a refactor changed no result: a SHA-256 of every routes JSON
and every trace array, for the tiny random-init model of each family (tests/helpers/families.py; full and lazy traces)
and for the embedded SmolLM2 on the IOI prompt.

A maintainer step, run before and after a change of the compute core:

    HF_HUB_OFFLINE=1 .venv/bin/python scripts/snapshot_outputs.py before.json     # on the old commit
    HF_HUB_OFFLINE=1 .venv/bin/python scripts/snapshot_outputs.py after.json --against before.json

With --against it prints the entries that differ and exits 1 if any does. Byte-identical means: the same routes JSON
text, and arrays equal bit for bit (0 ulp).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.helpers, from a checkout

IDS = [5, 17, 3, 17, 40, 8, 22, 5, 61, 2]
IOI = "When Mary and John went to the store, John gave a drink to"


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fingerprint(name: str, tr, full: bool, out: dict[str, str]) -> None:
    """The routes JSON of the last position at tau = 0.04 and, for a full trace, every array it holds."""
    kind = "full" if full else "lazy"
    out[f"{name}/{kind}/routes"] = digest(tr.routes(0.04).to_json().encode())
    if full:
        for key, value in sorted(vars(tr).items()):
            if isinstance(value, np.ndarray):
                out[f"{name}/{kind}/{key}"] = digest(np.ascontiguousarray(value).tobytes())


def snapshot() -> dict[str, str]:
    import flowroutes
    from tests.helpers.families import FAMILIES, tiny_family
    from tests.helpers.models import word_tokenizer

    out: dict[str, str] = {}
    tokenizer = word_tokenizer()
    for family in FAMILIES:
        loaded = flowroutes.load_model(tiny_family(family), tokenizer=tokenizer)
        for lazy in (False, True):
            fingerprint(family, flowroutes.trace(loaded, input_ids=IDS, lazy=lazy), not lazy, out)
    smollm2 = flowroutes.load_model()
    for lazy in (False, True):
        fingerprint("smollm2", flowroutes.trace(smollm2, IOI, lazy=lazy), not lazy, out)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="where to write the fingerprints (JSON)")
    parser.add_argument("--against", metavar="JSON", help="fingerprints to compare with")
    args = parser.parse_args()
    got = snapshot()
    Path(args.out).write_text(json.dumps(got, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    print(f"{len(got)} fingerprints -> {args.out}")
    if args.against is None:
        return 0
    want = json.loads(Path(args.against).read_text(encoding="utf-8"))
    differ = sorted(k for k in want.keys() | got.keys() if want.get(k) != got.get(k))
    for key in differ:
        print(f"differs: {key}")
    print(f"{len(differ)} of {len(want.keys() | got.keys())} differ")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
