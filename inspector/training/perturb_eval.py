"""Accuracy of a model bundle on altered copies of an evaluation set (the line camera's drift).

`evaluate_perturbed(bundle, samples, families)` alters every image of the set once per family
(a fresh draw of the family's parameters per image, from a seed of its own, labels unchanged
or moved with the pixels for `geometry`) and reports mAP50, mAP50-95 and the part-level escapes and
false rejects at the card's thresholds, through the same code as `inspector eval`
(`inspector.training.evaluate`). This is what `inspector eval --perturb FAMILY[,FAMILY]` runs and
what the model card's per-family metrics come from.
"""

from __future__ import annotations

import json
import sys
import zlib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

from inspector.bundle.load import ModelBundle
from inspector.sources import optics
from inspector.training.evaluate import Sample, evaluate

CLEAN = "none"


def altered(images: Sequence[np.ndarray], name: str, seed: int,
            magnitude: str | Mapping = "default") -> list[tuple[np.ndarray, object]]:
    """Each image altered by the family `name` with the draw it got, image i its own from rng([seed,
    crc32(name), i]): the one rule for a detector's and a classifier's altered copies."""
    optics.family(name)  # a clear error before any work
    tag = zlib.crc32(name.encode())
    out = []
    for i, img in enumerate(images):
        rng = np.random.default_rng([seed, tag, i])
        alt = optics.sample(name, rng, magnitude)
        out.append((optics.apply(img, alt, rng), alt))
    return out


def perturb_samples(samples: Sequence[Sample], name: str, seed: int,
                    magnitude: str | Mapping = "default") -> list[Sample]:
    """Altered copies of `samples` (altered), the boxes moved with the pixels."""
    if name == CLEAN:
        return list(samples)
    out = []
    for s, (img, alt) in zip(samples, altered([s.image for s in samples], name, seed, magnitude), strict=True):
        h, w = s.image.shape[:2]
        out.append(Sample(img, optics.transform_boxes(s.gt_boxes, alt, w, h), s.gt_cls))
    return out


def evaluate_perturbed(bundle: ModelBundle, samples: Sequence[Sample], families: Iterable[str],
                       seed: int, magnitude: str | Mapping = "default") -> dict[str, dict]:
    """family -> `inspector eval` report on the set altered by that family ('none': unaltered)."""
    return {name: evaluate(bundle, perturb_samples(samples, name, seed, magnitude)) for name in families}


def row(name: str, r: dict, magnitude: str | Mapping = "default") -> dict:
    p = r["parts"]
    rng_desc = "" if name == CLEAN else ", ".join(
        f"{k} {lo:g}-{hi:g}" if lo != hi else f"{k} {lo:g}" for k, (lo, hi) in optics.ranges(name, magnitude).items())
    return {"family": name, "magnitude": rng_desc, "mAP50": r["mAP50"], "mAP50-95": r["mAP50-95"],
            "escape_rate": p["escape_rate"], "false_reject_rate": p["false_reject_rate"],
            "recall": {c: m["recall"] for c, m in r["per_class"].items()}}


def format_table(rows: Sequence[dict]) -> str:
    lines = ["| alteration | mAP50 | mAP50-95 | escapes | false rejects |", "|---|---|---|---|---|"]
    for x in rows:
        label = x["family"] + (f" ({x['magnitude']})" if x["magnitude"] else "")
        lines.append(f"| {label} | {x['mAP50']:.3f} | {x['mAP50-95']:.3f} | {x['escape_rate']:.1%} "
                     f"| {x['false_reject_rate']:.1%} |")
    return "\n".join(lines)


def parse_families(text: str) -> list[str]:
    """'all', 'issue' or a comma list of family names (and 'none' for the unaltered set)."""
    if text == "all":
        return [CLEAN, *optics.FAMILIES]
    if text == "issue":
        return [CLEAN, *optics.ISSUE_FAMILIES]
    names = [t.strip() for t in text.split(",") if t.strip()]
    bad = [n for n in names if n != CLEAN and n not in optics.FAMILIES]
    if bad or not names:
        raise ValueError(f"--perturb: expected 'all', 'issue' or names among {[CLEAN, *optics.FAMILIES]}, got {text!r}")
    return names


def run_perturb_cli(bundle: ModelBundle, samples: Sequence[Sample], families: Sequence[str], seed: int,
                    magnitude: str = "default", json_out: str | None = None) -> int:
    rows = []
    for name in families:
        r = evaluate_perturbed(bundle, samples, [name], seed, magnitude)[name]
        rows.append(row(name, r, magnitude))
        print(format_table(rows[-1:]).splitlines()[-1], flush=True)
    print(format_table(rows))
    if json_out:
        Path(json_out).write_text(json.dumps({"model": {"name": bundle.name, "version": bundle.version,
                                                        "precision": bundle.precision},
                                              "images": len(samples), "seed": seed, "magnitude": magnitude,
                                              "rows": rows}, indent=2))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    from inspector.bundle.load import load_bundle
    from inspector.training.evaluate import synthetic_samples, yolo_samples

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="models/demo")
    ap.add_argument("--precision", default="int8", choices=("int8", "fp32"))
    ap.add_argument("--data", default=None, help="data.yaml (val split); default: held-out synthetic --n/--seed")
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--seed", type=int, default=4004)
    ap.add_argument("--perturb", default="issue", help="'all', 'issue' or FAMILY[,FAMILY] ('none' = unaltered)")
    ap.add_argument("--magnitude", default="default", choices=optics.MAGNITUDES)
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    try:
        families = parse_families(a.perturb)
    except ValueError as e:
        print(e, file=sys.stderr)
        return 2
    samples = list(yolo_samples(Path(a.data)) if a.data else synthetic_samples(a.n, a.seed))
    bundle = load_bundle(Path(a.model), a.precision)
    print(f"{bundle.name} {bundle.version} [{bundle.precision}] on {a.data or f'synthetic seed {a.seed}'}, "
          f"{len(samples)} images, magnitude {a.magnitude}")
    return run_perturb_cli(bundle, samples, families, a.seed, a.magnitude, a.json)


if __name__ == "__main__":
    raise SystemExit(main())
