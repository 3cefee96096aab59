"""Models initialised in one compiled program.

Run eagerly, a model's constructor dispatches every initialiser and small op on its own:
one XLA program per parameter shape (a truncated normal, its scaling, a split of the key,
...), each compiled the first time a process meets it. Built under one ``jit``, the
constructor is traced once and compiles (or loads from JAX's compilation cache) one program
for the whole model.

The draws are the eager constructor's: the keys are those ``nnx.Rngs(seed, features=feature_seed)``
makes from the integers, given to the program as arguments (so every seed shares one
compilation), and each initialiser computes the same operations on them as it does eagerly.
Under XLA's default flags the parameters are equal bit for bit; compiled without LLVM's
expensive passes (the tests' flags), a few draws differ in the last place or two.
"""

from __future__ import annotations

import functools
from collections.abc import Hashable
from typing import TypeVar

import jax
from flax import nnx

from fae_lab.models.features import CoordinateFeatures

M = TypeVar("M", bound=nnx.Module)


def initialised(cls: type[M], *args: Hashable, seed: int, feature_seed: int, **kwargs: Hashable) -> M:
    """``cls(*args, **kwargs, rngs=nnx.Rngs(seed, features=feature_seed))``, constructed in one
    compiled program.

    ``cls`` must be a pure constructor (its checks of the arguments run while it is traced,
    and raise as they do eagerly). With hashable arguments the program is kept per ``(cls,
    args, kwargs)`` for the process, so a second model of the same settings is neither traced
    nor compiled again, whatever its seeds. Checks that need the drawn values, which a traced
    constructor cannot make, run on the built model afterwards
    (:meth:`CoordinateFeatures.check_drawn`).
    """
    settings = (cls, args, tuple(sorted(kwargs.items())))
    keys = jax.random.key(seed), jax.random.key(feature_seed)
    try:
        hash(settings)
    except TypeError:  # e.g. a hand-made config holding a list: traced for this call only
        model = nnx.jit(lambda key, features: cls(*args, **kwargs, rngs=nnx.Rngs(key, features=features)))(*keys)
    else:
        model = _construct(*settings, *keys)
    for _, module in nnx.iter_modules(model):
        if isinstance(module, CoordinateFeatures):
            module.check_drawn()
    return model


@functools.partial(nnx.jit, static_argnums=(0, 1, 2))
def _construct(cls, args: tuple, kwargs: tuple, key: jax.Array, features: jax.Array):
    return cls(*args, **dict(kwargs), rngs=nnx.Rngs(key, features=features))
