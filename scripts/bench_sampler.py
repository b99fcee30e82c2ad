#!/usr/bin/env python
"""Benchmark the SGLD sampler against the bare training step, the floor, and ``devinterp``.

For each model it prints:

- time per SGLD step of ours (``Workspace.run_chain`` over K steps, after a warm-up chain; median of repeats);
- the bare step of the same model and batch: forward + backward + ``torch.optim.SGD(foreach=True)``, batches
  drawn exactly as ours draws them (``BatchStream``);
- the floor: the bare step plus one Gaussian draw per parameter (``torch.randn(P, out=buf)``, measured);
- devinterp 1.x's time per step on the same work (same ε, γ, nβ, model, batch size, ``cores=1``): one chain of
  K draws through ``estimate_learning_coeff_with_summary`` with the init loss given (so no init-loss forwards);
- peak memory of each, each in a fresh subprocess (CPU: peak RSS while building the sampler and running K steps,
  after ``/proc/self/clear_refs`` reset the high-water mark once the model and data were loaded; CUDA:
  ``torch.cuda.max_memory_allocated``);
- a whole LLC (chains × draws, init loss included) for ours and for devinterp, with the estimates.

Timings of the step kinds are interleaved (round robin over repeats) in one process per model, so a burst of
load from elsewhere on the machine hits every kind alike; medians are reported.

    .venv/bin/python scripts/bench_sampler.py --markdown
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

MODELS = ("mlp", "neox-small", "neox-mid")
# per-model defaults: steps per timed block, SGLD settings, batch size, whole-LLC draws
DEFAULTS = {
    "mlp": dict(steps=500, epsilon=1e-4, nbeta=20.0, gamma=100.0, batch_size=32, llc_draws=500),
    "neox-small": dict(steps=100, epsilon=1e-4, nbeta=20.0, gamma=100.0, batch_size=8, llc_draws=500),
    "neox-mid": dict(steps=10, epsilon=1e-5, nbeta=20.0, gamma=100.0, batch_size=8, llc_draws=50),
}


# ---------------------------------------------------------------------------------------------------------------
# models and data (built once in the parent, saved, loaded by every worker)


def mse(model, batch):
    return ((model(batch[0]) - batch[1]) ** 2).mean()


def build_asset(name: str, path: Path) -> None:
    import torch
    from torch.utils.data import TensorDataset

    from llc_service.demo import assets

    if name == "mlp":
        g = torch.Generator().manual_seed(0)
        x = torch.randn(2048, 8, generator=g)
        y = torch.sin(x.sum(1, keepdim=True)) + 0.1 * torch.randn(2048, 1, generator=g)
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.Tanh(), torch.nn.Linear(32, 32), torch.nn.Tanh(),
                                    torch.nn.Linear(32, 1))
        opt = torch.optim.Adam(model.parameters(), 1e-2)
        for _ in range(300):
            opt.zero_grad()
            mse(model, (x, y)).backward()
            opt.step()
        model.eval()
        data = TensorDataset(x, y)
    else:
        vocab, hidden, layers, train = (512, 64, 2, 50) if name == "neox-small" else (4096, 256, 4, 20)
        tok = assets.train_tokenizer(vocab_size=vocab, max_bytes=2_000_000)
        blocks = assets.token_blocks(tok, seq_len=64, max_blocks=512, max_bytes=2_000_000)
        model = assets.tiny_model("gpt_neox", vocab_size=vocab, hidden=hidden, layers=layers, heads=4)
        assets.train_steps(model, blocks, train, batch_size=8)
        data = TensorDataset(blocks)
    torch.save({"model": model, "data": data}, path)


def loss_fn_for(name: str):
    from llc_service.estimate import batches

    return mse if name == "mlp" else batches.causal_lm_loss


# ---------------------------------------------------------------------------------------------------------------
# what one step of each kind is (each runner does K steps and waits for the device)


def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_runner(kind: str, model, data, name: str, hp: dict, steps: int, device, chains: int = 1):
    """Return ``run()`` doing ``steps`` steps of ``kind`` (per chain; ``chains`` > 1 only for vmap)."""
    import torch

    from llc_service import SamplerConfig
    from llc_service.estimate import batches, seeding

    loss_fn = loss_fn_for(name)
    common = dict(epsilon=hp["epsilon"], nbeta=hp["nbeta"], gamma=hp["gamma"], batch_size=hp["batch_size"],
                  device=str(device), progress=False, seed=0)
    if kind == "ours":
        from llc_service.estimate.chains import Workspace

        ws = Workspace(model, data, SamplerConfig(num_chains=1, num_draws=steps, chain_batching="off", **common),
                       loss_fn)
        counter = itertools.count()

        def run():
            ws.run_chain(next(counter))
            sync(device)

        return run
    if kind == "ours-vmap":
        from llc_service.estimate import batched
        from llc_service.estimate.chains import Workspace

        cfg = SamplerConfig(num_chains=chains, num_draws=steps, chain_batching="vmap", **common)
        ws = Workspace(model, data, cfg, loss_fn)
        runner = batched.BatchedChains(ws)
        counter = itertools.count()

        def run():
            first = next(counter) * chains
            runner.run(list(range(first, first + chains)))
            sync(device)

        return run
    if kind in ("bare", "floor"):
        m = copy.deepcopy(model).to(device=device, dtype=torch.float32)
        m.eval()
        opt = torch.optim.SGD(m.parameters(), lr=1e-6, foreach=True)
        stream = batches.BatchStream(batches.materialize(data), len(data), hp["batch_size"],
                                     seeding.generator(0, 0, seeding.DATA), device)
        numel = sum(p.numel() for p in m.parameters())
        gen = seeding.generator(0, 0, seeding.NOISE, device)
        buf = torch.empty(numel, device=device)
        draw = kind == "floor"

        def run():
            for _ in range(steps):
                opt.zero_grad()
                loss = loss_fn(m, next(stream))
                loss.backward()
                opt.step()
                if draw:
                    torch.randn(numel, generator=gen, device=device, out=buf)
            sync(device)

        return run
    if kind == "devinterp":
        from devinterp.optim.sgld import SGLD
        from devinterp.slt.sampler import estimate_learning_coeff_with_summary
        from torch.utils.data import DataLoader

        m = copy.deepcopy(model)
        loader = DataLoader(data, batch_size=hp["batch_size"], shuffle=True, drop_last=True)
        counter = itertools.count()

        def run():
            estimate_learning_coeff_with_summary(
                m, loader, evaluate=loss_fn, sampling_method=SGLD,
                optimizer_kwargs=dict(lr=hp["epsilon"], localization=hp["gamma"], nbeta=hp["nbeta"]),
                num_draws=steps, num_chains=1, init_loss=1.0, cores=1, seed=next(counter), device=device,
                verbose=False)
            sync(device)

        return run
    raise ValueError(kind)


def whole_llc(kind: str, model, data, name: str, hp: dict, chains: int, draws: int, device) -> dict:
    """One full measurement, init loss included; returns wall seconds and the estimate."""
    from llc_service import SamplerConfig, estimate_llc

    loss_fn = loss_fn_for(name)
    t0 = time.perf_counter()
    if kind.startswith("ours"):
        cfg = SamplerConfig(epsilon=hp["epsilon"], nbeta=hp["nbeta"], gamma=hp["gamma"], batch_size=hp["batch_size"],
                            num_chains=chains, num_draws=draws, device=str(device), progress=False, seed=0,
                            chain_batching="vmap" if kind == "ours-vmap" else "off")
        res = estimate_llc(model, data, cfg, loss_fn=loss_fn)
        sync(device)
        mean, std = res.llc_mean, res.llc_std
    else:
        from devinterp.optim.sgld import SGLD
        from devinterp.slt.sampler import estimate_learning_coeff_with_summary
        from torch.utils.data import DataLoader

        loader = DataLoader(data, batch_size=hp["batch_size"], shuffle=True, drop_last=True)
        out = estimate_learning_coeff_with_summary(
            copy.deepcopy(model), loader, evaluate=loss_fn, sampling_method=SGLD,
            optimizer_kwargs=dict(lr=hp["epsilon"], localization=hp["gamma"], nbeta=hp["nbeta"]),
            num_draws=draws, num_chains=chains, cores=1, seed=0, device=device, verbose=False)
        sync(device)
        mean, std = out["llc/mean"], out["llc/std"]
    return {"seconds": time.perf_counter() - t0, "llc_mean": float(mean), "llc_std": float(std)}


# ---------------------------------------------------------------------------------------------------------------
# workers (fresh subprocesses)


def _status(field: str) -> float:
    """A /proc/self/status field in MB (VmRSS: now, VmHWM: peak since the last reset)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def worker(spec: dict) -> dict:
    import torch

    warnings.filterwarnings("ignore")
    torch.set_num_threads(spec["threads"])
    device = torch.device(spec["device"])
    blob = torch.load(spec["asset"], weights_only=False)
    model, data, name, hp = blob["model"], blob["data"], spec["model"], spec["hp"]
    out: dict = {}
    if spec["mode"] == "mem":
        kind, steps = spec["kind"], spec["steps"]
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        else:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # reset the peak-RSS high-water mark to the current RSS
        base = _status("VmRSS")
        make_runner(kind, model, data, name, hp, steps, device, spec.get("chains", 1))()
        if device.type == "cuda":
            out = {"peak_mb": torch.cuda.max_memory_allocated(device) / 2**20, "base_mb": 0.0}
        else:
            out = {"peak_mb": _status("VmHWM"), "base_mb": base}
        return out
    steps, repeats = spec["steps"], spec["repeats"]
    runners = {k: make_runner(k, model, data, name, hp, steps, device, spec.get("chains", 1)) for k in spec["kinds"]}
    for run in runners.values():  # warm-up
        run()
    times: dict[str, list[float]] = {k: [] for k in runners}
    for _ in range(repeats):
        for k, run in runners.items():
            t0 = time.perf_counter()
            run()
            times[k].append(time.perf_counter() - t0)
    for k, ts in times.items():
        per_chain = spec.get("chains", 1) if k == "ours-vmap" else 1
        out[k] = {"median_step_s": statistics.median(ts) / (steps * per_chain),
                  "min_step_s": min(ts) / (steps * per_chain)}
    out["params"] = sum(p.numel() for p in model.parameters())
    for k in spec.get("llc_kinds", []):
        out["llc_" + k] = whole_llc(k, model, data, name, hp, spec["llc_chains"], spec["llc_draws"], device)
    return out


def call_worker(spec: dict) -> dict:
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1")
    proc = subprocess.run([sys.executable, __file__, "--_worker", json.dumps(spec)], capture_output=True, text=True,
                          env=env, cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"worker {spec.get('mode')} {spec.get('model')} {spec.get('kind', '')} failed:\n"
                           f"{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------------------------
# table


def fmt_ms(s: float | None) -> str:
    if s is None:
        return "–"
    ms = s * 1e3
    return f"{ms:.3f}" if ms < 1 else f"{ms:.2f}" if ms < 100 else f"{ms:.0f}"


def render(rows: list[dict], args, markdown: bool) -> str:
    step_head = ["model", "params", "ours ms/step", "bare ms/step", "floor ms/step", "ours/bare", "ours/floor"]
    if any("ours-vmap" in r for r in rows):
        step_head += ["vmap ms/chain-step", "vmap/floor"]
    if not args.no_devinterp:
        step_head += ["devinterp ms/step", "devinterp/floor"]
    mem_head = ["model", "ours peak MB (+Δ)", "bare peak MB (+Δ)"] + ([] if args.no_devinterp else
                                                                      ["devinterp peak MB (+Δ)"])
    llc_head = ["model", "chains×draws", "ours s", "ours λ̂"]
    if any("llc_ours-vmap" in r for r in rows):
        llc_head += ["vmap s", "vmap λ̂"]
    if not args.no_devinterp:
        llc_head += ["devinterp s", "devinterp λ̂", "devinterp/ours"]

    def ratio(a, b):
        return f"{a / b:.2f}×" if a is not None and b else "–"

    steps, mems, llcs = [], [], []
    for r in rows:
        t = {k: r[k]["median_step_s"] for k in ("ours", "bare", "floor", "ours-vmap", "devinterp") if k in r}
        line = [r["model"], f"{r['params']:,}", fmt_ms(t["ours"]), fmt_ms(t["bare"]), fmt_ms(t["floor"]),
                ratio(t["ours"], t["bare"]), ratio(t["ours"], t["floor"])]
        if "vmap ms/chain-step" in step_head:
            line += [fmt_ms(t.get("ours-vmap")), ratio(t.get("ours-vmap"), t["floor"])]
        if not args.no_devinterp:
            line += [fmt_ms(t.get("devinterp")), ratio(t.get("devinterp"), t["floor"])]
        steps.append(line)
        mem = r.get("mem", {})

        def m(k):
            if k not in mem:
                return "–"
            return f"{mem[k]['peak_mb']:.0f} (+{mem[k]['peak_mb'] - mem[k]['base_mb']:.0f})"

        mems.append([r["model"], m("ours"), m("bare")] + ([] if args.no_devinterp else [m("devinterp")]))
        if "llc_ours" in r:
            lo = r["llc_ours"]
            line = [r["model"], f"{r['llc_chains']}×{r['llc_draws']}", f"{lo['seconds']:.2f}",
                    f"{lo['llc_mean']:.3g} ± {lo['llc_std']:.2g}"]
            if "vmap s" in llc_head:
                lv = r.get("llc_ours-vmap")
                line += [f"{lv['seconds']:.2f}", f"{lv['llc_mean']:.3g} ± {lv['llc_std']:.2g}"] if lv else ["–", "–"]
            if not args.no_devinterp:
                ld = r.get("llc_devinterp")
                line += ([f"{ld['seconds']:.2f}", f"{ld['llc_mean']:.3g} ± {ld['llc_std']:.2g}",
                          f"{ld['seconds'] / lo['seconds']:.2f}×"] if ld else ["–", "–", "–"])
            llcs.append(line)

    def table(head, body):
        if markdown:
            out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
            out += ["| " + " | ".join(row) + " |" for row in body]
            return "\n".join(out)
        widths = [max(len(h), *(len(row[i]) for row in body)) for i, h in enumerate(head)]
        out = ["  ".join(h.rjust(w) for h, w in zip(head, widths))]
        out += ["  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in body]
        return "\n".join(out)

    parts = ["Time per SGLD step (median of repeats):", table(step_head, steps), "",
             "Peak memory (fresh process each; CPU: peak RSS, +Δ above the RSS with model and data loaded; "
             "CUDA: max_memory_allocated):", table(mem_head, mems)]
    if llcs:
        parts += ["", "Whole LLC (init loss included):", table(llc_head, llcs)]
    return "\n".join(parts)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default=",".join(MODELS), help=f"comma-separated subset of {MODELS}")
    p.add_argument("--steps", type=int, default=None, help="steps per timed block (default per model: "
                   + ", ".join(f"{k} {v['steps']}" for k, v in DEFAULTS.items()) + ")")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads in every worker")
    p.add_argument("--no-devinterp", action="store_true")
    p.add_argument("--no-memory", action="store_true")
    p.add_argument("--vmap-chains", type=int, default=0,
                   help="also time chain_batching=vmap with this many chains per batch (MLP only; 0 = off)")
    p.add_argument("--llc-chains", type=int, default=4)
    p.add_argument("--llc-draws", type=int, default=None, help="draws per chain of the whole LLC for the MLP and "
                   "the small model (default 500)")
    p.add_argument("--llc-draws-mid", type=int, default=None, help="draws per chain for the mid model (default 50)")
    p.add_argument("--no-llc", action="store_true")
    p.add_argument("--markdown", action="store_true")
    p.add_argument("--_worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args._worker:
        print(json.dumps(worker(json.loads(args._worker))))
        return 0

    models = [m.strip() for m in args.models.split(",") if m.strip()]
    for m in models:
        if m not in MODELS:
            p.error(f"unknown model {m!r}; choose from {MODELS}")
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            p.error("--device cuda but CUDA is not available")
    rows = []
    with tempfile.TemporaryDirectory(prefix="llc-bench-") as tmp:
        for name in models:
            hp = DEFAULTS[name]
            asset = Path(tmp) / f"{name}.pt"
            print(f"[{name}] building model and data", file=sys.stderr, flush=True)
            build_asset(name, asset)
            steps = args.steps or hp["steps"]
            kinds = ["ours", "bare", "floor"]
            vmap = args.vmap_chains if name == "mlp" else 0
            if vmap:
                kinds.append("ours-vmap")
            if not args.no_devinterp:
                kinds.append("devinterp")
            draws = (args.llc_draws_mid or hp["llc_draws"]) if name == "neox-mid" else (args.llc_draws or
                                                                                         hp["llc_draws"])
            llc_kinds = [] if args.no_llc else ["ours"] + (["ours-vmap"] if vmap else []) + (
                [] if args.no_devinterp else ["devinterp"])
            spec = dict(mode="time", asset=str(asset), model=name, hp=hp, device=args.device, threads=args.threads,
                        steps=steps, repeats=args.repeats, kinds=kinds, chains=max(vmap, 1), llc_kinds=llc_kinds,
                        llc_chains=args.llc_chains, llc_draws=draws)
            print(f"[{name}] timing {kinds} ({steps} steps × {args.repeats} repeats)"
                  + (f", whole LLC {args.llc_chains}×{draws}" if llc_kinds else ""), file=sys.stderr, flush=True)
            row = call_worker(spec)
            row.update(model=name, llc_chains=args.llc_chains, llc_draws=draws)
            if not args.no_memory:
                row["mem"] = {}
                for kind in [k for k in kinds if k not in ("floor",)]:
                    print(f"[{name}] memory {kind}", file=sys.stderr, flush=True)
                    row["mem"][kind] = call_worker(dict(spec, mode="mem", kind=kind, steps=min(steps, 20)))
            rows.append(row)
    print(render(rows, args, args.markdown))
    return 0


if __name__ == "__main__":
    sys.exit(main())
