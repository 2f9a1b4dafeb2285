"""Training on ReLabel targets: crops carry their maps, the batch transform pools them, the engine trains."""
from __future__ import annotations

from pathlib import Path

import torch

from cuekit.data.multi_shapes import MultiShapesDataset, multilabel_accuracy
from cuekit.models import create_model
from cuekit.relabel.generate import generate_label_maps
from cuekit.relabel.pooling import label_pooling
from cuekit.relabel.training import ReLabelDataset, ReLabelTargets, builtin_image_names, relabel_training
from cuekit.train import TrainConfig, train


def test_multi_shapes_labels_one_object_and_records_all():
    ds = MultiShapesDataset(50, img_size=24, seed=0)
    counts = ds.multilabels.sum(1)
    assert counts.min() >= 1 and counts.max() <= 3 and (counts > 1).any()
    assert ds.multilabels[torch.arange(50), ds.labels].all()  # the single label is one of the objects
    again = MultiShapesDataset(50, img_size=24, seed=0)
    assert torch.equal(ds.images, again.images) and torch.equal(ds.labels, again.labels)
    onehot = torch.nn.functional.one_hot(ds.labels, 5).float()
    assert multilabel_accuracy(onehot, ds.multilabels) == 1.0


def test_relabel_batches_pool_each_crop_from_its_own_map(tmp_path):
    torch.manual_seed(0)
    ds = MultiShapesDataset(12, img_size=16, seed=0)
    teacher = create_model("resnet8", num_classes=5, in_chans=3).eval()
    store = generate_label_maps(teacher, ds, builtin_image_names(12), tmp_path, num_classes=5, map_size=(4, 4),
                                topk=3, shard_size=5, progress=False)
    data = ReLabelDataset(ds, store, size=16)
    crops, packed = zip(*(data[i] for i in range(12)))
    x, y = ReLabelTargets(5, 3, (4, 4))(torch.stack(crops), torch.stack(packed))
    assert x.shape == (12, 3, 16, 16) and y.shape == (12, 5)
    assert torch.allclose(y.sum(1), torch.ones(12), atol=1e-5)
    boxes = torch.stack([p[:4] for p in packed])
    flips = torch.stack([p[4] for p in packed]) > 0.5
    scores = torch.stack([store[i][0] for i in range(12)])
    ids = torch.stack([store[i][1] for i in range(12)])
    assert torch.allclose(y, label_pooling(scores, ids, boxes, 5, flips), atol=1e-6)
    # the global control: every crop gets its whole image's label, whatever the crop and flip
    _, g = ReLabelTargets(5, 3, (4, 4), localized=False)(torch.stack(crops), torch.stack(packed))
    whole = label_pooling(scores, ids, torch.tensor([[0.0, 0.0, 1.0, 1.0]]).expand(12, 4), 5)
    assert torch.allclose(g, whole, atol=1e-6)
    assert not torch.allclose(g, y, atol=1e-3)  # the crops' own targets differ from the images' global ones


def test_train_with_relabel_runs_on_the_engine(tmp_path):
    torch.manual_seed(0)
    cfg = TrainConfig(model="resnet8", data="multi-shapes", epochs=1, batch_size=16, lr=0.05, train_size=32,
                      val_size=16, img_size=16, progress=False, out=None, seed=0)
    from cuekit.data import create_dataset

    bundle = create_dataset("multi-shapes", img_size=16, train_size=32, val_size=16, seed=0)
    teacher = create_model("resnet8", num_classes=5, in_chans=3).eval()
    generate_label_maps(teacher, bundle.train, builtin_image_names(32), tmp_path, num_classes=5, map_size=(4, 4),
                        topk=2, shard_size=16, progress=False)
    data, transform = relabel_training(cfg, tmp_path, cutmix_alpha=1.0)
    res = train(cfg, data=data, batch_transform=transform)
    assert len(res.history) == 1 and torch.isfinite(torch.tensor(res.history[0]["train_loss"]))


def _image_folder(root, n_per_class=4):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for cls in ["a", "b", "c"]:
        (root / cls).mkdir(parents=True)
        for j in range(n_per_class):
            Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(root / cls / f"{j}.png")


def test_folder_data_matches_maps_by_path_in_both_formats(tmp_path):
    from cuekit.relabel.generate import generate_label_maps

    root = tmp_path / "imgs"
    _image_folder(root)
    cfg = TrainConfig(model="resnet8", data=f"folder:{root}", img_size=16, val_split=0.25, seed=0, progress=False)
    from torchvision import transforms as T
    from torchvision.datasets import ImageFolder

    folder = ImageFolder(str(root), transform=T.Compose([T.Resize((16, 16)), T.ToTensor()]))
    names = [str(Path(p).relative_to(root)) for p, _ in folder.samples]
    teacher = create_model("resnet8", num_classes=3, in_chans=3).eval()
    store = generate_label_maps(teacher, folder, names, tmp_path / "maps", num_classes=3, map_size=(2, 2), topk=2,
                                progress=False, meta={"data_root": str(root.resolve())})
    data, transform = relabel_training(cfg, tmp_path / "maps")
    assert len(data.train) == 9 and len(data.val) == 3
    x, packed = data.train[0]
    assert x.shape == (3, 16, 16)
    path = data.train.images.samples[0][0]
    expect = store.get(str(Path(path).relative_to(root.resolve())))
    assert torch.equal(packed[5 + 8:].long().view(2, 2, 2), expect[1])
    # the original release's layout: <root>/<class>/<stem>.pt holding [2, K, h, w]
    orig = tmp_path / "orig"
    for i, name in enumerate(names):
        (orig / name).parent.mkdir(parents=True, exist_ok=True)
        torch.save(torch.stack([store[i][0], store[i][1].float()]), (orig / name).with_suffix(".pt"))
    data2, transform2 = relabel_training(cfg, orig)
    x2, packed2 = data2.train[0]
    assert torch.equal(packed2[5:], packed[5:])
    _, y = transform2(x2[None], packed2[None])
    assert torch.allclose(y.sum(1), torch.ones(1))
