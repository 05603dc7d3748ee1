"""Host calls inside a traced program: NumPy on the host, in the middle of a JAX program.

:func:`host_call` is the one entry: on a CPU device :func:`on_cpu` (the callback reads and
writes XLA's own buffers, no JAX inside it, so it cannot stall the devices of a
multi-device program); elsewhere ``jax.pure_callback``, where float64 arrays cross as
uint32 words (they would be cast to float32 when x64 is enabled only by a context
manager: the callback runs on another thread).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental.buffer_callback import buffer_callback


def host_call(fn, shapes, *args, vmap_method=None) -> tuple:
    """``fn(*args)`` on the host, inside a traced program: NumPy arrays in, NumPy arrays of
    ``shapes`` (``jax.ShapeDtypeStruct``) out, as a tuple of arrays.

    On the CPU :func:`on_cpu`; elsewhere ``jax.pure_callback`` (the operands and results
    copied between the device and the host; float64 crosses as uint32 words, see
    :func:`_words`). ``vmap_method`` as in ``jax.pure_callback``.
    """
    return jax.lax.platform_dependent(*args, cpu=lambda *a: on_cpu(fn, shapes, *a, vmap_method=vmap_method),
                                      default=lambda *a: _pure_call(fn, shapes, a, vmap_method))


def on_cpu(fn, shapes, *args, vmap_method=None) -> tuple:
    """:func:`host_call` on a CPU device: ``fn`` reads the operands' buffers in place
    (read-only NumPy views), its results are copied into XLA's, and nothing inside the
    callback calls JAX (``jax.experimental.buffer_callback``).

    Workaround (jax 0.10.2): ``jax.pure_callback`` ``device_put``s its operands onto a
    CPU device inside the callback, and that copy waits for a thread of the CPU client's
    pool. In a program on several CPU devices every thread of the pool (one per device
    where there are more devices than cores) runs a device, the other devices waiting
    in the rendezvous of a collective for the one in the callback, so the copy never
    runs: the program hangs, then aborts ("Expected 8 threads to join the rendezvous,
    but only 7 of them arrived"). In such a program a callback whose operands are
    replicated runs on every device (each computes the same); :mod:`jaxww.linalg.sharded` splits
    the work of params sharded over a mesh between the devices instead.
    """
    def callback(ctx, outs, *ins):
        views = []
        for b in ins:
            view = np.asarray(b)
            view.flags.writeable = False
            views.append(view)
        for out, r in zip(outs, fn(*views)):
            np.asarray(out)[...] = r

    return tuple(buffer_callback(callback, tuple(shapes), vmap_method=vmap_method)(*args))


def _pure_call(fn, shapes, args, vmap_method) -> tuple:
    """:func:`host_call` through ``jax.pure_callback``, float64 as words both ways."""
    dtypes = [np.dtype(a.dtype) for a in args]

    def host(*xs):
        out = fn(*[_np_unwords(x, dt) for x, dt in zip(xs, dtypes)])
        return tuple(_np_words(np.ascontiguousarray(r)) for r in out)

    out = jax.pure_callback(host, tuple(_shape_struct(s.shape, s.dtype) for s in shapes),
                            *[_words(a) for a in args], vmap_method=vmap_method)
    return tuple(_unwords(o, s.dtype) for o, s in zip(out, shapes))


# float64 across jax.pure_callback: when x64 is on only through a context manager, the
# callback (another thread) would see float64 arrays cast to float32, so they cross as
# pairs of uint32 words. ``words``/``unwords`` on the JAX side, ``np_*`` on the host side.
def _words(x):
    """A float64 JAX array as ``(..., 2)`` uint32 words; other dtypes unchanged."""
    return jax.lax.bitcast_convert_type(x, jnp.uint32) if x.dtype == jnp.float64 else x


def _unwords(x, dtype):
    """The inverse of :func:`_words` for an array of ``dtype``."""
    return jax.lax.bitcast_convert_type(x, dtype) if dtype == jnp.float64 else x


def _np_unwords(x, dtype):
    """On the host: :func:`_words` back to a float64 NumPy array (other dtypes unchanged)."""
    x = np.asarray(x)
    return x.view(np.float64)[..., 0] if dtype == np.float64 else x


def _np_words(x):
    """On the host: a float64 NumPy array as uint32 words (other dtypes unchanged)."""
    return x.view(np.uint32).reshape(x.shape + (2,)) if x.dtype == np.float64 else x


def _shape_struct(shape, dtype):
    """The ``jax.ShapeDtypeStruct`` a callback result of ``shape`` and ``dtype`` crosses as."""
    if dtype == jnp.float64:
        return jax.ShapeDtypeStruct(tuple(shape) + (2,), jnp.uint32)
    return jax.ShapeDtypeStruct(tuple(shape), dtype)
