"""Device check: one prepared command for a short window on a GPU or TPU machine without network.

Run from the project root, exactly as typed::

    PYTHONPATH=. python bench/device.py             # at most 6 minutes; every row printed as measured
    PYTHONPATH=. python bench/device.py --dry-run   # every section at a tiny size on the CPU (< 1 min)

(the script also puts the project root on ``sys.path`` itself). Options: ``--total-seconds``
(default 360), ``--blocks`` (Llama decoder blocks in the checkpoint, default 2),
``--memory-budget`` (passed to ``analyze``), ``--keep`` (keep the work folder).

Before leaving the network, carry weightwatcher 0.7.7 and the pure-Python packages that it
and jaxww need beyond a CUDA JAX + torch image, as wheels in ``bench/wheels/`` (ignored by
git)::

    pip download weightwatcher==0.7.7 powerlaw==2.0.0 mpmath tqdm matplotlib-inline traitlets \\
        threadpoolctl --no-deps -d bench/wheels

At the start, the wheels whose package is missing from the image (weightwatcher: missing or
not 0.7.7) are installed with ``pip install --no-index --no-deps --target bench/wheels/site``,
never into the image's own site-packages; every section runs with that folder on its path.
weightwatcher also imports numpy, scipy, pandas, matplotlib, scikit-learn and safetensors,
which the image must have; one it lacks can be carried as a wheel for the image's Python
(``pip download pandas --no-deps --only-binary=:all: --python-version 3.11
--platform manylinux2014_x86_64 -d bench/wheels``). Without weightwatcher its row says why.

Output: one row per measurement, written when it is measured: a readable line on stdout
(flushed) and, when ``$OUT`` is set, one JSON object per line in ``$OUT/device.jsonl``
(emptied at the start). Every row has ``section``, ``row``, ``status`` (ok, failed,
timeout, skipped), ``t`` (seconds since the start) and its figures.

Time box: ``--total-seconds`` in all; each section runs in its own subprocess under its own
cap (:data:`SECTIONS`, cut to what is left of the total), so a hang or a crash (a GPU
failure) is one row, with the last line of the section's stderr, and the next section runs.
Sections that need the accelerator are skipped, with the reason, when there is none; the
CPU rows run all the same, so the check is safe on a CPU-only machine.

Sections, in order:

* ``env``: jax and its devices, jaxww's path, torch and CUDA, weightwatcher, cores, memory,
  the work folder's file system.
* ``write``: a Llama-2-7B-shaped bf16 safetensors checkpoint in a temporary folder:
  ``--blocks`` decoder blocks and the embedding. Shapes and names: ``config.json`` of
  ``meta-llama/Llama-2-7b-hf`` (hidden_size 4096, intermediate_size 11008,
  num_attention_heads = num_key_value_heads = 32, vocab_size 32000) and transformers'
  ``LlamaForCausalLM`` state dict (PyTorch ``(out, in)``): ``q/k/v/o_proj`` 4096x4096,
  ``gate/up_proj`` 11008x4096, ``down_proj`` 4096x11008, ``embed_tokens`` 32000x4096, and
  the 1-D norms (skipped by jaxww). Student-t (nu = 3) entries scaled by 1/sqrt(fan_in).
* ``stream`` (accelerator): ``jaxww.analyze(path, devices=[accelerator], max_N=None,
  max_evals=None)``, the first call (compilation included) and the second; the file is
  dropped from the page cache before each (``posix_fadvise``), so both read the disk.
* ``phases`` (accelerator): one tensor of each shape, in a blocking profile
  (``block_until_ready`` after every phase): read (from disk), transfer (``device_put``),
  Gram (cast to float32, ``W^T W`` at HIGHEST precision), tridiagonal
  (``jax.lax.linalg.tridiagonal``), eigenvalues (``eigh_tridiagonal``; on TPU
  ``eigvalsh`` of the Gram matrix, no tridiagonal row), fit (``jaxww.fit_power_law``) and
  compile (first call minus second call of each program); the steps of jaxww's device
  path at the exact shape (without its bucket padding).
* ``reference`` (CPU): a mixed set of shapes (squares, tall and wide, the 7B MLP shape, an
  embedding, convolutions) analysed on the host in float64, the reference of
  ``accuracy``, and in float32 (the host's own float32 error).
* ``accuracy`` (accelerator): the same set in float32 on the accelerator against the float64
  reference: the largest ``|d alpha|`` over the layers whose fits chose the same ``xmin``,
  how many did, and the largest ``|d lambda| / lambda_max``.
* ``weightwatcher``: weightwatcher 0.7.7's own ``analyze()`` on the checkpoint's weights as
  torch modules (on CUDA when torch has it: its torch-GPU path reads the weights as
  float16), one layer at a time, the cheapest first, until its cap; time, and ``|d alpha|``
  against jaxww's alphas of ``stream`` (else of ``host``).
* ``host`` (CPU): ``analyze(path)`` with LAPACK on the host, the yardstick of ``stream``.

``--dry-run``: every section at a tiny size (one block of width 64) with ``JAX_PLATFORMS=cpu``;
the CPU stands in for the accelerator through ``JAXWW_DEVICE_PATH=1``, the code an
accelerator runs (docs/scale.md). The suite runs it (tests/integration/test_device_bench.py).
"""

from __future__ import annotations

import argparse
import glob
import importlib.metadata
import importlib.util
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
WHEELS = os.path.join(BENCH, "wheels")
SITE = os.path.join(WHEELS, "site")
for _p in (BENCH, SITE, ROOT):   # the project first: run from anywhere, with or without PYTHONPATH=.
    if _p not in sys.path:
        sys.path.insert(0, _p)

#: ``config.json`` of ``meta-llama/Llama-2-7b-hf``; the dry run's is 64 wide.
LLAMA_2_7B = dict(d=4096, F=11008, heads=32, kv=32, vocab=32000)
TINY = dict(d=64, F=128, heads=4, kv=4, vocab=128)

#: ``(section, cap in seconds, needs the accelerator)``, in the order they run.
SECTIONS = (("env", 60, False), ("write", 60, False), ("stream", 120, True), ("phases", 45, True),
            ("reference", 60, False), ("accuracy", 60, True), ("weightwatcher", 60, False),
            ("host", 45, False))


# ----------------------------------------------------------------------------- rows

class Rows:
    """Rows written as they are measured: stdout (flushed) and ``$OUT/device.jsonl``."""

    def __init__(self, t0: float, fresh: bool = False):
        self.t0 = t0
        out = os.environ.get("OUT")
        self.path = os.path.join(out, "device.jsonl") if out else None
        if self.path and fresh:
            os.makedirs(out, exist_ok=True)
            open(self.path, "w").close()

    def emit(self, section: str, row: str, status: str = "ok", **figures) -> dict:
        rec = dict(section=section, row=row, status=status, t=round(time.time() - self.t0, 2), **figures)
        if self.path:
            with open(self.path, "a") as fh:
                fh.write(json.dumps(rec, default=str) + "\n")
        text = "  ".join(f"{k}={_fmt(v)}" for k, v in figures.items())
        print(f"{rec['t']:7.1f}s  {section:<13} {row:<24} {status:<8} {text}", flush=True)
        return rec


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _one_line(err) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0][:300] if text else ''}"


# ----------------------------------------------------------------------------- the run

def orchestrate(args) -> int:
    """Every section in its own subprocess, each under its cap, within ``--total-seconds``."""
    t0 = time.time()
    rows = Rows(t0, fresh=True)
    end = t0 + args.total_seconds
    work = tempfile.mkdtemp(prefix="jaxww-device-")
    rows.emit("setup", "run", dry_run=args.dry_run, total_seconds=args.total_seconds, work=work,
              python=sys.version.split()[0])
    install_wheels(rows, min(120.0, args.total_seconds / 3))
    for name, cap, needs_acc in SECTIONS:
        env = _read_json(os.path.join(work, "env.json"))
        left = end - time.time()
        if needs_acc and env and not env.get("accelerator"):
            rows.emit(name, "-", "skipped", why=env["why"])
        elif left < 5:
            rows.emit(name, "-", "skipped", why=f"time box: {max(left, 0):.0f} s left of {args.total_seconds:.0f} s")
        else:
            run_section(rows, name, min(cap, left), work, args, needs_acc)
    rows.emit("setup", "done", seconds=round(time.time() - t0, 1))
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def run_section(rows: Rows, name: str, cap: float, work: str, args, needs_acc: bool) -> None:
    """``bench/device.py --section name`` in a new process group, killed at ``cap`` seconds;
    a timeout or a non-zero exit is a row with the last line of the section's stderr."""
    cmd = [sys.executable, os.path.abspath(__file__), "--section", name, "--work", work, "--t0", repr(rows.t0),
           "--deadline", repr(time.time() + cap - 5), "--blocks", str(args.blocks)]
    cmd += ["--dry-run"] if args.dry_run else []
    cmd += ["--memory-budget", args.memory_budget] if args.memory_budget else []
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, (ROOT, SITE, os.environ.get("PYTHONPATH")))))
    env.pop("JAXWW_DEVICE_PATH", None)
    if args.dry_run:   # the CPU only; it runs the accelerator's code where an accelerator would
        env.update(JAX_PLATFORMS="cpu", CUDA_VISIBLE_DEVICES="")
        if needs_acc:
            env["JAXWW_DEVICE_PATH"] = "1"
    err_path = os.path.join(work, f"{name}.stderr")
    sys.stdout.flush()
    start = time.time()
    with open(err_path, "w") as err:
        proc = subprocess.Popen(cmd, env=env, stderr=err, start_new_session=True)
        try:
            rc = proc.wait(timeout=cap)
        except KeyboardInterrupt:   # the section runs in its own session: end it too
            os.killpg(proc.pid, signal.SIGKILL)
            raise
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            rows.emit(name, "-", "timeout", seconds=round(time.time() - start, 1),
                      why=f"killed at its cap of {cap:.0f} s", stderr=_last_line(err_path))
            return
    if rc != 0:
        rows.emit(name, "-", "failed", seconds=round(time.time() - start, 1), exit=rc, stderr=_last_line(err_path))


def _last_line(path: str) -> str:
    with open(path, errors="replace") as fh:
        lines = [s.strip() for s in fh if s.strip()]
    return lines[-1][:400] if lines else ""


def _read_json(path: str):
    try:
        with open(path) as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


def install_wheels(rows: Rows, timeout: float) -> None:
    """The wheels of ``bench/wheels`` whose package is missing (weightwatcher: not 0.7.7),
    installed ``--no-index --no-deps`` into ``bench/wheels/site``."""
    wheels = sorted(glob.glob(os.path.join(WHEELS, "*.whl")))
    need = [w for w in wheels if _missing(os.path.basename(w).split("-")[0])]
    if not need:
        have = _version("weightwatcher")
        rows.emit("setup", "wheels", "ok" if have == "0.7.7" else "skipped", weightwatcher=have or "missing",
                  wheels=len(wheels), **({} if have else {"why": "no weightwatcher wheel in bench/wheels"}))
        return
    t = time.time()
    cmd = [sys.executable, "-m", "pip", "install", "--no-index", "--no-deps", "--upgrade", "--target", SITE, *need]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        ok, why = proc.returncode == 0, (proc.stderr.strip().splitlines() or [""])[-1]
    except (OSError, subprocess.TimeoutExpired) as err:
        ok, why = False, _one_line(err)
    importlib.invalidate_caches()
    rows.emit("setup", "wheels", "ok" if ok else "failed", installed=[os.path.basename(w) for w in need],
              weightwatcher=_version("weightwatcher") or "missing", seconds=round(time.time() - t, 1),
              **({} if ok else {"why": why}))


def _missing(project: str) -> bool:
    have = _version(project.replace("_", "-"))
    return have is None or (project == "weightwatcher" and have != "0.7.7")


def _version(project: str):
    try:
        return importlib.metadata.version(project)
    except importlib.metadata.PackageNotFoundError:
        return None


# ----------------------------------------------------------------------------- sections

class Section:
    """What a section's process knows: its arguments, the rows, the work folder."""

    def __init__(self, args):
        self.args, self.name, self.work = args, args.section, args.work
        self.rows = Rows(args.t0)
        self.dims = dict(TINY if args.dry_run else LLAMA_2_7B, layers=1 if args.dry_run else args.blocks)
        self.path = os.path.join(self.work, "model.safetensors")

    def emit(self, row, status="ok", **figures):
        return self.rows.emit(self.name, row, status, **figures)

    def save(self, what: str, data) -> None:
        with open(os.path.join(self.work, f"{what}.json"), "w") as fh:
            json.dump(data, fh)

    def load(self, what: str):
        return _read_json(os.path.join(self.work, f"{what}.json"))

    def accelerator(self):
        """The device the accelerator rows run on (the CPU under ``--dry-run``)."""
        import jax

        if self.args.dry_run:
            from jaxww.linalg import placement
            assert placement.DEVICE_PATH, "the dry run's accelerator sections run with JAXWW_DEVICE_PATH=1"
            return jax.devices("cpu")[0]
        acc = [d for d in jax.devices() if d.platform != "cpu"]
        if not acc:
            raise RuntimeError(f"no accelerator (jax devices: {jax.devices()})")
        return acc[0]


def section_env(s: Section) -> None:
    import jax

    import jaxww

    devices = jax.devices()
    acc = [d for d in devices if d.platform != "cpu"]
    stats = (acc[0].memory_stats() or {}) if acc else {}
    s.emit("jax", version=jax.__version__, backend=jax.default_backend(), devices=[str(d) for d in devices],
           kind=acc[0].device_kind if acc else "cpu", memory_gib=round(stats.get("bytes_limit", 0) / 2**30, 1),
           compilation_cache=jax.config.jax_compilation_cache_dir or "")
    s.emit("jaxww", path=os.path.dirname(jaxww.__file__))
    try:
        import torch
        cuda = torch.cuda.is_available()
        s.emit("torch", version=torch.__version__, cuda=cuda, gpu=torch.cuda.get_device_name(0) if cuda else "")
        if cuda and not acc:
            s.emit("jax vs torch", "failed", why="torch sees CUDA but jax has no GPU: jax without its CUDA plugin?")
    except Exception as err:   # noqa: BLE001 - the row says why
        s.emit("torch", "skipped", why=_one_line(err))
    ww = importlib.util.find_spec("weightwatcher")
    s.emit("weightwatcher", "ok" if ww else "skipped", version=_version("weightwatcher") or "missing",
           path=os.path.dirname(ww.origin) if ww else "")
    from jaxww.analysis.budget import available_memory
    s.emit("host", cores=os.cpu_count(), memory_gib=round((available_memory() or 0) / 2**30, 1),
           work_fs=_file_system(s.work))
    if s.args.dry_run:
        s.save("env", {"accelerator": "cpu (JAXWW_DEVICE_PATH=1)"})
        s.emit("accelerator", device="cpu", why="dry run: the CPU runs the accelerator's code (JAXWW_DEVICE_PATH=1)")
    elif acc:
        s.save("env", {"accelerator": str(acc[0])})
        s.emit("accelerator", device=str(acc[0]), kind=acc[0].device_kind)
    else:
        why = f"no accelerator found (jax {jax.__version__} devices: {[str(d) for d in devices]})"
        s.save("env", {"accelerator": None, "why": why})
        s.emit("accelerator", "skipped", why=why)


def _file_system(path: str) -> str:
    """The type of the file system holding ``path`` (``/proc/mounts``), or ''."""
    best, fs = "", ""
    try:
        with open("/proc/mounts") as fh:
            for line in fh:
                mount, kind = line.split()[1:3]
                if os.path.realpath(path).startswith(mount) and len(mount) > len(best):
                    best, fs = mount, kind
    except OSError:
        pass
    return fs


def section_write(s: Section) -> None:
    import stream   # bench/stream.py: the LlamaForCausalLM names and the safetensors writer

    t = time.perf_counter()
    shapes = {n: sh for n, sh in stream.llama_shapes(**s.dims).items() if n != "lm_head.weight"}
    seeds = iter(range(len(shapes)))
    stream.write_safetensors(s.path, {n: (sh, lambda sh=sh, i=next(seeds): student_t(sh, i))
                                      for n, sh in shapes.items()})
    with open(s.path, "rb+") as fh:
        os.fsync(fh.fileno())
    size = os.path.getsize(s.path)
    seconds = time.perf_counter() - t
    s.emit("checkpoint", seconds=round(seconds, 2), tensors=len(shapes),
           matrices=sum(len(sh) == 2 for sh in shapes.values()), bytes=size,
           mb_per_s=round(size / 1e6 / seconds, 1), dims=s.dims)


def student_t(shape, seed, nu=3.0, chunk=1 << 22):
    """Student-t(nu) / sqrt(fan_in) in float32 (``fan_in`` the last axis, PyTorch layout),
    drawn in chunks over the cores: chunk ``i`` has its own stream spawned from ``seed``,
    so the numbers do not depend on the number of threads."""
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    out = np.empty(shape, np.float32)
    flat = out.reshape(-1)
    starts = range(0, flat.size, chunk)
    seqs = np.random.SeedSequence(seed).spawn(len(starts))
    scale = np.float32(math.sqrt(shape[-1]))

    def fill(i):
        rng, part = np.random.default_rng(seqs[i]), flat[starts[i]:starts[i] + chunk]
        g = np.sqrt(rng.standard_gamma(nu / 2, part.size, dtype=np.float32) * np.float32(2 / nu))
        np.divide(rng.standard_normal(part.size, dtype=np.float32), g * scale, out=part)

    with ThreadPoolExecutor(os.cpu_count()) as ex:
        list(ex.map(fill, range(len(starts))))
    return out


def _analyze(s: Section, params, device, **kw):
    """``(seconds, {name: fit}, report)`` of one ``jaxww.analyze`` (every matrix)."""
    import jaxww

    t = time.perf_counter()
    rep = jaxww.analyze(params, devices=[device], max_N=None, max_evals=None,
                        memory_budget=s.args.memory_budget, **kw)
    seconds = time.perf_counter() - t
    fits = {r["name"]: {"alpha": r["alpha"], "xmin": r["xmin"], "spikes": r["num_pl_spikes"],
                        "status": r["status"]} for r in rep.rows}
    return seconds, fits, rep


def _drop_cache(path: str) -> None:
    """Evict ``path`` from the page cache, so that the next read comes from the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def section_stream(s: Section) -> None:
    acc = s.accelerator()
    size = os.path.getsize(s.path)
    for label in ("1st call", "2nd call"):
        _drop_cache(s.path)
        seconds, fits, _ = _analyze(s, s.path, acc)
        s.emit(label, device=str(acc), seconds=round(seconds, 2), layers=len(fits),
               failed=sum(f["status"] != "success" for f in fits.values()), mb_per_s=round(size / 1e6 / seconds, 1),
               note="compilation included" if label == "1st call" else "")
    s.save("stream", fits)


def section_phases(s: Section) -> None:
    import jax
    import jax.numpy as jnp
    import numpy as np

    import jaxww

    acc = s.accelerator()
    tpu = acc.platform == "tpu"
    tensors = jaxww.open_checkpoint(s.path)
    by_shape: dict = {}
    for name, t in tensors.items():
        if len(t.shape) == 2:
            by_shape.setdefault(t.shape, []).append(name)

    @jax.jit
    def gram(W):
        W = W.astype(jnp.float32)
        W = W.T if W.shape[0] < W.shape[1] else W
        return jnp.einsum("nm,nk->mk", W, W, precision=jax.lax.Precision.HIGHEST)[None]

    tridiagonal = jax.jit(lambda X: jax.lax.linalg.tridiagonal(X, lower=True)[1:3])
    bisection = jax.jit(jax.vmap(lambda d, e: jax.scipy.linalg.eigh_tridiagonal(d, e, eigvals_only=True)))
    eigvalsh = jax.jit(jnp.linalg.eigvalsh)

    def twice(fn, *a):
        """(seconds of the second call, seconds of the first minus the second, result), blocking."""
        times, out = [], None
        for _ in range(2):
            t = time.perf_counter()
            out = jax.block_until_ready(fn(*a))
            times.append(time.perf_counter() - t)
        return times[1], max(times[0] - times[1], 0.0), out

    for shape, names in by_shape.items():
        t = time.perf_counter()
        host = tensors[names[0]].read()
        read = time.perf_counter() - t
        t = time.perf_counter()
        W = jax.block_until_ready(jax.device_put(host, acc))
        transfer = time.perf_counter() - t
        g, cg, X = twice(gram, W)
        if tpu:
            tri, ct, ev = None, 0.0, None
            e_s, ce, ev = twice(eigvalsh, X)
        else:
            tri, ct, (d, e) = twice(tridiagonal, X)
            e_s, ce, ev = twice(bisection, d, e)
        f, cf, fit = twice(jaxww.fit_power_law, ev)
        N, M = max(shape), min(shape)
        s.emit(f"{shape[0]}x{shape[1]}", device=str(acc), count=len(names), read=round(read, 4),
               transfer=round(transfer, 4), gram=round(g, 4), tridiagonal=None if tpu else round(tri, 4),
               eigenvalues=round(e_s, 4), fit=round(f, 4), compile=round(cg + ct + ce + cf, 3),
               gram_tflops=round(2 * N * M * M / g / 1e12, 2), read_gb_per_s=round(host.nbytes / read / 1e9, 2),
               transfer_gb_per_s=round(host.nbytes / transfer / 1e9, 2), alpha=float(np.asarray(fit.alpha)[0]))


def mixed_set(dry: bool, seed: int = 7) -> dict:
    """Kernels of mixed shapes (Flax ``(in, out)``): squares, tall and wide, the 7B MLP
    shape, an embedding, 3x3 convolutions and a small one; the dry run's are tiny."""
    if dry:
        dense = [(128, 64), (64, 128), (128, 64)]
        conv, embed = [], (128, 64)
    else:
        dense = [(4096, 11008), (4096, 4096), (1024, 4096), (2048, 2048), (768, 3072), (512, 512),
                 (512, 512), (100, 40)]
        conv, embed = [(3, 3, 64, 128)] * 2, (16000, 512)
    tree = {f"dense_{i:02d}": {"kernel": student_t(sh, seed + i)} for i, sh in enumerate(dense)}
    tree.update({f"conv_{i}": {"kernel": student_t(sh, seed + 100 + i)} for i, sh in enumerate(conv)})
    tree["embed"] = {"embedding": student_t(embed, seed + 200)}
    return tree


def section_reference(s: Section) -> None:
    import jax
    import numpy as np

    cpu = jax.devices("cpu")[0]
    tree = mixed_set(s.args.dry_run)
    seconds, fits, rep = _analyze(s, tree, cpu, precision="float64")
    s.emit("host float64", device="cpu", seconds=round(seconds, 2), layers=len(fits))
    s.save("reference", {"fits": fits, "esd": {n: rep.esd(n).tolist() for n in fits}})
    seconds32, fits32, rep32 = _analyze(s, tree, cpu)
    s.emit("host float32 vs float64", device="cpu", seconds=round(seconds32, 2),
           **compare(fits32, fits), **_eig_diff(rep32, rep.esd))


def compare(a: dict, b: dict) -> dict:
    """Fits ``a`` against ``b`` (``{name: fit}``), on the names both have: how many chose the
    same ``xmin`` (number of spikes), and the largest ``|d alpha|`` among those."""
    names = [n for n in b if n in a and a[n]["status"] == b[n]["status"] == "success"]
    same = [n for n in names if a[n]["spikes"] == b[n]["spikes"]]
    d = [abs(a[n]["alpha"] - b[n]["alpha"]) for n in same]
    return dict(compared=len(names), same_xmin=len(same), max_abs_dalpha=max(d) if d else None,
                max_rel_dalpha=max(x / abs(b[n]["alpha"]) for x, n in zip(d, same)) if d else None)


def _eig_diff(rep, esd_of) -> dict:
    """The largest ``|d lambda| / lambda_max`` of ``rep``'s spectra against ``esd_of(name)``."""
    import numpy as np

    worst = 0.0
    for name in rep.evals:
        ref = np.asarray(esd_of(name), np.float64)
        worst = max(worst, float(np.max(np.abs(np.asarray(rep.esd(name), np.float64) - ref)) / ref.max()))
    return {"max_rel_dlambda": worst}


def section_accuracy(s: Section) -> None:
    ref = s.load("reference")
    if ref is None:
        return s.emit("float32 vs float64", "skipped", why="no float64 reference (section reference failed)")
    acc = s.accelerator()
    seconds, fits, rep = _analyze(s, mixed_set(s.args.dry_run), acc)
    s.emit("float32 vs float64", device=str(acc), seconds=round(seconds, 2), note="compilation included",
           **compare(fits, ref["fits"]), **_eig_diff(rep, ref["esd"].get))


def section_weightwatcher(s: Section) -> None:
    import logging

    import numpy as np

    try:
        import torch
        import weightwatcher as ww
    except ImportError as err:
        return s.emit("analyze", "skipped", why=f"{_one_line(err)} (see the wheels in bench/device.py's docstring)")
    import contextlib
    import io
    import warnings

    import jaxww

    logging.getLogger("weightwatcher").setLevel(logging.ERROR)
    where = "cuda" if torch.cuda.is_available() else "cpu"
    tensors = {n: t for n, t in jaxww.open_checkpoint(s.path).items() if len(t.shape) == 2}
    tensors = dict(sorted(tensors.items(), key=lambda kv: max(kv[1].shape) * min(kv[1].shape) ** 2))
    ours, against = s.load("stream"), "stream"
    if ours is None:
        ours, against = s.load("host"), "host"
    fits, spent = {}, 0.0
    for name, t in tensors.items():   # one layer at a time, until the section's deadline
        if fits and time.time() + 2 * spent / len(fits) > s.args.deadline:
            break
        w = torch.from_numpy(np.asarray(t.read(), np.float32))
        if "embed" in name:
            module = torch.nn.Embedding(*w.shape, _weight=w)
        else:
            module = torch.nn.Linear(w.shape[1], w.shape[0], bias=False)
            module.weight = torch.nn.Parameter(w, requires_grad=False)
        model = torch.nn.Sequential(module).to(where)
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t0 = time.perf_counter()
            details = ww.WeightWatcher(model=model).analyze(plot=False)
            seconds = time.perf_counter() - t0
        spent += seconds
        if len(details) != 1:
            s.emit(name, "failed", seconds=round(seconds, 3), why=f"weightwatcher gave {len(details)} rows")
            continue
        r = details.iloc[0]
        fits[name] = {"alpha": float(r["alpha"]), "spikes": int(r["num_pl_spikes"]), "xmin": float(r["xmin"]),
                      "status": "success"}
        jx = (ours or {}).get(name, {})
        s.emit(name, device=f"torch {where}", seconds=round(seconds, 3), alpha=fits[name]["alpha"],
               jaxww_alpha=jx.get("alpha"), same_xmin=jx.get("spikes") == fits[name]["spikes"] if jx else None)
    vs = compare(fits, ours) if ours else {"why": "no jaxww alphas (sections stream and host failed)"}
    s.emit(f"weightwatcher {ww.__version__}", device=f"torch {where}", seconds=round(spent, 2),
           layers=f"{len(fits)}/{len(tensors)}", against=against if ours else "", **vs,
           note="the first layer includes CUDA's start" if where == "cuda" else "")


def section_host(s: Section) -> None:
    import jax

    _drop_cache(s.path)
    seconds, fits, _ = _analyze(s, s.path, jax.devices("cpu")[0])
    s.save("host", fits)
    stream = s.load("stream")
    s.emit("analyze(path)", device=f"cpu x{os.cpu_count()} LAPACK", seconds=round(seconds, 2), layers=len(fits),
           **(dict(against="stream", **compare(fits, stream)) if stream else {}))


# ----------------------------------------------------------------------------- main

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dry-run", action="store_true", help="every section at a tiny size on the CPU")
    ap.add_argument("--total-seconds", type=float, default=360.0, help="time box of the whole run")
    ap.add_argument("--blocks", type=int, default=2, help="Llama-2-7B decoder blocks in the checkpoint")
    ap.add_argument("--memory-budget", default=None, help="analyze(memory_budget=...), e.g. 8GiB")
    ap.add_argument("--keep", action="store_true", help="keep the work folder (checkpoint, stderr of sections)")
    ap.add_argument("--section", choices=[n for n, _, _ in SECTIONS], help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    ap.add_argument("--t0", type=float, help=argparse.SUPPRESS)
    ap.add_argument("--deadline", type=float, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.section is None:
        return orchestrate(args)
    globals()[f"section_{args.section}"](Section(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
