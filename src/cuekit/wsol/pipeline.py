"""Train a CAM model with a WSOL method through the shared engine, and load it back."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from cuekit.data.registry import DataBundle, create_dataset
from cuekit.errors import CheckpointError, DataError, UsageError
from cuekit.wsol.methods import make_batch_transform, model_kwargs_for


@dataclasses.dataclass
class WSOLTrainConfig:
    """A WSOL training run: model, data, method and the engine's optimisation settings."""

    model: str = "cam_small"
    data: str = "shapes-loc"
    metadata: str | None = None      # wsolevaluation metadata folder (with train/ and test/) for wsol:IMAGES
    mask_root: str | None = None
    method: str = "cam"
    epochs: int = 8
    batch_size: int = 64
    lr: float = 0.1
    opt: str = "sgd"
    weight_decay: float = 5e-4
    momentum: float = 0.9
    warmup_epochs: float = 0.0
    seed: int = 0
    img_size: int | None = None
    train_size: int | None = None
    val_size: int | None = None
    large_feature_map: bool = False
    model_kwargs: dict = dataclasses.field(default_factory=dict)  # extra create_model arguments, e.g. width
    backbone_weights: str | None = None  # ImageNet-pretrained backbone to start from (load_backbone_file)
    lr_mult: list = dataclasses.field(default_factory=list)  # ["PATTERN=K"]: e.g. the protocol's classifier x10
    has_grid_size: int = 4            # px, the wsolevaluation default
    has_drop_rate: float = 0.5
    adl_drop_rate: float = 0.75
    adl_gamma: float = 0.9
    cutmix_beta: float = 1.0
    cutmix_prob: float = 1.0
    out: str | None = None
    device: str = "auto"
    progress: bool = True
    workers: int = 0


def build_wsol_data(spec: str, metadata: str | None = None, mask_root: str | None = None,
                    img_size: int | None = None, train_size: int | None = None, val_size: int | None = None,
                    seed: int = 0, train_split: str = "train", eval_split: str = "test") -> DataBundle:
    """`shapes-loc` (built in), `cub:PATH` (CUB's release format), `openimages:ROOT` (wsolevaluation layout),
    or `wsol:IMAGE_ROOT` with a wsolevaluation metadata folder."""
    name, _, path = spec.partition(":")
    if name != "wsol":
        bundle = create_dataset(spec, img_size=img_size, train_size=train_size, val_size=val_size, seed=seed)
        if not hasattr(bundle.val, "localization"):
            raise DataError(f"dataset {spec!r} has no localization ground truth; use shapes-loc, cub:PATH, "
                            "openimages:ROOT or wsol:PATH")
        return bundle
    if not path or not metadata:
        raise UsageError("wsol:IMAGE_ROOT needs --metadata METADATA_ROOT (with train/ and test/ split folders)")
    from cuekit.wsol.data import IMAGENET_MEAN, IMAGENET_STD, WSOLImageDataset

    size = img_size or 224
    train_full = WSOLImageDataset(path, Path(metadata) / train_split, size, train=True)
    val = WSOLImageDataset(path, Path(metadata) / eval_split, size, train=False, mask_root=mask_root)
    train = train_full
    if train_size and train_size < len(train_full):
        train = torch.utils.data.Subset(train_full, list(range(train_size)))
    num_classes = max(val.num_classes, train_full.num_classes)
    return DataBundle(train=train, val=val, num_classes=num_classes,
                      class_names=[str(i) for i in range(num_classes)], in_chans=3, img_size=size,
                      mean=IMAGENET_MEAN, std=IMAGENET_STD, name=spec)


def train_cam(cfg: WSOLTrainConfig, data: DataBundle | None = None, backbone: dict | None = None):
    """Train `cfg.model` with `cfg.method` on `cfg.data` via `cuekit.train.train`; returns
    (TrainResult, DataBundle). `backbone`: a CAM model's state dict to start from (its `features.*`
    weights, as a pretrained backbone; else the file cfg.backbone_weights names, see load_backbone_file);
    the classifier keeps its fresh, seeded initialisation."""
    from cuekit.models import create_model
    from cuekit.train import TrainConfig, train

    if data is None:
        data = build_wsol_data(cfg.data, cfg.metadata, cfg.mask_root, cfg.img_size, cfg.train_size,
                               cfg.val_size, cfg.seed)
    size = cfg.img_size or data.img_size
    model_kwargs = {**cfg.model_kwargs,
                    **model_kwargs_for(cfg.method, adl_drop_rate=cfg.adl_drop_rate, adl_gamma=cfg.adl_gamma)}
    if cfg.large_feature_map:
        model_kwargs["large_feature_map"] = True
    torch.manual_seed(cfg.seed)
    model = create_model(cfg.model, num_classes=data.num_classes, in_chans=data.in_chans, img_size=size,
                         **model_kwargs)
    if not hasattr(model, "forward_cam"):
        raise UsageError(f"model {cfg.model!r} is not a CAM model; pick one of `cuekit models list 'cam_*'`")
    if backbone is not None:
        load_backbone_state(model, backbone)
    elif cfg.backbone_weights:
        load_backbone_file(model, cfg.backbone_weights)
    transform = make_batch_transform(cfg.method, data.num_classes, has_grid_size=cfg.has_grid_size,
                                     has_drop_rate=cfg.has_drop_rate, cutmix_beta=cfg.cutmix_beta,
                                     cutmix_prob=cfg.cutmix_prob, seed=cfg.seed + 17)
    tcfg = TrainConfig(model=cfg.model, data=cfg.data, epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr,
                       opt=cfg.opt, weight_decay=cfg.weight_decay, momentum=cfg.momentum,
                       warmup_epochs=cfg.warmup_epochs, seed=cfg.seed, out=cfg.out, img_size=size,
                       train_size=cfg.train_size, val_size=cfg.val_size, device=cfg.device,
                       progress=cfg.progress, workers=cfg.workers, model_kwargs=model_kwargs,
                       lr_mult=list(cfg.lr_mult or []))
    result = train(tcfg, model=model, data=data, batch_transform=transform)
    return result, data


def load_backbone_state(model: torch.nn.Module, state: dict) -> None:
    """Load the `features.*` tensors of a CAM model's state dict into `model` (ADL layers hold no weights,
    so a backbone trained with or without them fits); raises CheckpointError when one is missing or misfits."""
    features = {k: torch.as_tensor(v) for k, v in state.items() if k.startswith("features.")}
    wanted = [k for k in model.state_dict() if k.startswith("features.")]
    missing = [k for k in wanted if k not in features]
    if missing or not features:
        raise CheckpointError(f"backbone weights missing for {missing[:3] or 'every layer'}")
    try:
        model.load_state_dict(features, strict=False)
    except RuntimeError as e:
        raise CheckpointError(f"backbone weights do not fit: {str(e).splitlines()[0]}") from None


def load_backbone_file(model: torch.nn.Module, path: str | Path) -> None:
    """Start a CAM network's backbone from a weights file (safetensors or weights-only torch file): a CAM
    model's own checkpoint (its `features.*`), or an ImageNet classifier in torchvision's layout (ResNet or
    VGG16, see `cuekit.models.cam.load_backbone_weights`); the classifier keeps its fresh initialisation."""
    from cuekit.models.cam import load_backbone_weights
    from cuekit.models.registry import read_state_dict

    state, _ = read_state_dict(path)
    own = model.state_dict()
    if any(k.startswith("features.") and k in own for k in state):
        load_backbone_state(model, state)
    else:
        load_backbone_weights(model, str(path), state=state)


def load_cam_checkpoint(path: str | Path, device: str | torch.device = "cpu"):
    """A CAM model and its metadata from a model.safetensors written by `cuekit wsol train`."""
    from cuekit.models.registry import model_from_checkpoint

    model, meta = model_from_checkpoint(path)
    if not hasattr(model, "forward_cam"):
        raise CheckpointError(f"{path} holds {meta['model']!r}, not a CAM model")
    return model.to(device).eval(), meta
