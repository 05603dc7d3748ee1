"""jaxww on a Gemma3-270M-shaped parameter tree against weightwatcher 0.7.7, one run.

    python bench/gemma.py            # the real shapes (about 4 GB of memory)
    python bench/gemma.py --quick    # 4x narrower, a smoke run

The tree has ``gemma.gm.nn.Gemma3_270M``'s leaf names and shapes (google-deepmind/gemma,
``gemma/gm/nn/_modules.py`` and the ``gemma3_270m`` config: 18 layers, d = 640,
F = 2048, 4 query heads and 1 kv head of dim 256, vocabulary 262144): per layer
``attn/q_einsum/w`` (4, 640, 256), ``attn/kv_einsum/w`` (2, 1, 640, 256),
``attn/attn_vec_einsum/w`` (4, 256, 640), ``mlp/gating_einsum`` (2, 2048, 640),
``mlp/linear`` (2048, 640) and the norm scales, plus ``embedder/input_embedding``
(262144, 640). Entries are Student-t (nu = 3), fixed seed.

jaxww reads the tree as it is, everything included (``max_N=None``: 127 matrices,
the embedding too). weightwatcher gets a PyTorch model with the same 127 matrices as
``nn.Linear`` / ``nn.Embedding`` (the einsum weights reshaped here by hand, as a
PyTorch port holds them; ``max_N`` raised to include the embedding). "first" is
jaxww's first call in this process (XLA compilation included), "second" a later call
on new weights of the same structure. Ratios are weightwatcher time / jaxww time; the
absolute times of a noisy machine mean little, the ratio measured in one run is the
figure. It also prints the largest alpha difference between the two tools.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import time

import numpy as np


def student_t(rng, shape, fan_in):
    return (rng.standard_t(3.0, size=shape) / np.sqrt(fan_in)).astype(np.float32)


def gemma_tree(rng, layers=18, d=640, F=2048, H=4, K=1, D=256, vocab=262144):
    """A ``gm.nn`` Gemma parameter tree (Gemma 3: gating_einsum (2, F, d))."""
    tree = {"embedder": {"input_embedding": student_t(rng, (vocab, d), d)},
            "final_norm": {"scale": np.zeros(d, np.float32)}}
    for i in range(layers):
        norms = ("pre_attention_norm", "post_attention_norm", "pre_ffw_norm", "post_ffw_norm")
        tree[f"layer_{i}"] = {
            "attn": {"q_einsum": {"w": student_t(rng, (H, d, D), d)},
                     "kv_einsum": {"w": student_t(rng, (2, K, d, D), d)},
                     "attn_vec_einsum": {"w": student_t(rng, (H, D, d), H * D)},
                     "_query_norm": {"scale": np.zeros(D, np.float32)},
                     "_key_norm": {"scale": np.zeros(D, np.float32)}},
            "mlp": {"gating_einsum": student_t(rng, (2, F, d), d), "linear": student_t(rng, (F, d), F)},
            **{n: {"scale": np.zeros(d, np.float32)} for n in norms},
        }
    return tree


def torch_model(tree):
    """The same matrices as PyTorch modules: ``(in, out)`` einsum sides -> ``Linear(in, out)``."""
    import torch

    def linear(w_in_out):
        m = torch.nn.Linear(*w_in_out.shape, bias=False)
        m.weight.data = torch.from_numpy(np.ascontiguousarray(w_in_out.T))
        return m

    emb = tree["embedder"]["input_embedding"]
    mods = [torch.nn.Embedding(*emb.shape)]
    mods[0].weight.data = torch.from_numpy(emb)
    for i in range(sum(k.startswith("layer_") for k in tree)):
        a, m = tree[f"layer_{i}"]["attn"], tree[f"layer_{i}"]["mlp"]
        H, d, D = a["q_einsum"]["w"].shape
        mods.append(linear(a["q_einsum"]["w"].transpose(1, 0, 2).reshape(d, H * D)))
        for j in range(2):  # k, v
            mods.append(linear(a["kv_einsum"]["w"][j].transpose(1, 0, 2).reshape(d, -1)))
        mods.append(linear(a["attn_vec_einsum"]["w"].reshape(H * D, d)))
        for j in range(2):  # gate, up: (F, d) -> d x F
            mods.append(linear(m["gating_einsum"][j].T))
        mods.append(linear(m["linear"]))
    return torch.nn.Sequential(*mods)


def run_jaxww(tree):
    import jax

    import jaxww

    t = time.perf_counter()
    report = jaxww.analyze(tree, max_N=None)
    jax.block_until_ready(report.rows)
    return time.perf_counter() - t, report


def run_ww(model, max_N):
    import weightwatcher as ww

    with contextlib.redirect_stdout(io.StringIO()):
        t = time.perf_counter()
        details = ww.WeightWatcher(model=model).analyze(max_N=max_N)
        return time.perf_counter() - t, details


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="every width 4x smaller")
    args = ap.parse_args()
    logging.getLogger("weightwatcher").setLevel(logging.ERROR)
    s = 4 if args.quick else 1
    dims = dict(d=640 // s, F=2048 // s, D=256 // s, vocab=262144 // s)
    rng = np.random.default_rng(0)
    p1, p2 = gemma_tree(rng, **dims), gemma_tree(rng, **dims)
    t_first, r1 = run_jaxww(p1)
    t_second, r2 = run_jaxww(p2)
    model = torch_model(p2)
    t_ww, d_ww = run_ww(model, max_N=dims["vocab"] + 1)
    ours = np.array([r["alpha"] for r in r2.rows])
    diff = np.max(np.abs(np.sort(ours) - np.sort(d_ww["alpha"].to_numpy())))
    print(f"{'set':<22}{'jaxww/ww layers':>16}{'ww s':>9}{'jaxww 1st s':>13}{'jaxww 2nd s':>13}"
          f"{'ratio 1st':>11}{'ratio 2nd':>11}{'max |d alpha|':>15}")
    print(f"{'gemma3-270m' + (' (quick)' if s > 1 else ''):<22}{f'{len(r2.rows)}/{len(d_ww)}':>16}"
          f"{t_ww:>9.2f}{t_first:>13.2f}{t_second:>13.2f}"
          f"{t_ww / t_first:>10.1f}x{t_ww / t_second:>10.1f}x{diff:>15.2e}", flush=True)


if __name__ == "__main__":
    main()
