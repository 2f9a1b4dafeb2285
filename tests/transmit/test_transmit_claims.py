"""The claims of `reproduce transmit`, from hand-made per-seed numbers: the float16 file is the baseline."""
from __future__ import annotations

import math

import pytest

from cuekit.transmit import experiment
from cuekit.transmit.experiment import Scale


def seed_record(seed: int, *, acc16=0.7, t16=2.0, usable_at=0.5, final_acc=None, final_t=2.05,
                package=40_300, bytes16=40_000, transfer16=1.9, manifest=1000) -> dict:
    stages = [{"stage": i + 1, "bits": 2 * (i + 1), "time_s": final_t * (i + 1) / 8, "bytes": 5000 * (i + 1),
               "acc": 0.3 if i == 0 else acc16} for i in range(8)]
    stages[-1]["acc"] = acc16 if final_acc is None else final_acc
    usable = {"bits": 4, "time_s": usable_at, "acc": acc16}
    return {"seed": seed, "acc_float16": acc16, "chance": 1 / 6, "t_float16": t16, "bytes_float16": bytes16,
            "transfer_s_float16": transfer16, "stages": {"paper": stages}, "package_bytes": {"paper": package},
            "manifest_bytes": {"paper": manifest}, "first_usable_paper": usable}


SCALE = Scale(model="resnet8", width=8, train_size=8, val_size=8, epochs=1, batch_size=8, rate_mbit=0.2, rtt_ms=20)


def by_id(rows):
    return {c["id"]: c for c in rows}


def test_the_headline_is_measured_against_the_float16_file():
    # usable at 0.5 s, the float16 file's prediction at 2.0 s: 4x as soon, held
    rows = by_id(experiment._claims([seed_record(s) for s in range(3)], SCALE))
    head = rows["usable_sooner"]
    assert head["headline"] and head["verdict"] == "held" and not head["reference"]
    assert head["effects"] == pytest.approx([math.log2(2.0 / 0.5) - 1] * 3)
    assert [c["id"] for c in rows.values() if c["reference"]] == []
    # sooner, but not twice as soon as the float16 file: the headline does not hold
    rows = by_id(experiment._claims([seed_record(s, usable_at=1.5) for s in range(3)], SCALE))
    assert rows["usable_sooner"]["verdict"] == "did not hold"


def test_each_claim_is_its_own_row_with_its_own_tolerance():
    rows = by_id(experiment._claims([seed_record(s) for s in range(3)], SCALE))
    assert list(rows) == [
        "usable_sooner", "final_accuracy", "no_size_increase", "no_time_increase"]
    assert rows["final_accuracy"]["verdict"] == "held"       # identical accuracy
    assert rows["no_size_increase"]["verdict"] == "held"     # 0.75% larger, within 1%
    assert rows["no_time_increase"]["verdict"] == "held"     # 2.5% later, within 5%
    rows = by_id(experiment._claims([seed_record(s, package=44_000, final_t=2.4, final_acc=0.69)
                                     for s in range(3)], SCALE))
    assert rows["no_size_increase"]["verdict"] == "did not hold"    # 10% larger
    assert rows["no_time_increase"]["verdict"] == "did not hold"    # 20% later
    assert rows["final_accuracy"]["verdict"] == "did not hold"      # one point off, tolerance half a point
    assert rows["usable_sooner"]["verdict"] == "held"               # unaffected by the others


def test_failed_preconditions_make_the_claims_inconclusive():
    untrained = by_id(experiment._claims([seed_record(s, acc16=0.2) for s in range(3)], SCALE))
    assert untrained["usable_sooner"]["verdict"] == "inconclusive"
    assert any("learned the task" in f for f in untrained["usable_sooner"]["failed_preconditions"])
    cpu_bound = by_id(experiment._claims([seed_record(s, transfer16=0.5) for s in range(3)], SCALE))
    assert cpu_bound["usable_sooner"]["verdict"] == "inconclusive"
    assert any("the link, not the CPU" in f for f in cpu_bound["no_time_increase"]["failed_preconditions"])
    assert cpu_bound["no_size_increase"]["verdict"] == "held"  # bytes do not depend on the link
    big_manifest = by_id(experiment._claims([seed_record(s, manifest=4000) for s in range(3)], SCALE))
    assert big_manifest["no_size_increase"]["verdict"] == "inconclusive"  # 10% metadata: not the paper's regime
    assert any("per-tensor metadata" in f for f in big_manifest["usable_sooner"]["failed_preconditions"])
    assert big_manifest["final_accuracy"]["verdict"] == "held"
    none_usable = [seed_record(s) for s in range(3)]
    none_usable[1]["first_usable_paper"] = None
    rows = by_id(experiment._claims(none_usable, SCALE))
    assert rows["usable_sooner"]["verdict"] == "inconclusive" and math.isnan(rows["usable_sooner"]["effects"][1])


def test_the_baseline_file_holds_float16_weights(tmp_path):
    import torch
    from safetensors.torch import load_file

    state = {"w": torch.randn(3, 4), "steps": torch.tensor(7)}
    experiment._save_float_file(state, tmp_path / "f16.safetensors", torch.float16)
    loaded = load_file(str(tmp_path / "f16.safetensors"))
    assert loaded["w"].dtype == torch.float16 and loaded["steps"].dtype == torch.int64
    assert torch.equal(loaded["w"], state["w"].half())
