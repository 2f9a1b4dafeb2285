"""The diagonal / off-diagonal construction, the cue sources and their bad-input errors."""
from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch
from wcst_helpers import FactorialSource, read_cue_from_pixels  # noqa: E402

from cuekit.errors import DataError, UnknownChoiceError, UsageError
from cuekit.wcst.datasets import (
    CATEGORICAL,
    ORDINAL,
    CSVSource,
    Cue,
    DSpritesSource,
    UTKFaceSource,
    build_cue_conflict,
    compute_levels,
    open_source,
)

DSPRITES_CUES = ("color", "shape", "scale", "orientation")


@pytest.fixture(scope="module")
def dsprites_data():
    return build_cue_conflict(DSpritesSource(), DSPRITES_CUES, train_per_class=40, valid_per_class=20,
                              offdiag_train_per_class=10, seed=3, img_size=16)


def _independent_levels(latents: np.ndarray, data) -> np.ndarray:
    """Levels of dSprites latents recomputed from the level definitions: (n, K) with -1 = none."""
    from cuekit.data.dsprites import LATENT_NAMES

    out = np.full((len(latents), len(data.cues)), -1)
    for k, cue in enumerate(data.cues):
        col = latents[:, LATENT_NAMES.index(cue)]
        for level, d in enumerate(data.level_definitions[cue]):
            hit = (col >= d[0]) & (col <= d[1]) if isinstance(d, (list, tuple)) else col == d
            out[hit, k] = level
    return out


def test_levels_follow_the_public_rule(dsprites_data):
    # 4 equally frequent colours: the 3 levels are the first 3 ids (white never a level).
    assert dsprites_data.level_definitions["color"] == [0, 1, 2]
    assert dsprites_data.level_names["color"] == ["red", "green", "blue"]
    # 6 scales into 3 equal-count bins; 40 orientations into contiguous bins of 13/14/13 values.
    assert dsprites_data.level_definitions["scale"] == [(0, 1), (2, 3), (4, 5)]
    orient = dsprites_data.level_definitions["orientation"]
    assert orient[0][0] == 0 and orient[-1][1] == 39
    assert all(orient[i][1] + 1 == orient[i + 1][0] for i in range(2))
    assert sorted(hi - lo + 1 for lo, hi in orient) == [13, 13, 14]


def test_categorical_levels_most_frequent_first_ties_by_id():
    cue = Cue("x", CATEGORICAL, np.array([5, 5, 5, 2, 2, 9, 9, 7]))
    lv = compute_levels(cue, 3)
    assert lv.definition == [5, 2, 9]   # 5 (3x), then 2 and 9 (2x each, smaller id first); 7 dropped
    assert lv.level_of_sample.tolist() == [0, 0, 0, 1, 1, 2, 2, -1]
    assert lv.counts == [3, 2, 2]


def test_ordinal_levels_equal_count_bins():
    values = np.array([0] * 10 + [1] * 10 + [2] * 5 + [3] * 5 + [4] * 10 + [5] * 20)
    lv = compute_levels(Cue("v", ORDINAL, values), 3)
    assert lv.definition == [(0, 1), (2, 4), (5, 5)]
    assert lv.counts == [20, 20, 20]


def test_diagonal_samples_agree_on_every_cue(dsprites_data):
    table = DSpritesSource().latents()
    for split in ("train", "valid"):
        part = dsprites_data.split("diagonal", split)
        levels = _independent_levels(table[part.indices].astype(np.int64), dsprites_data)
        assert (levels >= 0).all()
        assert (levels == part.labels[:, None]).all()
        assert np.array_equal(levels, part.levels)


def test_off_diagonal_samples_disagree_somewhere(dsprites_data):
    table = DSpritesSource().latents()
    for k, cue in enumerate(DSPRITES_CUES):
        for split in ("train", "valid"):
            part = dsprites_data.split(cue, split)
            levels = _independent_levels(table[part.indices].astype(np.int64), dsprites_data)
            assert np.array_equal(part.labels, levels[:, k])
            agree_all = (levels >= 0).all(1) & (levels == levels[:, :1]).all(1)
            assert not agree_all.any()


def test_sets_are_class_balanced_and_disjoint(dsprites_data):
    d = dsprites_data
    for name, n_train, n_valid in [("diagonal", 40, 20)] + [(c, 10, 20) for c in DSPRITES_CUES]:
        tr, va = d.split(name, "train"), d.split(name, "valid")
        assert np.bincount(tr.labels, minlength=3).tolist() == [n_train] * 3
        assert np.bincount(va.labels, minlength=3).tolist() == [n_valid] * 3
        assert not set(tr.indices) & set(va.indices)
    diag = set(d.diagonal["train"].indices) | set(d.diagonal["valid"].indices)
    assert not diag & set(d.off_diagonal["color"]["valid"].indices)


def test_sampling_is_seeded():
    src = FactorialSource(3, 3, repeats=20)
    build = lambda seed: build_cue_conflict(src, src.cue_names, train_per_class=10, valid_per_class=5,
                                            offdiag_train_per_class=5, seed=seed)
    a, b, c = build(0), build(0), build(1)
    for name in ("diagonal", "c0", "c2"):
        for split in ("train", "valid"):
            assert np.array_equal(a.split(name, split).indices, b.split(name, split).indices)
    assert not np.array_equal(a.split("diagonal", "train").indices, c.split("diagonal", "train").indices)


@pytest.mark.parametrize("num_cues", [2, 3])
def test_oracle_reading_one_cue_matches_the_agreement_formula(num_cues):
    """An oracle reading only cue k's pixels scores 100% on D_k and, on D_j, exactly
    (L^(K-1) - L) / (L^K - L) for K uniform independent cues with L levels."""
    L, K = 3, num_cues
    src = FactorialSource(K, L, repeats=2)
    per_class = 2 * (L ** (K - 1) - 1)          # every off-diagonal sample of each level
    data = build_cue_conflict(src, src.cue_names, train_per_class=1, valid_per_class=1,
                              offdiag_train_per_class=0, offdiag_valid_per_class=per_class, seed=0).materialize()
    expected = Fraction(L ** (K - 1) - L, L ** K - L)
    assert expected == (0 if K == 2 else Fraction(1, 4))
    for k, reader in enumerate(src.cue_names):
        for j, target in enumerate(src.cue_names):
            x, y = data.dataset(target, "valid").tensors()
            read = read_cue_from_pixels(x, k, L)
            pred = torch.tensor([data.level_definitions[reader].index(v) for v in read.tolist()])
            acc = Fraction(int((pred == y).sum()), len(y))
            assert acc == (1 if j == k else expected)


def test_dsprites_colour_oracle_scores_the_sets_own_agreement_rate(dsprites_data):
    """A reader of the rendered colour only: 100% on D_color, and on D_shape exactly the fraction of
    D_shape samples whose colour level equals their shape level."""
    data = dsprites_data.materialize()

    def colour_oracle(x: torch.Tensor) -> torch.Tensor:
        peak = x.amax(dim=(2, 3))                          # (N, 3) per-channel maximum
        lit = peak > 0.5
        pred = peak.argmax(1)
        pred[lit.sum(1) != 1] = -1                          # white (all channels lit): no colour level
        return pred

    x, y = data.dataset("color", "valid").tensors()
    assert bool((colour_oracle(x) == y).all())
    part = data.split("shape", "valid")
    x, y = data.dataset("shape", "valid").tensors()
    acc = Fraction(int((colour_oracle(x) == y).sum()), len(y))
    agreement = Fraction(int((part.levels[:, 0] == part.levels[:, 1]).sum()), len(part))
    assert acc == agreement


def test_orientation_restricted_source_keeps_every_image_distinct():
    """Over 0..360 deg a square at 0 and 90 deg is one image in two orientation bins; the 0..81 deg source
    keeps one symmetry period, so the orientation of every shape can be read from the pixels."""
    from cuekit.data import dsprites

    full, kept = DSpritesSource(), DSpritesSource(orientations=range(10))
    assert len(kept) == len(full) // 4 and set(np.unique(kept.latents()[:, 3])) == set(range(10))
    square = np.array([[0, 0, 5, k, 16, 16] for k in (0, 10, 9)])
    imgs = dsprites.render(torch.as_tensor(square), 32)
    assert torch.equal(imgs[0], imgs[1])             # 0 and 90 deg: the same square
    assert not torch.equal(imgs[0], imgs[2])          # 0 and 81 deg differ
    picked = np.arange(0, len(kept), 9973)
    assert np.array_equal(full.latents()[kept.dsprites_index(picked)], kept.latents()[picked])
    assert torch.equal(kept.load_images(picked[:3], 16), full.load_images(kept.dsprites_index(picked[:3]), 16))
    data = build_cue_conflict(kept, DSPRITES_CUES, train_per_class=4, valid_per_class=2, seed=0, img_size=8)
    assert data.level_definitions["orientation"] == [(0, 2), (3, 6), (7, 9)]
    with pytest.raises(UsageError, match="orientations"):
        DSpritesSource(orientations=[0, 40])


def test_cue_training_set_takes_a_balanced_seeded_diagonal_subset(dsprites_data):
    whole = dsprites_data.cue_training_set("shape")
    half = dsprites_data.cue_training_set("shape", diagonal_per_class=20, seed=1)
    assert len(whole) == 3 * 40 + 3 * 10 and len(half) == 3 * 20 + 3 * 10
    diag = set(dsprites_data.split("diagonal", "train").indices)
    picked = [i for i in half.indices if i in diag]
    assert np.bincount(dsprites_data.split("diagonal", "train").labels[
        np.searchsorted(dsprites_data.split("diagonal", "train").indices, picked)], minlength=3).tolist() == [20] * 3
    assert np.array_equal(half.indices, dsprites_data.cue_training_set("shape", diagonal_per_class=20, seed=1).indices)
    assert not np.array_equal(half.indices, dsprites_data.cue_training_set("shape", diagonal_per_class=20,
                                                                           seed=2).indices)
    with pytest.raises(DataError, match="fewer than the 41"):
        dsprites_data.cue_training_set("shape", diagonal_per_class=41)


def test_bad_cue_choices_raise_clear_errors():
    src = DSpritesSource()
    with pytest.raises(UsageError, match="at least 2 cues"):
        build_cue_conflict(src, ["color"])
    with pytest.raises(UnknownChoiceError, match="'colour'"):
        build_cue_conflict(src, ["colour", "shape"])
    with pytest.raises(DataError, match="diagonal set has .* fewer than"):
        build_cue_conflict(src, ["color", "shape"], train_per_class=10 ** 6, valid_per_class=1)
    with pytest.raises(DataError, match="single value"):
        compute_levels(Cue("flat", CATEGORICAL, np.zeros(5, dtype=np.int64)), 2)


def _write_png(path, value):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((6, 6, 3), value, dtype=np.uint8)).save(path)


def test_utkface_reader(tmp_path):
    names = ["25_0_1_2017.jpg", "34_1_0_2017.jpg", "71_0_2_2017.jpg", "8_1_4_2017.jpg", "39_1_2017.jpg",
             "20_3_0_2017.jpg", "notes.txt"]
    for i, n in enumerate(names):
        if n.endswith(".jpg"):
            _write_png(tmp_path / "UTKFace" / n, 10 * i)
        else:
            (tmp_path / n).write_text("x")
    src = open_source(f"utkface:{tmp_path}")
    assert isinstance(src, UTKFaceSource) and len(src) == 4
    assert sorted(src.skipped) == ["20_3_0_2017.jpg", "39_1_2017.jpg"]
    by_file = {p.name: i for i, p in enumerate(src.files)}
    age, eth, gender = src.cue("age"), src.cue("ethnicity"), src.cue("gender")
    i = by_file["71_0_2_2017.jpg"]
    assert (age.values[i], eth.values[i], gender.values[i]) == (7, 2, 0)
    assert age.kind == ORDINAL and eth.value_names[2] == "Asian"
    assert src.load_images(np.array([i]), 4).shape == (1, 3, 4, 4)
    with pytest.raises(UnknownChoiceError, match="'race'"):
        src.cue("race")


def _csv_dataset(tmp_path, rows, header="file,a,b"):
    for r in rows:
        name = r.split(",")[0]
        if name and not (tmp_path / name).exists():
            _write_png(tmp_path / name, 100)
    path = tmp_path / "attrs.csv"
    path.write_text(header + "\n" + "\n".join(rows) + "\n")
    return path


def test_csv_reader_types_and_levels(tmp_path):
    rows = [f"img{i}.png,{['x', 'y', 'z'][i % 3]},{i}" for i in range(30)]
    src = CSVSource(_csv_dataset(tmp_path, rows))
    assert src.cue_names == ("a", "b")
    assert src.cue("a").kind == CATEGORICAL and src.cue("a").value_names == {0: "x", 1: "y", 2: "z"}
    assert src.cue("b").kind == ORDINAL                 # numeric, 30 distinct values
    assert CSVSource(tmp_path / "attrs.csv", categorical=["b"]).cue("b").kind == CATEGORICAL


@pytest.mark.parametrize("bad_row, message", [
    ("img2.png,y", "row 4 has 2 fields"),
    ("img2.png,,3", "row 4: cue 'a' is missing"),
    ("missing.png,y,3", "row 4: image file .* not found"),
    ("img2.png,y,tall", "row 4: ordinal cue 'b' has the non-numeric value 'tall'"),
])
def test_csv_reader_names_the_bad_row(tmp_path, bad_row, message):
    _write_png(tmp_path / "img2.png", 5)
    rows = ["img0.png,x,1", "img1.png,y,2", bad_row, "img3.png,z,4"]
    path = tmp_path / "attrs.csv"
    for i in (0, 1, 3):
        _write_png(tmp_path / f"img{i}.png", 5)
    path.write_text("file,a,b\n" + "\n".join(rows) + "\n")
    with pytest.raises(DataError, match=message):
        src = CSVSource(path, ordinal=["b"])
        src.cue("a")
        src.cue("b")


def test_csv_single_valued_cue_is_named(tmp_path):
    rows = [f"img{i}.png,same,{i % 3}" for i in range(12)]
    src = CSVSource(_csv_dataset(tmp_path, rows))
    with pytest.raises(DataError, match="cue 'a' has a single value"):
        build_cue_conflict(src, ["a", "b"])
