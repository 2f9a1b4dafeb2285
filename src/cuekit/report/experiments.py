"""The registry of reproducible experiments that `cuekit reproduce` runs, one per area.

An area provides `run_experiment(config: ExperimentConfig) -> dict` in its own module and is
listed in AREA_MODULES below. The function writes its PNGs into `config.out_dir` and returns
a result dict (see `make_result`); the report only reads results, it never computes.
"""
from __future__ import annotations

import dataclasses
import math
import statistics
from pathlib import Path
from typing import Sequence

# area name -> module holding `run_experiment`. Each issue adds its line; a module that does
# not exist yet is reported as "not implemented yet" in the index page.
AREA_MODULES: dict[str, str] = {
    "adamp": "cuekit.optim.experiment",
    "pit": "cuekit.models.pit_experiment",
    "rexnet": "cuekit.rank.experiment",
    "wcst": "cuekit.wcst.experiment",
    "wsol": "cuekit.wsol.experiment",
    "robustness": "cuekit.robustness.experiment",
    "videomix": "cuekit.augment.video_experiment",
    "relabel": "cuekit.relabel.experiment",
    "transmit": "cuekit.transmit.experiment",
    "nara": "cuekit.nara.experiment",
}

VERDICTS = ("held", "did not hold", "inconclusive")


@dataclasses.dataclass
class ExperimentConfig:
    """What every area's `run_experiment` receives."""

    out_dir: Path            # reports/<area>/ : write PNGs (and anything else) here
    quick: bool = True       # quick: smoke scale (32 px, few steps); full: larger
    seeds: Sequence[int] = (0, 1, 2)  # at least 3 seeds for a verdict
    img_size: int = 32       # quick mode runs at 32 px
    device: str = "cpu"
    workers: int = 0         # DataLoader workers
    progress: bool = True    # whether the area may show progress bars


def verdict(effects: Sequence[float], expected_sign: int = 1) -> str:
    """One rule for every area: "held" / "did not hold" / "inconclusive".

    `effects` holds one number per seed (e.g. accuracy of the method minus the baseline), with
    the paper's claim predicting `expected_sign` (+1 or -1). "held" only where every seed has
    the paper's sign and the mean effect exceeds the spread (sample standard deviation);
    "did not hold" where every seed has the opposite sign likewise; else "inconclusive".
    Fewer than 3 seeds is always "inconclusive".
    """
    vals = [float(e) * (1 if expected_sign >= 0 else -1) for e in effects]
    if len(vals) < 3 or any(math.isnan(v) for v in vals):
        return "inconclusive"
    mean, spread = statistics.fmean(vals), statistics.stdev(vals)
    if all(v > 0 for v in vals) and mean > spread:
        return "held"
    if all(v < 0 for v in vals) and -mean > spread:
        return "did not hold"
    return "inconclusive"




def mean_spread(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    vals = [float(v) for v in values]
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)


def precondition(what: str, met: bool, measured: str = "") -> dict:
    """One condition a claim's verdict needs to mean anything, e.g. "the baseline beats chance".

    what: the condition in words; met: whether it held in this run; measured: the numbers it was judged on.
    A claim with any unmet precondition is "inconclusive", and the page names the failed one.
    """
    return {"what": str(what), "met": bool(met), "measured": str(measured)}


def claim_verdict(effects: Sequence[float], expected_sign: int, preconditions: Sequence[dict] = ()) -> str:
    """The rule (`verdict`) on the per-seed effects, or "inconclusive" when a precondition failed."""
    if any(not p["met"] for p in preconditions):
        return "inconclusive"
    return verdict(effects, expected_sign)


def claim(
    *,
    id: str,
    claim: str,
    measure: str,
    effects: Sequence[float],
    expected_sign: int = 1,
    headline: bool = False,
    preconditions: Sequence[dict] = (),
    regime: str = "",
    reference: bool = False,
    note: str = "",
) -> dict:
    """One row of an area's claims table, with its own verdict.

    id: a short stable name ("ivr_vs_minmax"); claim: the paper's words; measure: what one effect is
    ("MaxBoxAccV2 of IVR minus min-max, points"); effects: one number per seed, the paper predicting
    `expected_sign`; headline: the paper's headline claim (exactly one per area, its verdict is the
    area's); preconditions: from `precondition`; regime: where it was measured ("converged baseline,
    over-confident"); reference: a row shown for comparison that is not a claim of the paper's method
    (it is never the headline); note: anything a reader needs beside the numbers.
    """
    if expected_sign not in (1, -1):
        raise ValueError(f"expected_sign must be +1 or -1, got {expected_sign!r}")
    if headline and reference:
        raise ValueError(f"claim {id!r}: a reference row cannot be the headline")
    pre = [dict(p) for p in preconditions]
    for p in pre:
        if set(p) != {"what", "met", "measured"}:
            raise ValueError(f"claim {id!r}: build preconditions with precondition(), got keys {sorted(p)}")
    effects = [float(e) for e in effects]
    return {
        "id": str(id), "claim": str(claim), "measure": str(measure), "effects": effects,
        "expected_sign": int(expected_sign), "headline": bool(headline), "reference": bool(reference),
        "preconditions": pre, "failed_preconditions": [p["what"] for p in pre if not p["met"]],
        "regime": str(regime), "note": str(note),
        "verdict": claim_verdict(effects, expected_sign, pre),
    }


def check_claims(claims: object) -> dict:
    """Validate a claims list (as `claim` builds it) and return its headline claim.

    Raises ValueError when a row is malformed, ids repeat, there is not exactly one headline, or a
    verdict does not follow the rule for its effects and preconditions.
    """
    if not isinstance(claims, (list, tuple)) or not claims:
        raise ValueError("claims must be a non-empty list of claim() rows")
    keys = {"id", "claim", "measure", "effects", "expected_sign", "headline", "reference", "preconditions",
            "failed_preconditions", "regime", "note", "verdict"}
    ids = set()
    for c in claims:
        if not isinstance(c, dict) or not keys <= set(c):
            missing = sorted(keys - set(c)) if isinstance(c, dict) else "everything"
            raise ValueError(f"a claim row lacks {missing} (build it with claim())")
        if c["id"] in ids:
            raise ValueError(f"claim id {c['id']!r} appears twice")
        ids.add(c["id"])
        ruled = claim_verdict(c["effects"], c["expected_sign"], c["preconditions"])
        if c["verdict"] != ruled:
            raise ValueError(f"claim {c['id']!r}: verdict {c['verdict']!r} does not follow the rule for its "
                             f"effects and preconditions (the rule gives {ruled!r})")
    heads = [c for c in claims if c["headline"]]
    if len(heads) != 1:
        raise ValueError(f"exactly one claim must be the headline, found {len(heads)}")
    if heads[0]["reference"]:
        raise ValueError("a reference row cannot be the headline")
    return heads[0]


def make_result(
    *,
    area: str,
    title: str,
    claim: str,
    measured: str,
    table: dict,
    claims: Sequence[dict],
    regime: str,
    plots: Sequence[str] = (),
    seeds: Sequence[int] = (),
    details: dict | None = None,
    verdict: str | None = None,
) -> dict:
    """The result dict an area returns.

    claim: the paper's claims in a sentence or two; claims: one `claim()` row per claim of the paper
    (exactly one headline); regime: where the experiment lives (model, data, budget, whether the
    baseline converged, ...); table: {"columns": [str, ...], "rows": [[cell, ...], ...]} with the
    numbers behind the claims; plots: PNG file names in out_dir; details: anything else, JSON-able.
    The area's verdict, effects and expected sign are the headline claim's (`verdict`, when given,
    must agree). `cuekit reproduce` adds config, environment and time taken.
    """
    claims = [dict(c) for c in claims]
    head = check_claims(claims)
    if verdict is not None and verdict != head["verdict"]:
        raise ValueError(f"verdict {verdict!r} is not the headline claim's ({head['verdict']!r})")
    return {
        "area": area, "title": title, "claim": claim, "measured": measured,
        "verdict": head["verdict"], "table": table, "plots": list(plots), "seeds": list(seeds),
        "details": details or {}, "claims": claims, "regime": str(regime),
        "effects": list(head["effects"]), "expected_sign": head["expected_sign"],
    }
