"""OOD scores besides max softmax: ODIN (with and without its input perturbation) and energy, each equal to a
hand computation on a tiny model; OOD folders fitted by crop / resize; the flags."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from cuekit.cli import main
from cuekit.errors import DataError, UnknownChoiceError, UsageError
from cuekit.robustness.benchmark import RobustnessSuite, SuiteSettings
from cuekit.robustness.ood import (
    energy_score,
    odin_perturb,
    ood_images,
    ood_metrics,
    ood_scores,
    temperature_score,
)


def test_energy_score_by_hand():
    logits = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0], [-50.0, 10.0, 9.0]])
    want = [math.log(math.e + math.e ** 2 + math.e ** 3), math.log(3.0),
            10 + math.log(1 + math.exp(-1) + math.exp(-60))]
    assert energy_score(logits).tolist() == pytest.approx(want, rel=1e-12)
    t2 = [2 * math.log(math.exp(0.5) + math.exp(1.0) + math.exp(1.5)), 2 * math.log(3.0)]
    assert energy_score(logits[:2], temperature=2.0).tolist() == pytest.approx(t2, rel=1e-12)
    assert energy_score(logits).dtype == torch.float64


def test_temperature_scaled_softmax_by_hand():
    logits = torch.tensor([[1.0, 2.0, 3.0], [4.0, 0.0, 0.0]])
    for t in (1.0, 1000.0):
        want = [math.exp(3 / t) / sum(math.exp(v / t) for v in (1, 2, 3)),
                math.exp(4 / t) / (math.exp(4 / t) + 2)]
        assert temperature_score(logits, t).tolist() == pytest.approx(want, rel=1e-12)
    # at T = 1000 the scores differ by ~1e-4 of 1/K: float64 keeps them apart
    s = temperature_score(torch.tensor([[0.0, 1.0], [0.0, 1.001]]), 1000.0)
    assert s[1] > s[0]


class Linear(nn.Module):
    """logits = W vec(normalise(x)) + b on (N, 1, 2, 2) images: gradients known in closed form."""

    def __init__(self, w: np.ndarray, b: np.ndarray):
        super().__init__()
        self.fc = nn.Linear(w.shape[1], w.shape[0])
        with torch.no_grad():
            self.fc.weight.copy_(torch.from_numpy(w))
            self.fc.bias.copy_(torch.from_numpy(b))

    def forward(self, x):
        return self.fc(x.flatten(1))


MEAN, STD = 0.5, 0.25


def _normalise(x):
    return (x - MEAN) / STD


def _odin_by_hand(w, b, x, temperature, epsilon):
    """ODIN in NumPy: logits of normalised x; p = softmax(logits / T); y = argmax; the gradient of
    CE(logits / T, y) with respect to the pixels is W^T (p - onehot(y)) / (T * std); x' = x - eps * sign (a zero
    gradient counts as +1); score = max softmax(logits(x') / T)."""
    x = x.reshape(len(x), -1).astype(np.float64)

    def logits(v):
        return ((v - MEAN) / STD) @ w.T + b

    def softmax(z):
        z = z - z.max(1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(1, keepdims=True)

    lg = logits(x)
    p = softmax(lg / temperature)
    onehot = np.eye(w.shape[0])[lg.argmax(1)]
    grad = (p - onehot) @ w / (temperature * STD)
    sign = np.where(grad >= 0, 1.0, -1.0)
    xp = x - epsilon * sign
    return xp, softmax(logits(xp) / temperature).max(1)


@pytest.mark.parametrize("temperature, epsilon", [(1000.0, 0.0014), (2.0, 0.05), (1.0, 0.0)])
def test_odin_equals_a_hand_computation(temperature, epsilon):
    rng = np.random.default_rng(0)
    w = rng.normal(size=(3, 4)).astype(np.float32)
    w[:, 3] = 0  # pixel 3 does not matter: its gradient is exactly 0, which ODIN counts as positive
    b = rng.normal(size=3).astype(np.float32)
    model = Linear(w, b).eval()
    x = torch.from_numpy(rng.uniform(size=(6, 1, 2, 2)).astype(np.float32))
    want_x, want_score = _odin_by_hand(w.astype(np.float64), b.astype(np.float64), x.numpy(), temperature, epsilon)
    got_x = odin_perturb(model, x, _normalise, temperature, epsilon)
    np.testing.assert_allclose(got_x.reshape(6, -1).numpy(), want_x, atol=1e-7)
    np.testing.assert_allclose(got_x.reshape(6, -1)[:, 3].numpy(), x.reshape(6, -1)[:, 3].numpy() - epsilon,
                               atol=1e-7)  # the zero gradient: a step of -eps
    got = ood_scores(model, x, _normalise, ["odin", "odin-t", "energy", "msp"], odin_temperature=temperature,
                     odin_epsilon=epsilon, energy_temperature=1.0, batch_size=4)
    np.testing.assert_allclose(got["odin"].numpy(), want_score, rtol=1e-6)
    _, no_step = _odin_by_hand(w.astype(np.float64), b.astype(np.float64), x.numpy(), temperature, 0.0)
    np.testing.assert_allclose(got["odin-t"].numpy(), no_step, rtol=1e-6)
    lg = _normalise(x.double()).flatten(1) @ torch.from_numpy(w).double().T + torch.from_numpy(b).double()
    np.testing.assert_allclose(got["energy"].numpy(), torch.logsumexp(lg, 1).numpy(), atol=1e-6)
    np.testing.assert_allclose(got["msp"].numpy(), lg.softmax(1).amax(1).numpy(), atol=1e-6)
    if epsilon > 0:  # the step raises the temperature-scaled confidence (what makes ODIN work)
        assert (got["odin"] >= got["odin-t"] - 1e-12).all()


def test_odin_leaves_the_model_and_its_gradients_alone():
    model = Linear(np.ones((2, 4), np.float32), np.zeros(2, np.float32)).eval()
    x = torch.rand(3, 1, 2, 2)
    odin_perturb(model, x, _normalise, 1000.0, 0.0014)
    assert model.fc.weight.grad is None and not x.requires_grad and not model.training


def test_scores_from_given_logits_equal_the_model_run():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 5)).eval()
    x = torch.rand(7, 3, 2, 2)
    with torch.no_grad():
        lg = model(_normalise(x))
    a = ood_scores(model, x, _normalise, ["msp", "odin-t", "energy"], batch_size=3)
    b = ood_scores(model, x, _normalise, ["msp", "odin-t", "energy"], logits=lg)
    for k in a:
        torch.testing.assert_close(a[k], b[k])
    u8 = ood_scores(model, (x * 255).round().to(torch.uint8), _normalise, ["energy"])  # uint8 pixels read as /255
    as_float = ood_scores(model, (x * 255).round() / 255, _normalise, ["energy"])
    torch.testing.assert_close(u8["energy"], as_float["energy"])


def test_suite_reports_every_score_with_every_metric():
    torch.manual_seed(0)
    images, labels = torch.rand(12, 3, 8, 8), torch.randint(0, 3, (12,))
    settings = SuiteSettings(corruptions=(), severities=(1,), ood=("uniform", "gaussian"), epsilons=(0.0,),
                             occlusion=(), ood_scores=("msp", "odin-t", "odin", "energy"), odin_epsilon=0.01)
    model = nn.Sequential(nn.Flatten(), nn.Linear(192, 3))
    res = RobustnessSuite(images, labels, [0.5] * 3, [0.25] * 3, settings).evaluate(model)
    assert set(res["ood_scores"]) == {"msp", "odin-t", "odin", "energy"}
    for sets in res["ood_scores"].values():
        assert set(sets) == {"uniform", "gaussian"}
        for m in sets.values():
            assert set(m) == {"auroc", "aupr_in", "aupr_out", "tnr_at_tpr95", "detection_acc"}
    assert res["ood_scores"]["msp"] == res["ood"]  # the max-softmax numbers the summary table uses
    assert res["ood_score_params"] == {"odin_temperature": 1000.0, "odin_epsilon": 0.01, "energy_temperature": 1.0,
                                       "folder_fit": "resize-crop"}
    # the suite's energy numbers are ood_metrics of the hand-checked scores
    from cuekit.robustness.benchmark import _normaliser

    norm = _normaliser([0.5] * 3, [0.25] * 3, 3, "cpu")
    s_in = ood_scores(model, images, norm, ["energy"])["energy"]
    s_out = ood_scores(model, ood_images("uniform", 12, 8, 3, seed=0), norm, ["energy"])["energy"]
    assert res["ood_scores"]["energy"]["uniform"] == pytest.approx(ood_metrics(s_in, s_out))


def test_score_settings_are_checked():
    base = dict(corruptions=(), severities=(1,), ood=(), epsilons=(0.0,), occlusion=())
    for bad, err in [(dict(ood_scores=("odn",)), UnknownChoiceError), (dict(odin_temperature=0.0), UsageError),
                     (dict(odin_epsilon=-1e-3), UsageError), (dict(energy_temperature=-1.0), UsageError),
                     (dict(ood_fit="squash"), UnknownChoiceError)]:
        with pytest.raises(err):
            RobustnessSuite(torch.rand(2, 3, 8, 8), torch.zeros(2), [0.0] * 3, [1.0] * 3, SuiteSettings(**base, **bad))


def test_score_flags_are_checked_before_any_work(tmp_path, capsys):
    ckpt = str(tmp_path / "x.safetensors")  # never read: the flags fail first
    assert main(["robustness", "eval", "--ckpt", ckpt, "--ood-scores", "msp,enrgy"]) == 2
    assert "did you mean" in capsys.readouterr().err
    assert main(["robustness", "eval", "--ckpt", ckpt, "--odin-temperature", "0"]) == 2
    assert "temperatures must be > 0" in capsys.readouterr().err
    assert main(["robustness", "bench", "--odin-epsilon", "-1"]) == 2
    assert main(["robustness", "bench", "--ood-fit", "squash"]) == 2


# ---- OOD folders: crop or resize to the in-distribution size ----


def _gradient_image(path, w, h):
    """An RGB image whose red channel is the column and green the row: any crop or resize shows."""
    a = np.zeros((h, w, 3), np.uint8)
    a[..., 0] = np.arange(w)[None, :] * 5
    a[..., 1] = np.arange(h)[:, None] * 5
    Image.fromarray(a).save(path)
    return a


def test_ood_folder_crop_and_resize(tmp_path):
    a = _gradient_image(tmp_path / "a.png", 40, 48)
    crop = ood_images(f"folder:{tmp_path}", 4, 32, 3, fit="crop")
    want = torch.from_numpy(a[8:40, 4:36]).permute(2, 0, 1).float() / 255  # centre 32x32 at full resolution
    torch.testing.assert_close(crop[0], want)
    resize = ood_images(f"folder:{tmp_path}", 4, 32, 3, fit="resize")
    assert resize.shape == (1, 3, 32, 32)
    # the whole image: first and last columns / rows survive (a crop would cut them)
    assert float(resize[0, 0, :, 0].mean()) < 4 / 255 and float(resize[0, 0, :, -1].mean()) > 180 / 255
    assert float(resize[0, 1, 0].mean()) < 4 / 255 and float(resize[0, 1, -1].mean()) > 220 / 255
    default = ood_images(f"folder:{tmp_path}", 4, 32, 3)  # resize-crop: 40 -> 32 wide, then a centre crop
    assert not torch.allclose(default, resize) and not torch.allclose(default, crop)
    same = ood_images(f"folder:{tmp_path}", 4, 40, 3, fit="crop")  # 40 px: only the rows are cropped
    torch.testing.assert_close(same[0], torch.from_numpy(a[4:44]).permute(2, 0, 1).float() / 255)


def test_ood_folder_crop_refuses_small_images_naming_the_file(tmp_path, capsys):
    _gradient_image(tmp_path / "small.png", 20, 24)
    with pytest.raises(DataError, match="smaller than the 32 px crop") as err:
        ood_images(f"folder:{tmp_path}", 4, 32, 3, fit="crop")
    assert str(tmp_path / "small.png") in str(err.value)
    assert ood_images(f"folder:{tmp_path}", 4, 32, 3, fit="resize").shape == (1, 3, 32, 32)
    with pytest.raises(UnknownChoiceError):
        ood_images(f"folder:{tmp_path}", 4, 32, 3, fit="squash")
