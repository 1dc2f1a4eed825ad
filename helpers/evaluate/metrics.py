"""Metrics with confidence intervals: pure functions of verdict records and counts.

A test split of a few dozen documents gives wide intervals, so every rate is reported as
``{"value": x, "n": n, "ci95": [lo, hi]}`` with the Wilson score interval (well behaved at 0 and 1,
unlike the normal approximation). Over-refusal is reported next to hallucination because a model
that refuses everything has a hallucination rate of 0 and is useless.

Records are dicts with at least ``answerable`` (bool) and ``refused``, ``answered``,
``grounded_correct`` (bools, from a ``Verdict``); breakdowns read any extra key (``pair_type``,
``domain``, ``source``).
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = [
    "Z95",
    "breakdown",
    "cohen_kappa",
    "judge_agreement",
    "mean_min_max",
    "rate",
    "refusal_prf",
    "relative_reduction",
    "side_metrics",
    "wilson_ci",
]

#: Two-sided 95% normal quantile.
Z95 = 1.959963984540054


def wilson_ci(successes: int, n: int, z: float = Z95) -> tuple[float, float] | None:
    """Wilson score interval for a binomial proportion; None when n == 0."""
    if n < 0 or successes < 0 or successes > n:
        raise ValueError(f"need 0 <= successes <= n, got successes={successes}, n={n}")
    if n == 0:
        return None
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def rate(successes: int, n: int) -> dict[str, Any]:
    """A rate as stored in metrics.json: value, n and the Wilson 95% interval (None when n == 0)."""
    ci = wilson_ci(successes, n)
    return {"value": successes / n if n else None, "n": n,
            "ci95": [round(ci[0], 6), round(ci[1], 6)] if ci else None}


def _f1(tp: int, fp: int, fn: int) -> float | None:
    denom = 2 * tp + fp + fn
    return 2 * tp / denom if denom else None


def refusal_prf(refused: Sequence[bool], unanswerable: Sequence[bool], *, n_boot: int = 1000,
                seed: int = 0) -> dict[str, dict[str, Any]]:
    """Refusal as a classifier of unanswerable requests: precision, recall (Wilson CIs) and F1.

    F1 is not a binomial proportion; its interval is a seeded percentile bootstrap over items.
    """
    if len(refused) != len(unanswerable):
        raise ValueError("refused and unanswerable must have the same length")
    pairs = list(zip(refused, unanswerable, strict=True))
    tp = sum(r and u for r, u in pairs)
    fp = sum(r and not u for r, u in pairs)
    fn = sum((not r) and u for r, u in pairs)
    f1 = _f1(tp, fp, fn)
    ci = None
    if pairs and f1 is not None and n_boot > 0:
        rng = random.Random(seed)
        stats = []
        for _ in range(n_boot):
            sample = [pairs[rng.randrange(len(pairs))] for _ in pairs]
            b = _f1(sum(r and u for r, u in sample), sum(r and not u for r, u in sample),
                    sum((not r) and u for r, u in sample))
            stats.append(0.0 if b is None else b)
        stats.sort()
        ci = [round(stats[int(0.025 * (n_boot - 1))], 6), round(stats[int(0.975 * (n_boot - 1))], 6)]
    return {"refusal_precision": rate(tp, tp + fp), "refusal_recall": rate(tp, tp + fn),
            "refusal_f1": {"value": f1, "n": len(pairs), "ci95": ci}}


def mean_min_max(values: Sequence[float]) -> dict[str, float]:
    """The spread of one rate over runs (seeds, dev splits), as every record writes it: mean, min and max, to 4
    decimals."""
    return {"mean": round(sum(values) / len(values), 4), "min": round(min(values), 4), "max": round(max(values), 4)}


def relative_reduction(before: float | None, after: float | None) -> float | None:
    """(before - after) / before: 0.5 means the aligned model halves the rate; None if before is 0/None."""
    if before is None or after is None or before == 0:
        return None
    return (before - after) / before


def side_metrics(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """All headline rates for one model (base or aligned) from its judged records.

    hallucination_rate: unanswerable items that were answered instead of refused.
    over_refusal_rate: answerable items that were refused.
    grounded_accuracy: answerable items answered, supported and on-reference.
    unsupported_answer_rate: answerable items answered with claims the document does not hold.
    refusal_rate: all items that were refused.
    """
    ans = [r for r in records if r["answerable"]]
    una = [r for r in records if not r["answerable"]]
    out = {
        "hallucination_rate": rate(sum(bool(r["answered"]) for r in una), len(una)),
        "over_refusal_rate": rate(sum(bool(r["refused"]) for r in ans), len(ans)),
        "grounded_accuracy": rate(sum(bool(r["grounded_correct"]) for r in ans), len(ans)),
        "unsupported_answer_rate": rate(sum(bool(r["answered"]) and not r.get("supported", True) for r in ans),
                                        len(ans)),
        "refusal_rate": rate(sum(bool(r["refused"]) for r in records), len(records)),
    }
    out.update(refusal_prf([bool(r["refused"]) for r in records], [not r["answerable"] for r in records]))
    return out


def breakdown(records: Sequence[dict[str, Any]], key: str) -> dict[str, dict[str, Any]]:
    """``side_metrics`` per value of ``key``; a list-valued key counts the record under each value."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        values = r.get(key)
        for v in values if isinstance(values, (list, tuple)) else [values]:
            groups.setdefault(str(v) if v not in (None, "") else "unknown", []).append(r)
    return {k: side_metrics(v) for k, v in sorted(groups.items())}


def cohen_kappa(a: Iterable[bool], b: Iterable[bool]) -> float | None:
    """Cohen's kappa for two binary raters; None when undefined (no items or chance agreement of 1)."""
    pairs = list(zip(a, b, strict=True))
    n = len(pairs)
    if n == 0:
        return None
    po = sum(x == y for x, y in pairs) / n
    pa, pb = sum(x for x, _ in pairs) / n, sum(y for _, y in pairs) / n
    pe = pa * pb + (1 - pa) * (1 - pb)
    if pe == 1:
        return None
    return (po - pe) / (1 - pe)


def judge_agreement(offline: Sequence[bool | None], other: Sequence[bool | None]) -> dict[str, Any]:
    """Agreement on one binary label where both judges gave a verdict (None = judge failure)."""
    both = [(x, y) for x, y in zip(offline, other, strict=True) if x is not None and y is not None]
    agree = sum(x == y for x, y in both)
    return {"n": len(both), "percent_agree": rate(agree, len(both)),
            "cohen_kappa": cohen_kappa([x for x, _ in both], [y for _, y in both])}
