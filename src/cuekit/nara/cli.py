"""`cuekit nara train|sample|bench`: confidence-guided approximation of AR sampling (Yoo et al., arXiv 1910.06705)."""
from __future__ import annotations

import argparse

from cuekit.io import save_figure


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `nara` command group (parsers only; torch is imported when a command runs)."""
    p = sub.add_parser(
        "nara", help="accelerate autoregressive sampling: prior proposals checked by one parallel pass",
        description="NARA: a prior predictor proposes the next K tokens at once, one parallel teacher-forced pass "
        "of the mother AR model scores them, and a prefix is kept: where the confidence predictor's score is "
        ">= tau (approximate mode), where the proposal equals the mother's sample under pre-drawn noise (exact "
        "mode, identical to sequential sampling), or by the speculative rule (keeps the distribution). "
        "Domains: text (a causal transformer with a KV cache on the Python standard library's sources) and "
        "image (a PixelCNN on binary shapes).")
    g = p.add_subparsers(dest="nara_command", metavar="SUBCOMMAND")

    def common(sp: argparse.ArgumentParser, ckpt: bool = True) -> None:
        sp.add_argument("--domain", default="text", choices=["text", "image"],
                        help="domain trained on the fly when no --ckpt is given")
        sp.add_argument("--prior", default=None, choices=["hidden-chain", "hidden", "window"],
                        help="prior predictor to train (default: the fastest measured for the domain: hidden-chain "
                        "for text, window for image). hidden: Medusa-style heads on the mother's last hidden state, "
                        "independent given the past (the paper's i.i.d. prior); hidden-chain: the same heads plus a "
                        "table on the previously proposed token (proposals depend on each other); window: an MLP on "
                        "the last tokens")
        if ckpt:
            sp.add_argument("--ckpt", default=None,
                            help="folder written by `cuekit nara train` (default: train a quick domain first)")
        sp.add_argument("--seed", type=int, default=0)
        sp.add_argument("--no-progress", action="store_true", help="hide progress bars")

    tr = g.add_parser("train", help="train a mother model with its prior and confidence predictors",
                      description="Train the domain's mother AR model, then the prior predictor (K future tokens "
                      "at once, see --prior) and the confidence predictor (does the mother's own sample equal the "
                      "proposal?), and write OUT/{mother,prior,confidence}.safetensors, OUT/domain.json (which "
                      "records the prior) and OUT/results.json.",
                      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    common(tr, ckpt=False)
    tr.add_argument("--out", default="runs/nara", help="folder to write")
    tr.add_argument("--full", action="store_true", help="larger models and longer training (default: quick scale)")
    tr.add_argument("--mother-steps", type=int, default=None, help="override the mother's training steps")
    tr.add_argument("--prior-steps", type=int, default=None, help="override the prior's training steps")
    tr.set_defaults(func=_train)

    sa = g.add_parser("sample", help="draw samples with NARA and report mother calls and time",
                      description="Draw --num samples with the chosen mode and, for comparison, sequential sampling "
                      "under the same noise; print mother calls, time and NLL, the text samples (text domain) or "
                      "write samples.png (image domain) into --out.",
                      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    common(sa)
    sa.add_argument("--mode", default="approx", choices=["approx", "exact", "speculative"])
    sa.add_argument("--tau", type=float, default=0.9, help="confidence threshold of the approximate mode")
    sa.add_argument("--num", type=int, default=4, help="samples to draw")
    sa.add_argument("--length", type=int, default=None, help="tokens per sample (default: the domain's)")
    sa.add_argument("--horizon", type=int, default=None, help="K tokens per round (default: the domain's)")
    sa.add_argument("--out", default="runs/nara-sample", help="folder for results.json and samples.png")
    sa.set_defaults(func=_sample)

    be = g.add_parser("bench", help="speed-up against sequential sampling over a sweep of tau",
                      description="Sequential sampling, exact NARA, the confidence-gated mode at each --taus and the "
                      "speculative rule on the same noise: mother calls, wall-clock time (median of interleaved "
                      "repeats), speed-up, NLL under the mother and bigram distance to sequential samples. Writes "
                      "results.json and speed_quality.png into --out.",
                      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    common(be)
    be.add_argument("--taus", default="0.9,0.7,0.5,0.3", help="comma-separated confidence thresholds")
    be.add_argument("--samples", type=int, default=6, help="sequences per method")
    be.add_argument("--repeats", type=int, default=3, help="interleaved timing repeats")
    be.add_argument("--horizon", type=int, default=None, help="K tokens per round (default: the domain's)")
    be.add_argument("--out", default="runs/nara-bench", help="folder for results.json and speed_quality.png")
    be.set_defaults(func=_bench)

    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _domain(args):
    from cuekit.nara.domains import build_domain, load_domain
    if getattr(args, "ckpt", None):
        return load_domain(args.ckpt)
    return build_domain(args.domain, quick=True, seed=args.seed, progress=not args.no_progress, prior=args.prior)


def _train(args) -> int:
    from cuekit.io import write_results
    from cuekit.nara.domains import DEFAULT_PRIOR, build_domain, save_domain

    kind = args.prior or DEFAULT_PRIOR[args.domain]
    steps_key = "prior_steps" if kind == "window" else "hidden_prior_steps"
    over = {k: v for k, v in (("mother_steps", args.mother_steps), (steps_key, args.prior_steps)) if v is not None}
    domain = build_domain(args.domain, quick=not args.full, seed=args.seed, progress=not args.no_progress,
                          prior=args.prior, **over)
    save_domain(domain, args.out)
    h = domain.history
    rows = [["prior", domain.prior_kind],
            ["mother loss (first)", round(h["mother_loss_first"], 4)],
            ["mother loss (last 10)", round(h["mother_loss_last"], 4)],
            ["mother held-out NLL", round(h["mother_heldout_nll"], 4)],
            [f"{h['baseline']} baseline held-out NLL", round(h["baseline_heldout_nll"], 4)],
            ["prior loss (last 10)", round(h["prior_loss_last"], 4)],
            ["confidence val acc", round(h["confidence"].get("val_acc", float("nan")), 4)]]
    print(write_results(args.out, {"command": "nara train", "domain": domain.name, "prior": domain.prior_kind,
                                   "settings": domain.settings, "history": h}, ["quantity", "value"], rows))
    print(f"wrote {args.out}")
    return 0


def _sample(args) -> int:
    import time
    from pathlib import Path

    import torch

    from cuekit.errors import UsageError
    from cuekit.io import write_results
    from cuekit.nara.data import decode_text
    from cuekit.nara.sampler import gumbel_noise, nara_sample, sample_sequential
    from cuekit.nara.training import mean_nll

    if args.num < 1:
        raise UsageError(f"--num must be >= 1, got {args.num}")
    if args.mode == "approx" and not 0 <= args.tau:
        raise UsageError(f"--tau must be >= 0, got {args.tau}")
    d = _domain(args)
    length, horizon = args.length or d.length, args.horizon or d.horizon
    if horizon > d.prior.horizon:
        raise UsageError(f"--horizon {horizon} exceeds the prior's horizon {d.prior.horizon}")
    g = torch.Generator().manual_seed(args.seed)
    nara_toks, seq_toks, calls, t_nara, t_seq = [], [], 0, 0.0, 0.0
    for _ in range(args.num):
        noise = gumbel_noise(length, d.mother.vocab_size, g)
        t0 = time.perf_counter()
        r = nara_sample(d.mother, d.prior, length, horizon, args.mode, noise=noise, tau=args.tau,
                        confidence=d.confidence, generator=g)
        t1 = time.perf_counter()
        s = sample_sequential(d.mother, length, noise)
        t_nara, t_seq = t_nara + t1 - t0, t_seq + time.perf_counter() - t1
        calls += r.calls
        nara_toks.append(r.tokens)
        seq_toks.append(s.tokens)
    nt, st = torch.stack(nara_toks), torch.stack(seq_toks)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = [["nara " + args.mode, calls / args.num, round(t_nara, 3), round(mean_nll(d.mother, nt), 4)],
            ["sequential", float(length), round(t_seq, 3), round(mean_nll(d.mother, st), 4)]]
    res = {"command": "nara sample", "domain": d.name, "prior": d.prior_kind, "mode": args.mode, "tau": args.tau,
           "length": length, "horizon": horizon, "samples": nt.tolist()}
    if d.name == "text":
        for i, row in enumerate(nt):
            print(f"--- sample {i} ---\n{decode_text(row)}")
        res["text"] = [decode_text(row) for row in nt]
    else:
        _save_grid(torch.cat([nt, st]), d.mother.size, out / "samples.png",
                   f"top: NARA {args.mode} (tau {args.tau}); bottom: sequential, same noise", args.num)
        print(f"wrote {out / 'samples.png'}")
    print(write_results(out, res, ["method", "mother calls / sample", "time s", "NLL / token"], rows))
    return 0


def _save_grid(tokens, size: int, path, title: str, per_row: int) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = tokens.shape[0]
    rows = (n + per_row - 1) // per_row
    fig, axes = plt.subplots(rows, per_row, figsize=(1.2 * per_row, 1.2 * rows + 0.4), squeeze=False)
    for i, ax in enumerate(axes.flat):
        if i < n:
            ax.imshow(tokens[i].view(size, size).numpy(), cmap="gray", vmin=0, vmax=1)
        ax.axis("off")
    fig.suptitle(title, fontsize=7)
    save_figure(fig, path, dpi=100)


def _bench(args) -> int:
    from pathlib import Path

    from cuekit.errors import UsageError
    from cuekit.io import write_results
    from cuekit.nara.evaluate import TABLE_COLUMNS, plot_speed_quality, sweep, table_rows
    try:
        taus = [float(t) for t in args.taus.split(",") if t.strip()]
    except ValueError:
        raise UsageError(f"--taus must be comma-separated numbers, got {args.taus!r}") from None
    d = _domain(args)
    res = sweep(d, taus, n_samples=args.samples, repeats=args.repeats, seed=args.seed, horizon=args.horizon,
                mother_probability=True, progress=not args.no_progress)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    plot_speed_quality({d.name: res}, out / "speed_quality.png")
    print(f"domain {d.name}, prior {d.prior_kind}, horizon {res['horizon']}")
    print(write_results(out, {"command": "nara bench", "domain": d.name, "prior": d.prior_kind, **res}, TABLE_COLUMNS,
                        table_rows(res["rows"])))
    print(f"bigram TV between two independent sequential sets (noise floor): {res['noise_floor_tv']:.3f}")
    return 0
