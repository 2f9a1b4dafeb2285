"""`cuekit wcst ...` end to end on a tiny image folder + CSV, and its one-line errors."""
from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from cuekit.cli import main


@pytest.fixture(scope="module")
def csv_data(tmp_path_factory):
    """3 x 3 x 3 factorial of cues (hue, size, noise) drawn into 8x8 PNGs, 4 images per combination."""
    from PIL import Image

    root = tmp_path_factory.mktemp("csvdata")
    lines = ["file,hue,size,noise"]
    rng = np.random.default_rng(0)
    for i, (h, s, n) in enumerate(itertools.product(range(3), range(3), range(3))):
        for rep in range(4):
            img = np.zeros((8, 8, 3), np.uint8)
            img[:, :, h] = 120
            img[: 2 + 2 * s, : 2 + 2 * s, :] = 255
            img += rng.integers(0, 10 * (n + 1), img.shape, dtype=np.uint8)
            name = f"im_{i}_{rep}.png"
            Image.fromarray(img).save(root / name)
            lines.append(f"{name},{['red', 'green', 'blue'][h]},{s},{n}")
    (root / "attrs.csv").write_text("\n".join(lines) + "\n")
    return root / "attrs.csv"


COMMON = ["--cues", "hue,size", "--img-size", "8", "--train-per-class", "8", "--valid-per-class", "4",
          "--model", "mlp", "--epochs", "1", "--batch-size", "8", "--no-progress"]


def test_audit_writes_results_and_plot(csv_data, tmp_path, capsys):
    out = tmp_path / "audit"
    code = main(["wcst", "audit", "--data", f"csv:{csv_data}", *COMMON, "--seeds", "2", "--out", str(out)])
    text = capsys.readouterr().out
    assert code == 0
    assert "preference order (mlp):" in text
    res = json.loads((out / "results.json").read_text())
    assert res["data"]["levels"]["hue"] == ["blue", "green", "red"]
    assert res["data"]["splits"]["diagonal"] == {"train": 24, "valid": 12}
    assert len(res["results"]["mlp"]["runs"]) == 2
    assert (out / "preference_mlp.png").stat().st_size > 1000


def test_flatness_abundance_complexity_commands(csv_data, tmp_path, capsys):
    base = ["--data", f"csv:{csv_data}", *COMMON]
    assert main(["wcst", "flatness", *base, "--radii", "0.25,0.5", "--directions", "2", "--probes", "2",
                 "--out", str(tmp_path / "f")]) == 0
    flat = json.loads((tmp_path / "f" / "results.json").read_text())
    assert set(flat["results"]["summary"]) == {"hue", "size"}
    assert main(["wcst", "abundance", *base, "--mode", "both", "--radii", "0", "--repeats", "1", "--inits", "2",
                 "--out", str(tmp_path / "a")]) == 0
    ab = json.loads((tmp_path / "a" / "results.json").read_text())
    assert sum(ab["results"]["census"]["counts"].values()) == 2
    assert main(["wcst", "audit", *base, "--seeds", "1", "--out", str(tmp_path / "p")]) == 0
    assert main(["wcst", "complexity", "--data", f"csv:{csv_data}", "--cues", "hue,size", "--img-size", "8",
                 "--train-per-class", "8", "--valid-per-class", "4", "--preference",
                 str(tmp_path / "p" / "results.json"), "--abundance", str(tmp_path / "a" / "results.json"),
                 "--out", str(tmp_path / "c")]) == 0
    comp = json.loads((tmp_path / "c" / "results.json").read_text())["results"]
    assert comp["method"] == "level_means" and "mlp" in comp["correlation_with_preference"]
    assert set(comp["correlation_with_abundance"]) == {"census", "radius_rerun"}
    text = capsys.readouterr().out
    assert "cuekit's proxy (not the paper's)" in text
    for name in ("f/flatness.png", "a/radius_rerun.png", "a/census.png", "c/complexity.png"):
        assert (tmp_path / name).exists()


def test_flatness_rejects_radius_zero(csv_data, tmp_path, capsys):
    code = main(["wcst", "flatness", "--data", f"csv:{csv_data}", *COMMON, "--radii", "0,0.5",
                 "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and "must all be > 0" in err and "Traceback" not in err


@pytest.mark.parametrize("args, code, needle", [
    (["--cues", "hue"], 2, "at least 2 cues"),
    (["--cues", "hue,colour"], 2, "unknown cue of csv:attrs.csv 'colour'"),
    (["--cues", "hue,size", "--train-per-class", "500"], 2, "the diagonal set has 12 samples of level 0"),
    (["--cues", "hue,size", "--model", "resnet21"], 2, "unknown model 'resnet21'"),
])
def test_bad_input_is_one_line(csv_data, tmp_path, capsys, args, code, needle):
    assert main(["wcst", "audit", "--data", f"csv:{csv_data}", "--out", str(tmp_path), *args]) == code
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_malformed_csv_names_the_row(tmp_path, capsys):
    (tmp_path / "a.png").write_bytes(b"")
    (tmp_path / "attrs.csv").write_text("file,x,y\na.png,1,2\na.png,3\n")
    assert main(["wcst", "audit", "--data", f"csv:{tmp_path / 'attrs.csv'}", "--cues", "x,y"]) == 2
    err = capsys.readouterr().err
    assert "row 3 has 2 fields" in err and "Traceback" not in err
