"""Defaults and texts shared by the API and the command line (this module imports nothing,
so that ``jaxww --help`` starts at once)."""

#: Size limits of a layer (weightwatcher's): kept when ``MIN_EVALS <= M * rf <= MAX_EVALS``
#: and ``N <= MAX_N``.
MIN_EVALS, MAX_EVALS, MAX_N = 8, 15000, 50000

#: What :func:`jaxww.load_params` reads, as error messages say it.
SUPPORTED = ("a .npz, .safetensors, Flax .msgpack, Keras .weights.h5 / .keras or PyTorch .pth / .bin file, "
             "a safetensors directory (model.safetensors, or a *.safetensors.index.json "
             "with its shards) or an Orbax checkpoint directory")
