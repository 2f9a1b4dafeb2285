"""The two NARA domains (text: causal transformer on stdlib sources; images: PixelCNN on binary shapes):
building, training, saving and loading a mother model with its prior and confidence predictors."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from cuekit.errors import CheckpointError, UnknownChoiceError, UsageError
from cuekit.nara.data import TEXT_VOCAB, binary_shapes, stdlib_text, text_windows
from cuekit.nara.mother import CausalTransformerLM, MotherModel, PixelCNN, PixelCNNMother, TransformerMother
from cuekit.nara.predictors import ConfidencePredictor, HiddenStatePrior, PriorPredictor
from cuekit.nara.training import (
    sample_text_mother,
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
# the prior each domain trains by default: the fastest measured (docs/nara.md, "What we measured")
DEFAULT_PRIOR = {"text": "hidden-chain", "image": "window"}

# (quick, full) settings per domain; `horizon` and `window` belong to the window prior, `prior_hidden`,
# `prior_rows` (mother samples the heads are distilled on) and `hidden_prior_steps` to the hidden-state priors;
# their horizons K (`hidden_horizon`, `chain_horizon`) are the fastest measured (docs/nara.md)
SCALES: dict[str, dict[str, dict]] = {
    "text": {
        "quick": dict(corpus_bytes=200_000, dim=64, depth=2, heads=4, seq_len=64, mother_steps=150, prior_steps=300,
                      conf_batches=10, length=64, horizon=4, window=16, prior_hidden=64, prior_rows=8192,
                      hidden_prior_steps=1500, hidden_horizon=4, chain_horizon=8),
        "full": dict(corpus_bytes=2_000_000, dim=128, depth=4, heads=4, seq_len=128, mother_steps=1500,
                     prior_steps=2000, conf_batches=40, length=128, horizon=6, window=24, prior_hidden=256,
                     prior_rows=16384, hidden_prior_steps=3000, hidden_horizon=4, chain_horizon=8),
    },
    "image": {
        "quick": dict(n_images=2000, size=12, channels=32, layers=4, mother_steps=150, prior_steps=300,
                      conf_batches=10, horizon=8, window=16),
        "full": dict(n_images=10000, size=16, channels=64, layers=6, mother_steps=1500, prior_steps=2000,
                     conf_batches=40, horizon=12, window=24),
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
    s = {**SCALES[name]["quick" if quick else "full"], **overrides}
    if name == "text":
        tokens = stdlib_text(s["corpus_bytes"])
        model, m_losses = train_text_mother(tokens, dim=s["dim"], depth=s["depth"], heads=s["heads"],
                                            seq_len=s["seq_len"], steps=s["mother_steps"], seed=seed, progress=progress)
        mother: MotherModel = TransformerMother(model)
    else:
        imgs = binary_shapes(s["n_images"], size=s["size"], seed=seed)
        model, m_losses = train_image_mother(imgs, channels=s["channels"], layers=s["layers"],
                                             steps=s["mother_steps"], seed=seed, progress=progress)
        mother = PixelCNNMother(model)
    mother_history = {"mother_loss_first": m_losses[0], "mother_loss_last": sum(m_losses[-10:]) / len(m_losses[-10:])}
    return _fit_prior(name, kind, mother, s, seed, progress, mother_history)


def with_prior(domain: Domain, prior: str, seed: int = 0, progress: bool = False) -> Domain:
    """The same mother with another prior (and its confidence predictor), trained as `build_domain` would."""
    kind = _check_prior(domain.name, prior)
    mother_history = {k: v for k, v in domain.history.items() if k.startswith("mother_")}
    return _fit_prior(domain.name, kind, domain.mother, dict(domain.settings), seed, progress, mother_history)


def _check_prior(name: str, prior: str | None) -> str:
    kind = prior or DEFAULT_PRIOR[name]
    if kind not in PRIOR_KINDS:
        raise UnknownChoiceError("NARA prior", kind, PRIOR_KINDS)
    if kind != "window" and name != "text":
        raise UsageError(f"prior {kind!r} reads the mother's cached hidden state, which only the text domain's "
                         "transformer has; use --prior window")
    return kind


def _fit_prior(name: str, kind: str, mother: MotherModel, s: dict, seed: int, progress: bool,
               mother_history: dict) -> Domain:
    """Train the prior of `kind` and the confidence predictor for a trained mother."""
    g = torch.Generator().manual_seed(seed)
    if kind != "window":
        model = mother.model
        # the heads are distilled on the mother's own samples: the contexts they will see when sampling
        rows = sample_text_mother(model, s["prior_rows"], s["seq_len"], generator=g)
        horizon = s["chain_horizon" if kind == "hidden-chain" else "hidden_horizon"]
        prior_model = HiddenStatePrior(model.dim, TEXT_VOCAB, horizon=horizon, hidden=s["prior_hidden"],
                                       chain=kind == "hidden-chain")
        torch.manual_seed(seed)
        p_losses = train_hidden_prior(prior_model, model, rows, steps=s["hidden_prior_steps"], seed=seed,
                                      progress=progress)
        offset, length = 1, s["length"]
    else:
        horizon = s["horizon"]
        if name == "text":
            rows = text_windows(stdlib_text(s["corpus_bytes"]), s["seq_len"], 4000, g)
            prior_model = PriorPredictor(TEXT_VOCAB, horizon=horizon, window=s["window"])
            offset, length = 1, s["length"]
        else:
            rows = binary_shapes(s["n_images"], size=s["size"], seed=seed).flatten(1)
            prior_model = PriorPredictor(2, horizon=horizon, window=s["window"], dim=8, num_positions=rows.shape[1])
            offset, length = 0, rows.shape[1]
        torch.manual_seed(seed)
        p_losses = train_prior(prior_model, rows, offset=offset, steps=s["prior_steps"], seed=seed,
                               progress=progress)
    conf, c_final = train_confidence(mother, prior_model, rows, offset=offset, batches=s["conf_batches"], seed=seed,
                                     progress=progress)
    history = {**mother_history, "prior_loss_last": sum(p_losses[-10:]) / len(p_losses[-10:]), "confidence": c_final}
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
