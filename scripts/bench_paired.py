#!/usr/bin/env python
"""``baseline: init`` vs ``paired``: the spread of λ̂ over repeated seeds, and what the extras cost per step.

For each model, every seed is one whole ``estimate_llc`` (its own chains, data order, noise and init-loss batches),
so the spread over seeds includes the noise of L(w*), which ``llc_std`` (across the chains of one estimate, sharing
one L(w*)) does not. Models: full-rank regression (λ = d/2 = 2), reduced-rank regression (5,3,5) (λ = 6.5), both
with minibatches of 32 of n = 1000 at nβ = n/log n; and the demo's tiny GPT-NeoX (hidden 64, 2 layers, ~166k
parameters) briefly trained here on stdlib text, at the demo's settings (jobs/configs/tiny-lm.yaml).

Step times: ms per SGLD step, init without MALA tracking, init with it (the default), paired with it.

    .venv/bin/python scripts/bench_paired.py --seeds 8 --markdown     # the table in docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def models(quick: bool):
    import torch

    from llc_service import SamplerConfig
    from tests.estimate import known_models as km

    out = []
    for name, built, eps, gamma in (("regression d=4 (λ=2)", km.regular(d=4), 1e-3, 1.0),
                                    ("reduced-rank (5,3,5) (λ=6.5)", km.reduced_rank(5, 3, 5), 3e-4, 10.0)):
        model, data, loss_fn, lam, nbeta = built
        cfg = SamplerConfig(epsilon=eps, nbeta=nbeta, gamma=gamma, num_chains=4, num_draws=300 if quick else 1000,
                            num_burnin=200, batch_size=32, progress=False, chain_batching="off")
        out.append((name, model, data, loss_fn, cfg, lam))
    from llc_service.demo import assets

    tok = assets.train_tokenizer(max_bytes=500_000)
    blocks = assets.token_blocks(tok, seq_len=64, max_blocks=256)
    model = assets.tiny_model(vocab_size=len(tok))
    assets.train_steps(model, blocks, steps=50 if quick else 200)
    data = torch.utils.data.TensorDataset(blocks)
    cfg = SamplerConfig(epsilon=3e-4, nbeta=30.0, gamma=100.0, num_chains=4, num_draws=50 if quick else 150,
                        num_burnin=50, batch_size=16, progress=False, chain_batching="off")
    out.append(("demo tiny GPT-NeoX (166k)", model, data, None, cfg, None))
    return out


def run(seeds: int, quick: bool) -> list[dict]:
    import numpy as np

    from llc_service import estimate_llc

    rows = []
    for name, model, data, loss_fn, cfg, lam in models(quick):
        kinds = (("init, no MALA", dict(baseline="init", mala_acceptance=False)), ("init", dict(baseline="init")),
                 ("paired", dict(baseline="paired")))
        got = {k: dict(vals=[], stds=[], secs=[], acc=[]) for k, _ in kinds}
        estimate_llc(model, data, dataclasses.replace(cfg, num_draws=20, num_burnin=0), loss_fn=loss_fn)  # warm-up
        for s in range(seeds):  # round robin: load from elsewhere on the machine hits every kind alike
            for kind, change in kinds:
                c = dataclasses.replace(cfg, seed=s, **change)
                t0 = time.perf_counter()
                r = estimate_llc(model, data, c, loss_fn=loss_fn)
                g = got[kind]
                g["secs"].append((time.perf_counter() - t0) / (c.num_chains * (c.num_burnin + c.num_draws)))
                g["vals"].append(r.llc_mean), g["stds"].append(r.llc_std), g["acc"].append(r.mala_acceptance)
        per = {}
        for kind, g in got.items():
            vals, acc = g["vals"], g["acc"]
            per[kind] = dict(mean=float(np.mean(vals)), spread=float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0,
                             chain_std=float(np.mean(g["stds"])), ms=1e3 * float(np.median(g["secs"])),
                             acc=float(np.nanmean(acc)) if not all(map(math.isnan, acc)) else math.nan)
        for kind, v in per.items():
            rows.append(dict(model=name, truth=lam, kind=kind, seeds=seeds, **v))
            print(rows[-1], flush=True)
    return rows


def markdown(rows: list[dict]) -> str:
    lines = ["| model | λ | estimator | seeds | mean λ̂ | spread over seeds (std) | mean llc_std | MALA acc. | "
             "ms/step |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        truth = "-" if r["truth"] is None else f"{r['truth']:g}"
        lines.append(f"| {r['model']} | {truth} | {r['kind']} | {r['seeds']} | {r['mean']:.3g} | {r['spread']:.3g} | "
                     f"{r['chain_std']:.3g} | {r['acc']:.2f} | {r['ms']:.2f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=8)
    p.add_argument("--quick", action="store_true", help="short chains (a smoke run, not the documented numbers)")
    p.add_argument("--markdown", action="store_true")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    rows = run(args.seeds, args.quick)
    if args.markdown:
        print(markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
