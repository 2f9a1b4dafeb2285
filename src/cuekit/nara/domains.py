"""The two NARA domains (text: causal transformer on stdlib sources; images: PixelCNN on binary shapes):
building, training, saving and loading a mother model with its prior and confidence predictors."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from cuekit.errors import CheckpointError, UnknownChoiceError
from cuekit.nara.data import TEXT_VOCAB, binary_shapes, stdlib_text, text_windows
from cuekit.nara.mother import CausalTransformerLM, MotherModel, PixelCNN, PixelCNNMother, TransformerMother
from cuekit.nara.predictors import ConfidencePredictor, PriorPredictor
from cuekit.nara.training import train_confidence, train_image_mother, train_prior, train_text_mother

DOMAINS = ("text", "image")

# (quick, full) settings per domain
SCALES: dict[str, dict[str, dict]] = {
    "text": {
        "quick": dict(corpus_bytes=200_000, dim=64, depth=2, heads=4, seq_len=64, mother_steps=150, prior_steps=300,
                      conf_batches=10, length=64, horizon=4, window=16),
        "full": dict(corpus_bytes=2_000_000, dim=128, depth=4, heads=4, seq_len=128, mother_steps=1500,
                     prior_steps=2000, conf_batches=40, length=128, horizon=6, window=24),
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
    prior: PriorPredictor
    confidence: ConfidencePredictor
    length: int
    horizon: int
    settings: dict
    history: dict = field(default_factory=dict)


def build_domain(name: str, quick: bool = True, seed: int = 0, progress: bool = False, **overrides) -> Domain:
    """Train a domain's mother, prior and confidence predictor at quick or full scale (overrides win)."""
    if name not in DOMAINS:
        raise UnknownChoiceError("NARA domain", name, DOMAINS)
    s = {**SCALES[name]["quick" if quick else "full"], **overrides}
    g = torch.Generator().manual_seed(seed)
    if name == "text":
        tokens = stdlib_text(s["corpus_bytes"])
        model, m_losses = train_text_mother(tokens, dim=s["dim"], depth=s["depth"], heads=s["heads"],
                                            seq_len=s["seq_len"], steps=s["mother_steps"], seed=seed, progress=progress)
        mother = TransformerMother(model)
        rows = text_windows(tokens, s["seq_len"], 4000, g)
        prior = PriorPredictor(TEXT_VOCAB, horizon=s["horizon"], window=s["window"])
        offset, length = 1, s["length"]
    else:
        imgs = binary_shapes(s["n_images"], size=s["size"], seed=seed)
        model, m_losses = train_image_mother(imgs, channels=s["channels"], layers=s["layers"],
                                             steps=s["mother_steps"], seed=seed, progress=progress)
        mother = PixelCNNMother(model)
        rows = imgs.flatten(1)
        prior = PriorPredictor(2, horizon=s["horizon"], window=s["window"], dim=8, num_positions=rows.shape[1])
        offset, length = 0, rows.shape[1]
    torch.manual_seed(seed)
    p_losses = train_prior(prior, rows, offset=offset, steps=s["prior_steps"], seed=seed, progress=progress)
    conf, c_final = train_confidence(mother, prior, rows, offset=offset, batches=s["conf_batches"], seed=seed,
                                     progress=progress)
    history = {"mother_loss_first": m_losses[0], "mother_loss_last": sum(m_losses[-10:]) / len(m_losses[-10:]),
               "prior_loss_last": sum(p_losses[-10:]) / len(p_losses[-10:]), "confidence": c_final}
    return Domain(name, mother, prior, conf, length, s["horizon"], s, history)


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
        "mother_config": domain.mother.model.config, "prior_config": domain.prior.config,
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
        prior = PriorPredictor(**meta["prior_config"])
        prior.load_state_dict(load_file(str(path / "prior.safetensors")))
        conf = ConfidencePredictor(**meta["confidence_config"])
        conf.load_state_dict(load_file(str(path / "confidence.safetensors")))
    except (OSError, RuntimeError, KeyError) as e:
        raise CheckpointError(f"cannot load the NARA domain at {path}: {e}") from e
    return Domain(meta["name"], mother, prior.eval(), conf.eval(), meta["length"], meta["horizon"],
                  meta["settings"], meta.get("history", {}))
