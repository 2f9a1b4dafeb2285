"""`cuekit data list` and `cuekit data preview`."""
from __future__ import annotations

import pytest

from cuekit.cli import main


def test_preview_writes_a_png_grid(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["data", "preview", "dsprites", "--out", "grid.png", "--n", "6", "--task", "color",
                 "--img-size", "32", "--seed", "1"]) == 0
    data = (tmp_path / "grid.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image as mpimg

    img = mpimg.imread(tmp_path / "grid.png")
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
    assert "grid.png" in capsys.readouterr().out
    # the default spec and output name work too, into a new folder
    assert main(["data", "preview", "--out", "sub/dir/p.png", "--n", "2", "--img-size", "32"]) == 0
    assert (tmp_path / "sub/dir/p.png").stat().st_size > 0


def test_list_names_the_builtin_dataset(capsys):
    assert main(["data", "list"]) == 0
    out = capsys.readouterr().out
    assert "dsprites" in out.split()


@pytest.mark.parametrize("argv,needle", [
    (["data", "preview", "dsprite"], "unknown dataset 'dsprite'"),
    (["data", "preview", "dsprites", "--task", "hue"], "unknown task 'hue'"),
    (["data", "preview", "dsprites", "--n", "0"], "--n"),
])
def test_preview_errors_are_one_line_with_exit_code_2(argv, needle, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert not list(tmp_path.iterdir())


def test_preview_of_a_missing_folder_is_a_one_line_error(tmp_path, capsys):
    code = main(["data", "preview", f"folder:{tmp_path / 'missing'}", "--out", str(tmp_path / "x.png")])
    assert code != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("cuekit: error:")
    assert not (tmp_path / "x.png").exists()


def test_preview_accepts_any_dataset_spec(tmp_path, capsys):
    from PIL import Image

    for cls, colour in (("cats", (200, 30, 30)), ("dogs", (30, 30, 200))):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (20, 20), colour).save(tmp_path / "imgs" / cls / f"{i}.png")
    out = tmp_path / "folder.png"
    assert main(["data", "preview", f"folder:{tmp_path / 'imgs'}", "--out", str(out), "--n", "4",
                 "--img-size", "16"]) == 0
    assert out.read_bytes()[:4] == b"\x89PNG"


def test_preview_of_a_video_dataset_shows_each_clip_as_a_row_of_frames(tmp_path, capsys):
    import matplotlib.image as mpimg

    out = tmp_path / "clips.png"
    assert main(["data", "preview", "moving-shapes", "--n", "4", "--frames", "6", "--out", str(out)]) == 0
    img = mpimg.imread(out)
    assert img.shape[1] > 2 * img.shape[0]  # wide tiles: the frames side by side
    assert main(["data", "preview", "dsprites", "--frames", "4", "--out", str(out)]) == 2
    assert "video datasets" in capsys.readouterr().err
