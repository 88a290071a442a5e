"""The fused pairwise stage on a GPU: exactness at full size, no host wait, timings per step.

    python -m bench.fused_pairs [--B 64 --n 1536 --d 49 --reps 20] > fused_pairs.json

1. exactness: the fused stage on CUDA against ``cluster.PairDistances`` with the certified
   float32 plan on the CPU (order statistics and labels bit for bit, eps against the
   correctly rounded finish ``finalize_torch``), on a ResNet-50-sized batch with NaN in the
   slots past each count;
2. no host synchronisation: one call under ``torch.cuda.set_sync_debug_mode("error")``;
3. timings with CUDA events, per step of ``FusedPairs`` (prep, sample, each scan + update,
   finalize, bits, labels) and in total, for a few knob settings, and today's CUDA path
   (float64 matrices, then the native radix select and union-find) on the same card;
4. how many exact recomputations the passes did is not counted on the device; the
   selection state (modes, counts) is printed instead.
Prints one JSON object. Every number comes from the card this runs on: compare only
within one run.
"""
from __future__ import annotations

import argparse
import json
import math

import torch

from cfcam_fast import cluster
from cfcam_fast.core import native as native_ops
from cfcam_fast.core.config import CFCAMConfig
from cfcam_fast.core.formulas import doubled_percentile_ranks, min_samples_for
from cfcam_fast.kernels import pairs
from cfcam_fast.kernels.pair_select import finalize_torch
from cfcam_fast.plan import Plan


def make_batch(B: int, n: int, d: int, seed: int):
    """ReLU features with per-channel scales, rescaled to a peak in [2^-22, 2^-21) as the
    torch backend does; counts near n; NaN past each count (a leaking mask shows)."""
    gen = torch.Generator().manual_seed(seed)
    scale = torch.rand(B, n, 1, generator=gen) ** 3
    x = (torch.randn(B, n, d, generator=gen) * scale + 0.3 * scale).relu()
    x[torch.rand(B, n, generator=gen) < 0.2] = 0.0  # dead channels
    peak = x.flatten(1).amax(1).clamp(min=1e-30)
    x = x * (2.0 ** (-21 - torch.frexp(peak).exponent.float()))[:, None, None]
    counts = torch.randint(n - n // 10, n + 1, (B,), generator=gen)
    counts[0] = n
    x[torch.arange(n)[None, :] >= counts[:, None]] = math.nan
    floor = torch.full((B,), 1e-5 * 2.0 ** -21, dtype=torch.float64)
    ms = min_samples_for(counts, CFCAMConfig())
    return x, counts, floor, ms


def timed_steps(stage: pairs.FusedPairs) -> dict:
    """Run ``stage`` with a CUDA event between steps; milliseconds per step."""
    steps = [("prep", stage.prep), ("sample", stage.sample)]
    for p in range(stage.passes):
        steps += [(f"scan{p}", stage.scan), (f"update{p}", stage.update)]
    steps += [("finalize", stage.finalize), ("bits", stage.bits), ("label", stage.label)]
    events = [torch.cuda.Event(enable_timing=True) for _ in range(len(steps) + 1)]
    events[0].record()
    for k, (_, step) in enumerate(steps):
        step()
        events[k + 1].record()
    torch.cuda.synchronize()
    out = {name: events[k].elapsed_time(events[k + 1]) for k, (name, _) in enumerate(steps)}
    out["total"] = events[0].elapsed_time(events[-1])
    return out


def timed(fn, reps: int) -> float:
    fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(reps):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / reps


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.fused_pairs", description=__doc__.splitlines()[0])
    ap.add_argument("--B", type=int, default=64)
    ap.add_argument("--n", type=int, default=1536)
    ap.add_argument("--d", type=int, default=49)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--no-cpu-check", action="store_true")
    args = ap.parse_args()
    dev = torch.device("cuda")
    x, counts, floor, ms = make_batch(args.B, args.n, args.d, seed=0)
    xc, cc, fc, mc = (v.to(dev) for v in (x, counts, floor, ms))
    report = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
              "shape": [args.B, args.n, args.d]}
    import triton
    report["triton"] = triton.__version__

    stage = pairs.FusedPairs(xc, cc, 25.0, fc, mc)
    eps, labels = stage.run()
    torch.cuda.synchronize()
    report["modes"] = stage.state[:, :, 5].flatten().bincount(minlength=4).tolist()  # HIST, COLLECT, DONE, FAIL
    report["passes_launched"] = stage.passes
    report["launches"] = stage.launches

    if not args.no_cpu_check:
        plan = Plan("torch", "native", "float32-certified", "native", "cpu")
        pd = cluster.PairDistances(x, plan)
        ranks, t = doubled_percentile_ranks(counts * (counts - 1) // 2, 25.0)
        values = pd._select(pd.matrix, counts.clamp(min=2), ranks)
        eps_rn, _ = finalize_torch(values, t, counts, floor)
        lab = pd.labels(counts, cluster.sq_threshold(pd.eps(counts, 25.0, floor).nan_to_num(0.0)), ms)
        same = torch.equal(stage.values.cpu().view(torch.int64), values.view(torch.int64))
        report["values_equal"] = bool(same)
        report["eps_equal"] = bool(torch.equal(eps.cpu().view(torch.int64), eps_rn.view(torch.int64)))
        report["labels_equal"] = bool(torch.equal(labels.cpu(), lab))
        report["labels_differing_images"] = int((labels.cpu() != lab).any(1).sum())

    torch.cuda.set_sync_debug_mode("error")
    try:
        pairs.fused_eps_and_labels(xc, cc, 25.0, fc, mc)
        report["sync_free"] = True
    except RuntimeError as exc:
        report["sync_free"] = f"{exc}"
    finally:
        torch.cuda.set_sync_debug_mode("default")

    knobs_list = [{}, {"hist_bins": 256}, {"num_warps": 8}, {"block": 32, "num_warps": 4},
                  {"programs_per_image": 4}, {"programs_per_image": 64}]
    report["fused_ms"] = {}
    for knobs in knobs_list:
        key = json.dumps(knobs)
        report["fused_ms"][key] = timed(lambda k=knobs: pairs.FusedPairs(xc, cc, 25.0, fc, mc, **k).run(), args.reps)
    report["fused_steps_ms"] = timed_steps(pairs.FusedPairs(xc, cc, 25.0, fc, mc))

    # Today's CUDA path on the same card: float64 matrices, native select and labels if built.
    native = native_ops.available(dev)
    plan = Plan("torch", "native" if native else "torch", "float64", "native" if native else "torch", "cuda")
    report["today_plan"] = str(plan)

    def today():
        pd = cluster.PairDistances(xc, plan)
        e = pd.eps(cc, 25.0, fc)
        return pd.labels(cc, cluster.sq_threshold(e.nan_to_num(0.0)), mc)

    report["today_ms"] = timed(today, args.reps)
    print(json.dumps(report))  # one line: bench.device_session reads it back


if __name__ == "__main__":
    main()
