"""Peak memory and time of ``python -m jaxww analyze`` on a Llama-shaped sharded checkpoint.

    python bench/stream.py                     # TinyLlama-1.1B shapes, bf16, 2 shards (2.2 GB)
    python bench/stream.py --model llama2-7b   # Llama-2-7B shapes, bf16, 3 shards (13.5 GB)
    python bench/stream.py --budget 512MiB --dir /tmp/ckpt

The checkpoint is a Hugging Face model directory (``model-0000k-of-0000n.safetensors``
and ``model.safetensors.index.json``) with the leaf names and shapes of
``LlamaForCausalLM`` (transformers ``models/llama/modeling_llama.py``) under the
configs of ``TinyLlama/TinyLlama-1.1B-intermediate-step-1431k-3T`` (hidden 2048,
intermediate 5632, 22 layers, 32 heads, 4 kv heads, vocabulary 32000) and
``meta-llama/Llama-2-7b-hf`` (4096, 11008, 32 layers, 32 heads, 32 kv heads, 32000).
Entries are Gaussian, scaled by ``1/sqrt(fan_in)``, fixed seed; it is written once
into ``--dir`` (default ``$TMPDIR/jaxww-bench-<model>``) and reused.

Each run is ``python -m jaxww analyze DIR --max-N none --max-evals none`` in a fresh
process (every matrix, the embedding and the head included), timed, with the peak
resident memory of that process (``ru_maxrss``) printed next to the size of the
checkpoint, and the time the progress bar itself took (its calls timed in the process).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import ml_dtypes
import numpy as np

MODELS = {"tinyllama": dict(d=2048, F=5632, layers=22, heads=32, kv=4, vocab=32000, shards=2),
          "llama2-7b": dict(d=4096, F=11008, layers=32, heads=32, kv=32, vocab=32000, shards=3)}


def llama_shapes(d, F, layers, heads, kv, vocab, **_) -> dict:
    """``{name: shape}`` of a ``LlamaForCausalLM`` state dict (PyTorch ``(out, in)`` order)."""
    hd = d // heads
    out = {"model.embed_tokens.weight": (vocab, d)}
    for i in range(layers):
        p = f"model.layers.{i}."
        out.update({p + "self_attn.q_proj.weight": (d, d), p + "self_attn.k_proj.weight": (kv * hd, d),
                    p + "self_attn.v_proj.weight": (kv * hd, d), p + "self_attn.o_proj.weight": (d, d),
                    p + "mlp.gate_proj.weight": (F, d), p + "mlp.up_proj.weight": (F, d),
                    p + "mlp.down_proj.weight": (d, F), p + "input_layernorm.weight": (d,),
                    p + "post_attention_layernorm.weight": (d,)})
    out.update({"model.norm.weight": (d,), "lm_head.weight": (vocab, d)})
    return out


def write_safetensors(path: str, tensors: dict) -> None:
    """A safetensors file (8-byte header length, JSON header, data), one tensor at a time."""
    header, offset = {}, 0
    for name, (shape, _) in tensors.items():
        n = int(np.prod(shape)) * 2
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as fh:
        fh.write(len(raw).to_bytes(8, "little") + raw)
        for shape, make in tensors.values():
            fh.write(make().astype(ml_dtypes.bfloat16).tobytes())


def write_checkpoint(folder: str, cfg: dict, seed: int = 0) -> int:
    """The sharded directory (skipped when its index exists); returns its bytes."""
    shapes = llama_shapes(**cfg)
    index = os.path.join(folder, "model.safetensors.index.json")
    if not os.path.exists(index):
        os.makedirs(folder, exist_ok=True)
        rng = np.random.default_rng(seed)
        names = list(shapes)
        per = -(-len(names) // cfg["shards"])
        weight_map = {}
        for s in range(cfg["shards"]):
            shard = f"model-{s + 1:05d}-of-{cfg['shards']:05d}.safetensors"
            members = names[s * per:(s + 1) * per]

            def make(shape):
                return lambda: (rng.standard_normal(shape, np.float32) / np.sqrt(shape[-1]))

            write_safetensors(os.path.join(folder, shard), {n: (shapes[n], make(shapes[n])) for n in members})
            weight_map.update({n: shard for n in members})
        with open(index, "w") as fh:
            json.dump({"metadata": {}, "weight_map": weight_map}, fh)
    return sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder))


_CHILD = """
import resource, sys, time
from jaxww import cli
from jaxww.analysis import progress
spent, calls, bar = [0.0], [0], progress.TextBar.__call__
def timed(self, event):   # the time the progress bar itself takes
    t = time.perf_counter(); bar(self, event); spent[0] += time.perf_counter() - t; calls[0] += 1
progress.TextBar.__call__ = timed
t = time.perf_counter()
rc = cli.main(sys.argv[1:])
print(f"RESULT rc={rc} seconds={time.perf_counter() - t:.2f} "
      f"peak_rss={resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024} "
      f"bar_seconds={spent[0]:.6f} bar_calls={calls[0]}", file=sys.stderr)
"""


def run(folder: str, budget: str | None) -> dict:
    """One ``jaxww analyze`` in a fresh process: exit code, seconds (imports excluded), peak RSS."""
    csv = os.path.join(tempfile.mkdtemp(), "rows.csv")
    args = ["analyze", folder, "--max-N", "none", "--max-evals", "none", "--format", "csv", "--out", csv]
    args += ["--memory-budget", budget] if budget else []
    proc = subprocess.run([sys.executable, "-c", _CHILD, *args], capture_output=True, text=True)
    line = next((s for s in proc.stderr.splitlines() if s.startswith("RESULT")), None)
    if line is None:
        raise RuntimeError(proc.stderr[-3000:])
    out = dict(kv.split("=") for kv in line.split()[1:])
    with open(csv) as fh:
        rows = sum(1 for _ in fh) - 1
    return {"rc": int(out["rc"]), "seconds": float(out["seconds"]), "peak": int(out["peak_rss"]), "rows": rows,
            "bar": float(out["bar_seconds"]), "bar_calls": int(out["bar_calls"])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", choices=sorted(MODELS), default="tinyllama")
    ap.add_argument("--dir", help="where the checkpoint is written (and reused)")
    ap.add_argument("--budget", help="--memory-budget of the run (default: jaxww's default)")
    ap.add_argument("--runs", type=int, default=1)
    args = ap.parse_args()
    folder = args.dir or os.path.join(tempfile.gettempdir(), f"jaxww-bench-{args.model}")
    t = time.perf_counter()
    size = write_checkpoint(folder, MODELS[args.model])
    print(f"{args.model}-shaped checkpoint: {folder}, {size / 2**30:.2f} GiB "
          f"({len(llama_shapes(**MODELS[args.model]))} tensors; ready in {time.perf_counter() - t:.0f} s)")
    for _ in range(args.runs):
        r = run(folder, args.budget)
        print(f"jaxww analyze: exit {r['rc']}, {r['rows']} rows, {r['seconds']:.1f} s, peak RSS "
              f"{r['peak'] / 2**30:.2f} GiB = {r['peak'] / size:.2f}x the checkpoint"
              f" (budget {args.budget or 'default'}); progress bar: {r['bar_calls']} updates, "
              f"{r['bar'] * 1e3:.1f} ms = {r['bar'] / r['seconds']:.1e} of the run")


if __name__ == "__main__":
    main()
