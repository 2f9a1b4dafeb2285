"""The robustness and uncertainty benchmark: train with regularizers, measure every metric.

`RobustnessSuite` holds the evaluation sets (clean, corrupted, OOD, occluded), built once in
pixel space ([0, 1]) and normalised for the model on the fly, and `evaluate(model)` returns clean
accuracy, mean confidence, NLL, ECE, MCE, Brier and the reliability bins; accuracy and error per
corruption and severity, on corruptions it generates or, given `SuiteSettings.corrupted_data`, on
the precomputed CIFAR-10-C / CIFAR-100-C / ImageNet-C sets (`cuekit.data.corrupted_sets`); OOD
detection per OOD set by max softmax and by the scores of `SuiteSettings.ood_scores` (ODIN with and
without its input perturbation, energy); FGSM accuracy per epsilon; centre / boundary occlusion
accuracy, the occluded region filled with the dataset's per-channel mean (a zero in mean-centred
input space, as on normalised CIFAR / ImageNet; a zero pixel fill would change nothing on a black
background). A suite pickles (e.g. to hand it to worker processes once, through a file).
`corruption_errors` turns several models' results into CE / mCE relative to a baseline model,
`corruption_errors_from_table` relative to a table of a baseline's errors (e.g. AlexNet's on
ImageNet-C), and `run_benchmark` trains one model per regularizer and evaluates them all.
"""
from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import Tensor, nn

from cuekit.io import save_figure
from cuekit.robustness.adversarial import DEFAULT_EPSILONS, fgsm_accuracy
from cuekit.robustness.calibration import (
    ReliabilityBins,
    brier_score,
    nll_from_logits,
    reliability_bins,
)
from cuekit.robustness.corruptions import (
    COMMON_CORRUPTIONS,
    CORRUPTIONS,
    SEVERITIES,
    corrupt,
    occlude,
    resolve_preset,
)
from cuekit.robustness.ood import (
    ENERGY_TEMPERATURE,
    ODIN_EPSILON,
    ODIN_TEMPERATURE,
    _fit,
    check_ood_scores,
    check_ood_specs,
    max_softmax_score,
    ood_images,
    ood_metrics,
    ood_scores,
)

__all__ = ["ALEXNET_IMAGENET_C_ERRORS", "BenchConfig", "RobustnessSuite", "SmallConvNet", "SuiteSettings",
           "corruption_errors", "corruption_errors_from_table", "corruption_table", "load_baseline_errors",
           "make_model", "occlude_with_fill", "ood_table", "parse_regularizer_list", "run_benchmark", "summary_row",
           "SUMMARY_COLUMNS"]


@dataclasses.dataclass
class SuiteSettings:
    """Which evaluations to run and how."""

    corruptions: Sequence[str] = COMMON_CORRUPTIONS
    severities: Sequence[int] = SEVERITIES
    preset: str = "auto"                 # corruption parameters: auto, cifar, imagenet
    n_bins: int = 15                     # ECE bins
    ood: Sequence[str] = ("blobs", "gaussian", "uniform", "shapes-loc")
    epsilons: Sequence[float] = DEFAULT_EPSILONS  # FGSM, pixel units
    occlusion: Sequence[float] = (0.25, 0.5, 0.75)  # occluded side as a fraction of the image side
    batch_size: int = 256
    seed: int = 0                        # corruption and OOD randomness
    # How many of the images (the first N; None: all) the corruption, FGSM and occlusion measures use.
    # Calibration and OOD detection always use every image.
    corruption_images: int | None = None
    fgsm_images: int | None = None
    occlusion_images: int | None = None
    # OOD scores besides the max softmax that `ood` always reports: msp, odin-t, odin, energy (ood.py)
    ood_scores: Sequence[str] = ("msp",)
    odin_temperature: float = ODIN_TEMPERATURE
    odin_epsilon: float = ODIN_EPSILON
    energy_temperature: float = ENERGY_TEMPERATURE
    ood_fit: str = "resize-crop"         # folder OOD images: resize-crop, resize or crop to the image size
    # Precomputed corrupted sets (cifar10-c:PATH, cifar100-c:PATH, imagenet-c:PATH): evaluated instead of
    # generating corruptions; `corruptions` and `severities` pick the sets, `preset` is unused.
    corrupted_data: str | None = None
    data_workers: int = 0                # processes decoding ImageNet-C images


class SmallConvNet(nn.Module):
    """A small CNN for CPU-scale runs: three conv-BN-ReLU stages (two max-pools), global pooling, linear.

    pool: "mean" (global average) or "max" (global max: suits small objects on an empty background).
    """

    def __init__(self, num_classes: int, in_chans: int = 3, width: int = 8, pool: str = "mean"):
        super().__init__()
        if pool not in ("mean", "max"):
            from cuekit.errors import UnknownChoiceError

            raise UnknownChoiceError("pool", pool, ("mean", "max"))
        self.pool = pool
        chans = [in_chans, width, 2 * width, 4 * width]
        layers: list[nn.Module] = []
        for i in range(3):
            layers += [nn.Conv2d(chans[i], chans[i + 1], 3, padding=1, bias=False), nn.BatchNorm2d(chans[i + 1]),
                       nn.ReLU(inplace=True)]
            if i < 2:
                layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(chans[-1], num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """x: (N, C, H, W) -> logits (N, num_classes)."""
        h = self.features(x)
        return self.fc(h.amax((2, 3)) if self.pool == "max" else h.mean((2, 3)))


def make_model(name: str, num_classes: int, in_chans: int, img_size: int) -> nn.Module:
    """"small-cnn" (built in here) or any registered model name."""
    if name == "small-cnn":
        return SmallConvNet(num_classes, in_chans)
    from cuekit.models.registry import create_model

    return create_model(name, num_classes=num_classes, in_chans=in_chans, img_size=img_size)


class _Normaliser:
    """Pixel images -> the model's input, (x - mean) / std per channel, on `device` (picklable)."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], channels: int, device):
        self.device = torch.device(device)
        self.mean = torch.as_tensor(list(mean)[:channels], dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.as_tensor(list(std)[:channels], dtype=torch.float32).view(1, -1, 1, 1)

    def __call__(self, x: Tensor) -> Tensor:
        """x (N, C, H, W) float pixels -> normalised float32 on the device."""
        return (x.to(self.device).float() - self.mean.to(self.device)) / self.std.to(self.device)


def _normaliser(mean: Sequence[float], std: Sequence[float], channels: int, device) -> Callable[[Tensor], Tensor]:
    return _Normaliser(mean, std, channels, device)


def occlude_with_fill(images: Tensor, kind: str, fraction: float, fill: Tensor) -> Tensor:
    """`occlude` with a per-channel fill: images (N, C, H, W), fill (C,) -> same shape.

    Occluding the mean-centred images with 0 and adding the fill back fills the region with `fill`.
    """
    f = fill.to(images.dtype).to(images.device).view(1, -1, 1, 1)
    return occlude(images - f, kind, fraction, 0.0) + f


def _precomputed_batches(source, corruption: str, severity: int, settings: SuiteSettings, channels: int,
                         size: int):
    """One precomputed set's (pixel images (B, C, size, size) float, labels (B,)) batches, fitted to the suite's
    images where they differ (shorter side resized, centre crop; channels matched)."""
    for x, y in source.batches(corruption, severity, settings.batch_size, limit=settings.corruption_images,
                               workers=settings.data_workers):
        if x.shape[1] != channels or tuple(x.shape[-2:]) != (size, size):
            x = _fit(x.float() / 255, size, channels)
        yield x, y


@torch.no_grad()
def _logits(model: nn.Module, images: Tensor, normalise: Callable[[Tensor], Tensor], batch_size: int) -> Tensor:
    """Pixel images (N, C, H, W) (float or uint8) -> logits (N, K) float on the CPU."""
    out = []
    for i in range(0, len(images), batch_size):
        x = images[i:i + batch_size]
        x = x.float() / 255 if x.dtype == torch.uint8 else x
        out.append(model(normalise(x)).float().cpu())
    return torch.cat(out)


def _check_settings(settings: SuiteSettings) -> None:
    """Corruption names and severities known, OOD scores known with valid parameters, the folder fit known
    (UsageError / UnknownChoiceError otherwise)."""
    from cuekit.errors import UnknownChoiceError, UsageError
    from cuekit.robustness.ood import FOLDER_FITS

    for name in settings.corruptions:
        if name not in CORRUPTIONS:
            raise UnknownChoiceError("corruption", name, CORRUPTIONS)
    bad = [s for s in settings.severities if s not in SEVERITIES]
    if bad:
        raise UsageError(f"corruption severities must be in {list(SEVERITIES)}, got {bad}")
    check_ood_scores(settings.ood_scores, settings.odin_temperature, settings.odin_epsilon,
                     settings.energy_temperature)
    if settings.ood_fit not in FOLDER_FITS:
        raise UnknownChoiceError("OOD fit", settings.ood_fit, FOLDER_FITS)


def open_precomputed(settings: SuiteSettings, class_names: Sequence[str] | None = None,
                     num_classes: int | None = None, img_size: int | None = None):
    """The precomputed corrupted sets of `settings.corrupted_data`, every set the settings name checked
    (DataError naming the file otherwise), and their classes matched to the model's: -> CorruptedSets."""
    from cuekit.data.corrupted_sets import open_corrupted_sets
    from cuekit.errors import DataError

    source = open_corrupted_sets(settings.corrupted_data, class_names=class_names, img_size=img_size)
    if source.num_classes is not None and num_classes is not None and source.num_classes != num_classes:
        raise DataError(f"{settings.corrupted_data} has {source.num_classes} classes but the model predicts "
                        f"{num_classes} (a CIFAR-10-C set for a CIFAR-100 model?)")
    source.check(settings.corruptions, settings.severities)
    return source


class RobustnessSuite:
    """Evaluation sets for one labelled image set; `evaluate(model)` measures a model on all of them.

    images: (N, C, H, W) float pixels in [0, 1]; labels (N,) int; mean/std: the normalisation the
    model expects. Corrupted sets are stored as uint8 (like CIFAR-C / ImageNet-C files).
    """

    def __init__(self, images: Tensor, labels: Tensor, mean: Sequence[float], std: Sequence[float],
                 settings: SuiteSettings | None = None, device: str | torch.device = "cpu",
                 ood_sets: dict[str, Tensor] | None = None, progress: bool = False,
                 occlusion_fill: Sequence[float] | Tensor | None = None,
                 class_names: Sequence[str] | None = None, num_classes: int | None = None):
        """occlusion_fill: per-channel pixel values for the occluded region, e.g. the training set's mean
        (default: the per-channel mean of `images`). class_names / num_classes: the model's classes, which
        precomputed corrupted sets (`settings.corrupted_data`) must match (ImageNet-C's class folders are
        labelled by their index in class_names)."""
        self.settings = settings or SuiteSettings()
        self.progress = progress
        # every input is checked before the (slow) corrupted and OOD sets are built
        _check_settings(self.settings)
        check_ood_specs([spec for spec in self.settings.ood if spec not in (ood_sets or {})])
        self.images, self.labels = images.float().clamp(0, 1), labels.long()
        self.mean, self.std, self.device = list(mean), list(std), torch.device(device)
        n, c, h, w = images.shape
        self.corrupted_sets = None
        if self.settings.corrupted_data:
            self.corrupted_sets = open_precomputed(self.settings, class_names, num_classes, h)
        self.preset = "precomputed" if self.corrupted_sets is not None else resolve_preset(self.settings.preset, h, w)
        self.normalise = _normaliser(self.mean, self.std, c, self.device)
        fill = self.images.mean((0, 2, 3)) if occlusion_fill is None else torch.as_tensor(occlusion_fill).float()
        if fill.numel() == 1:
            fill = fill.reshape(1).expand(c)
        if fill.numel() != c:
            from cuekit.errors import UsageError

            raise UsageError(f"occlusion_fill has {fill.numel()} values for {c} channels")
        self.occlusion_fill = fill.reshape(c).clone()
        from tqdm.auto import tqdm

        jobs = [(name, s) for name in self.settings.corruptions for s in self.settings.severities]
        if self.corrupted_sets is not None:
            jobs = []  # read from the precomputed files when a model is evaluated
        self.corrupted: dict[tuple[str, int], Tensor] = {}
        sub = self.images[:self.settings.corruption_images]
        for k, (name, s) in enumerate(tqdm(jobs, desc="corrupting", disable=not progress, leave=False)):
            out = corrupt(sub.to(self.device), name, s, seed=self.settings.seed * 1000 + k, preset=self.preset)
            self.corrupted[(name, s)] = torch.round(out * 255).to(torch.uint8).cpu()
        self.ood: dict[str, Tensor] = dict(ood_sets or {})
        for spec in self.settings.ood:
            if spec not in self.ood:
                self.ood[spec] = ood_images(spec, n, h, c, seed=self.settings.seed, fit=self.settings.ood_fit)

    def _corrupted_logits(self, model: nn.Module, name: str, severity: int) -> tuple[Tensor, Tensor]:
        """Logits (N, K) and labels (N,) of one corrupted set: generated, or read from the precomputed files."""
        st = self.settings
        if self.corrupted_sets is None:
            corrupted = self.corrupted[(name, severity)]
            return _logits(model, corrupted, self.normalise, st.batch_size), self.labels[:len(corrupted)]
        out, labels = [], []
        _, c, h, _ = self.images.shape
        with torch.no_grad():
            for x, y in _precomputed_batches(self.corrupted_sets, name, severity, st, c, h):
                x = x.float() / 255 if x.dtype == torch.uint8 else x
                out.append(model(self.normalise(x)).float().cpu())
                labels.append(y)
        return torch.cat(out), torch.cat(labels)

    def evaluate(self, model: nn.Module) -> dict:
        """Every metric for one model (moved to the suite's device, left in eval mode)."""
        st = self.settings
        model = model.to(self.device).eval()
        bs = st.batch_size
        logits = _logits(model, self.images, self.normalise, bs)
        probs = logits.softmax(1)
        bins = reliability_bins(probs, self.labels, st.n_bins)
        acc = float((logits.argmax(1) == self.labels).float().mean())
        clean = {"acc": acc, "confidence": float(probs.max(1).values.mean()),
                 "nll": nll_from_logits(logits, self.labels), "ece": bins.ece, "mce": bins.mce,
                 "brier": brier_score(probs, self.labels), "reliability": dataclasses.asdict(bins)}
        per_corruption: dict[str, list[float]] = {}
        counts: dict[str, list[int]] = {}
        eces = []
        from tqdm.auto import tqdm

        bar = tqdm(total=len(st.corruptions) * len(st.severities), desc="corrupted sets", leave=False,
                   disable=not (self.progress and self.corrupted_sets is not None))
        for name in st.corruptions:
            accs, ns = [], []
            for s in st.severities:
                lg, labels = self._corrupted_logits(model, name, s)
                accs.append(float((lg.argmax(1) == labels).float().mean()))
                ns.append(int(len(labels)))
                eces.append(reliability_bins(lg.softmax(1), labels, st.n_bins).ece)
                bar.update()
            per_corruption[name], counts[name] = accs, ns
        bar.close()
        corr_mean = sum(sum(v) for v in per_corruption.values()) / max(1, sum(len(v) for v in per_corruption.values()))
        scores_in = max_softmax_score(logits)
        score_kw = dict(odin_temperature=st.odin_temperature, odin_epsilon=st.odin_epsilon,
                        energy_temperature=st.energy_temperature, batch_size=bs)
        in_scores = (ood_scores(model, self.images, self.normalise, st.ood_scores, logits=logits, **score_kw)
                     if st.ood_scores and self.ood else {})
        ood, by_score = {}, {name: {} for name in st.ood_scores}
        for spec, imgs in self.ood.items():
            out_logits = _logits(model, imgs, self.normalise, bs)
            ood[spec] = ood_metrics(scores_in, max_softmax_score(out_logits))
            out_scores = ood_scores(model, imgs, self.normalise, st.ood_scores, logits=out_logits, **score_kw)
            for name in st.ood_scores:
                by_score[name][spec] = ood_metrics(in_scores[name], out_scores[name])
        n_fgsm = st.fgsm_images
        fgsm = fgsm_accuracy(model, self.normalise(self.images[:n_fgsm]).cpu(), self.labels[:n_fgsm], st.epsilons,
                             self.mean, self.std, bs, self.device)
        occl = {}
        occ_images, occ_labels = self.images[:st.occlusion_images], self.labels[:st.occlusion_images]
        for kind in ("center", "boundary"):
            occl[kind] = {}
            for frac in st.occlusion:
                lg = _logits(model, occlude_with_fill(occ_images, kind, frac, self.occlusion_fill), self.normalise, bs)
                occl[kind][str(frac)] = float((lg.argmax(1) == occ_labels).float().mean())
        return {
            "clean": clean,
            "corruption": {"acc": per_corruption, "mean_acc": corr_mean,
                           "error": {k: [1 - a for a in v] for k, v in per_corruption.items()},
                           "mean_error": 1 - corr_mean, "images": counts,
                           "mean_ece": sum(eces) / max(1, len(eces)), "severities": list(st.severities),
                           "preset": self.preset,
                           "source": st.corrupted_data or "generated"},
            "ood": ood,
            "ood_scores": by_score,
            "ood_score_params": {"odin_temperature": st.odin_temperature, "odin_epsilon": st.odin_epsilon,
                                 "energy_temperature": st.energy_temperature, "folder_fit": st.ood_fit},
            "ood_mean_auroc": sum(m["auroc"] for m in ood.values()) / max(1, len(ood)),
            "fgsm": {f"{e:.6g}": a for e, a in fgsm.items()},
            "occlusion": occl,
            # clean accuracy on the images each subset-measure used (the first N), its own reference point
            "subset_clean_acc": {name: float((logits[:k].argmax(1) == self.labels[:k]).float().mean())
                                 for name, k in (("corruption", st.corruption_images), ("fgsm", n_fgsm),
                                                 ("occlusion", st.occlusion_images))},
            "n": int(len(self.labels)),
        }


def corruption_errors(results: dict[str, dict], baseline: str) -> dict[str, dict]:
    """CE and mCE (Hendrycks & Dietterich) of each model relative to `baseline`, from `evaluate` results.

    CE_c = sum_s E_{s,c} / sum_s E^base_{s,c}; relative CE_c = sum_s (E_{s,c} - E_clean) /
    sum_s (E^base_{s,c} - E^base_clean); mCE and relative mCE average them over corruptions
    (1.0 = as robust as the baseline; lower is better). A zero denominator gives NaN.
    """
    base = results[baseline]
    out = {}
    for name, res in results.items():
        ce, rel = {}, {}
        e_clean, b_clean = 1 - res["clean"]["acc"], 1 - base["clean"]["acc"]
        for c, accs in res["corruption"]["acc"].items():
            errs = [1 - a for a in accs]
            berrs = [1 - a for a in base["corruption"]["acc"][c]]
            ce[c] = sum(errs) / sum(berrs) if sum(berrs) > 0 else math.nan
            denom = sum(b - b_clean for b in berrs)
            rel[c] = sum(e - e_clean for e in errs) / denom if denom > 0 else math.nan
        out[name] = {"ce": ce, "mce": sum(ce.values()) / max(1, len(ce)),
                     "relative_ce": rel, "relative_mce": sum(rel.values()) / max(1, len(rel))}
    return out


# Top-1 error of AlexNet on ImageNet-C per corruption, the mean over severities 1-5: the normaliser of
# Hendrycks & Dietterich's mCE (github.com/hendrycks/robustness; quoted as ALEXNET_ERR in AugMix's imagenet.py).
ALEXNET_IMAGENET_C_ERRORS = {
    "gaussian_noise": 0.886428, "shot_noise": 0.894468, "impulse_noise": 0.922640, "defocus_blur": 0.819880,
    "glass_blur": 0.826268, "motion_blur": 0.785948, "zoom_blur": 0.798360, "snow": 0.866816, "frost": 0.826572,
    "fog": 0.819324, "brightness": 0.564592, "contrast": 0.853204, "elastic_transform": 0.646056,
    "pixelate": 0.717840, "jpeg_compression": 0.606500,
}


def load_baseline_errors(spec: str) -> dict:
    """A baseline's corruption errors for CE / mCE: "alexnet" (AlexNet on ImageNet-C, the usual normaliser) or a
    JSON file {"errors": {corruption: error or [error at severity 1, ..., 5]}, "clean": error (optional,
    for the relative mCE)} (a bare {corruption: ...} mapping also reads). Errors are fractions in [0, 1].
    -> {"errors": {corruption: float | list[float]}, "clean": float | None, "source": str}."""
    import json

    from cuekit.errors import DataError, UnknownChoiceError

    if spec == "alexnet":
        return {"errors": dict(ALEXNET_IMAGENET_C_ERRORS), "clean": None,
                "source": "alexnet (AlexNet's ImageNet-C errors, mean over severities 1-5)"}
    path = Path(spec).expanduser()
    if not path.is_file():
        raise DataError(f"baseline errors file not found: {path} (give alexnet or a JSON file)")
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: not readable JSON ({e})") from None
    if not isinstance(raw, dict):
        raise DataError(f"{path}: expected a JSON object of corruption errors")
    errors = raw.get("errors", {k: v for k, v in raw.items() if k != "clean"})
    clean = raw.get("clean")
    if not isinstance(errors, dict) or not errors:
        raise DataError(f"{path}: no corruption errors (expected {{\"errors\": {{\"fog\": 0.81, ...}}}})")
    out = {}
    for name, value in errors.items():
        if name not in CORRUPTIONS:
            raise UnknownChoiceError(f"corruption in {path}:", name, CORRUPTIONS)
        values = value if isinstance(value, list) else [value]
        if (isinstance(value, list) and len(value) != len(SEVERITIES)) or not all(
                isinstance(v, (int, float)) and 0 <= v <= 1 for v in values):
            raise DataError(f"{path}: {name}: expected an error in [0, 1] (the mean over severities 1-5) or a "
                            f"list of {len(SEVERITIES)}, one per severity, got {value!r}")
        out[name] = [float(v) for v in value] if isinstance(value, list) else float(value)
    if clean is not None and not (isinstance(clean, (int, float)) and 0 <= clean <= 1):
        raise DataError(f"{path}: clean: expected an error in [0, 1], got {clean!r}")
    return {"errors": out, "clean": None if clean is None else float(clean), "source": str(path)}


def corruption_errors_from_table(results: dict[str, dict], table: dict) -> dict[str, dict]:
    """CE and mCE of each model relative to a baseline's error table (`load_baseline_errors`).

    CE_c = sum_s E_{s,c} / sum_s E^base_{s,c} over the evaluated severities; a table entry that is one number
    (the mean over severities 1-5, e.g. AlexNet's) needs all five evaluated. The relative CE needs the table's
    clean error and is left out without it. Raises UsageError when the table lacks an evaluated corruption.
    """
    from cuekit.errors import UsageError

    out = {}
    for name, res in results.items():
        sev = list(res["corruption"]["severities"])
        ce, rel = {}, {}
        e_clean = 1 - res["clean"]["acc"]
        for c, accs in res["corruption"]["acc"].items():
            if c not in table["errors"]:
                raise UsageError(f"the baseline errors ({table['source']}) have no {c!r}; evaluate their "
                                 f"corruptions ({', '.join(table['errors'])}) with --corruptions")
            entry = table["errors"][c]
            if isinstance(entry, list):
                base = [entry[s - 1] for s in sev]
            else:
                if sorted(sev) != list(SEVERITIES):
                    raise UsageError(f"the baseline errors ({table['source']}) are means over severities 1-5; "
                                     f"evaluate all five (--severities 1,2,3,4,5), not {sev}")
                base = [entry] * len(sev)
            errs = [1 - a for a in accs]
            ce[c] = sum(errs) / sum(base) if sum(base) > 0 else math.nan
            if table.get("clean") is not None:
                denom = sum(b - table["clean"] for b in base)
                rel[c] = sum(e - e_clean for e in errs) / denom if denom > 0 else math.nan
        out[name] = {"ce": ce, "mce": sum(ce.values()) / max(1, len(ce)), "reference": table["source"]}
        if table.get("clean") is not None:
            out[name].update(relative_ce=rel, relative_mce=sum(rel.values()) / max(1, len(rel)))
    return out


def corruption_table(results: dict[str, dict], mce: dict[str, dict] | None) -> tuple[list[str], list[list]]:
    """The literature's corruption table: per model and corruption, the error at each severity, the mean, CE
    and relative CE ("n/a" without a baseline), and a "mean" row per model (mean error, mCE, relative mCE)."""
    first = next(iter(results.values()))
    sev = first["corruption"]["severities"]
    cols = ["model", "corruption", *[f"err s{s}" for s in sev], "mean err", "CE", "rel. CE"]
    rows = []
    for name, res in results.items():
        m = (mce or {}).get(name) or {}
        errors = res["corruption"].get("error") or {k: [1 - a for a in v] for k, v in res["corruption"]["acc"].items()}
        for c, errs in errors.items():
            rows.append([name, c, *errs, sum(errs) / len(errs), m.get("ce", {}).get(c, "n/a"),
                         m.get("relative_ce", {}).get(c, "n/a")])
        if errors:
            rows.append([name, "mean", *[""] * len(sev), 1 - res["corruption"]["mean_acc"], m.get("mce", "n/a"),
                         m.get("relative_mce", "n/a")])
    return cols, rows


def ood_table(results: dict[str, dict]) -> tuple[list[str], list[list]]:
    """OOD detection per model, score and OOD set: TNR at 95 % TPR, AUROC, AUPR-in, AUPR-out, detection accuracy."""
    cols = ["model", "score", "OOD set", "TNR@TPR95", "AUROC", "AUPR-in", "AUPR-out", "det. acc"]
    rows = []
    for name, res in results.items():
        by_score = res.get("ood_scores") or {"msp": res["ood"]}
        for score, sets in by_score.items():
            for spec, m in sets.items():
                rows.append([name, score, spec, m["tnr_at_tpr95"], m["auroc"], m["aupr_in"], m["aupr_out"],
                             m["detection_acc"]])
    return cols, rows


SUMMARY_COLUMNS = ["model", "clean acc", "corr acc", "mCE", "ECE", "NLL", "Brier", "OOD AUROC", "TNR@95",
                   "FGSM acc", "occl acc"]


def summary_row(name: str, res: dict, mce: dict | None, fgsm_eps: float | None = None) -> list:
    """One table row: clean / corruption accuracy, mCE, calibration, OOD, FGSM (at fgsm_eps, default
    the largest epsilon at most 2/255 above 0) and mean occlusion accuracy."""
    eps_keys = sorted((float(k), k) for k in res["fgsm"])
    if fgsm_eps is None:
        small = [e for e in eps_keys if 0 < e[0] <= 2 / 255 + 1e-12]
        key = (small[-1] if small else eps_keys[-1])[1]
    else:
        key = min(eps_keys, key=lambda e: abs(e[0] - fgsm_eps))[1]
    occl = [a for d in res["occlusion"].values() for a in d.values()]
    tnr = [m["tnr_at_tpr95"] for m in res["ood"].values()]
    return [name, res["clean"]["acc"], res["corruption"]["mean_acc"], (mce or {}).get("mce", math.nan),
            res["clean"]["ece"], res["clean"]["nll"], res["clean"]["brier"], res["ood_mean_auroc"],
            sum(tnr) / max(1, len(tnr)), res["fgsm"][key], sum(occl) / max(1, len(occl))]


def parse_regularizer_list(spec: str | Sequence[str]) -> list[str]:
    """"none,ls,mixup+ls" -> ["none", "ls", "mixup+ls"]; each entry's names are checked."""
    from cuekit.augment.regularizers import parse_regularizers

    entries = [e.strip() for e in (spec.split(",") if isinstance(spec, str) else spec) if e.strip()]
    if not entries:
        from cuekit.errors import UsageError

        raise UsageError("give at least one regularizer entry, e.g. none,ls,mixup")
    out = []
    for e in entries:
        names = parse_regularizers(e.split("+"))
        out.append("+".join(names) if names else "none")
    return out


@dataclasses.dataclass
class BenchConfig:
    """Training settings shared by every regularizer in one benchmark run."""

    regularizers: Sequence[str] = ("none", "ls", "mixup", "cutmix", "cutout")
    data: str = "dsprites"
    task: str | None = None
    model: str = "small-cnn"
    epochs: int = 4
    batch_size: int = 64
    lr: float = 0.05
    opt: str = "sgd"
    weight_decay: float = 5e-4
    train_size: int | None = 4000
    val_size: int | None = 500
    img_size: int | None = 32
    seed: int = 0
    device: str = "cpu"
    progress: bool = True
    label_smoothing: float = 0.1
    fgsm_epsilon: float = 2 / 255


def _val_tensors(bundle) -> tuple[Tensor, Tensor]:
    """The validation split as pixel images (N, C, H, W) in [0, 1] and labels (N,)."""
    ds = bundle.val
    if hasattr(ds, "tensors"):
        x, y = ds.tensors
    elif hasattr(ds, "render_items"):
        x, y = ds.render_items(torch.arange(len(ds)))
    else:
        items = [ds[i] for i in range(len(ds))]
        x, y = torch.stack([t[0] for t in items]), torch.as_tensor([t[1] for t in items])
    m = torch.as_tensor(list(bundle.mean)[: x.shape[1]], dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.as_tensor(list(bundle.std)[: x.shape[1]], dtype=torch.float32).view(1, -1, 1, 1)
    return (x.float() * s + m).clamp(0, 1), torch.as_tensor(y).long()


def train_regularized(entry: str, cfg: BenchConfig, data, seed: int) -> tuple[nn.Module, dict]:
    """Train one model with the regularizers of `entry` ("none", "mixup+ls", ...) -> model, final epoch."""
    from cuekit.augment.regularizers import build_batch_transform
    from cuekit.train import TrainConfig, train

    names = [] if entry == "none" else entry.split("+")
    torch.manual_seed(seed)
    model = make_model(cfg.model, data.num_classes, data.in_chans, cfg.img_size or data.img_size)
    transform, smoothing = build_batch_transform(names, data.num_classes, model, mean=list(data.mean),
                                                 std=list(data.std), seed=seed,
                                                 label_smoothing=cfg.label_smoothing, fgsm_epsilon=cfg.fgsm_epsilon)
    tcfg = TrainConfig(model=cfg.model, data=cfg.data, task=cfg.task, epochs=cfg.epochs, batch_size=cfg.batch_size,
                       lr=cfg.lr, opt=cfg.opt, weight_decay=cfg.weight_decay, label_smoothing=smoothing,
                       amp="off", seed=seed, progress=cfg.progress, device=cfg.device)
    res = train(tcfg, model=model, data=data, batch_transform=transform)
    return res.model, res.final


def run_benchmark(cfg: BenchConfig, settings: SuiteSettings | None = None, out_dir: str | Path | None = None,
                  baseline: str | None = None, baseline_errors: dict | None = None) -> dict:
    """Train one model per regularizer entry, evaluate all, write plots to out_dir; -> results dict.

    The result holds per-model metrics, CE/mCE against `baseline` (default the first entry) or, given,
    against a table of a baseline's errors (`load_baseline_errors`), the summary table (SUMMARY_COLUMNS)
    and the plot file names. With `settings.corrupted_data` the corrupted sets are read from those files
    (checked, and matched to the data's classes, before any model is trained).
    """
    from cuekit.data.registry import create_dataset, materialise

    settings = settings or SuiteSettings()
    entries = parse_regularizer_list(cfg.regularizers)
    baseline = baseline or entries[0]
    t0 = time.perf_counter()
    data = materialise(create_dataset(cfg.data, task=cfg.task, img_size=cfg.img_size, train_size=cfg.train_size,
                                    val_size=cfg.val_size, seed=cfg.seed))
    images, labels = _val_tensors(data)
    suite = RobustnessSuite(images, labels, data.mean, data.std, dataclasses.replace(settings, seed=cfg.seed),
                            device=cfg.device, progress=cfg.progress, class_names=data.class_names,
                            num_classes=data.num_classes)
    results, finals = {}, {}
    for entry in entries:
        model, final = train_regularized(entry, cfg, data, cfg.seed)
        finals[entry] = final
        results[entry] = suite.evaluate(model)
    mce = (corruption_errors_from_table(results, baseline_errors) if baseline_errors is not None
           else corruption_errors(results, baseline))
    rows = [summary_row(e, results[e], mce[e]) for e in entries]
    plots = []
    if out_dir is not None:
        out_dir = Path(out_dir)
        plots = write_plots(results, out_dir, prefix="robustness")
    return {"config": dataclasses.asdict(cfg), "settings": dataclasses.asdict(settings),
            "baseline": baseline_errors["source"] if baseline_errors is not None else baseline,
            "models": results, "mce": mce, "train_final": finals, "columns": SUMMARY_COLUMNS, "rows": rows,
            "plots": plots, "time_s": time.perf_counter() - t0}


def write_plots(results: dict[str, dict], out_dir: Path, prefix: str = "robustness",
                title_suffix: str = "") -> list[str]:
    """Reliability diagrams, accuracy vs corruption severity, FGSM accuracy vs epsilon -> PNG names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cuekit.robustness.calibration import plot_reliability

    out_dir.mkdir(parents=True, exist_ok=True)
    names = []
    bins = {k: ReliabilityBins(**v["clean"]["reliability"]) for k, v in results.items()}
    names.append(plot_reliability(bins, out_dir / f"{prefix}_reliability.png",
                                  title=f"Reliability on clean validation images{title_suffix}").name)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for k, v in results.items():
        sev = v["corruption"]["severities"]
        accs = list(v["corruption"]["acc"].values())
        mean_by_sev = [sum(a[i] for a in accs) / len(accs) for i in range(len(sev))]
        axes[0].plot([0] + sev, [v["clean"]["acc"]] + mean_by_sev, marker="o", label=k)
        eps = sorted((float(e), a) for e, a in v["fgsm"].items())
        axes[1].plot([e * 255 for e, _ in eps], [a for _, a in eps], marker="o", label=k)
    axes[0].set_xlabel("corruption severity (0 = clean)")
    axes[0].set_ylabel("accuracy (mean over corruptions)")
    axes[1].set_xlabel("FGSM epsilon (x 1/255)")
    axes[1].set_ylabel("accuracy")
    axes[0].legend(fontsize=7)
    fig.suptitle(f"Corruption and FGSM robustness{title_suffix}", fontsize=10)
    fig.tight_layout()
    save_figure(fig, out_dir / f"{prefix}_curves.png", dpi=110)
    names.append(f"{prefix}_curves.png")
    return names
