"""AdamP / SGDP behaviour: fast path equals the reference, state dicts, closures, bad input,
the factory, and no host synchronisation in the fast path."""
from __future__ import annotations

import copy

import pytest
import torch
from optim_nets import make_net, max_relative_error, train_steps
from torch import nn

from cuekit.errors import UsageError
from cuekit.optim import SGDP, AdamP, create_optimizer, list_optimizers

MAKERS = {
    "adamp": lambda params, **kw: AdamP(params, lr=1e-2, weight_decay=1e-2, **kw),
    "adamp-nesterov": lambda params, **kw: AdamP(params, lr=1e-2, weight_decay=1e-2, nesterov=True, **kw),
    "sgdp": lambda params, **kw: SGDP(params, lr=0.1, momentum=0.9, weight_decay=1e-2, **kw),
    "sgdp-nesterov": lambda params, **kw: SGDP(params, lr=0.1, momentum=0.9, weight_decay=1e-2, nesterov=True, **kw),
    "sgdp-no-momentum": lambda params, **kw: SGDP(params, lr=0.1, weight_decay=1e-2, dampening=0.1, **kw),
}


class OddShapes(nn.Module):
    """Tensors of many kinds: 1x1 / 3-D / 5-D weights, a norm-free Linear, an unused parameter."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 6, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(6)
        self.c2 = nn.Conv1d(6, 4, 3, bias=False)
        self.gn = nn.GroupNorm(1, 4)
        self.c3 = nn.Conv3d(1, 2, (1, 2, 2), bias=False)
        self.bn3 = nn.BatchNorm3d(2)
        self.lin = nn.Linear(4, 3)
        self.unused = nn.Parameter(torch.randn(3, 3))
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x):
        x = torch.relu(self.bn1(self.c1(x)))                      # (N, 6, 8, 8)
        x = torch.relu(self.gn(self.c2(x.flatten(2))))            # (N, 4, 62)
        v = self.bn3(self.c3(x[:, None, :, :16].reshape(-1, 1, 4, 4, 4)))    # (N, 2, 4, 3, 3)
        return self.lin(x.mean(2)) * self.scale + v[:, :, 0, 0].mean((1, 2))[:, None]


def _odd_run(make, foreach, steps=15, dtype=torch.float64):
    torch.manual_seed(0)
    net = OddShapes().to(dtype)
    groups = [
        {"params": [net.c1.weight, net.c2.weight, net.lin.weight, net.unused]},
        {"params": [net.c3.weight, net.lin.bias, net.scale], "lr": 3e-3, "weight_decay": 0.0},
        {"params": [p for n, p in net.named_parameters() if n.startswith(("bn", "gn"))], "wd_ratio": 0.5},
    ]
    opt = make(groups, foreach=foreach)
    g = torch.Generator().manual_seed(2)
    for i in range(steps):
        x = torch.randn(4, 3, 8, 8, generator=g).to(dtype)
        net.zero_grad()
        loss = net(x).square().mean()
        loss.backward()
        if i % 3 == 1:  # a parameter without a gradient at some steps: its step count falls behind
            net.c3.weight.grad = None
        opt.step()
    return net, opt


@pytest.fixture(params=["fused", "eager", "gpu-flavour"])
def fast_path(request, monkeypatch) -> dict:
    """The fast path's three flavours, all on the CPU: compiled kernels (numba), grouped torch
    operations in cache-sized chunks, and the GPU's flavour (one group, foreach temporaries,
    decisions in torch) forced here. Returns the optimizer keyword arguments."""
    import cuekit.optim.projection as projection

    if request.param == "fused":
        pytest.importorskip("numba")
        return {"fused": True}
    if request.param == "gpu-flavour":
        monkeypatch.setattr(projection, "uses_kept_memory", lambda device: False)
    return {"fused": False}


@pytest.mark.parametrize("name", list(MAKERS))
def test_fast_path_equals_reference(name, fast_path):
    """Each flavour agrees with the reference on odd shapes, several groups, missing gradients and
    unequal step counts, and makes the same projection choices."""
    ref, opt_ref = _odd_run(MAKERS[name], foreach=False)
    fast, opt_fast = _odd_run(lambda params, **kw: MAKERS[name](params, **kw, **fast_path), foreach=None)
    assert max_relative_error(fast, ref) < 1e-12
    assert opt_fast.projection_kinds() == opt_ref.projection_kinds()
    assert torch.equal(fast.unused, ref.unused) and fast.unused.grad is None
    name_of = {id(p): n for n, p in fast.named_parameters()}
    order = [name_of[id(p)] for g in opt_fast.param_groups for p in g["params"]]
    kinds = dict(zip(order, opt_fast.projection_kinds()))
    assert kinds["c1.weight"] == "channel" and kinds["c2.weight"] == "layer"  # Conv1d -> GroupNorm(1 group)
    assert kinds["unused"] == "no grad"
    assert all(kinds[n] == "none" for n, p in fast.named_parameters() if p.dim() <= 1 and p.grad is not None)


@pytest.mark.parametrize("name", list(MAKERS))
@pytest.mark.parametrize("fused", [True, False], ids=["fused", "eager"])
def test_cpu_chunks_of_one_tensor(name, fused, monkeypatch):
    """On the CPU the fast path works in cache-sized chunks: one tensor per chunk gives the same."""
    import cuekit.optim.projection as projection

    if fused:
        pytest.importorskip("numba")
    make = lambda params, **kw: MAKERS[name](params, fused=fused, **kw)  # noqa: E731
    ref, _ = _odd_run(make, foreach=None)
    monkeypatch.setattr(projection, "CPU_CHUNK_BYTES", 1)
    fast, _ = _odd_run(make, foreach=None)
    assert max_relative_error(fast, ref) < 1e-12


def _with_predictions(opt, choose):
    """Wrap opt.step: before step k, plan j of opt's fused plans (in creation order) gets the
    predictions choose(k, j, n_tensors) (codes -1 unknown, 0 none, 1 channel, 2 layer; None: its own)."""
    step, count = opt.step, [0]

    def forced_step(closure=None):
        for j, plan in enumerate(opt._plans.values()):
            codes = choose(count[0], j, len(plan.predicted))
            if codes is not None:
                plan.predicted[:] = codes
        count[0] += 1
        return step(closure)

    opt.step = forced_step
    return opt


def _fused(name: str, choose):
    """A maker for _odd_run: the fused path, its predictions set by `choose` (see _with_predictions)."""
    return lambda params, **kw: _with_predictions(MAKERS[name](params, fused=True, **kw), choose)


@pytest.mark.parametrize("name", list(MAKERS))
def test_fused_wrong_predictions_are_undone(name):
    """The fused pass steps each tensor as it was decided at the previous step; where the decision
    differs (here: predictions drawn at random every step) the second pass undoes the guessed step
    and applies the decided one. The result equals the reference in every case."""
    pytest.importorskip("numba")
    rng = torch.Generator().manual_seed(3)
    ref, opt_ref = _odd_run(MAKERS[name], foreach=False)
    fast, opt = _odd_run(_fused(name, lambda k, j, n: torch.randint(-1, 3, (n,), generator=rng).numpy()),
                         foreach=None)
    assert all(bool(torch.isfinite(p).all()) for p in fast.parameters())
    assert max_relative_error(fast, ref) < 1e-12
    assert opt.projection_kinds() == opt_ref.projection_kinds()


@pytest.mark.parametrize("make", [
    lambda params, **kw: AdamP(params, lr=0.5, weight_decay=2.0, **kw),
    lambda params, **kw: SGDP(params, lr=0.5, weight_decay=2.0, nesterov=True, **kw),
    lambda params, **kw: SGDP(params, lr=0.5, weight_decay=2.0, **kw),
], ids=["adamp", "sgdp-nesterov", "sgdp"])
def test_fused_leaves_rows_it_could_not_undo(make):
    """With lr * weight_decay = 1 an unprojected step zeroes p * (1 - decay): a guessed step of that
    kind could not be undone, so the first pass leaves such rows to the second. Random predictions
    then still give the reference's result (no division by zero)."""
    pytest.importorskip("numba")
    rng = torch.Generator().manual_seed(4)
    ref, _ = _odd_run(make, foreach=False, steps=6)
    guess = lambda k, j, n: torch.randint(-1, 3, (n,), generator=rng).numpy()  # noqa: E731
    fast, _ = _odd_run(lambda params, **kw: _with_predictions(make(params, fused=True, **kw), guess), foreach=None,
                       steps=6)
    assert all(bool(torch.isfinite(p).all()) for p in fast.parameters())
    assert max_relative_error(fast, ref) < 1e-12


@pytest.mark.parametrize("name", list(MAKERS))
def test_fused_first_and_second_pass_give_the_same_bits(name):
    """A tensor stepped by the first pass (right prediction) gets exactly the bits it gets from the
    second pass (no prediction), so that, e.g., a resumed run (whose first step predicts nothing)
    stays bitwise on its track."""
    pytest.importorskip("numba")
    decided: list[list] = []  # decided[k][j]: plan j's decisions at step k of an unforced run

    def recording(params, **kw):
        opt = MAKERS[name](params, fused=True, **kw)
        step = opt.step

        def recorded_step(closure=None):
            out = step(closure)
            decided.append([plan.predicted.copy() for plan in opt._plans.values()])
            return out

        opt.step = recorded_step
        return opt

    _odd_run(recording, foreach=None)
    right, _ = _odd_run(_fused(name, lambda k, j, n: decided[k][j] if j < len(decided[k]) else None),
                        foreach=None)
    unknown, _ = _odd_run(_fused(name, lambda k, j, n: -1), foreach=None)
    for a, b in zip(right.parameters(), unknown.parameters(), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("name", ["adamp", "sgdp", "sgdp-nesterov"])
def test_fused_falls_back_for_tensors_it_cannot_view(name):
    """A parameter that is a strided view (not dense) cannot go to the compiled kernels: its chunk
    runs the grouped torch operations instead, with the same result."""
    pytest.importorskip("numba")
    results = []
    for kw in (dict(foreach=False), dict(fused=True)):
        torch.manual_seed(0)
        base = torch.randn(6, 10, dtype=torch.float64)
        strided = nn.Parameter(base[:, ::2])           # (6, 5), not dense
        dense = nn.Parameter(torch.randn(4, 3, dtype=torch.float64))
        opt = MAKERS[name]([strided, dense], **kw)
        for step in range(5):
            torch.manual_seed(10 + step)
            loss = (strided.sum(1) ** 2).sum() + (dense @ torch.randn(3, dtype=torch.float64)).square().sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
        assert strided.stride() == (10, 2)
        results.append((strided.detach().clone(), dense.detach().clone()))
    for a, b in zip(*results):
        assert torch.allclose(a, b, rtol=1e-12, atol=1e-14)


def test_fused_without_numba_is_refused(monkeypatch):
    """fused=True names numba when it is missing; the default then quietly runs torch operations."""
    import cuekit.optim.fused_cpu as fused_cpu

    monkeypatch.setattr(fused_cpu, "_KERNELS", {})
    with pytest.raises(ValueError, match="numba"):
        AdamP([nn.Parameter(torch.randn(2, 2))], fused=True)
    ref, _ = _odd_run(MAKERS["adamp"], foreach=False)
    fast, opt = _odd_run(MAKERS["adamp"], foreach=None)
    assert max_relative_error(fast, ref) < 1e-12 and opt._plans == {}


@pytest.mark.parametrize("name", ["adamp", "sgdp-nesterov"])
@pytest.mark.parametrize("foreach", [False, None], ids=["reference", "fast"])
def test_state_dict_round_trip(name, foreach):
    """Stop after 5 steps, save, rebuild, load, go on: the same as 10 uninterrupted steps."""
    net_a = make_net()
    opt_a = MAKERS[name](net_a.parameters(), foreach=foreach)
    train_steps(net_a, opt_a, 10)

    net_b = make_net()
    opt_b = MAKERS[name](net_b.parameters(), foreach=foreach)
    train_steps(net_b, opt_b, 5)
    saved = copy.deepcopy(opt_b.state_dict())
    weights = copy.deepcopy(net_b.state_dict())
    net_c = make_net(seed=9)
    net_c.load_state_dict(weights)
    opt_c = MAKERS[name](net_c.parameters(), foreach=foreach)
    opt_c.load_state_dict(saved)
    g = torch.Generator().manual_seed(1)
    for _ in range(5):  # skip the batches already seen
        torch.randn(16, 3, 8, 8, generator=g), torch.randint(0, 5, (16,), generator=g)
    for _ in range(5):
        x, y = torch.randn(16, 3, 8, 8, generator=g), torch.randint(0, 5, (16,), generator=g)
        opt_c.zero_grad()
        nn.functional.cross_entropy(net_c(x), y).backward()
        opt_c.step()
    assert max_relative_error(net_c, net_a) == 0.0


def test_state_dict_interchanges_with_official():
    """Same state keys as the official package: its state dict loads into ours and continues equally."""
    official = pytest.importorskip("adamp")
    net_o, net = make_net(dtype=torch.float64), make_net(dtype=torch.float64)
    opt_o = official.AdamP(net_o.parameters(), lr=1e-2, weight_decay=1e-2)
    train_steps(net_o, opt_o, 5)
    net.load_state_dict(net_o.state_dict())
    opt = AdamP(net.parameters(), lr=1e-2, weight_decay=1e-2)
    opt.load_state_dict(copy.deepcopy(opt_o.state_dict()))  # load_state_dict shares tensors otherwise
    assert set(opt.state_dict()["state"][0]) == {"step", "exp_avg", "exp_avg_sq"}
    assert opt.state_dict()["param_groups"][0].keys() == opt_o.state_dict()["param_groups"][0].keys()
    train_steps(net_o, opt_o, 5, seed=7)
    train_steps(net, opt, 5, seed=7)
    assert max_relative_error(net, net_o) < 1e-12


@pytest.mark.parametrize("name", ["adamp", "sgdp"])
def test_deepcopy_keeps_settings_and_steps(name):
    """A deep copy (as EMA or checkpoint helpers make) keeps foreach/fused and steps like the original."""
    net = make_net()
    opt = MAKERS[name](net.parameters(), fused=False)
    train_steps(net, opt, 2)
    twin_net, twin = copy.deepcopy((net, opt))
    assert twin.fused is False and twin.foreach is None
    assert twin.param_groups[0]["params"][0] is next(twin_net.parameters())
    train_steps(net, opt, 2, seed=5)
    train_steps(twin_net, twin, 2, seed=5)
    assert max_relative_error(twin_net, net) == 0.0


@pytest.mark.parametrize("cls", [AdamP, SGDP])
@pytest.mark.parametrize("foreach", [False, None], ids=["reference", "fast"])
def test_closure(cls, foreach):
    """step(closure) evaluates the loss with gradients enabled, returns it and then steps."""
    net = make_net()
    opt = cls(net.parameters(), lr=0.01, foreach=foreach)
    x, y = torch.randn(16, 3, 8, 8), torch.randint(0, 5, (16,))
    before = net.fc.weight.detach().clone()

    def closure():
        opt.zero_grad()
        loss = nn.functional.cross_entropy(net(x), y)
        loss.backward()
        return loss

    with torch.no_grad():
        loss = opt.step(closure)
    assert isinstance(loss, torch.Tensor) and loss.requires_grad
    assert not torch.equal(before, net.fc.weight)


@pytest.mark.parametrize("make,argument", [
    (lambda p: AdamP(p, lr=-1e-3), "lr"),
    (lambda p: AdamP(p, delta=-0.1), "delta"),
    (lambda p: AdamP(p, wd_ratio=-0.1), "wd_ratio"),
    (lambda p: AdamP(p, betas=(1.0, 0.999)), "betas[0]"),
    (lambda p: AdamP(p, betas=(0.9, -0.1)), "betas[1]"),
    (lambda p: AdamP(p, eps=-1.0), "eps"),
    (lambda p: AdamP(p, weight_decay=-1.0), "weight_decay"),
    (lambda p: AdamP(p, foreach="yes"), "foreach"),
    (lambda p: AdamP(p, foreach=False, fused=True), "fused"),
    (lambda p: SGDP(p, lr=-0.1), "lr"),
    (lambda p: SGDP(p, lr=0.1, delta=-1), "delta"),
    (lambda p: SGDP(p, lr=0.1, wd_ratio=-1), "wd_ratio"),
    (lambda p: SGDP(p, lr=0.1, momentum=1.0), "momentum"),
    (lambda p: SGDP(p, lr=0.1, momentum=-0.5), "momentum"),
    (lambda p: AdamP([{"params": p, "lr": -1.0}]), "lr"),
])
def test_bad_arguments_name_the_argument(make, argument):
    """A ValueError (also a cuekit UsageError, printed as one line by the CLI) naming argument and rule."""
    with pytest.raises(ValueError) as info:
        make([nn.Parameter(torch.randn(3, 3))])
    assert isinstance(info.value, UsageError)
    message = str(info.value)
    assert f"invalid {argument}=" in message and ("must" in message)


def test_sgdp_lr_is_required():
    with pytest.raises(TypeError, match="lr"):
        SGDP([nn.Parameter(torch.randn(2, 2))])


@pytest.mark.parametrize("cls", [AdamP, SGDP])
@pytest.mark.parametrize("foreach", [False, None], ids=["reference", "fast"])
def test_sparse_gradients_are_refused(cls, foreach):
    emb = nn.Embedding(10, 4, sparse=True)
    opt = cls(emb.parameters(), lr=0.1, foreach=foreach)
    emb(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(RuntimeError, match="sparse gradients"):
        opt.step()


def test_defaults_are_the_official_ones():
    p = [nn.Parameter(torch.randn(2, 2))]
    assert AdamP(p).defaults == dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, delta=0.1,
                                     wd_ratio=0.1, nesterov=False)
    assert SGDP(p, lr=0.1).defaults == dict(lr=0.1, momentum=0, dampening=0, weight_decay=0, nesterov=False,
                                            eps=1e-8, delta=0.1, wd_ratio=0.1)


def test_factory_builds_both():
    """`cuekit train --opt adamp|sgdp`: registered by name; the factory's momentum 0.9 reaches SGDP,
    and 1-D tensors go to the group without weight decay."""
    assert {"adamp", "sgdp"} <= set(list_optimizers())
    net = make_net()
    opt = create_optimizer("sgdp", net, lr=0.1, weight_decay=1e-4, nesterov=True)
    assert isinstance(opt, SGDP)
    assert opt.param_groups[0]["momentum"] == 0.9 and opt.param_groups[0]["nesterov"] is True
    assert opt.param_groups[0]["weight_decay"] == 1e-4 and opt.param_groups[1]["weight_decay"] == 0.0
    opt = create_optimizer("adamp", net, lr=1e-3, weight_decay=1e-2, betas=(0.8, 0.99), wd_ratio=0.01)
    assert isinstance(opt, AdamP)
    assert opt.param_groups[0]["betas"] == (0.8, 0.99) and opt.param_groups[0]["wd_ratio"] == 0.01
    train_steps(net, opt, 2)


def test_train_engine_runs_adamp(blobs):
    """One short `cuekit.train` run with --opt adamp: the loss stays finite and the model learns."""
    from cuekit.train import TrainConfig, train

    class SmallBN(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn, self.fc = nn.Conv2d(3, 8, 3, bias=False), nn.BatchNorm2d(8), nn.Linear(8, 2)

        def forward(self, x):
            return self.fc(torch.relu(self.bn(self.conv(x))).mean((2, 3)))

    cfg = TrainConfig(model="small", epochs=2, batch_size=32, lr=1e-2, opt="adamp", weight_decay=1e-2,
                      progress=False, device="cpu")
    res = train(cfg, model=SmallBN(), data=blobs)
    assert res.final["val_acc"] > 0.8


class _NoSync:
    """Make every host read of a tensor value raise (item, bool, float, int, tolist, numpy)."""

    NAMES = ("item", "__bool__", "__float__", "__int__", "__index__", "tolist", "numpy")

    def __init__(self, monkeypatch):
        for name in self.NAMES:
            monkeypatch.setattr(torch.Tensor, name, self._fail(name), raising=False)

    @staticmethod
    def _fail(name):
        def fail(self, *args, **kw):
            raise AssertionError(f"host read Tensor.{name} during an optimizer step")
        return fail


@pytest.mark.parametrize("name", list(MAKERS))
def test_fast_path_reads_no_value_on_the_host(name, monkeypatch):
    """The GPU flavour of the fast path, run here on the CPU: after the first step (which builds
    and caches the row layout) a step never reads a tensor value on the host, so on a GPU it needs
    no synchronisation. (The CPU flavour decides in NumPy: there the host is the device.) The
    reference path reads values, as the official code does."""
    import cuekit.optim.projection as projection

    monkeypatch.setattr(projection, "uses_kept_memory", lambda device: False)
    net = make_net()
    opt = MAKERS[name](net.parameters())
    train_steps(net, opt, 1)
    x, y = torch.randn(16, 3, 8, 8), torch.randint(0, 5, (16,))
    nn.functional.cross_entropy(net(x), y).backward()
    with monkeypatch.context() as m:
        _NoSync(m)
        opt.step()
    ref = MAKERS[name](net.parameters(), foreach=False)
    with monkeypatch.context() as m:
        _NoSync(m)
        with pytest.raises(AssertionError, match="host read"):
            ref.step()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", list(MAKERS))
def test_cuda_step_without_synchronisation(name):
    """On CUDA, a step after the first one runs under set_sync_debug_mode("error"), equal to the CPU."""
    net = make_net().cuda()
    opt = MAKERS[name](net.parameters())
    cpu = make_net()
    opt_cpu = MAKERS[name](cpu.parameters())
    g = torch.Generator().manual_seed(1)
    for i in range(3):
        x, y = torch.randn(16, 3, 8, 8, generator=g), torch.randint(0, 5, (16,), generator=g)
        for model, o, dev in ((net, opt, "cuda"), (cpu, opt_cpu, "cpu")):
            o.zero_grad()
            nn.functional.cross_entropy(model(x.to(dev)), y.to(dev)).backward()
            if dev == "cuda" and i > 0:
                torch.cuda.set_sync_debug_mode("error")
                try:
                    o.step()
                finally:
                    torch.cuda.set_sync_debug_mode("default")
            else:
                o.step()
    for a, b in zip(net.parameters(), cpu.parameters()):
        assert ((a.cpu() - b).norm() / b.norm()) < 1e-4
