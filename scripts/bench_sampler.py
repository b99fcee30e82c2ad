#!/usr/bin/env python
"""Benchmark our SGLD sampler against the bare training step, the floor, and the reference library ``devinterp``.

For each model (an MLP of ~1.4k parameters, a ~0.2M and a ~5M GPT-NeoX, all built and briefly trained here, nothing
downloaded) it measures:

- ours: time per SGLD step of ``Workspace.run_chain`` (the loop ``estimate_llc`` runs, ``chain_batching="off"``);
- vmap (MLP only): time per chain-step of ``chain_batching="vmap"`` (``BatchedChains``) with --vmap-chains chains;
- bare: ``zero_grad`` + forward + backward + ``torch.optim.SGD(foreach=True)`` step of the same model on the same
  batches (drawn by the same ``BatchStream``): what one plain training step costs;
- floor: forward + backward (into gradient buffers allocated once) + one Gaussian draw per parameter
  (``torch.randn(P, out=buf)``) and no update at all: less than any SGLD step can cost, since SGLD needs the
  gradient, P fresh normal numbers and an update of every weight;
- devinterp: time per step of devinterp 2.x's SGLD loop (``devinterp.slt.sampler.sample_single_chain`` with
  ``SGMCMC.sgld``, its DataLoader and its per-token loss) on the same model, data, ε, nβ, γ and batch size, without
  the zarr writes that ``devinterp.slt.sampling.sample`` adds (those are in the whole-LLC time);
- ms/chain: what starting and ending a chain costs beyond its steps (ours and devinterp);
- peak memory of ours, bare and devinterp, each in a fresh subprocess (CPU: peak RSS above the RSS once model and
  data are loaded and the code path was primed on a 1-parameter model; CUDA: ``torch.cuda.max_memory_allocated``);
- a whole LLC estimate (init loss included) by ours (sequential chains), ours with ``chain_batching="vmap"`` (MLP)
  and ``devinterp.slt.llc.llc``, with λ̂, L(w*) and the mean draw loss side by side.

A step's time is taken inside a running chain, between a mark after its first and after its last step (ours: after
the sampler update; devinterp: its ``step_callback``; CUDA: timing events, no extra sync), so chain start-up is not
in it. Kinds are timed round robin (one chain of each kind per round), whole LLCs likewise, so load from elsewhere on
the machine hits every kind alike; step times are medians over rounds, ratios medians of the per-round ratios.

    .venv/bin/python scripts/bench_sampler.py --markdown          # CPU, the numbers in docs/benchmarks.md
    .venv/bin/python scripts/bench_sampler.py --device cuda --markdown
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import math
import os
import shutil
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
# per model: steps per timed chain and timed rounds, SGLD settings, batch size, whole-LLC draws per chain and repeats
# (sized so that the defaults finish in about six minutes on 2 CPU cores)
DEFAULTS = {
    "mlp": dict(steps=400, repeats=9, epsilon=1e-4, nbeta=20.0, gamma=100.0, batch_size=32,
                llc_draws=300, llc_repeats=3),
    "neox-small": dict(steps=30, repeats=5, epsilon=1e-4, nbeta=20.0, gamma=100.0, batch_size=8,
                       llc_draws=50, llc_repeats=3),
    "neox-mid": dict(steps=5, repeats=5, epsilon=1e-5, nbeta=20.0, gamma=100.0, batch_size=8,
                     llc_draws=10, llc_repeats=2),
}
# L(w*): devinterp 2.x averages num_init_loss_batches batches *per chain* (its default 32); we average
# init_loss_batches batches once. Both get the same number of init-loss forwards: this many per chain.
INIT_LOSS_BATCHES_PER_CHAIN = 8
STEP_KINDS = ("ours", "ours-nomala", "ours-vmap", "bare", "floor", "devinterp")
PER_CHAIN_KINDS = ("ours", "devinterp")  # chains with a fixed cost of their own (reported as ms/chain)
RATIOS = (("ours", "bare"), ("ours", "floor"), ("ours", "ours-nomala"), ("ours-vmap", "floor"), ("ours-vmap", "ours"),
          ("devinterp", "ours"))


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


# --- devinterp 2.x adapters: it samples HF-style rows ({"input_ids": ...}) with a per-token loss (batch, seq-1) ---


class _Rows:
    """A map-style dataset of ``{"input_ids": row}``, the row format devinterp 2.x reads (``dataset[i]["input_ids"]``).
    For the MLP a row is ``concat(x, y)`` (9 floats): devinterp only indexes, collates and moves it."""

    def __init__(self, tensor):
        self.tensor = tensor

    def __len__(self):
        return len(self.tensor)

    def __getitem__(self, i):
        return {"input_ids": self.tensor[i]}


def devinterp_rows(name: str, data):
    import torch

    if name == "mlp":
        x, y = data.tensors
        return _Rows(torch.cat([x, y], dim=1))
    return _Rows(data.tensors[0])


def _mlp_per_token_mse(model, rows):
    """devinterp's ``loss_fn(model, input_ids) -> (batch, seq-1)`` for the MLP: the squared error of each row,
    repeated over the seq-1 "positions" so that devinterp's mean over them is our ``mse`` (value and gradient)."""
    err = (model(rows[:, :-1]) - rows[:, -1:]) ** 2
    return err.expand(-1, rows.shape[1] - 1)


def devinterp_loss_fn(name: str):
    return _mlp_per_token_mse if name == "mlp" else None  # None: devinterp's own per-token cross-entropy


def devinterp_version() -> str | None:
    """The installed devinterp version, or None if it does not import."""
    try:
        import devinterp  # noqa: F401  (only whether it imports)
    except Exception:  # noqa: BLE001 - any import failure means "not usable"
        return None
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("devinterp")
    except PackageNotFoundError:
        return "unknown"


# ---------------------------------------------------------------------------------------------------------------
# what one timed block of each kind is (each runner does K steps and waits for the device)


def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


class StepClock:
    """Marks taken once per step inside a running chain (CPU: ``perf_counter``; CUDA: timing events, recorded
    asynchronously, so no extra sync). ``(last − first) / (marks − 1)`` is the marginal cost of a step, free of the
    fixed cost of starting and ending a chain and of the clock's own resolution."""

    def __init__(self, device):
        self.cuda = device.type == "cuda"
        self.marks: list = []

    def reset(self) -> None:
        self.marks = []

    def mark(self, *_, **__) -> None:
        if self.cuda:
            import torch

            event = torch.cuda.Event(enable_timing=True)
            event.record()
            self.marks.append(event)
        else:
            self.marks.append(time.perf_counter())

    def step_seconds(self) -> float:
        """Seconds per step (call after the device was synchronized)."""
        if len(self.marks) < 2:
            raise RuntimeError("a timed chain needs at least 2 steps")
        if self.cuda:
            return self.marks[0].elapsed_time(self.marks[-1]) / 1e3 / (len(self.marks) - 1)
        return (self.marks[-1] - self.marks[0]) / (len(self.marks) - 1)


def _marking(fn, clock: StepClock):
    """``fn`` with a clock mark after each call (the step's last call: the update, or the batched gradient)."""

    def wrapped(*a, **kw):
        out = fn(*a, **kw)
        clock.mark()
        return out

    return wrapped


def make_runner(kind: str, model, data, name: str, hp: dict, steps: int, device, chains: int = 1):
    """Return ``(run, clock)``: ``run()`` does one chain of ``steps`` steps of ``kind`` (``chains`` of them side by side
    for ours-vmap) and waits for the device; ``clock`` marked each step of the last run."""
    import torch

    from llc_service import SamplerConfig
    from llc_service.estimate import batches, seeding

    loss_fn = loss_fn_for(name)
    common = dict(epsilon=hp["epsilon"], nbeta=hp["nbeta"], gamma=hp["gamma"], batch_size=hp["batch_size"],
                  device=str(device), progress=False, seed=0)
    counter = itertools.count(1)  # every run is a fresh chain (fresh data order and noise), as in an estimate
    clock = StepClock(device)
    if kind in ("ours", "ours-nomala"):  # the default tracks each chain's MALA acceptance; "nomala" turns it off
        from llc_service.estimate.chains import Workspace

        ws = Workspace(model, data, SamplerConfig(num_chains=1, num_draws=steps, chain_batching="off",
                                                  mala_acceptance=kind == "ours", **common), loss_fn)
        ws.update = _marking(ws.update, clock)  # run_chain calls it once per step, after forward and backward

        def run():
            clock.reset()
            ws.run_chain(next(counter))
            sync(device)

        return run, clock
    if kind == "ours-vmap":
        from llc_service.estimate.batched import BatchedChains
        from llc_service.estimate.chains import Workspace

        ws = Workspace(model, data, SamplerConfig(num_chains=chains, num_draws=steps, chain_batching="vmap", **common),
                       loss_fn)
        runner = BatchedChains(ws)
        runner.gradients = _marking(runner.gradients, clock)  # once per step, for all chains

        def run():
            clock.reset()
            first = next(counter) * chains
            runner.run(list(range(first, first + chains)))
            sync(device)

        return run, clock
    if kind in ("bare", "floor"):
        m = copy.deepcopy(model).to(device=device, dtype=torch.float32)
        m.eval()
        stream = batches.BatchStream(batches.materialize(data), len(data), hp["batch_size"],
                                     seeding.generator(0, 0, seeding.DATA), device)
        if kind == "bare":  # a plain training step: zero_grad (set_to_none), forward, backward, SGD(foreach) update
            opt = torch.optim.SGD(m.parameters(), lr=1e-6, foreach=True)

            def run():
                clock.reset()
                for _ in range(steps):
                    opt.zero_grad()
                    loss_fn(m, next(stream)).backward()
                    opt.step()
                    clock.mark()
                sync(device)

            return run, clock
        # floor: forward, backward into gradients allocated once (never zeroed: autograd accumulates in place, which
        # costs what writing them does), and P standard normal numbers; no update at all, so nothing that does SGLD
        # (which needs the gradient, P fresh normals and an update of every weight) can be faster
        numel = sum(p.numel() for p in m.parameters())
        gen = seeding.generator(0, 0, seeding.NOISE, device)
        buf = torch.empty(numel, device=device)
        loss_fn(m, next(stream)).backward()

        def run():
            clock.reset()
            for _ in range(steps):
                loss_fn(m, next(stream)).backward()
                torch.randn(numel, generator=gen, device=device, out=buf)
                clock.mark()
            sync(device)

        return run, clock
    if kind == "devinterp":
        from devinterp.optim import SGMCMC
        from devinterp.slt.lm_loss import make_evaluate_fn
        from devinterp.slt.sampler import sample_single_chain

        m = copy.deepcopy(model)
        rows = devinterp_rows(name, data)
        evaluate = make_evaluate_fn(devinterp_loss_fn(name))
        masks = {n: None for n, _ in m.named_parameters()}
        # exactly the optimizer arguments devinterp.slt.sampling.sample passes for sampling_method="sgmcmc_sgld"
        kwargs = dict(nbeta=hp["nbeta"], lr=hp["epsilon"], localization=hp["gamma"], noise_level=1.0,
                      weight_decay=0.0, bounding_box_size=None, save_metrics=False)

        def run():
            clock.reset()
            i = next(counter)
            # step_callback is devinterp's own hook, called once per step right after optimizer.step()
            sample_single_chain(ref_model=m, dataset=rows, evaluate=evaluate, param_masks=masks, num_draws=steps,
                                sampling_method=SGMCMC.sgld, sampling_method_kwargs=kwargs, chain=i, seed=i,
                                dataloader_seed=i, device=str(device), callbacks=None, step_callback=clock.mark,
                                batch_size=hp["batch_size"])
            sync(device)

        return run, clock
    raise ValueError(kind)


def whole_llc(kind: str, model, data, name: str, hp: dict, chains: int, draws: int, device, seed: int) -> dict:
    """One full measurement, init loss included; returns wall seconds and the estimate."""
    import numpy as np

    from llc_service import SamplerConfig, estimate_llc

    t0 = time.perf_counter()
    if kind in ("ours", "ours-vmap"):
        cfg = SamplerConfig(epsilon=hp["epsilon"], nbeta=hp["nbeta"], gamma=hp["gamma"], batch_size=hp["batch_size"],
                            num_chains=chains, num_draws=draws,
                            init_loss_batches=max(INIT_LOSS_BATCHES_PER_CHAIN * chains, 4),
                            device=str(device), progress=False, seed=seed,
                            chain_batching="vmap" if kind == "ours-vmap" else "off")
        res = estimate_llc(model, data, cfg, loss_fn=loss_fn_for(name))
        sync(device)
        seconds = time.perf_counter() - t0
        per_chain, init_loss = np.asarray(res.llc_per_chain, dtype=float), res.init_loss
        draw_loss = float(np.nanmean(res.loss_trace))
    elif kind == "devinterp":
        from devinterp.slt.llc import llc

        out_dir = tempfile.mkdtemp(prefix="llc-bench-devinterp-")
        try:
            out = llc(model, devinterp_rows(name, data), {}, lr=hp["epsilon"], n_beta=hp["nbeta"],
                      localization=hp["gamma"], num_chains=chains, num_draws=draws, batch_size=hp["batch_size"],
                      num_init_loss_batches=INIT_LOSS_BATCHES_PER_CHAIN, init_seed=1000 * (seed + 1),
                      match_sampling_input_ids_across_chains=False, device=str(device),
                      output_path=str(Path(out_dir) / "samples.zarr"), loss_fn=devinterp_loss_fn(name))
            per_chain = np.asarray(out["llc_per_chain"].values, dtype=float)
            init_loss = float(out["init_loss"].values)
            draw_loss = float(out["loss_trace"].values.astype(float).mean())
            sync(device)
            seconds = time.perf_counter() - t0  # the zarr store is read back above: part of devinterp's cost
        finally:
            shutil.rmtree(out_dir, ignore_errors=True)
    else:
        raise ValueError(kind)
    ok = per_chain[np.isfinite(per_chain)]
    # our llc_std convention (ddof=1) for every kind; devinterp's own llc_std is xarray's ddof=0
    std = float(ok.std(ddof=1)) if len(ok) > 1 else 0.0
    return {"seconds": seconds, "llc_mean": float(ok.mean()) if len(ok) else float("nan"), "llc_std": std,
            "chains_ok": int(len(ok)), "init_loss": float(init_loss), "draw_loss": draw_loss}


# ---------------------------------------------------------------------------------------------------------------
# workers (fresh subprocesses)


def _status(field: str) -> float:
    """A /proc/self/status field in MB (VmRSS: now, VmHWM: peak since the last reset)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _prime(kind: str, device) -> None:
    """Run ``kind`` on a 1-parameter model first, so lazily imported code (optimizer internals, devinterp,
    torch.func) is loaded before the memory measurement starts: it then sees the method's tensors, not imports."""
    import torch
    from torch.utils.data import TensorDataset

    tiny = torch.nn.Sequential(torch.nn.Linear(1, 1))
    data = TensorDataset(torch.zeros(8, 1), torch.zeros(8, 1))
    hp = dict(epsilon=1e-4, nbeta=1.5, gamma=1.0, batch_size=4)
    make_runner(kind, tiny, data, "mlp", hp, 2, device, 2)[0]()


def worker(spec: dict) -> dict:
    import torch

    warnings.filterwarnings("ignore")
    torch.set_num_threads(spec["threads"])
    device = torch.device(spec["device"])
    blob = torch.load(spec["asset"], weights_only=False)
    model, data, name, hp = blob["model"], blob["data"], spec["model"], spec["hp"]
    if spec["mode"] == "mem":
        kind, steps = spec["kind"], spec["steps"]
        _prime(kind, device)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device) / 2**20
        else:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # reset the peak-RSS high-water mark (VmHWM) to the current RSS
            base = _status("VmRSS")
        make_runner(kind, model, data, name, hp, steps, device, spec.get("chains", 1))[0]()
        if device.type == "cuda":
            return {"peak_mb": torch.cuda.max_memory_allocated(device) / 2**20, "base_mb": base}
        return {"peak_mb": _status("VmHWM"), "base_mb": base}

    out: dict = {"params": sum(p.numel() for p in model.parameters()), "steps": spec["steps"]}
    steps, chains, kinds = spec["steps"], spec.get("chains", 1), spec["kinds"]
    runners = {k: make_runner(k, model, data, name, hp, steps, device, chains) for k in kinds}
    for run, _ in runners.values():  # warm-up: one untimed chain of each
        run()
    chain_s: dict[str, list[float]] = {k: [] for k in kinds}
    step_s: dict[str, list[float]] = {k: [] for k in kinds}
    for _ in range(spec["repeats"]):  # round robin: load from elsewhere hits every kind alike
        for k, (run, clock) in runners.items():
            t0 = time.perf_counter()
            run()
            chain_s[k].append(time.perf_counter() - t0)
            step_s[k].append(clock.step_seconds() / (chains if k == "ours-vmap" else 1))
    for k in kinds:
        res = {"step_s": step_s[k], "chain_s": chain_s[k], "median_step_s": statistics.median(step_s[k])}
        if k in PER_CHAIN_KINDS:  # what a chain costs beyond its steps (setup, teardown)
            res["per_chain_s"] = statistics.median(c - steps * t for c, t in zip(chain_s[k], step_s[k]))
        out[k] = res
    # ratios of kinds timed in the same round (paired), then the median over rounds: a slow round cancels out
    out["ratios"] = {f"{a}/{b}": statistics.median(x / y for x, y in zip(step_s[a], step_s[b]))
                     for a, b in RATIOS if a in step_s and b in step_s}
    out["llc"] = []
    for llc_chains, draws, kinds, repeats in spec.get("llc_sets", []):
        runs: dict[str, list[dict]] = {k: [] for k in kinds}
        for r in range(repeats):  # interleaved like the step timings; each repeat with its own seed
            for k in kinds:
                runs[k].append(whole_llc(k, model, data, name, hp, llc_chains, draws, device, seed=r))
        res = {}
        for k, rs in runs.items():
            res[k] = {"seconds": statistics.median(r["seconds"] for r in rs), "runs": rs}
        out["llc"].append({"chains": llc_chains, "draws": draws, "repeats": repeats, "results": res})
    return out


def call_worker(spec: dict) -> dict:
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1", TQDM_DISABLE="1",
               PYTHONWARNINGS="ignore")
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--_worker", json.dumps(spec)],
                          capture_output=True, text=True, env=env, cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"worker {spec.get('mode')} {spec.get('model')} {spec.get('kind', '')} failed:\n"
                           f"{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------------------------
# tables


def fmt_ms(s: float | None) -> str:
    if s is None:
        return "–"
    ms = s * 1e3
    return f"{ms:.3f}" if ms < 1 else f"{ms:.2f}" if ms < 100 else f"{ms:.0f}"


def ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}×" if a is not None and b else "–"


def pr(row: dict, key: str) -> str:
    """A paired ratio of step times (median over rounds of the per-round ratio)."""
    value = row.get("ratios", {}).get(key)
    return f"{value:.2f}×" if value is not None else "–"


def pooled(runs: list[dict], nbeta: float) -> tuple[float, float]:
    """λ̂ over the repeats: (mean of the repeats' estimates, its standard error).

    A repeat's λ̂ = nβ·(mean draw loss − L(w*)): its chains are independent given L(w*), which they share. So
    Var(λ̂_r) = Var(λ̂_c)/chains + nβ²·Var(L(w*)); the first term comes from the spread across chains, the second from
    the spread of L(w*) across the repeats (left out with one repeat), and the mean of R repeats has 1/R of it."""
    means = [r["llc_mean"] for r in runs]
    within = statistics.fmean(r["llc_std"] ** 2 / max(r["chains_ok"], 1) for r in runs)
    init = statistics.variance([r["init_loss"] for r in runs]) if len(runs) > 1 else 0.0
    return statistics.fmean(means), math.sqrt((within + nbeta**2 * init) / len(runs))


def render(rows: list[dict], with_devinterp: bool, markdown: bool) -> str:
    def table(head, body):
        if markdown:
            out = ["| " + " | ".join(head) + " |", "|" + "|".join("---:" if i else "---" for i in range(len(head)))
                   + "|"]
            out += ["| " + " | ".join(row) + " |" for row in body]
            return "\n".join(out)
        widths = [max(len(h), *(len(row[i]) for row in body)) if body else len(h) for i, h in enumerate(head)]
        out = ["  ".join(h.rjust(w) for h, w in zip(head, widths))]
        out += ["  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in body]
        return "\n".join(out)

    has_vmap = any("ours-vmap" in r for r in rows)
    step_head = ["model", "params", "bare ms/step", "floor ms/step", "ours ms/step", "ours/bare", "ours/floor",
                 "ours no-MALA ms/step", "ours/no-MALA"]
    if has_vmap:
        step_head += ["vmap ms/chain-step", "vmap/ours", "vmap/floor"]
    if with_devinterp:
        step_head += ["devinterp ms/step", "devinterp/ours"]
    step_head += ["ours ms/chain"] + (["devinterp ms/chain"] if with_devinterp else [])
    steps = []
    for r in rows:
        t = {k: r[k]["median_step_s"] for k in STEP_KINDS if k in r}
        line = [r["model"], f"{r['params']:,}", fmt_ms(t["bare"]), fmt_ms(t["floor"]), fmt_ms(t["ours"]),
                pr(r, "ours/bare"), pr(r, "ours/floor"), fmt_ms(t.get("ours-nomala")), pr(r, "ours/ours-nomala")]
        if has_vmap:
            line += [fmt_ms(t.get("ours-vmap")), pr(r, "ours-vmap/ours"), pr(r, "ours-vmap/floor")]
        if with_devinterp:
            line += [fmt_ms(t.get("devinterp")), pr(r, "devinterp/ours")]
        for k in ["ours"] + (["devinterp"] if with_devinterp else []):
            line.append(fmt_ms(r[k].get("per_chain_s")) if k in r else "–")
        steps.append(line)
    parts = ["Time per step (ms), median over interleaved rounds, each one chain of each kind ("
             + ", ".join(f"{r['model']}: {r.get('repeats', '?')} rounds of {r['steps']} steps" for r in rows)
             + "), timed between the chain's first and last step (no chain start-up in it); "
             "vmap: per chain-step, its chains run side by side; ratios: median over rounds of the ratio within a "
             "round; ms/chain: what starting and ending a chain costs on top of its steps.",
             table(step_head, steps)]

    if any("mem" in r for r in rows):
        kinds = ["ours", "bare"] + (["devinterp"] if with_devinterp else [])
        mem_head = ["model"] + [f"{k} peak MB (+Δ)" for k in kinds] + ["ours/bare Δ"]
        mems = []
        for r in rows:
            mem = r.get("mem", {})

            def cell(k):
                if k not in mem:
                    return "–"
                return f"{mem[k]['peak_mb']:.0f} (+{mem[k]['peak_mb'] - mem[k]['base_mb']:.1f})"

            def delta(k):
                return mem[k]["peak_mb"] - mem[k]["base_mb"] if k in mem else None

            mems.append([r["model"]] + [cell(k) for k in kinds] + [ratio(delta("ours"), delta("bare"))])
        parts += ["", "Peak memory, MB (fresh process each; CPU: peak RSS, +Δ above the RSS with model and data "
                  "loaded; CUDA: max_memory_allocated, +Δ above what was allocated before):", table(mem_head, mems)]

    llc_head = ["model", "chains×draws (repeats)", "ours s", "vmap s"] + (
        ["devinterp s", "devinterp/ours", "devinterp/vmap"] if with_devinterp else [])
    agree_head = ["model", "chains×draws (repeats)", "ours λ̂ ± SE", "vmap λ̂ ± SE"] + (
        ["devinterp λ̂ ± SE", "z (devinterp−ours)"] if with_devinterp else []) + ["ours L(w*)", "ours E[L]"] + (
        ["devinterp L(w*)", "devinterp E[L]"] if with_devinterp else [])
    llcs, agrees = [], []
    for r in rows:
        for entry in r.get("llc", []):
            res = entry["results"]
            sec = {k: res[k]["seconds"] for k in res}
            label = f"{entry['chains']}×{entry['draws']} ({entry.get('repeats', len(res['ours']['runs']))})"
            line = [r["model"], label, f"{sec['ours']:.2f}", f"{sec['ours-vmap']:.2f}" if "ours-vmap" in sec else "–"]
            if with_devinterp:
                line += [f"{sec['devinterp']:.2f}" if "devinterp" in sec else "–",
                         ratio(sec.get("devinterp"), sec["ours"]), ratio(sec.get("devinterp"), sec.get("ours-vmap"))]
            llcs.append(line)
            est = {k: pooled(res[k]["runs"], r["hp"]["nbeta"]) for k in res}

            def lam(k):
                return f"{est[k][0]:.3g} ± {est[k][1]:.2g}" if k in est else "–"

            def losses(k):
                if k not in res:
                    return ["–", "–"]
                return [f"{statistics.fmean(x[f] for x in res[k]['runs']):.4f}" for f in ("init_loss", "draw_loss")]

            line = [r["model"], label, lam("ours"), lam("ours-vmap")]
            if with_devinterp:
                z = "–"
                if "devinterp" in est:
                    se = math.hypot(est["ours"][1], est["devinterp"][1])
                    z = f"{(est['devinterp'][0] - est['ours'][0]) / se:+.1f}" if se else "–"
                line += [lam("devinterp"), z]
            line += losses("ours") + (losses("devinterp") if with_devinterp else [])
            agrees.append(line)
    if llcs:
        parts += ["", f"Whole LLC estimate, wall seconds (L(w*) from {INIT_LOSS_BATCHES_PER_CHAIN} batches per chain "
                  "included; median of the interleaved repeats, each with its own seeds):", table(llc_head, llcs),
                  "", "λ̂ of the same runs: mean over the repeats ± its standard error (from the spread across chains "
                  "and, with two or more repeats, of L(w*) across repeats); z = difference / combined SE; L(w*): init "
                  "loss, E[L]: mean draw loss, both averaged over the repeats; λ̂ = nβ·(E[L] − L(w*)):",
                  table(agree_head, agrees)]
    return "\n".join(parts)


# ---------------------------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Defaults take a few minutes on a 2-core CPU. Ratios are more portable than absolute times.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=",".join(MODELS), help=f"comma-separated subset of {', '.join(MODELS)}")
    p.add_argument("--steps", type=int, default=None, help="SGLD steps per timed chain, >= 2 (default per model: "
                   + ", ".join(f"{k} {v['steps']}" for k, v in DEFAULTS.items()) + ")")
    p.add_argument("--repeats", type=int, default=None, help="timed rounds (one chain of each kind per round; "
                   "default per model: " + ", ".join(f"{k} {v['repeats']}" for k, v in DEFAULTS.items()) + ")")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    p.add_argument("--threads", type=int, default=1,
                   help="torch.set_num_threads in every worker (default 1: what a Ray CPU task gets, and stable on a "
                        "shared machine; see docs/benchmarks.md)")
    p.add_argument("--no-devinterp", action="store_true",
                   help="skip devinterp (automatic, with a note, when devinterp 2.x does not import)")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    p.add_argument("--vmap-chains", type=int, default=8,
                   help="chains per batch for chain_batching=vmap, timed on the MLP only (0 = off; default 8)")
    p.add_argument("--llc-chains", type=int, default=4, help="chains of the whole-LLC estimate (default 4)")
    p.add_argument("--llc-draws", type=int, default=None, help="draws per chain of the whole LLC (default per "
                   "model: " + ", ".join(f"{k} {v['llc_draws']}" for k, v in DEFAULTS.items()) + ")")
    p.add_argument("--llc-repeats", type=int, default=None,
                   help="whole-LLC runs per kind, interleaved, each with its own seed (default per model: "
                   + ", ".join(f"{k} {v['llc_repeats']}" for k, v in DEFAULTS.items()) + ")")
    p.add_argument("--no-llc", action="store_true", help="skip the whole-LLC estimates")
    p.add_argument("--markdown", action="store_true", help="print markdown tables (for docs/benchmarks.md)")
    p.add_argument("--json", metavar="PATH", help="also write the raw measurements as JSON")
    p.add_argument("--_worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args._worker:  # noqa: SLF001
        print(json.dumps(worker(json.loads(args._worker))))  # noqa: SLF001
        return 0

    models = [m.strip() for m in args.models.split(",") if m.strip()]
    for m in models:
        if m not in MODELS:
            p.error(f"unknown model {m!r}; choose from {', '.join(MODELS)}")
    for opt in ("steps", "repeats", "llc_chains", "llc_draws", "llc_repeats", "threads"):
        value = getattr(args, opt)
        if value is not None and value < (2 if opt == "steps" else 1):
            p.error(f"--{opt.replace('_', '-')} must be >= {2 if opt == 'steps' else 1}")
    if args.vmap_chains == 1 or args.vmap_chains < 0:
        p.error("--vmap-chains must be 0 (off) or >= 2")

    import torch

    torch.set_num_threads(args.threads)  # building the models here too (2 threads on 2 busy cores stall: see docs)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        p.error("--device cuda but CUDA is not available to torch here")
    with_devinterp = not args.no_devinterp
    notes = []
    if with_devinterp:
        ver = devinterp_version()
        if ver is None:
            with_devinterp = False
            notes.append("devinterp is not installed (pip install devinterp, or the 'bench' extra): its columns are "
                         "left out.")
        elif not ver.split(".")[0].isdigit() or int(ver.split(".")[0]) < 2:
            with_devinterp = False
            notes.append(f"devinterp {ver} is installed; this script drives the 2.x API (devinterp.slt.llc, "
                         "sample_single_chain, SGMCMC.sgld): its columns are left out.")
        else:
            notes.append(f"devinterp {ver}")
    for n in notes:
        print(f"note: {n}", file=sys.stderr, flush=True)

    rows = []
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="llc-bench-") as tmp:
        for name in models:
            hp = DEFAULTS[name]
            asset = Path(tmp) / f"{name}.pt"
            print(f"[{name}] building model and data", file=sys.stderr, flush=True)
            build_asset(name, asset)
            steps, repeats = args.steps or hp["steps"], args.repeats or hp["repeats"]
            vmap = args.vmap_chains if name == "mlp" else 0
            kinds = ["ours", "ours-nomala"] + (["ours-vmap"] if vmap else []) + ["bare", "floor"] + (
                ["devinterp"] if with_devinterp else [])
            draws = args.llc_draws or hp["llc_draws"]
            llc_kinds = ["ours"] + (["devinterp"] if with_devinterp else [])
            llc_repeats = args.llc_repeats or hp["llc_repeats"]
            llc_sets = [] if args.no_llc else [(args.llc_chains, draws, llc_kinds, llc_repeats)]
            if vmap and not args.no_llc:  # the batched path at the chain count it is meant for, against the others
                llc_sets.append((vmap, draws, ["ours", "ours-vmap"] + llc_kinds[1:], llc_repeats))
            spec = dict(mode="time", asset=str(asset), model=name, hp=hp, device=args.device, threads=args.threads,
                        steps=steps, repeats=repeats, kinds=kinds, chains=max(vmap, 1), llc_sets=llc_sets)
            print(f"[{name}] timing {kinds} ({steps} steps × {repeats} rounds)"
                  + "".join(f", whole LLC {c}×{d} {k} ×{r}" for c, d, k, r in llc_sets), file=sys.stderr, flush=True)
            t0 = time.perf_counter()
            row = call_worker(spec)
            row.update(model=name, hp=hp, repeats=repeats)
            if not args.no_memory:
                row["mem"] = {}
                for kind in ("ours", "bare") + (("devinterp",) if with_devinterp else ()):
                    print(f"[{name}] memory {kind}", file=sys.stderr, flush=True)
                    row["mem"][kind] = call_worker(dict(spec, mode="mem", kind=kind, steps=min(steps, 20)))
            print(f"[{name}] done in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
            rows.append(row)
    total = time.perf_counter() - t_start
    header = "; ".join([f"torch {torch.__version__}, device {args.device}, {args.threads} thread(s) per worker, "
                        f"{os.cpu_count()} CPUs visible"] + notes + [f"total {total:.0f} s"])
    print(header)
    print()
    print(render(rows, with_devinterp, args.markdown))
    if args.json:
        Path(args.json).write_text(json.dumps({"header": header, "args": vars(args), "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
