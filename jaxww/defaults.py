"""Defaults and texts shared by the API and the command line (this module imports nothing,
so that ``jaxww --help`` starts at once)."""

#: Size limits of a layer (weightwatcher's): kept when ``MIN_EVALS <= M * rf <= MAX_EVALS``
#: and ``N <= MAX_N``.
MIN_EVALS, MAX_EVALS, MAX_N = 8, 15000, 50000

#: How a leaf can be read (``layouts=``; jaxww/reading/layouts.py says what each means).
BASE_LAYOUTS = ("dense", "embedding", "conv", "conv_torch", "attention_qkv", "attention_out")
LAYOUTS = BASE_LAYOUTS + tuple("stacked_" + b for b in BASE_LAYOUTS) + ("skip",)

#: What :func:`jaxww.load_params` reads, as error messages say it.
SUPPORTED = ("a .npz, .safetensors, Flax .msgpack, Keras .weights.h5 / .keras or PyTorch .pth / .bin file, "
             "a safetensors directory (model.safetensors, or a *.safetensors.index.json "
             "with its shards) or an Orbax checkpoint directory")
