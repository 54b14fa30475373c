"""Paired comparisons of two methods on the same images, and the sentence that reports them.

Both runs of a comparison scored the same test images, so they are compared image by image:
the mean per-image difference (variant - baseline) with a 95% bootstrap interval that
resamples images (not the two runs independently). A difference counts as better or worse
only when its interval excludes 0; with fewer than :data:`FEW_IMAGES` images the sentence
says that the interval is descriptive, not a test.
"""
from __future__ import annotations

import math
from dataclasses import dataclass


def component_title(comp: str) -> str:
    return "re-render" if comp == "image" else comp


@dataclass
class Difference:
    """Variant minus baseline on one column, paired over the images both scored."""

    component: str
    metric: str
    n: int
    variant_mean: float
    baseline_mean: float
    diff: float
    ci_low: float
    ci_high: float
    verdict: str  # better | worse | inside (the interval holds 0) | n/a (fewer than 2 images)


def paired_differences(variant: dict, baseline: dict, columns, directions: dict[str, bool]) -> list[Difference]:
    """The mean per-image difference of each column with its 95% paired bootstrap interval
    (images resampled together, as both methods saw the same images); the difference is
    'outside the interval' (better or worse) only when the interval excludes 0."""
    import numpy as np

    from .tables import bootstrap_ci

    out = []
    for comp, metric in columns:
        a, b = variant.get((comp, metric), {}), baseline.get((comp, metric), {})
        ids = sorted(i for i in set(a) & set(b) if math.isfinite(a[i]) and math.isfinite(b[i]))
        va, vb = np.array([a[i] for i in ids], float), np.array([b[i] for i in ids], float)
        d = va - vb
        if len(ids) < 2:
            out.append(Difference(comp, metric, len(ids), math.nan, math.nan, math.nan, math.nan, math.nan, "n/a"))
            continue
        lo, hi = bootstrap_ci(d)
        if lo > 0 or hi < 0:
            up = hi < 0 if not directions.get(metric, False) else lo > 0
            verdict = "better" if up else "worse"
        else:
            verdict = "inside"
        out.append(Difference(comp, metric, len(ids), float(va.mean()), float(vb.mean()), float(d.mean()), lo, hi, verdict))
    return out


def _signed(x: float) -> str:
    from .tables import fmt

    return fmt(x) if x < 0 else "+" + fmt(x)


def comparison_sentence(variant: str, baseline: str, diffs: list[Difference]) -> str:
    """One sentence: where ``variant`` is better or worse than ``baseline`` outside the 95%
    interval of the paired difference, and how many differences stay inside it."""
    scored = [d for d in diffs if d.verdict != "n/a"]
    if not scored:
        return f"{variant} vs {baseline}: too few images scored by both (at least 2 are needed) to compare."
    n = max(d.n for d in scored)

    def items(ds):
        return ", ".join(f"{component_title(d.component)} {d.metric.upper()} ({_signed(d.diff)}, 95% CI "
                         f"[{_signed(d.ci_low)}, {_signed(d.ci_high)}])" for d in ds)

    better = [d for d in scored if d.verdict == "better"]
    worse = [d for d in scored if d.verdict == "worse"]
    head = f"{variant} vs {baseline} ({n} images, paired): "
    if not better and not worse:
        return head + (f"none of the {len(scored)} differences lies outside its 95% interval, so this test set "
                       "does not tell them apart.") + _few_images_caveat(n)
    parts = []
    if worse:
        parts.append(f"worse outside the 95% interval on {items(worse)}")
    if better:
        parts.append(f"better outside the 95% interval on {items(better)}")
    rest = len(scored) - len(better) - len(worse)
    tail = f"; the other {rest} of {len(scored)} differences lie inside their intervals." if rest else "."
    return head + "; ".join(parts) + tail + _few_images_caveat(n)


FEW_IMAGES = 10  # below this, a bootstrap interval is not a test (see _few_images_caveat)


def _few_images_caveat(n: int) -> str:
    """Resampling n images gives at most n distinct means per side: with 2 images the 95%
    interval is the range of the two differences, so 'outside' only means both images
    agree in sign. Say so rather than let a 2-image table read like a significance test."""
    if n >= FEW_IMAGES:
        return ""
    return (f" With only {n} images the interval is little more than the range of the per-image differences "
            f"(a difference lies outside it whenever {'both' if n == 2 else f'all {n}'} agree in sign): descriptive, not a test; "
            "use more images (--limit) for a claim.")



__all__ = ["Difference", "FEW_IMAGES", "comparison_sentence", "component_title", "paired_differences"]
