"""`cuekit reproduce relabel`: do localized multi-labels beat global ones, and single labels, on multi-object images?

On `multi-shapes` (1-3 objects per image, one label each, like ImageNet): a machine annotator (a small
GAP + linear CNN, twice as wide as the students and trained on a separate draw twice as large,
standing in for the paper's EfficientNet-L2) writes top-k label maps of the students' training
images once. Five students per seed are trained with the same random-resized crops, initialisation
and data order, differing only in their targets:
- one-hot: the image's single label; label smoothing 0.1: the same, smoothed;
- global multi-label: the annotator's label map pooled over the whole image, for every crop (plain
  distillation from the stored maps): the control that differs from ReLabel only in localisation;
- ReLabel: the map pooled over each crop (LabelPooling, the paper's softmax over all classes);
- ReLabel + CutMix: the paper's recipe, the two crops' pooled targets mixed by the pasted area.
One row per claim of the paper (Yun et al., CVPR 2021), each with its own verdict.
"""
from __future__ import annotations

import random
import tempfile
import time
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from cuekit.io import save_figure
from cuekit.report.experiments import ExperimentConfig, claim, make_result, mean_spread, precondition

PAPER_CLAIM = ("ReLabel: a machine annotator's localized multi-labels, pooled over each random crop (LabelPooling), "
               "supervise better than global labels; ResNet-50 on ImageNet goes from 77.5% to 78.9% top-1 (ReaL "
               "83.6% to 85.0%; label smoothing 78.0% / 84.0%), and to 80.2% with CutMix.")
STUDENTS = ("one-hot", "label smoothing 0.1", "global multi-label", "ReLabel", "ReLabel + CutMix")
TOPK = 3
# Fixed before running (docs/relabel.md): the thresholds of the preconditions.
LOCALIZATION_MARGIN = 0.05  # localized targets name a crop's main object this much more often than global ones
PLATEAU_POINTS = 1.0        # "converged": the last two epochs raised validation accuracy by less than this
QUICK = dict(teacher_n=1600, n=800, val_n=500, teacher_epochs=8, epochs=8, width=12, batch=64, task="color")
# Full mode stays at 32 px (img_size here overrides the run's): at 64 px and width 32 the 15 students and the
# annotator would take about a day on 2 CPU cores; this is about 20 minutes.
FULL = dict(teacher_n=6400, n=3200, val_n=2000, teacher_epochs=20, epochs=20, width=16, batch=128, task="color",
            img_size=32)


class TinyGapNet(nn.Module):
    """A small CNN ending in global average pooling + a linear head (what ReLabel's generator needs)."""

    def __init__(self, num_classes: int, width: int = 16):
        super().__init__()
        w = width
        self.features = nn.Sequential(
            nn.Conv2d(3, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True),
            nn.Conv2d(w, 2 * w, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(2 * w), nn.ReLU(inplace=True),
            nn.Conv2d(2 * w, 4 * w, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(4 * w), nn.ReLU(inplace=True),
            nn.Conv2d(4 * w, 4 * w, 3, padding=1, bias=False), nn.BatchNorm2d(4 * w), nn.ReLU(inplace=True),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4 * w, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """x (N, 3, H, W) -> logits (N, num_classes)."""
        return self.fc(self.pool(self.features(x)).flatten(1))


class CropsWithLabel(Dataset):
    """The same random-resized crops as ReLabel training, with the image's single label as target."""

    def __init__(self, images: Dataset, size: int, seed: int = 0):
        from cuekit.relabel.pooling import RandomResizedCropWithBox

        self.images = images
        self.crop = RandomResizedCropWithBox(size, rng=random.Random(seed))

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        image, label = self.images[i]
        self.crop.rng.seed(int(torch.randint(0, 2**62, (1,))))
        return self.crop(image)[0], label


@torch.no_grad()
def _accuracies(model: nn.Module, dataset) -> tuple[float, float]:
    """Single-label and multi-label (ReaL-style) top-1 accuracy on a multi-shapes split."""
    from cuekit.data.multi_shapes import multilabel_accuracy

    model.eval()
    logits = torch.cat([model(dataset.images[i:i + 500].float() / 255.0) for i in range(0, len(dataset), 500)])
    single = (logits.argmax(1) == dataset.labels).float().mean().item()
    return single, multilabel_accuracy(logits, dataset.multilabels)


def _train_config(scale: dict, seed: int, epochs: int, device: str, size: int, smoothing: float = 0.0):
    from cuekit.train import TrainConfig

    return TrainConfig(model="tiny_gap_net", data="multi-shapes", epochs=epochs, batch_size=scale["batch"], lr=0.1,
                       opt="sgd", weight_decay=5e-4, momentum=0.9, nesterov=True, label_smoothing=smoothing, seed=seed,
                       out=None, progress=False, device=device, img_size=size)


def _annotator(scale: dict, size: int, device: str) -> dict:
    """Train the machine annotator: twice as wide, on a separate draw twice as large, on whole images."""
    from cuekit.data.multi_shapes import MultiShapesDataset
    from cuekit.data.registry import DataBundle
    from cuekit.data.shapes_loc import SHAPES
    from cuekit.train import train

    val = MultiShapesDataset(scale["val_n"], size, seed=999_331, task=scale["task"])
    data = MultiShapesDataset(scale["teacher_n"], size, seed=777_001, task=scale["task"])
    bundle = DataBundle(train=data, val=val, num_classes=len(SHAPES), class_names=list(SHAPES), img_size=size)
    torch.manual_seed(0)
    model = train(_train_config(scale, 0, scale["teacher_epochs"], device, size),
                  model=TinyGapNet(len(SHAPES), 2 * scale["width"]), data=bundle).model
    return {"state": {k: v.cpu() for k, v in model.state_dict().items()}, "acc": _accuracies(model, val)}


def _job(job: tuple) -> dict:
    """A worker process's job: ("annotator", scale, size, device) or a student (see `_student`)."""
    if job[0] == "annotator":
        return _annotator(*job[1:])
    return _student(job)


def _student(job: tuple) -> dict:
    """Train one (seed, student) pair (a worker process's job); accuracies and the validation curve."""
    from cuekit.data.multi_shapes import MultiShapesDataset
    from cuekit.data.registry import DataBundle
    from cuekit.data.shapes_loc import SHAPES
    from cuekit.relabel.storage import open_label_maps
    from cuekit.relabel.training import ReLabelDataset, ReLabelTargets
    from cuekit.train import train

    seed, student, scale, size, maps_dir, device = job
    num_classes = len(SHAPES)
    train_set = MultiShapesDataset(scale["n"], size, seed=seed, task=scale["task"])
    val = MultiShapesDataset(scale["val_n"], size, seed=999_331, task=scale["task"])
    transform, smoothing = None, 0.0
    if student in ("one-hot", "label smoothing 0.1"):
        data: Dataset = CropsWithLabel(train_set, size, seed)
        smoothing = 0.1 if student == "label smoothing 0.1" else 0.0
    else:
        store = open_label_maps(maps_dir, num_classes)
        data = ReLabelDataset(train_set, store, size, seed=seed)
        transform = ReLabelTargets(num_classes, store.topk, store.map_size, seed=seed,
                                   localized=student != "global multi-label",
                                   cutmix_alpha=1.0 if student == "ReLabel + CutMix" else None)
    bundle = DataBundle(train=data, val=val, num_classes=num_classes, class_names=list(SHAPES), img_size=size)
    torch.manual_seed(seed)  # the same initialisation for every student of a seed
    result = train(_train_config(scale, seed, scale["epochs"], device, size, smoothing),
                   model=TinyGapNet(num_classes, scale["width"]), data=bundle, batch_transform=transform)
    single, multi = _accuracies(result.model, val)
    return {"seed": seed, "student": student, "top1": single, "real": multi,
            "curve": [float(h["val_acc"]) for h in result.history]}


def _localization(store, dataset, size: int, seed: int, crops_per_image: int = 4) -> tuple[float, float]:
    """How often the localized and the global target's top class is the object covering most of a random crop.

    Crops touching no object are skipped. Returns (localized agreement, global agreement).
    """
    from cuekit.relabel.pooling import RandomResizedCropWithBox, label_pooling

    crop = RandomResizedCropWithBox(size, rng=random.Random(seed))
    scores, indices, boxes, flips, main = [], [], [], [], []
    for i in range(len(dataset)):
        s, k = store[i]
        obj_boxes, classes = dataset.boxes[i], dataset.object_classes[i]
        for _ in range(crops_per_image):
            _, box, flipped = crop(dataset.images[i].float())
            x1, y1, x2, y2 = (float(v) * dataset.img_size for v in box)
            if flipped:  # the box is in the mirrored frame; the objects' boxes are not
                x1, x2 = dataset.img_size - x2, dataset.img_size - x1
            overlap = [max(0.0, min(x2, b[2] + 1) - max(x1, b[0])) * max(0.0, min(y2, b[3] + 1) - max(y1, b[1]))
                       for b in obj_boxes]
            if max(overlap) <= 0:
                continue
            scores.append(s), indices.append(k), boxes.append(box), flips.append(flipped)
            main.append(classes[max(range(len(overlap)), key=overlap.__getitem__)])
    s, k, b = torch.stack(scores), torch.stack(indices), torch.stack(boxes)
    f, main_t = torch.tensor(flips), torch.tensor(main)
    c = dataset.num_classes
    local = label_pooling(s, k, b, c, f).argmax(1)
    whole = label_pooling(s, k, torch.tensor([[0.0, 0.0, 1.0, 1.0]]).expand_as(b), c).argmax(1)
    return float((local == main_t).float().mean()), float((whole == main_t).float().mean())


def run_experiment(config: ExperimentConfig, scale: dict | None = None) -> dict:
    """Annotator on multi-shapes -> label maps -> five students per seed; one row per claim.

    scale: overrides of the quick/full sizes (tests use a tiny one).
    """
    from cuekit.parallel import torch_threads

    # these tiny nets run faster on one thread, far faster on a shared CPU
    with torch_threads(1 if config.device == "cpu" else None):
        return _run(config, {**(QUICK if config.quick else FULL), **(scale or {})})


def _claims(runs: dict, teacher_top1: float, localization: list[tuple[float, float]], chance: float) -> list[dict]:
    """The paper's claims, one row each, from per-seed student results runs[student][i]."""

    def diff(a: str, b: str, key: str) -> list[float]:
        return [100 * (x[key] - y[key]) for x, y in zip(runs[a], runs[b])]

    onehot = [r["top1"] for r in runs["one-hot"]]
    stronger = precondition(
        "the annotator is stronger than the one-hot student (top-1, mean over seeds)",
        teacher_top1 > sum(onehot) / len(onehot), f"annotator {teacher_top1:.3f}, one-hot {mean_spread(onehot)[0]:.3f}")
    learns = precondition(
        "the one-hot student beats chance by 10 points in every seed", all(a > chance + 0.1 for a in onehot),
        ", ".join(f"{a:.3f}" for a in onehot) + f" (chance {chance:.3f})")
    localizes = precondition(
        f"the label maps localize: on random training crops the localized target names the object covering most "
        f"of the crop at least {LOCALIZATION_MARGIN * 100:g} points more often than the global target, every seed",
        all(loc - glob >= LOCALIZATION_MARGIN for loc, glob in localization),
        "; ".join(f"{loc:.3f} vs {glob:.3f}" for loc, glob in localization))
    curves = [r["curve"] for r in runs["ReLabel"]]
    rises = [100 * (c[-1] - c[-3]) if len(c) >= 3 else float("inf") for c in curves]
    converged = precondition(
        f"training converged: the ReLabel student's validation accuracy rose by less than {PLATEAU_POINTS:g} point "
        "over the last two epochs (mean over seeds)",
        sum(rises) / len(rises) < PLATEAU_POINTS, "rise " + ", ".join(f"{r:+.1f}" for r in rises) + " points")
    base = [stronger, learns]
    regime = "students trained on random-resized crops of multi-object images; the same annotator's maps"
    return [
        claim(id="localized_vs_global", headline=True,
              claim="\"From global to localized labels\": multi-labels pooled over each random crop (LabelPooling) "
                    "supervise better than the same annotator's global multi-labels for the whole image.",
              measure="top-1 (single-label) accuracy of ReLabel minus the global multi-label student, points",
              effects=diff("ReLabel", "global multi-label", "top1"), preconditions=[*base, localizes], regime=regime),
        claim(id="relabel_vs_onehot_top1",
              claim="ReLabel improves top-1 accuracy over training on the original single labels "
                    "(ResNet-50: 77.5% -> 78.9%).",
              measure="top-1 accuracy of ReLabel minus the one-hot student, points",
              effects=diff("ReLabel", "one-hot", "top1"), preconditions=base, regime=regime),
        claim(id="relabel_vs_onehot_real",
              claim="ReLabel improves multi-label (ReaL) accuracy over single labels (83.6% -> 85.0%).",
              measure="ReaL-style accuracy (top-1 among the classes present) of ReLabel minus one-hot, points",
              effects=diff("ReLabel", "one-hot", "real"), preconditions=base, regime=regime),
        claim(id="relabel_vs_label_smoothing",
              claim="ReLabel beats label smoothing (top-1 78.9% vs 78.0%).",
              measure="top-1 accuracy of ReLabel minus the label-smoothing student, points",
              effects=diff("ReLabel", "label smoothing 0.1", "top1"), preconditions=base, regime=regime),
        claim(id="cutmix_on_relabel",
              claim="ReLabel combines with CutMix for a further gain (78.9% -> 80.2%).",
              measure="top-1 accuracy of ReLabel + CutMix (area-mixed pooled targets) minus ReLabel, points",
              effects=diff("ReLabel + CutMix", "ReLabel", "top1"), preconditions=[*base, converged],
              regime=regime + "; CutMix needs a converged run"),
        claim(id="global_vs_onehot", reference=True,
              claim="Reference: the global multi-label (distillation from the stored maps) against one-hot labels, "
                    "the part of ReLabel's gain that is not localisation.",
              measure="top-1 accuracy of the global multi-label student minus one-hot, points",
              effects=diff("global multi-label", "one-hot", "top1"), preconditions=base, regime=regime),
    ]


def _plot(out: Path, runs: dict, teacher: tuple[float, float], title: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(11, 3.8))
    for j, (key, name) in enumerate([("top1", "top-1 (single-label) accuracy"),
                                     ("real", "multi-label (ReaL-style) accuracy")]):
        for k, student in enumerate(STUDENTS):
            vals = [100 * r[key] for r in runs[student]]
            ax[j].scatter([k] * len(vals), vals, alpha=0.7)
            ax[j].errorbar([k], [sum(vals) / len(vals)], yerr=[mean_spread(vals)[1]], fmt="_k", capsize=6)
        ax[j].axhline(100 * teacher[j], ls="--", c="gray", label="annotator")
        ax[j].set_xticks(range(len(STUDENTS)), STUDENTS, rotation=15, fontsize=8)
        ax[j].set_title(name)
        ax[j].set_ylabel("%")
        ax[j].legend()
    fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, out / "relabel_accuracy.png", dpi=100)
    return "relabel_accuracy.png"


def _run(config: ExperimentConfig, scale: dict) -> dict:
    from cuekit.data.multi_shapes import MultiShapesDataset
    from cuekit.data.shapes_loc import SHAPES
    from cuekit.parallel import available_cpus, run_jobs
    from cuekit.relabel.generate import generate_label_maps
    from cuekit.relabel.storage import open_label_maps
    from cuekit.relabel.training import builtin_image_names

    out = Path(config.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    size, seeds, task = scale.get("img_size", config.img_size), [int(s) for s in config.seeds], scale["task"]
    num_classes = len(SHAPES)
    map_size = (size // 4, size // 4)
    t_start = time.perf_counter()

    cpu = config.device == "cpu"
    workers = available_cpus() if cpu else 1

    def jobs_in_parallel(jobs: list, desc: str) -> list:
        return run_jobs(_job, jobs, workers=min(workers, len(jobs)), desc=desc, progress=config.progress,
                        threads=1 if cpu else None)

    # Stage 1: the annotator, with the students that need no label maps beside it on the other core.
    plain = [(seed, student, scale, size, None, config.device) for seed in seeds for student in STUDENTS[:2]]
    annotator, *results = jobs_in_parallel([("annotator", scale, size, config.device), *plain],
                                           "relabel: annotator and label-free students")
    teacher = TinyGapNet(num_classes, 2 * scale["width"])
    teacher.load_state_dict(annotator["state"])
    teacher_acc = tuple(annotator["acc"])

    localization = []
    with tempfile.TemporaryDirectory() as tmp:
        maps = {}
        for seed in seeds:
            train_set = MultiShapesDataset(scale["n"], size, seed=seed, task=task)
            maps[seed] = f"{tmp}/maps{seed}"
            generate_label_maps(teacher.eval(), train_set, builtin_image_names(len(train_set)), maps[seed],
                                num_classes=num_classes, map_size=map_size, topk=TOPK, shard_size=1024, progress=False)
            localization.append(_localization(open_label_maps(maps[seed], num_classes), train_set, size, seed))
        # Stage 2: the students trained on the maps.
        results += jobs_in_parallel([(seed, student, scale, size, maps[seed], config.device)
                                     for seed in seeds for student in STUDENTS[2:]], "relabel: label-map students")
    runs = {student: [r for r in results if r["student"] == student] for student in STUDENTS}
    claims = _claims(runs, teacher_acc[0], localization, 1.0 / num_classes)

    rows = []
    for student in STUDENTS:
        top1, real = mean_spread([100 * r["top1"] for r in runs[student]]), mean_spread(
            [100 * r["real"] for r in runs[student]])
        rows.append([student, f"{top1[0]:.2f} ± {top1[1]:.2f}", f"{real[0]:.2f} ± {real[1]:.2f}",
                     ", ".join(f"{100 * r['top1']:.1f}" for r in runs[student])])
    rows.append(["annotator", f"{100 * teacher_acc[0]:.2f}", f"{100 * teacher_acc[1]:.2f}", "-"])
    mode = "quick" if config.quick else "full"
    plot = _plot(out, runs, teacher_acc, f"multi-shapes ({task}) {size}px: students on random crops ({mode})")
    head = claims[0]
    hm, hs = mean_spread(head["effects"])
    measured = (f"{mode}: {size}px multi-shapes ({task} classes), {len(seeds)} seeds, {scale['epochs']} epochs: "
                f"ReLabel minus global multi-label {hm:+.2f} ± {hs:.2f} top-1 points; "
                + "; ".join(f"{c['id']} {mean_spread(c['effects'])[0]:+.2f}" for c in claims[1:])
                + f". Annotator {100 * teacher_acc[0]:.1f}% top-1. Localized / global target agreement with a crop's "
                  "main object: " + ", ".join(f"{a:.2f}/{b:.2f}" for a, b in localization) + ".")
    return make_result(
        area="relabel", title="ReLabel: localized multi-labels from a machine annotator (LabelPooling)",
        claim=PAPER_CLAIM, measured=measured, claims=claims,
        regime=(f"{scale['epochs']}-epoch students (TinyGapNet width {scale['width']}) on {scale['n']} multi-shapes "
                f"images with random-resized crops (scale 0.08-1); an annotator twice as wide trained on "
                f"{scale['teacher_n']} separate images; top-{TOPK} maps of {map_size[0]}x{map_size[1]} cells"),
        table={"columns": ["student", "top-1 % (mean ± sd)", "ReaL-style % (mean ± sd)", "top-1 % per seed"],
               "rows": rows},
        plots=[plot], seeds=seeds,
        details={"scale": scale, "img_size": size, "map_size": list(map_size), "topk": TOPK, "task": task,
                 "teacher_acc": list(teacher_acc), "localization": localization, "runs": runs,
                 "time_s": time.perf_counter() - t_start,
                 "targets": "LabelPooling in the paper's 'original' mode (softmax over all classes); CutMix mixes "
                            "the two crops' pooled targets by the pasted area, as the paper's code"},
    )
