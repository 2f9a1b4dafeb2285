"""`cuekit rank-study`: writes results and plots; bad input is a one-line usage error."""
from __future__ import annotations

import json

import pytest

from cuekit.cli import main

SMALL = ["--networks", "2", "--blocks", "conv1x1,ib_dw3x3", "--nonlinearities", "linear,relu,silu",
         "--ratios", "0.25,1", "--inputs", "gaussian", "--samples", "2", "--depths", "1", "--d-out", "8", "12",
         "--no-progress"]


def test_rank_study_writes_results_and_plots(tmp_path, capsys):
    out = tmp_path / "rs"
    assert main(["rank-study", "--quick", *SMALL, "--out", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    assert len(res["cells"]) == 2 and res["config"]["networks"] == 2
    cell = res["cells"][0]
    assert cell["block"] == "conv1x1" and set(cell["rank"]) == {"fp32", "1e-3", "1e-2"}
    assert cell["rank"]["fp32"]["linear"][-1] == 1.0  # d_in = d_out: a linear layer is full rank
    for name in res["plots"]:
        assert (out / name).stat().st_size > 1000
    assert "ordering.png" in res["plots"]
    assert "appears in" in capsys.readouterr().out


def test_rank_study_rejects_unknown_block(tmp_path, capsys):
    assert main(["rank-study", "--blocks", "conv7x7", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "conv7x7" in err[0]


def test_rank_study_spatial_one_is_the_papers_vector_setting(tmp_path):
    out = tmp_path / "rs1"
    args = [a if a != "conv1x1,ib_dw3x3" else "conv1x1,conv3x3" for a in SMALL]
    assert main(["rank-study", *args, "--spatial", "1", "--out", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["config"]["spatial"] == 1
    lin = [c["rank"]["fp32"]["linear"] for c in res["cells"]]
    for curve in lin:  # a linear 3x3 conv on 1x1 maps sees only d_in inputs, as a 1x1 conv does
        assert curve[0] == pytest.approx(0.25, abs=0.5 / 8) and curve[1] == 1.0
