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
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    from cuekit.data.registry import DataBundle

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

# `cuekit reproduce AREA --data SPEC`: the areas whose experiment can run on a user's dataset in place of its
# built-in one, with the kind of data each takes, and the areas that refuse, with why (docs/<area>.md, Reproduction).
DATA_KINDS: dict[str, str] = {"adamp": "image", "pit": "image", "rexnet": "image", "transmit": "image"}
DATA_REFUSALS: dict[str, str] = {
    "wcst": "wcst's claim needs equally predictive constructed cues; it runs on its built-in Color-dSprites only "
            "(`cuekit wcst audit` audits a dataset of labelled attributes)",
    "wsol": "wsol's claims are scored against object boxes and masks on the protocol's train / held-out / test "
            "splits; it runs on its built-in shapes-loc only (`cuekit wsol train` / `wsol eval` take CUB or ImageNet)",
    "robustness": "robustness's near-OOD set is the dSprites shape never trained on, and its baseline is sized to "
                  "be over-confident there; it runs on its built-in Color-dSprites only (`cuekit robustness "
                  "bench` takes a dataset)",
    "videomix": "videomix's claims compare a scene-biased training draw with a scene-free one, judged on a "
                "scene-free test split; it runs on its built-in moving-shapes only (`cuekit train --reg "
                "videomix-s` takes a video dataset)",
    "relabel": "relabel's claims are read with multi-label (ReaL-style) accuracy, which needs every object of an "
               "image labelled; it runs on its built-in multi-shapes only (`cuekit relabel generate` takes a dataset)",
    "nara": "nara's experiment trains autoregressive models on its constructed text and image-patch sequences, not "
            "a classifier; it runs on its built-in domains only",
}


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
    data: str | None = None  # a dataset spec (`cuekit data list`) to run on instead of the built-in data


def check_data_areas(areas: Sequence[str], spec: str) -> None:
    """Refuse `--data SPEC` (UsageError) before anything runs: for areas that take only their built-in data, for
    image areas given video data, or for a spec that cannot be read as training data (probed once, small)."""
    from cuekit.data.registry import check_training_data, create_dataset, is_video_dataset
    from cuekit.errors import UsageError

    refusing = [a for a in areas if a not in DATA_KINDS]
    if refusing:
        why = "; ".join(DATA_REFUSALS.get(a, f"{a}'s experiment runs on its built-in data only") for a in refusing)
        raise UsageError(f"--data is refused by {', '.join(refusing)}: {why} (areas that take --data: "
                         f"{', '.join(DATA_KINDS)})")
    video = is_video_dataset(spec)
    wrong = [a for a in areas if (DATA_KINDS[a] == "video") != video]
    if wrong:
        raise UsageError(f"{', '.join(wrong)} take{'s' if len(wrong) == 1 else ''} {DATA_KINDS[wrong[0]]} data "
                         f"but {spec} is {'video' if video else 'image'} data")
    check_training_data(create_dataset(spec, img_size=32, train_size=1, val_size=1))


def experiment_data(spec: str | None, *, builtin: str, task: str | None, img_size: int, train_size: int | None,
                    val_size: int | None, seed: int) -> DataBundle:
    """The DataBundle of one run, its splits as TensorDatasets: the built-in dataset (`builtin` with `task`,
    rendered once) when spec is None, else the spec's own train/val split subsampled to train_size / val_size
    (seeded), at img_size, each image decoded once (training images through the dataset's own training
    transform, its randomness seeded, so every run of a seed sees the same tensors)."""
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from cuekit.data.registry import check_training_data, create_dataset, materialise
    from cuekit.errors import DataError

    if spec is None:
        return materialise(create_dataset(builtin, task=task, img_size=img_size, train_size=train_size,
                                          val_size=val_size, seed=seed))
    bundle = create_dataset(spec, img_size=img_size, train_size=train_size, val_size=val_size, seed=seed)
    check_training_data(bundle)

    def decode(ds) -> TensorDataset:
        if len(ds) == 0:
            raise DataError(f"{spec}: a split holds no images")
        xs, ys = zip(*DataLoader(ds, batch_size=256, shuffle=False, num_workers=0))
        return TensorDataset(torch.cat(xs), torch.cat(ys).long())

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return dataclasses.replace(bundle, train=decode(bundle.train), val=decode(bundle.val))


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
