"""The two NARA domains (text: causal transformer on stdlib sources; images: PixelCNN on binary shapes):
building, training, saving and loading a mother model with its prior and confidence predictors."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from cuekit.errors import CheckpointError, UnknownChoiceError, UsageError
from cuekit.nara.data import TEXT_VOCAB, binary_shapes, stdlib_text, text_windows
from cuekit.nara.mother import CausalTransformerLM, MotherModel, PixelCNN, PixelCNNMother, TransformerMother
from cuekit.nara.predictors import ConfidencePredictor, HiddenStatePrior, PriorPredictor
from cuekit.nara.training import (
    bigram_nll,
    independent_pixel_nll,
    mean_nll,
    neighbour_context_nll,
    sample_text_mother,
    text_mother_nll,
    train_confidence,
    train_hidden_prior,
    train_image_mother,
    train_prior,
    train_text_mother,
)

DOMAINS = ("text", "image")
# "hidden": Medusa-style heads on the mother's last hidden state, independent given the past (`HiddenStatePrior`;
# text only: the PixelCNN mother runs no cached pass that would leave one); "hidden-chain": the same heads plus
# a table on the previously proposed token (sequentially dependent proposals, not NARA's i.i.d. prior);
# "window": an MLP on the last tokens (`PriorPredictor`)
PRIOR_KINDS = ("hidden", "hidden-chain", "window")
# the prior each domain trains by default (CLI): the fastest measured with the earlier quick mother (docs/nara.md,
# "Priors"); `cuekit reproduce nara` judges the i.i.d. priors ("hidden", "window")
DEFAULT_PRIOR = {"text": "hidden-chain", "image": "window"}

# (quick, full) settings per domain; `horizon` and `window` belong to the window prior, `prior_hidden`,
# `prior_rows` (mother samples the heads are distilled on) and `hidden_prior_steps` to the hidden-state priors;
# their horizons K (`hidden_horizon`, `chain_horizon`) were the fastest measured on the earlier quick mother.
# Quick is sized for `cuekit reproduce nara --quick` (~1 min on 2 cores), full for ~15 min on 2 cores.
SCALES: dict[str, dict[str, dict]] = {
    "text": {
        "quick": dict(corpus_bytes=200_000, dim=64, depth=2, heads=4, seq_len=64, mother_steps=300, mother_lr=1e-2,
                      prior_steps=300, conf_batches=10, length=64, horizon=4, window=16, prior_hidden=64,
                      prior_rows=2048, hidden_prior_steps=1000, hidden_horizon=4, chain_horizon=8),
        "full": dict(corpus_bytes=2_000_000, dim=128, depth=4, heads=4, seq_len=128, mother_steps=1500,
                     mother_lr=5e-3, prior_steps=2000, conf_batches=40, length=128, horizon=6, window=24,
                     prior_hidden=128, prior_rows=4096, hidden_prior_steps=2000, hidden_horizon=4, chain_horizon=8),
    },
    "image": {
        "quick": dict(n_images=2000, size=10, channels=32, layers=4, mother_steps=600, mother_lr=3e-3,
                      prior_steps=300, conf_batches=10, horizon=8, window=16),
        "full": dict(n_images=10000, size=12, channels=48, layers=5, mother_steps=1500, mother_lr=3e-3,
                     prior_steps=2000, conf_batches=40, horizon=12, window=24),
    },
}


@dataclass
class Domain:
    """A trained mother with its NARA modules; `data` holds rows the predictors were fitted on."""

    name: str
    mother: MotherModel
    prior: PriorPredictor | HiddenStatePrior
    confidence: ConfidencePredictor
    length: int
    horizon: int
    settings: dict
    history: dict = field(default_factory=dict)
    prior_kind: str = "window"


def build_domain(name: str, quick: bool = True, seed: int = 0, progress: bool = False, prior: str | None = None,
                 **overrides) -> Domain:
    """Train a domain's mother, prior and confidence predictor at quick or full scale (overrides win).

    prior: one of `PRIOR_KINDS` ("hidden" and "hidden-chain": heads on the mother's state, text only;
    "window"); default: the fastest one measured for the domain (`DEFAULT_PRIOR`). The domain records it
    (`Domain.prior_kind`, settings["prior"]); the horizon K is `horizon`, `hidden_horizon` or `chain_horizon`.
    """
    if name not in DOMAINS:
        raise UnknownChoiceError("NARA domain", name, DOMAINS)
    kind = _check_prior(name, prior)
    s = domain_settings(name, quick, **overrides)
    mother, mother_history = train_mother(name, s, seed, progress)
    return fit_prior(name, kind, mother, s, seed, progress, mother_history)


def domain_settings(name: str, quick: bool = True, **overrides) -> dict:
    """The quick or full settings of a domain (`SCALES`) with overrides applied."""
    if name not in DOMAINS:
        raise UnknownChoiceError("NARA domain", name, DOMAINS)
    return {**SCALES[name]["quick" if quick else "full"], **overrides}


def train_mother(name: str, s: dict, seed: int = 0, progress: bool = False) -> tuple[MotherModel, dict]:
    """Train the domain's mother on its training split -> (mother, history).

    history: first / last training loss, and the held-out NLL of the mother and of a simple baseline fitted on
    the same training split ("mother_heldout_nll", "baseline_heldout_nll", "baseline"): an add-alpha bigram
    model for text (the mother is scored on the same tokens; corpus split 90 / 10 in order), a 4-neighbour
    causal context model for images (held-out images drawn with seed + 10000; independent pixels are recorded
    too), both in nats per token.
    """
    g = torch.Generator().manual_seed(seed + 5)
    if name == "text":
        tokens = stdlib_text(s["corpus_bytes"])
        split = int(0.9 * tokens.numel())
        model, m_losses = train_text_mother(tokens[:split], dim=s["dim"], depth=s["depth"], heads=s["heads"],
                                            seq_len=s["seq_len"], steps=s["mother_steps"], lr=s.get("mother_lr", 3e-3),
                                            seed=seed, progress=progress)
        eval_rows = text_windows(tokens[split:], s["seq_len"], s.get("eval_rows", 256), g)
        mother: MotherModel = TransformerMother(model)
        heldout = text_mother_nll(model, eval_rows)
        baseline, baseline_name = bigram_nll(tokens[:split], eval_rows, TEXT_VOCAB), "bigram"
        extra = {}
    else:
        imgs = binary_shapes(s["n_images"], size=s["size"], seed=seed)
        model, m_losses = train_image_mother(imgs, channels=s["channels"], layers=s["layers"],
                                             steps=s["mother_steps"], lr=s.get("mother_lr", 3e-3), seed=seed,
                                             progress=progress)
        mother = PixelCNNMother(model)
        eval_imgs = binary_shapes(s.get("eval_rows", 256), size=s["size"], seed=seed + 10_000)
        heldout = mean_nll(mother, eval_imgs.flatten(1))
        baseline, baseline_name = neighbour_context_nll(imgs, eval_imgs), "4-neighbour context"
        extra = {"independent_pixel_heldout_nll": independent_pixel_nll(imgs, eval_imgs)}
    tail = m_losses[-10:]
    return mother, {"mother_loss_first": m_losses[0], "mother_loss_last": sum(tail) / len(tail),
                    "mother_heldout_nll": heldout, "baseline_heldout_nll": baseline, "baseline": baseline_name,
                    **extra}


def with_prior(domain: Domain, prior: str, seed: int = 0, progress: bool = False) -> Domain:
    """The same mother with another prior (and its confidence predictor), trained as `build_domain` would."""
    kind = _check_prior(domain.name, prior)
    mother_history = {k: v for k, v in domain.history.items() if k.startswith(("mother_", "baseline"))}
    return fit_prior(domain.name, kind, domain.mother, dict(domain.settings), seed, progress, mother_history)


def _check_prior(name: str, prior: str | None) -> str:
    kind = prior or DEFAULT_PRIOR[name]
    if kind not in PRIOR_KINDS:
        raise UnknownChoiceError("NARA prior", kind, PRIOR_KINDS)
    if kind != "window" and name != "text":
        raise UsageError(f"prior {kind!r} reads the mother's cached hidden state, which only the text domain's "
                         "transformer has; use --prior window")
    return kind


def prior_rows(name: str, kind: str, mother: MotherModel, s: dict, seed: int) -> Tensor:
    """The rows a prior of `kind` and its confidence predictor are fitted on: the mother's own samples for the
    hidden-state priors (the contexts they meet when sampling; BOS first), corpus windows (text) or training
    images (flattened) for the window prior."""
    g = torch.Generator().manual_seed(seed)
    if kind != "window":
        return sample_text_mother(mother.model, s["prior_rows"], s["seq_len"], generator=g)
    if name == "text":
        return text_windows(stdlib_text(s["corpus_bytes"]), s["seq_len"], 4000, g)
    return binary_shapes(s["n_images"], size=s["size"], seed=seed).flatten(1)


def fit_prior(name: str, kind: str, mother: MotherModel, s: dict, seed: int = 0, progress: bool = False,
              mother_history: dict | None = None, rows: Tensor | None = None) -> Domain:
    """Train the prior of `kind` and the confidence predictor for a trained mother -> a `Domain`.

    rows: what `prior_rows` gives (drawn here when None; pass them to share one draw between priors).
    """
    kind = _check_prior(name, kind)
    if rows is None:
        rows = prior_rows(name, kind, mother, s, seed)
    torch.manual_seed(seed)
    if kind != "window":
        model = mother.model
        horizon = s["chain_horizon" if kind == "hidden-chain" else "hidden_horizon"]
        prior_model = HiddenStatePrior(model.dim, TEXT_VOCAB, horizon=horizon, hidden=s["prior_hidden"],
                                       chain=kind == "hidden-chain")
        p_losses = train_hidden_prior(prior_model, model, rows, steps=s["hidden_prior_steps"], seed=seed,
                                      progress=progress)
        offset, length = 1, s["length"]
    else:
        horizon = s["horizon"]
        if name == "text":
            prior_model = PriorPredictor(TEXT_VOCAB, horizon=horizon, window=s["window"])
            offset, length = 1, s["length"]
        else:
            prior_model = PriorPredictor(2, horizon=horizon, window=s["window"], dim=8, num_positions=rows.shape[1])
            offset, length = 0, rows.shape[1]
        p_losses = train_prior(prior_model, rows, offset=offset, steps=s["prior_steps"], seed=seed,
                               progress=progress)
    conf, c_final = train_confidence(mother, prior_model, rows, offset=offset, batches=s["conf_batches"], seed=seed,
                                     progress=progress)
    history = {**(mother_history or {}), "prior_loss_last": sum(p_losses[-10:]) / len(p_losses[-10:]),
               "confidence": c_final}
    return Domain(name, mother, prior_model, conf, length, horizon, {**s, "prior": kind}, history, kind)


def save_domain(domain: Domain, out_dir: str | Path) -> None:
    """Write mother / prior / confidence weights (safetensors) and domain.json into out_dir."""
    from safetensors.torch import save_file

    from cuekit.io import atomic_write_bytes, atomic_write_json

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for part, module in (("mother", domain.mother.model), ("prior", domain.prior), ("confidence", domain.confidence)):
        tmp = out / f".{part}.safetensors.tmp"
        save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(tmp))
        atomic_write_bytes(out / f"{part}.safetensors", tmp.read_bytes())
        tmp.unlink()
    atomic_write_json(out / "domain.json", {
        "name": domain.name, "length": domain.length, "horizon": domain.horizon, "settings": domain.settings,
        "mother_config": domain.mother.model.config, "prior_kind": domain.prior_kind,
        "prior_config": domain.prior.config,
        "confidence_config": domain.confidence.config, "history": domain.history})


def load_domain(path: str | Path) -> Domain:
    """Read a folder written by `save_domain`."""
    from safetensors.torch import load_file

    path = Path(path)
    meta_path = path / "domain.json"
    if not meta_path.is_file():
        raise CheckpointError(f"no NARA domain at {path} (domain.json missing): run `cuekit nara train --out {path}`")
    meta = json.loads(meta_path.read_text())
    try:
        if meta["name"] == "text":
            model = CausalTransformerLM(**meta["mother_config"])
            model.load_state_dict(load_file(str(path / "mother.safetensors")))
            mother: MotherModel = TransformerMother(model)
        else:
            model = PixelCNN(**meta["mother_config"])
            model.load_state_dict(load_file(str(path / "mother.safetensors")))
            mother = PixelCNNMother(model)
        kind = meta.get("prior_kind", "window")
        prior = (PriorPredictor if kind == "window" else HiddenStatePrior)(**meta["prior_config"])
        prior.load_state_dict(load_file(str(path / "prior.safetensors")))
        conf = ConfidencePredictor(**meta["confidence_config"])
        conf.load_state_dict(load_file(str(path / "confidence.safetensors")))
    except (OSError, RuntimeError, KeyError) as e:
        raise CheckpointError(f"cannot load the NARA domain at {path}: {e}") from e
    return Domain(meta["name"], mother, prior.eval(), conf.eval(), meta["length"], meta["horizon"],
                  meta["settings"], meta.get("history", {}), kind)
