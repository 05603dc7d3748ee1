"""Models and checkpoints as JAX and PyTorch users save them: NNX variable wrappers,
training states with optimizer moments, PyTorch state dicts."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxww


def _cnn():
    from flax import nnx

    class CNN(nnx.Module):
        def __init__(self, rngs):
            self.c1 = nnx.Conv(1, 16, (3, 3), rngs=rngs)
            self.c2 = nnx.Conv(16, 32, (3, 3), rngs=rngs)
            self.fc = nnx.Linear(32 * 8 * 8, 64, rngs=rngs)
            self.out = nnx.Linear(64, 10, rngs=rngs)

    return CNN(nnx.Rngs(0))


def test_nnx_state_saved_with_orbax_reads_like_the_live_module(tmp_path):
    """``StandardCheckpointer().save(d, nnx.state(cnn, nnx.Param))`` stores ``c1/kernel/value``:
    read as ``c1/kernel``, the convolutions analysed as the live module's are, given the
    module's layouts (``c1`` has one input channel: a tree alone cannot tell it from a
    depthwise convolution, and refuses it with the hint)."""
    ocp = pytest.importorskip("orbax.checkpoint")
    from flax import nnx

    cnn = _cnn()
    ckpt = ocp.StandardCheckpointer()
    ckpt.save(str(tmp_path / "cnn"), nnx.state(cnn, nnx.Param))
    ckpt.wait_until_finished()
    live = jaxww.analyze(cnn)
    bare = jaxww.analyze(tmp_path / "cnn")
    assert [(s.name, s.kind) for s in bare.skipped_rows if s.kind == "layout"] == [("c1/kernel", "layout")]
    layouts = jaxww.model_layouts(cnn)
    for saved in (jaxww.analyze(tmp_path / "cnn", layouts=layouts),
                  jaxww.analyze(jaxww.load_params(tmp_path / "cnn"), layouts=layouts)):
        assert [r["name"] for r in saved.rows] == [r["name"] for r in live.rows] == \
            ["c1/kernel", "c2/kernel", "fc/kernel", "out/kernel"]
        assert [r["layer_type"] for r in saved.rows] == ["conv2d", "conv2d", "dense", "dense"]
        assert [r["alpha"] for r in saved.rows] == [r["alpha"] for r in live.rows]


def test_value_wrappers_in_a_pure_dict():
    w = np.random.default_rng(0).standard_normal((3, 3, 8, 16)).astype(np.float32)
    rows = jaxww.analyze({"conv": {"kernel": {"value": w}}, "attn": {"value": {"kernel": {"raw_value": w[0, 0]}}}}).rows
    assert [(r["name"], r["layer_type"]) for r in rows] == [("conv/kernel", "conv2d"), ("attn/value/kernel", "dense")]


def test_train_state_reads_its_params_and_skips_optimizer_state():
    import flax.linen as nn
    from flax.training import train_state

    class MLP(nn.Module):
        @nn.compact
        def __call__(self, x):
            for width in (64, 32):
                x = nn.relu(nn.Dense(width)(x))
            return nn.Dense(10)(x)

    params = MLP().init(jax.random.key(0), jnp.zeros((1, 16)))["params"]
    ts = train_state.TrainState.create(apply_fn=MLP().apply, params=params, tx=optax.adam(1e-3))
    names = ["Dense_0/kernel", "Dense_1/kernel", "Dense_2/kernel"]
    assert [r["name"] for r in jaxww.analyze(ts).rows] == names
    # the same state as a saved dict: the moments are skipped, named as optimizer state
    saved = {"step": 0, "params": params, "opt_state": jax.tree.map(np.asarray, ts.opt_state)}
    rep = jaxww.analyze(saved)
    assert [r["name"] for r in rep.rows] == ["params/" + n for n in names]
    opt = [s for s in rep.skipped_rows if s.kind == "optimizer"]
    assert len(opt) == 13 and all("optimizer state" in s.reason for s in opt)   # count, mu, nu


def test_nnx_optimizer_is_refused_with_the_hint():
    from flax import nnx

    opt = nnx.Optimizer(_cnn(), optax.adam(1e-3), wrt=nnx.Param)
    if getattr(opt, "model", None) is not None:
        pytest.skip("this flax keeps the model in the optimizer")
    with pytest.raises(TypeError, match=r"pass the model itself, e\.g\. analyze\(model\)"):
        jaxww.analyze(opt)


def test_pytorch_state_dict_and_pth_file(tmp_path):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3), torch.nn.Flatten(), torch.nn.Linear(16 * 6 * 6, 10))
    sd = net.state_dict()
    ref = {k: v.numpy() for k, v in sd.items()}
    rows = jaxww.analyze(sd).rows
    assert [(r["name"], r["layer_type"]) for r in rows] == [("0.weight", "conv2d"), ("2.weight", "dense")]
    assert [r["alpha"] for r in rows] == [r["alpha"] for r in jaxww.analyze(ref).rows]
    half = {k: v.to(torch.bfloat16) for k, v in sd.items()}
    assert jaxww.analyze(half).rows[1]["alpha"] == jaxww.analyze(
        {k: v.float().numpy() for k, v in half.items()}).rows[1]["alpha"]
    torch.save(sd, tmp_path / "model.pth")
    loaded = jaxww.load_params(tmp_path / "model.pth")
    assert set(loaded) == set(ref) and all(np.array_equal(loaded[k], ref[k]) for k in ref)
    assert [r["name"] for r in jaxww.analyze(tmp_path / "model.pth").rows] == ["0.weight", "2.weight"]
    (tmp_path / "bad.bin").write_bytes(b"not a zip")
    with pytest.raises(jaxww.CheckpointError, match="bad.bin: not a PyTorch state dict"):
        jaxww.load_params(tmp_path / "bad.bin")


def test_keras_cnn_weights_files_read_like_the_live_model(tmp_path):
    """``save_weights`` and ``.keras`` store ``layers/<layer>/vars/<i>`` without variable
    names: a conv2d layer's ``vars/0`` is read as its live kernel is (same alphas); the
    depthwise kernel is skipped, as for the live model."""
    os.environ.setdefault("KERAS_BACKEND", "jax")
    keras = pytest.importorskip("keras")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Conv2D(8, 3), keras.layers.DepthwiseConv2D(3),
                              keras.layers.Conv2D(16, 3), keras.layers.Flatten(), keras.layers.Dense(32),
                              keras.layers.Dense(10)])
    model.save_weights(tmp_path / "cnn.weights.h5")
    model.save(tmp_path / "cnn.keras")
    live = [(r["layer_type"], r["alpha"]) for r in jaxww.analyze(model).rows]
    assert [t for t, _ in live] == ["conv2d", "conv2d", "dense", "dense"]
    for path in ("cnn.weights.h5", "cnn.keras"):
        rep = jaxww.analyze(tmp_path / path)
        assert [(r["layer_type"], r["alpha"]) for r in rep.rows] == live, path
        depthwise = [s for s in rep.skipped_rows if s.name == "layers/depthwise_conv2d/vars/0"]
        assert depthwise and "per-channel filters" in depthwise[0].reason
