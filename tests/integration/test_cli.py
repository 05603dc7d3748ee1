"""The command line's options, outputs and errors."""

import argparse
import json
import os
import re
import shlex
import subprocess
import sys

import numpy as np
import pytest

from jaxww import cli

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _torch_like(tmp_path):
    """A PyTorch-style flat dict in an .npz: a 4-D 'weight' convolution and two dense layers."""
    rng = np.random.default_rng(0)
    path = tmp_path / "m.npz"
    np.savez(path, **{"features.0.weight": rng.standard_t(3, (32, 16, 3, 3)).astype(np.float32),
                      "fc1.weight": rng.standard_t(3, (64, 96)).astype(np.float32),
                      "fc2.weight": rng.standard_t(3, (10, 64)).astype(np.float32)})
    return str(path)


def test_help_and_version_do_not_import_jax():
    out = subprocess.run([sys.executable, "-c", "import sys, jaxww.cli, jaxww; print('jax' in sys.modules)"],
                         env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--version"])
    assert exit_.value.code == 0


def test_json_output_with_ids_layouts_and_options(tmp_path, capsys):
    path = _torch_like(tmp_path)
    out = tmp_path / "r.json"
    assert cli.main(["analyze", path, "--quiet", "--format", "json", "--out", str(out), "--layers", "0,2",
                     "--layouts", "features=conv_torch", "--mp-fit", "--min-evals", "4"]) == 0
    doc = json.loads(out.read_text())
    assert [(r["layer_id"], r["name"], r["layer_type"]) for r in doc["rows"]] == [
        (0, "features.0.weight", "conv2d"), (2, "fc2.weight", "dense")]
    assert "num_spikes" in doc["rows"][0] and doc["options"]["mp_fit"] is True
    assert set(doc["summary"]) >= {"alpha", "alpha_weighted"} and doc["jaxww_version"]
    assert any(s["name"] == "fc1.weight" and s["kind"] == "filter" for s in doc["skipped"])
    assert "2 rows written to" in capsys.readouterr().err


def test_table_and_csv(tmp_path, capsys):
    path = _torch_like(tmp_path)
    assert cli.main(["analyze", path, "--quiet", "--layouts", "features=conv_torch"]) == 0
    text = capsys.readouterr().out
    assert "features.0.weight" in text and "summary (means over successful fits)" in text
    csv = tmp_path / "r.csv"
    assert cli.main(["analyze", path, "--quiet", "--format", "csv", "--out", str(csv)]) == 0
    assert csv.read_text().splitlines()[0].startswith("layer_id,name,")


@pytest.mark.parametrize("args, says", [
    (["--out", "/no/such/dir/r.json"], "--out /no/such/dir/r.json: no writable directory /no/such/dir"),
    (["--plots", "/no/such/dir/img"], "--plots /no/such/dir/img: no writable directory /no/such/dir"),
    (["--layers", "99"], "no layer 99; layer ids are 0..2"),
    (["--scan-axis", "1", "--scan-axis", "x=2"], "a bare AXIS cannot be combined"),
])
def test_mistakes_exit_2_with_one_paragraph(tmp_path, capsys, monkeypatch, args, says):
    path = _torch_like(tmp_path)
    calls = []
    if args[0] in ("--out", "--plots"):   # refused before any work
        import jaxww.analysis.analyze
        monkeypatch.setattr(jaxww.analysis.analyze, "analyze", lambda *a, **k: calls.append(1))
    assert cli.main(["analyze", path, "--quiet", *args]) == 2
    err = capsys.readouterr().err
    assert says in err and "Traceback" not in err and err.rstrip().endswith("(--debug shows the traceback)")
    assert calls == []


def test_bad_option_values_are_usage_errors(tmp_path, capsys):
    for args in (["--layouts", "x=nonsense"], ["--layers", "("], ["--max-N", "-1"], ["--min-evals", "x"]):
        with pytest.raises(SystemExit) as exit_:
            cli.main(["analyze", "x.npz", *args])
        assert exit_.value.code == 2, args
        assert "Traceback" not in capsys.readouterr().err


def test_plots_written(tmp_path):
    pytest.importorskip("matplotlib")
    path = _torch_like(tmp_path)
    assert cli.main(["analyze", path, "--quiet", "--plots", str(tmp_path / "img")]) == 0
    pngs = [f for f in os.listdir(tmp_path / "img") if f.endswith(".png")]
    assert len(pngs) == 4 and "summary.png" in pngs   # one per layer and the model's page


def test_ambiguous_directory_names_both(tmp_path, capsys):
    ocp = pytest.importorskip("orbax.checkpoint")
    save_file = pytest.importorskip("safetensors.numpy").save_file
    w = np.random.default_rng(0).standard_normal((64, 32)).astype(np.float32)
    ckpt = ocp.StandardCheckpointer()
    ckpt.save(str(tmp_path / "both"), {"dense": {"kernel": w}})
    ckpt.wait_until_finished()
    save_file({"dense.weight": w}, str(tmp_path / "both" / "model.safetensors"))
    assert cli.main(["analyze", str(tmp_path / "both"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "holds both an Orbax checkpoint and safetensors (model.safetensors)" in err


def test_orbax_step_without_log_noise(tmp_path, capfd):
    ocp = pytest.importorskip("orbax.checkpoint")
    w = np.random.default_rng(0).standard_normal((64, 32)).astype(np.float32)
    with ocp.CheckpointManager(str(tmp_path / "run")) as mngr:
        mngr.save(3, args=ocp.args.StandardSave({"dense": {"kernel": w}}))
        mngr.wait_until_finished()
    capfd.readouterr()
    assert cli.main(["analyze", str(tmp_path / "run" / "3"), "--quiet"]) == 0
    out, err = capfd.readouterr()
    assert "dense/kernel" in out and "WARNING" not in err


@pytest.mark.parametrize("argv", [["--version"], ["analyze", "--version"], ["describe", "m.npz", "--version"],
                                  ["demo", "--version"]])
def test_version_anywhere(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    assert exit_.value.code == 0 and capsys.readouterr().out.startswith("jaxww ")


def test_describe_formats_out_and_header(tmp_path, capsys):
    path = _torch_like(tmp_path)
    assert cli.main(["describe", path]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["layer_id", "name", "layer_type", "shape", "N", "M", "rf", "num_evals"]
    assert lines[-1] == "3 layers to analyse, 0 leaves skipped"
    out = tmp_path / "d.json"
    assert cli.main(["describe", path, "--format", "json", "--out", str(out), "--layers", "0,2"]) == 0
    doc = json.loads(out.read_text())
    assert [(r["layer_id"], r["name"], r["shape"]) for r in doc["rows"]] == [
        (0, "features.0.weight", [32, 16, 3, 3]), (2, "fc2.weight", [10, 64])]
    assert doc["options"]["layers"] == [0, 2] and doc["checkpoint"] == path and doc["jaxww_version"]
    assert [s["kind"] for s in doc["skipped"]] == ["filter"]
    assert "2 rows written to" in capsys.readouterr().err
    assert cli.main(["describe", path, "--format", "csv"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == "layer_id,name,layer_type,shape,N,M,Q,rf,num_evals"


def test_optional_fits_reach_analyze(tmp_path, monkeypatch):
    """--fix-fingers, --fit, --bootstrap with a key from --seed, --ERG, --vectors, --no-pool, as
    analyze's arguments."""
    import jax
    import jaxww.analysis.analyze

    seen = {}
    real = jaxww.analysis.analyze.analyze
    monkeypatch.setattr(jaxww.analysis.analyze, "analyze", lambda p, **kw: seen.update(kw) or real(p, min_evals=4))
    path = _torch_like(tmp_path)
    assert cli.main(["analyze", path, "--quiet", "--fix-fingers", "xmin_peak", "--fit", "E_TPL",
                     "--bootstrap", "7", "--seed", "3"]) == 0
    assert (seen["fix_fingers"], seen["fit"], seen["bootstrap"]) == ("xmin_peak", "E_TPL", 7)
    np.testing.assert_array_equal(jax.random.key_data(seen["key"]), jax.random.key_data(jax.random.key(3)))
    assert cli.main(["analyze", path, "--quiet"]) == 0
    assert (seen["fix_fingers"], seen["fit"], seen["bootstrap"], seen["key"]) == (None, "PL", 0, None)
    assert (seen["ERG"], seen["vectors"], seen["pool"]) == (False, False, True)
    assert cli.main(["analyze", path, "--quiet", "--ERG", "--vectors", "--no-pool"]) == 0
    assert (seen["ERG"], seen["vectors"], seen["pool"]) == (True, True, False)


def test_option_mistakes_exit_2(tmp_path, capsys):
    path = _torch_like(tmp_path)
    assert cli.main(["analyze", path, "--quiet", "--fit", "TPL", "--fix-fingers", "clip_xmax"]) == 2
    err = capsys.readouterr().err
    assert "cannot be combined" in err and "Traceback" not in err
    for args in (["--fit", "XX"], ["--bootstrap", "-1"], ["--fix-fingers", "all"]):
        with pytest.raises(SystemExit) as exit_:
            cli.main(["analyze", path, *args])
        assert exit_.value.code == 2 and "Traceback" not in capsys.readouterr().err
    assert cli.main(["describe", path, "--out", str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err


def _many_leaves(tmp_path):
    """Six blocks of two matrices and two norm scales, a head with NaN, an ambiguous 3-D leaf."""
    rng = np.random.default_rng(1)
    tensors = {}
    for b in range(6):
        tensors[f"blocks.{b}.up.weight"] = rng.standard_t(3, (48, 24)).astype(np.float32)
        tensors[f"blocks.{b}.down.weight"] = rng.standard_t(3, (24, 48)).astype(np.float32)
        tensors[f"blocks.{b}.norm1.weight"] = np.ones(24, np.float32)
        tensors[f"blocks.{b}.norm2.weight"] = np.ones(24, np.float32)
    head = rng.standard_normal((40, 24)).astype(np.float32)
    head[0, 0] = np.nan
    tensors["head.weight"] = head
    tensors["mix.w"] = rng.standard_normal((4, 16, 16)).astype(np.float32)
    path = tmp_path / "many.npz"
    np.savez(path, **tensors)
    return str(path)


def test_table_counts_skipped_leaves_and_ends_as_print_report(tmp_path, capsys):
    import jaxww

    path = _many_leaves(tmp_path)
    assert cli.main(["analyze", path, "--quiet", "--layers", "1,8,12"]) == 0
    out = capsys.readouterr().out
    assert "skipped: 12 not a matrix (0-D/1-D or empty: biases, norm scales), " \
           "10 excluded by the layers filter; --verbose lists them" in out
    assert "norm1" not in out and "blocks.0.up.weight" not in out    # counted, not listed
    assert "1 whose layout could not be told apart:\n  mix.w (4, 16, 16): layout of a 3-D leaf" in out
    report = jaxww.analyze(path, layers=[1, 8, 12])
    assert out.endswith("\n\n" + report.text("--max-N none --max-evals none") + "\n")
    assert "1 failed:\n  head.weight: weights contain NaN or Inf" in out
    assert cli.main(["analyze", path, "--quiet", "--layers", "1,8,12", "--verbose"]) == 0
    verbose = capsys.readouterr().out
    assert verbose.count("excluded by the layers filter") == 10 and verbose.count("1-D leaf: not a matrix") == 12
    assert cli.main(["describe", path]) == 0
    described = capsys.readouterr().out
    assert "skipped: 12 not a matrix" in described and "norm1" not in described


def test_table_shows_the_columns_of_the_options(tmp_path, capsys):
    path = _torch_like(tmp_path)
    assert cli.main(["analyze", path, "--quiet", "--mp-fit"]) == 0
    head = capsys.readouterr().out.splitlines()[0].split()
    assert head[-6:] == ["num_spikes", "sigma_mp", "mp_softrank", "bulk_min", "bulk_max", "bulk_max_tw"]


# --- every command line the README and docs/*.md show runs -------------------------------

DOCS = [os.path.join(ROOT, "README.md")] + sorted(
    os.path.join(ROOT, "docs", f) for f in os.listdir(os.path.join(ROOT, "docs")) if f.endswith(".md"))
_FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.S | re.M)
_SHELL = ("bash", "console", "text", "sh", "shell", "")
_SUBCOMMANDS = ("analyze", "describe", "demo")
_EXIT = re.compile(r"#\s*exits?(?:\s+code)?\s+(\d+)")


def _commands(text: str):
    """The jaxww command lines in one shell line: ``(argv, python_m)`` per ``python -m jaxww``
    or ``jaxww`` command (env assignments and redirections dropped; a bare ``jaxww`` or
    ``jaxww 0.1.0``, as output shows, is no command)."""
    try:
        lex = shlex.shlex(text, posix=True, punctuation_chars=True)
        lex.whitespace_split, lex.commenters = True, "#"
        tokens = list(lex)
    except ValueError:
        return
    segments, current = [], []
    for t in tokens:
        if t in ("&&", "||", ";", "|", "&"):
            segments.append(current)
            current = []
        else:
            current.append(t)
    segments.append(current)
    for seg in segments:
        while seg and re.fullmatch(r"\w+=\S*", seg[0]):
            seg = seg[1:]
        python_m = seg[:3] in (["python", "-m", "jaxww"], ["python3", "-m", "jaxww"])
        if not (python_m or seg[:1] == ["jaxww"]):
            continue
        argv = seg[3:] if python_m else seg[1:]
        argv = [t for i, t in enumerate(argv) if t not in (">", ">>", "<") and (i == 0 or argv[i - 1] not in (">", ">>", "<"))]
        if argv and (argv[0] in _SUBCOMMANDS or argv[0].startswith("-")):
            yield argv, python_m


def _shell_lines(lang: str, body: str, first: int):
    """``(line number, text)`` of the commands of a fenced block (console: the ``$`` lines;
    a trailing ``\\`` continues a line)."""
    pending, start = "", None
    for n, line in enumerate(body.splitlines(), first):
        if lang == "console" and not pending:
            if not line.startswith("$ "):
                continue
        line = line[2:] if line.startswith("$ ") and not pending else line
        start = start if pending else n
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        yield start, pending + line
        pending = ""


def _examples():
    """Every documented command line: ``(file, line, argv, python_m, exit code)``; the exit
    code is 0 unless the line ends with a comment ``# exit N``. Inline code naming a
    subcommand with nothing after it (``jaxww describe``) is a mention, not an example."""
    found = []
    for path in DOCS:
        text = open(path, encoding="utf-8").read()
        where = os.path.relpath(path, ROOT)
        fenced = [(m.start(), m.end()) for m in _FENCE.finditer(text)]
        for m in _FENCE.finditer(text):
            if m.group(1) in _SHELL:
                first = text[:m.start(2)].count("\n") + 1
                for n, line in _shell_lines(m.group(1), m.group(2), first):
                    code = _EXIT.search(line)
                    found += [(where, n, argv, pm, int(code.group(1)) if code else 0) for argv, pm in _commands(line)]
        for m in re.finditer(r"(?<!`)`([^`]+)`(?!`)", text):
            if any(a <= m.start() < b for a, b in fenced):
                continue
            n = text[:m.start()].count("\n") + 1
            for argv, pm in _commands(m.group(1).replace("\n", " ")):
                if not (len(argv) == 1 and argv[0] in ("analyze", "describe")):
                    found.append((where, n, argv, pm, 0))
    return found


EXAMPLES = _examples()
#: Layer ids the examples name: the generated checkpoint has that many layers.
_IDS = [int(i) for _, _, argv, _, _ in EXAMPLES for a, b in zip(argv, argv[1:] + [""])
        if a == "--layers" and re.fullmatch(r"[\d,\s]+", b) for i in b.split(",")]


@pytest.fixture(scope="module")
def doc_checkpoint(tmp_path_factory):
    """A small Hugging Face-named checkpoint: blocks of q_proj / up_proj / down_proj, their
    norms, an embedding, a head and a PyTorch convolution; as many layers as the examples'
    ``--layers`` ids need."""
    rng = np.random.default_rng(0)
    tensors = {"model.embed_tokens.weight": rng.standard_t(3, (64, 16)).astype(np.float32),
               "features.0.conv.weight": rng.standard_t(3, (16, 8, 3, 3)).astype(np.float32)}
    blocks = max([3] + [(i + 3) // 3 for i in _IDS])
    for b in range(blocks):
        for name, shape in (("self_attn.q_proj", (16, 16)), ("mlp.up_proj", (32, 16)), ("mlp.down_proj", (16, 32))):
            tensors[f"model.layers.{b}.{name}.weight"] = rng.standard_t(3, shape).astype(np.float32)
        tensors[f"model.layers.{b}.input_layernorm.weight"] = np.ones(16, np.float32)
    tensors.update({"model.norm.weight": np.ones(16, np.float32),
                    "lm_head.weight": rng.standard_t(3, (24, 16)).astype(np.float32)})
    path = tmp_path_factory.mktemp("doc_checkpoint") / "model.npz"
    np.savez(path, **tensors)
    return str(path)


def _runnable(argv, checkpoint, code):
    """``argv`` with its checkpoint replaced by ``checkpoint`` (as written for an example
    documented to fail)."""
    if code or not argv or argv[0] not in ("analyze", "describe"):
        return list(argv)
    try:
        given = cli._parser().parse_args(argv).checkpoint
    except SystemExit:    # --help, --version, or a mistake the run will show
        return list(argv)
    i = argv.index(given, 1)
    return argv[:i] + [checkpoint] + argv[i + 1:]


def _slow(argv) -> bool:
    return bool({"--plots", "--fit", "--bootstrap", "--randomize", "--fix-fingers"} & set(argv))


def test_the_docs_show_command_lines():
    assert any(a[0] == "analyze" for _, _, a, _, _ in EXAMPLES) and any(pm for *_, pm, _ in EXAMPLES)
    assert any(a[0] == "describe" for _, _, a, _, _ in EXAMPLES)


@pytest.mark.parametrize("where, line, argv, python_m, code", [
    pytest.param(*e, marks=[pytest.mark.slow] * _slow(e[2]), id=f"{e[0]}:{e[1]}") for e in EXAMPLES])
def test_documented_command_runs(where, line, argv, python_m, code, doc_checkpoint, tmp_path, monkeypatch, capsys):
    """In-process (``cli.main``), in an empty directory (outputs land there); the demo's
    trainings are replaced by a stub (they are tested in test_io_cli.py)."""
    import jaxww.demo

    monkeypatch.setattr(jaxww.demo, "story", lambda seed: [])
    monkeypatch.setattr(jaxww.demo, "story_text", lambda results: "")
    monkeypatch.chdir(tmp_path)
    run = _runnable(argv, doc_checkpoint, code)
    try:
        got = cli.main(run)
    except SystemExit as stop:   # --help, --version, argparse's usage errors
        got = stop.code or 0
    err = capsys.readouterr().err
    assert got == code, f"{where}:{line}: jaxww {shlex.join(argv)} exited {got}, documented {code}\n{err[-2000:]}"


@pytest.mark.slow   # one process importing JAX
def test_one_documented_python_m_command_runs(doc_checkpoint, tmp_path):
    """The ``python -m jaxww`` form itself, once (a ``describe`` where the docs show one)."""
    shown = sorted((e for e in EXAMPLES if e[3]), key=lambda e: (e[2][0] != "describe", _slow(e[2])))
    where, line, argv, _, code = shown[0]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])))
    proc = subprocess.run([sys.executable, "-m", "jaxww", *_runnable(argv, doc_checkpoint, code)], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == code, f"{where}:{line}: {proc.stderr[-2000:]}"


def test_docs_cli_page_lists_every_option():
    """docs/cli.md's option table: one row per option of the parser, and no other."""
    text = open(os.path.join(ROOT, "docs", "cli.md"), encoding="utf-8").read()
    documented = set(re.findall(r"^\| `(--[\w-]+)", text, re.M))
    parsers = [cli._parser()]
    parsers += [p for a in parsers[0]._actions if isinstance(a, argparse._SubParsersAction) for p in a.choices.values()]
    options = {s for p in parsers for a in p._actions for s in a.option_strings if s.startswith("--")}
    assert documented == options
