"""The adamp claims rows from synthetic runs: the rule per row, the preconditions, and the lr selection."""
from __future__ import annotations

import math

import pytest

from cuekit.optim import experiment
from cuekit.optim.experiment import FAMILIES, MOMENTA, MOMENTUM, Run

SEEDS = [0, 1, 2]
STEPS = 16


def fake_run(growth: float, angle: float = 0.01, selection: float = 0.7, test: float = 0.7, turned: float = 0.5,
             kinds: tuple = ("channel",) * 3, selection_curve: list[float] | None = None) -> dict:
    """A run whose log norm grows linearly to `growth` at the end, with a constant angle per step."""
    return {"norms": [math.exp(growth * (i + 1) / STEPS) for i in range(STEPS)], "angles": [angle] * STEPS,
            "losses": [1.0] * STEPS, "initial_norm": 1.0, "turned_early": turned, "conv_kinds": list(kinds),
            "steps": STEPS, "selection_acc": selection_curve or [selection - 0.1, selection - 0.05, selection,
                                                                  selection], "test_acc": test, "diverged_at": None}


def healthy_runs(**override) -> dict[Run, dict]:
    """Runs in which every claim holds: the momentum sweep grows the norm monotonically, the projected runs keep
    a lower norm and a larger angle, and the projected optimizers are more accurate at their best lr."""
    runs = {}
    for s in SEEDS:
        jitter = 0.01 * s
        for fam in FAMILIES:
            for lr in fam.lrs:
                best = lr == fam.reference_lr
                runs[Run(s, fam.name, False, lr)] = fake_run(
                    0.8 + jitter, 0.010, 0.70 if best else 0.60, 0.70 + jitter if best else 0.6,
                    kinds=("none",) * 3)
                runs[Run(s, fam.name, True, lr)] = fake_run(
                    0.1 + jitter, 0.015, 0.75 if best else 0.60, 0.75 + jitter / 2 if best else 0.6)
        sgd = experiment._family("sgd")
        for m, g in zip(MOMENTA, (0.2, None, 2.0)):
            if m != MOMENTUM:
                runs[Run(s, "sgd", False, sgd.reference_lr, m)] = fake_run(g + jitter, kinds=("none",) * 3)
    for key, change in override.items():
        change(runs)
    return runs


def rows(runs: dict, invariance_error: float = 1e-7) -> dict[str, dict]:
    return {c["id"]: c for c in experiment.analyse(runs, SEEDS, invariance_error)["claims"]}


def test_every_claim_is_its_own_row_with_the_sgd_accuracy_as_headline():
    found = rows(healthy_runs())
    assert list(found) == ["norm_growth_momentum", "effective_step_sgdp", "norm_lower_sgdp", "acc_sgdp_vs_sgd",
                           "effective_step_adamp", "norm_lower_adamp", "acc_adamp_vs_adamw"]
    assert [k for k, c in found.items() if c["headline"]] == ["acc_sgdp_vs_sgd"]
    assert all(c["expected_sign"] == 1 and not c["reference"] for c in found.values())
    assert {k: c["verdict"] for k, c in found.items()} == dict.fromkeys(found, "held")
    assert found["acc_sgdp_vs_sgd"]["effects"] == pytest.approx([5.0, 4.5, 4.0])  # points, test split
    early = experiment.early_steps(STEPS)
    assert found["norm_lower_sgdp"]["effects"] == pytest.approx([0.7] * 3)
    assert found["effective_step_sgdp"]["effects"] == pytest.approx([math.log(1.5)] * 3)
    # min(g(0.9) - g(0), g(0.99) - g(0.9)) at the end of the early window
    assert found["norm_growth_momentum"]["effects"] == pytest.approx([(0.8 - 0.2) * early / STEPS] * 3)


def test_momentum_growth_that_is_not_monotonic_does_not_hold():
    """g(0.99) below g(0.9) in every seed: 'more with larger momentum' fails even though 0.9 grows more than 0."""
    def shrink_099(runs):
        for s in SEEDS:
            key = Run(s, "sgd", False, experiment._family("sgd").reference_lr, 0.99)
            runs[key] = fake_run(0.5 + 0.01 * s, kinds=("none",) * 3)

    assert rows(healthy_runs(a=shrink_099))["norm_growth_momentum"]["verdict"] == "did not hold"


def test_weights_that_do_not_move_make_the_momentum_claim_inconclusive():
    def frozen(runs):
        for s in SEEDS:
            runs[Run(s, "sgd", False, experiment._family("sgd").reference_lr, 0.0)]["turned_early"] = 0.001

    row = rows(healthy_runs(a=frozen))["norm_growth_momentum"]
    assert row["verdict"] == "inconclusive"
    assert any("training moves the weights" in p for p in row["failed_preconditions"])


def test_a_saturated_baseline_makes_the_accuracy_claim_inconclusive_and_is_named():
    """Judged on the baseline only: both optimizers near 100% cannot test the accuracy claim."""
    def saturate(runs):
        for r, v in runs.items():
            if r.family == "sgd":
                v["test_acc"] = 0.995 if not r.projected else 1.0

    found = rows(healthy_runs(a=saturate))
    assert found["acc_sgdp_vs_sgd"]["verdict"] == "inconclusive"
    assert [p for p in found["acc_sgdp_vs_sgd"]["failed_preconditions"]] == [
        f"the task is not saturated: the baseline's mean test accuracy <= {experiment.CEILING}"]
    assert found["acc_adamp_vs_adamw"]["verdict"] == "held"


def test_a_baseline_at_chance_makes_the_accuracy_claim_inconclusive():
    def chance(runs):
        for r, v in runs.items():
            if r.family == "adam" and not r.projected:
                v["test_acc"] = 0.2

    row = rows(healthy_runs(a=chance))["acc_adamp_vs_adamw"]
    assert row["verdict"] == "inconclusive"
    assert any("beats chance" in p for p in row["failed_preconditions"])


def test_an_unconverged_baseline_makes_the_accuracy_claim_inconclusive():
    def rising(runs):
        for r, v in runs.items():
            if r.family == "sgd" and not r.projected:
                v["selection_acc"] = [0.4, 0.5, 0.6, 0.7]

    row = rows(healthy_runs(a=rising))["acc_sgdp_vs_sgd"]
    assert row["verdict"] == "inconclusive"
    assert any("converged" in p for p in row["failed_preconditions"])


def test_a_control_that_projects_or_weights_that_are_not_invariant_make_the_rows_inconclusive():
    def projecting_control(runs):
        for r, v in runs.items():
            if r.family == "adam" and not r.projected:
                v["conv_kinds"] = ["channel"] * 3

    found = rows(healthy_runs(a=projecting_control))
    assert all(found[k]["verdict"] == "inconclusive" for k in ("effective_step_adamp", "norm_lower_adamp",
                                                              "acc_adamp_vs_adamw"))
    assert found["acc_sgdp_vs_sgd"]["verdict"] == "held"
    not_invariant = rows(healthy_runs(), invariance_error=0.3)
    assert {c["verdict"] for c in not_invariant.values()} == {"inconclusive"}
    assert all(any("scale-invariant" in p for p in c["failed_preconditions"]) for c in not_invariant.values())


def test_the_lr_is_picked_per_optimizer_on_the_selection_split_and_read_on_the_test_split():
    """The baseline's test accuracy is best at another lr than its selection accuracy: the selection split wins,
    so the reported accuracy is the test accuracy at the lr picked on the selection split."""
    sgd = experiment._family("sgd")
    low, mid = sgd.lrs[0], sgd.reference_lr

    def split_disagrees(runs):
        for s in SEEDS:
            runs[Run(s, "sgd", False, low)].update(selection_acc=[0.5, 0.6, 0.71, 0.71], test_acc=0.55)
            runs[Run(s, "sgd", False, mid)].update(test_acc=0.9)  # best on test, not picked
            runs[Run(s, "sgd", True, low)].update(selection_acc=[0.5, 0.6, 0.8, 0.8], test_acc=0.65)

    out = experiment.analyse(healthy_runs(a=split_disagrees), SEEDS, 1e-7)
    assert out["details"]["sgd"]["chosen_lr"] == {"SGD": [low] * 3, "SGDP": [low] * 3}
    row = next(c for c in out["claims"] if c["id"] == "acc_sgdp_vs_sgd")
    assert row["effects"] == pytest.approx([10.0] * 3)
    assert "at an end of the sweep" in row["note"]
