"""Metrics and thresholds of an image classifier deciding OK/NG (pure numpy).

The decision the card's thresholds define (docs/contracts.md, model bundle): a part is NG when any NG class c
(every class but the pass class) has probability p(c) >= thresholds[c]; the pass class's own entry is 1.0 and
never rejects. With one NG class this is p(NG) >= t, i.e. the NG probability reaching the threshold.
"""

from __future__ import annotations

import math

import numpy as np


def ng_classes(classes: list[str], pass_class: str) -> list[int]:
    return [k for k, c in enumerate(classes) if c != pass_class]


def decide(probs: np.ndarray, classes: list[str], pass_class: str, thresholds: dict[str, float]) -> np.ndarray:
    """Boolean NG decision per row of `probs` (N, C)."""
    ng = np.zeros(len(probs), bool)
    for k in ng_classes(classes, pass_class):
        ng |= probs[:, k] >= thresholds[classes[k]]
    return ng


def calibrate(probs: np.ndarray, labels: np.ndarray, classes: list[str], pass_class: str,
              target_recall: float) -> tuple[dict[str, float], dict[str, float]]:
    """Per NG class, the highest threshold on p(class) that rejects at least `target_recall` of that class's
    val images (ties kept: every image at the threshold is rejected). Returns (thresholds, recall reached)."""
    thresholds: dict[str, float] = {pass_class: 1.0}
    reached: dict[str, float] = {}
    for k in ng_classes(classes, pass_class):
        scores = np.sort(probs[labels == k, k])[::-1]
        if len(scores) == 0:
            raise ValueError(f"class {classes[k]!r} has no val image: its threshold cannot be calibrated")
        n_keep = max(1, math.ceil(target_recall * len(scores) - 1e-9))
        t = float(scores[n_keep - 1])
        # 4 decimals in the card, rounded down (rounding 0.49844 up to 0.4984... would pass the image the
        # threshold was set on); the card takes (0, 1]: a threshold of 0 would reject every part
        t = min(1.0, max(math.floor(t * 1e4) / 1e4, 1e-4))
        thresholds[classes[k]] = t
        reached[classes[k]] = float((scores >= t).mean())
    return {c: thresholds[c] for c in classes}, reached


def roc_auc(score: np.ndarray, positive: np.ndarray) -> float | None:
    """Area under the ROC curve of `score` for the `positive` rows (Mann-Whitney U, ties counted half)."""
    pos, neg = score[positive], score[~positive]
    if len(pos) == 0 or len(neg) == 0:
        return None
    order = np.argsort(np.concatenate([pos, neg]), kind="mergesort")
    allv = np.concatenate([pos, neg])[order]
    ranks = np.empty(len(allv))
    i = 0
    while i < len(allv):  # average ranks over ties
        j = i
        while j + 1 < len(allv) and allv[j + 1] == allv[i]:
            j += 1
        ranks[i:j + 1] = (i + j) / 2 + 1
        i = j + 1
    r = np.empty(len(allv))
    r[order] = ranks
    u = r[:len(pos)].sum() - len(pos) * (len(pos) + 1) / 2
    return float(u / (len(pos) * len(neg)))


def report(probs: np.ndarray, labels: np.ndarray, classes: list[str], pass_class: str,
           thresholds: dict[str, float]) -> dict:
    """What the card's evaluation and `inspector eval` print: OK/NG accuracy, NG recall, escapes and false
    rejects at the thresholds; per-class recall (NG classes: rejected, pass class: passed); top-1 accuracy and
    the confusion matrix of the argmax class; ROC AUC of the NG score 1 - p(pass)."""
    good = classes.index(pass_class)
    truth_ng = labels != good
    ng = decide(probs, classes, pass_class, thresholds)
    n = len(labels)
    n_ng, n_ok = int(truth_ng.sum()), int((~truth_ng).sum())
    escapes = int((truth_ng & ~ng).sum())
    false_rejects = int((~truth_ng & ng).sum())
    per_class = {}
    for k, c in enumerate(classes):
        rows = labels == k
        if rows.any():
            right = ~ng[rows] if k == good else ng[rows]
            per_class[c] = round(float(right.mean()), 4)
        else:
            per_class[c] = None
    top1 = probs.argmax(1)
    confusion = np.zeros((len(classes), len(classes)), int)
    np.add.at(confusion, (labels, top1), 1)
    auc = roc_auc(1.0 - probs[:, good], truth_ng)
    return {
        "images": n, "ng_images": n_ng, "ok_images": n_ok,
        "accuracy": round(float((ng == truth_ng).mean()), 4) if n else None,
        "ng_recall": round(1 - escapes / n_ng, 4) if n_ng else None,
        "escapes": escapes, "escape_rate": round(escapes / n_ng, 4) if n_ng else None,
        "false_rejects": false_rejects, "false_reject_rate": round(false_rejects / n_ok, 4) if n_ok else None,
        "recall_per_class": per_class,
        "top1_accuracy": round(float((top1 == labels).mean()), 4) if n else None,
        "roc_auc": round(auc, 4) if auc is not None else None,
        "confusion_matrix": {"rows_true_cols_predicted_argmax": classes, "counts": confusion.tolist()},
        "thresholds": {c: round(float(t), 4) for c, t in thresholds.items()},
    }


def format_report(r: dict, title: str) -> str:
    lines = [f"{title}: {r['images']} images ({r['ng_images']} NG, {r['ok_images']} OK)",
             f"  accuracy {r['accuracy']}  NG recall {r['ng_recall']}  ROC AUC {r['roc_auc']}  "
             f"top-1 {r['top1_accuracy']}",
             f"  escapes {r['escapes']} ({r['escape_rate']})  false rejects {r['false_rejects']} "
             f"({r['false_reject_rate']})",
             "  recall per class (NG: rejected, pass class: passed): "
             + ", ".join(f"{c} {v}" for c, v in r["recall_per_class"].items())]
    classes = r["confusion_matrix"]["rows_true_cols_predicted_argmax"]
    w = max(6, *(len(c) for c in classes))
    lines.append("  confusion (rows true, columns argmax): " + "".join(f"{c[:w]:>{w + 1}}" for c in classes))
    for c, row in zip(classes, r["confusion_matrix"]["counts"], strict=True):
        lines.append(f"  {'':>38}{c[:w]:>{w}} " + "".join(f"{v:>{w + 1}}" for v in row))
    return "\n".join(lines)
