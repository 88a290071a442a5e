"""Compile every kernel of the fused pairwise stage (``cfcam_fast.kernels.pairs``) for an H100
(sm_90) without a GPU, and report
what the PTX shows. Run with Triton imported normally (no TRITON_INTERPRET): a process that
imported Triton to interpret cannot compile. Prints one JSON object: per case "ok" or the
error, and per case a few PTX facts (fused float64 multiply-adds, tensor-core / TF32
instructions, correctly rounded float64 square roots, flush-to-zero float32 arithmetic,
spills)."""
from __future__ import annotations

import json
import re
import sys

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from cfcam_fast.kernels import pair_bounds, pair_labels, pair_select

P = {"X": "*fp32", "n64": "*fp64", "slack": "*fp64", "gid": "*i32", "counts": "*i64", "tiles": "*i32",
     "state": "*i64", "share": "*i32", "hist": "*i32", "cand": "*i64", "ccount": "*i32", "consts": "*fp64",
     "qf": "*fp64", "tfrac": "*fp64", "values": "*fp64", "floor": "*fp64", "eps": "*fp64", "thr": "*fp64",
     "bits": "*i32", "min_samples": "*i64", "lab": "*i32", "rank": "*i32", "labels": "*i64"}
EXACT = {"enable_fp_fusion": False}


def cases(block=64, hist_bins=1024, capacity=2048, sample=2048):
    bd = 64
    return {
        "prep": (pair_bounds.prep_kernel, {"D": 49, "COEF": pair_bounds.slack_coefficient(49),
                                           "FLOOR": pair_bounds.slack_floor(49), "BLOCK": 128},
                 EXACT | {"num_warps": 4}),
        "sample": (pair_select.sample_kernel,
                   {"D": 49, "QF": 0.25, "S": sample, "NB": hist_bins - 4, "USE_SAMPLE": True},
                   EXACT | {"num_warps": 16}),
        "scan": (pair_select.scan_kernel, {"D": 49, "BI": block, "BD": bd, "HB": hist_bins, "K": capacity},
                 EXACT | {"num_warps": 16}),
        "update": (pair_select.update_kernel, {"HB": hist_bins, "K": capacity}, {"num_warps": 16}),
        "finalize": (pair_select.finalize_kernel, {"BLOCK": 128}, EXACT | {"num_warps": 4}),
        "bits": (pair_labels.bits_kernel, {"D": 49, "BI": block, "BD": bd}, EXACT | {"num_warps": 16}),
        "label": (pair_labels.label_kernel, {"BR": 64}, {"num_warps": 4}),
    }


def facts(ptx: str) -> dict:
    ops = re.findall(r"^\s*(?:@%p\d+\s+)?([a-z][\w.]*)", ptx, flags=re.M)

    def count(pred):
        return sum(1 for op in ops if pred(op))
    return {
        "f64 literals": sorted(set(re.findall(r"0d[0-9A-F]{16}", ptx))),
        "fma.f64": count(lambda o: o.startswith("fma") and o.endswith(".f64")),
        "fma.f32": count(lambda o: o.startswith("fma") and o.endswith(".f32")),
        "mma/wgmma": count(lambda o: o.startswith(("mma", "wgmma"))),
        "tf32": ptx.count("tf32"),
        "sqrt.rn.f64": count(lambda o: o == "sqrt.rn.f64"),
        "sqrt.approx": count(lambda o: o.startswith(("sqrt.approx", "rsqrt"))),
        "ftz.f32": count(lambda o: ".ftz" in o and o.endswith(".f32")),
        "atom/red": count(lambda o: o.startswith(("atom.", "red."))),
        "bar.sync": count(lambda o: o.startswith(("bar.sync", "barrier"))),
        "local (spills)": count(lambda o: o.startswith(("ld.local", "st.local"))),
        "ld.volatile": count(lambda o: o.startswith("ld.volatile")),
    }


def main() -> None:
    wanted = sys.argv[1:] or None
    out = {}
    for name, (kernel, constexprs, options) in cases().items():
        if wanted and name not in wanted:
            continue
        signature = {arg: P.get(arg, "i32") for arg in kernel.arg_names}
        signature.update(dict.fromkeys(constexprs, "constexpr"))
        try:
            src = ASTSource(fn=kernel, signature=signature, constexprs=constexprs)
            compiled = triton.compile(src, target=GPUTarget("cuda", 90, 32), options=options)
            out[name] = "ok" if compiled.asm["cubin"] else "empty"
            out[name + ":facts"] = facts(compiled.asm["ptx"])
            out[name + ":regs"] = getattr(compiled, "n_regs", None)
            out[name + ":spills"] = getattr(compiled, "n_spills", None)
        except Exception as exc:  # reported, not raised: one JSON line for the test to read
            out[name] = f"{type(exc).__name__}: {str(exc)[-2000:]}"
    print(json.dumps(out))


if __name__ == "__main__":
    main()
