"""Defaults and texts shared by the API and the command line (this module imports nothing,
so that ``jaxww --help`` starts at once)."""

#: Size limits of a layer (weightwatcher's): kept when ``MIN_EVALS <= M * rf <= MAX_EVALS``
#: and ``N <= MAX_N``.
MIN_EVALS, MAX_EVALS, MAX_N = 8, 15000, 50000

#: Fewest eigenvalues whose fit carries a verdict. Measured (``python bench/verdicts.py``):
#: below 32, 8-100% of Gaussian random matrices fit alpha < 2 ("over-trained"); from 32 on,
#: at most 2% of them, and no Student-t(1.5) matrix fits alpha > 6 (docs/conventions.md, section 8).
#: The training-time uses of alpha (penalties, transforms) act only on such layers by default.
MIN_VERDICT_EVALS = 32

#: How a leaf can be read (``layouts=``; jaxww/reading/layouts.py says what each means).
BASE_LAYOUTS = ("dense", "embedding", "conv", "conv_torch", "attention_qkv", "attention_out")
LAYOUTS = BASE_LAYOUTS + tuple("stacked_" + b for b in BASE_LAYOUTS) + ("skip",)

#: The ``fix_fingers=`` and ``fit=`` choices of :func:`jaxww.analyze` (the command line's
#: ``--fix-fingers`` and ``--fit``).
FIX_FINGERS = ("clip_xmax", "xmin_peak")
FITS = ("PL", "TPL", "E_TPL")
#: The ``estimator=`` choices (``--estimator``), described in :mod:`jaxww.fit.estimators`.
ESTIMATOR_NAMES = ("csn", "hill_median", "alpha_mid", "alpha_peak")

#: What :func:`jaxww.load_params` reads, as error messages say it.
SUPPORTED = ("a .npz, .safetensors, Flax .msgpack, Keras .weights.h5 / .keras or PyTorch .pth / .bin file, "
             "a safetensors directory (model.safetensors, or a *.safetensors.index.json "
             "with its shards) or an Orbax checkpoint directory")
