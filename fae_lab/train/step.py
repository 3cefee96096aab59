"""The training step and the many-steps-per-call chunk, as pure functions of pytrees.

One step draws a batch on the device (sample, scale and point subsets from
``fold_in(key, step)``, so a resumed run draws exactly what an uninterrupted one would),
evaluates the loss terms, clips the gradient, and applies Adam with a staircase-decayed
learning rate::

    lr(step)  = learning_rate * lr_decay_rate ** floor(step / lr_decay_steps)
    g        <- g * min(1, grad_clip / |g|)                       (grad_clip = inf: off)
    params   <- params - lr(step) * adam(g)

Settings a sweep may vary (learning rate, beta, lambda_grad, p, clipping, schedules) live in
the ``Hyper`` pytree of scalars, not in the traced program, so ``jax.vmap`` over a stack of
them trains several members at once. A non-finite loss, gradient or updated parameters
freezes the state at the last finite step (no update is applied from then on, the step
counter stops) and records the first non-finite step: the host ends that member as
``diverged`` and checkpoints the last finite state; the other members of a vmapped group
are untouched.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.flatten_util import ravel_pytree
from jax.sharding import Mesh, PartitionSpec

from fae_lab.config import RunConfig
from fae_lab.data.sampling import draw_point_subsets, gather_points
from fae_lab.losses import field_loss_terms, latent_penalty, point_l2
from fae_lab.train.devices import AXIS

Array = jax.Array
PyTree = Any


class TrainState(NamedTuple):
    params: PyTree
    opt_state: PyTree
    step: Array  # int32 scalar: steps taken
    diverged_step: Array  # int32 scalar: first non-finite step (1-based, as logged), -1 while healthy


class TrainData(NamedTuple):
    """Everything a step reads, resident on the device."""

    fields: Array  # (N_train, T, R, R) float32
    training_scales: Array  # (T_train,) int32, sharpest first
    grid: Array  # (R*R, 2) float32 coordinates of the grid points


@dataclass(frozen=True)
class StepStatics:
    """The static (shape- and branch-deciding) part of a run's training program."""

    loss_type: str
    h1_form: str
    h1_k0: float | None
    resolution: int
    batch_size: int
    encoder_points: int | None
    decoder_points: int | None

    @classmethod
    def from_config(cls, config: RunConfig, resolution: int) -> StepStatics:
        return cls(
            loss_type=config.loss.loss_type,
            h1_form=config.loss.h1_form,
            h1_k0=config.loss.h1_k0,
            resolution=resolution,
            batch_size=config.optim.batch_size,
            encoder_points=config.data.encoder_points,
            decoder_points=config.data.decoder_points,
        )


def hyper_from_config(config: RunConfig) -> dict[str, Array]:
    """The per-run scalars of the training program (a pytree a sweep can stack)."""
    o, loss, s = config.optim, config.loss, config.schedule
    f32 = jnp.float32
    return {
        "learning_rate": jnp.asarray(o.learning_rate, f32),
        "lr_decay_rate": jnp.asarray(o.lr_decay_rate, f32),
        "lr_decay_steps": jnp.asarray(o.lr_decay_steps, f32),
        "grad_clip": jnp.asarray(o.grad_clip if o.grad_clip is not None else jnp.inf, f32),
        "beta": jnp.asarray(loss.beta, f32),
        "lambda_grad": jnp.asarray(loss.lambda_grad, f32),
        "lambda_grad_start": jnp.asarray(s.lambda_grad_start, f32),
        "lambda_grad_warmup_steps": jnp.asarray(s.lambda_grad_warmup_steps, f32),
        "freq_weight_power": jnp.asarray(loss.freq_weight_power, f32),
        "curriculum_steps": jnp.asarray(s.curriculum_steps, jnp.int32),
    }


def learning_rate_at(hyper: dict[str, Array], step: Array) -> Array:
    """Staircase exponential decay (Bunker et al.: x0.98 every 1000 steps)."""
    return hyper["learning_rate"] * hyper["lr_decay_rate"] ** jnp.floor(
        step.astype(jnp.float32) / hyper["lr_decay_steps"]
    )


def lambda_grad_at(hyper: dict[str, Array], step: Array) -> Array:
    """lambda_grad rising linearly from ``lambda_grad_start`` over the warm-up (the seed's
    "dynamic loss weighting"); constant when the warm-up is 0."""
    warm = hyper["lambda_grad_warmup_steps"]
    frac = jnp.where(warm > 0, jnp.clip(step.astype(jnp.float32) / jnp.maximum(warm, 1.0), 0.0, 1.0), 1.0)
    return hyper["lambda_grad_start"] + frac * (hyper["lambda_grad"] - hyper["lambda_grad_start"])


def active_scale_count(hyper: dict[str, Array], step: Array, n_training_scales: int) -> Array:
    """Curriculum: the sharpest scale first, one more every ``curriculum_steps`` steps."""
    every = hyper["curriculum_steps"]
    grown = 1 + step // jnp.maximum(every, 1)
    return jnp.where(every > 0, jnp.minimum(grown, n_training_scales), n_training_scales)


ApplyFn = Callable[[PyTree, PyTree, Array, Array, Array, Array], tuple[Array, Array]]


def make_train_step(statics: StepStatics, apply_fn: ApplyFn, optimizer: optax.GradientTransformation,
                    data_mesh: Mesh | None = None):
    """Build ``step_fn(state, key, data, hyper, rest) -> (state, per-step metrics)``.

    ``rest`` is the model's untrained state (fixed Fourier matrices). ``data_mesh``, when
    given (one axis of D devices), makes the step data parallel: every device draws the same
    batch, takes its B / D samples, and computes their loss and gradient (``jax.shard_map``);
    the gradient, raveled into one vector, and the loss terms are averaged over the devices
    by one all-reduce. Every loss term is a mean over the batch, so this is the one-device
    step up to float rounding. (Raveling matters on GPUs: one all-reduce instead of one per
    parameter array; benchmarks/RESULTS.md has the timing.)

    ``apply_fn(params, rest, x_enc (Pe,2)|(B,Pe,2), u_enc (B,Pe), x_dec (P,2)|(B,Pd,2),
    field (B,)) -> (u_hat (B,Pd), z)``; ``field = sample * T + scale`` names the training
    field, for the ladder's latent tables (:mod:`fae_lab.models.autodecoder`; the FAE ignores it).
    """
    R, B = statics.resolution, statics.batch_size
    n_points = R * R
    n_devices = 1 if data_mesh is None else data_mesh.devices.size
    if B % n_devices:
        raise ValueError(f"data parallel: batch {B} does not split over {n_devices} devices")
    b = B // n_devices  # samples per device

    def own_part(x: Array | None) -> Array | None:
        """This device's samples of a batch-leading array (all of it on one device)."""
        if x is None or n_devices == 1:
            return x
        return jax.lax.dynamic_slice_in_dim(x, jax.lax.axis_index(AXIS) * b, b, axis=0)

    def batch_loss(params, rest, data: TrainData, key: Array, hyper, lambda_grad, n_active):
        k_sample, k_scale, k_points = jax.random.split(key, 3)
        n_train = data.fields.shape[0]
        sample = jax.random.randint(k_sample, (B,), 0, n_train)
        scale = data.training_scales[jax.random.randint(k_scale, (B,), 0, n_active)]
        enc_idx, dec_idx = draw_point_subsets(
            k_points, B, n_points, statics.encoder_points, statics.decoder_points
        )
        u = own_part(data.fields[sample, scale])  # (b, R, R)
        field = own_part(sample * data.fields.shape[1] + scale)  # (b,): the ladder's latent row
        enc_idx, dec_idx = own_part(enc_idx), own_part(dec_idx)
        u_flat = u.reshape(b, n_points)
        if enc_idx is None:
            x_enc, u_enc = data.grid, u_flat  # the shared grid, (P, 2): its features once, not per sample
        else:
            x_enc, u_enc = gather_points(u_flat, data.grid, enc_idx)
        if dec_idx is None:
            pred, z = apply_fn(params, rest, x_enc, u_enc, data.grid, field)
            terms = field_loss_terms(
                pred.reshape(b, R, R),
                u,
                loss_type=statics.loss_type,
                lambda_grad=lambda_grad,
                freq_weight_power=hyper["freq_weight_power"],
                h1_form=statics.h1_form,
                k0=statics.h1_k0,
            )
        else:
            x_dec, u_dec = gather_points(u_flat, data.grid, dec_idx)
            pred, z = apply_fn(params, rest, x_enc, u_enc, x_dec, field)
            terms = {"l2": point_l2(pred, u_dec)}
        terms = dict(terms)
        terms["latent"] = latent_penalty(z, hyper["beta"])
        total = sum(terms.values())
        return total, terms

    grad_fn = jax.value_and_grad(batch_loss, has_aux=True)
    if n_devices > 1:
        grad_fn = averaged_over_devices(grad_fn, data_mesh)

    def step_fn(state: TrainState, key: Array, data: TrainData, hyper, rest):
        step = state.step
        lambda_grad = lambda_grad_at(hyper, step)
        n_active = active_scale_count(hyper, step, data.training_scales.shape[0])
        (loss, terms), grads = grad_fn(
            state.params, rest, data, jax.random.fold_in(key, step), hyper, lambda_grad, n_active
        )
        new_state, grad_norm, lr = apply_update(optimizer, state, grads, loss, hyper)
        metrics = {
            "train_loss": loss,
            "grad_norm": grad_norm,
            "learning_rate": lr,
            "lambda_grad": lambda_grad,
            "diverged_step": new_state.diverged_step,  # read by the host; the state itself is donated
            **{f"train_loss_{name}": value for name, value in terms.items()},
        }
        return new_state, metrics

    return step_fn


def apply_update(optimizer: optax.GradientTransformation, state: TrainState, grads: PyTree, loss: Array,
                 hyper: dict[str, Array]) -> tuple[TrainState, Array, Array]:
    """One update of ``state`` by ``grads`` (the loss's gradient at ``state.params``):
    ``(new state, |g|, learning rate)``, as the module docstring's formulas say.

    The update runs on the parameters, the gradient and the optimiser's parameter-shaped
    state (Adam's moments) raveled into one vector each: a handful of GPU kernels for the
    clipping, Adam, the finiteness check and the freeze, instead of a few per parameter
    array (benchmarks/RESULTS.md has the timing). The new state has the structure of the old.

    Step s = state.step + 1 is finite when its loss, its gradient and the parameters it
    produces are: a huge learning rate can turn finite gradients into inf parameters, whose
    loss is only NaN one step later. The first non-finite step is recorded and the state stays
    at step s - 1 (step counter included) from then on, so a chunk returns the last finite
    state and the host can checkpoint and evaluate it.
    """
    step = state.step
    params0, unravel = ravel_pytree(state.params)
    g, _ = ravel_pytree(grads)
    opt_state0 = _raveled_moments(state.opt_state, state.params)
    grad_norm = jnp.sqrt(jnp.sum(g * g))
    clip = jnp.minimum(1.0, hyper["grad_clip"] / jnp.maximum(grad_norm, 1e-30))
    updates, opt_state = optimizer.update(g * clip, opt_state0, params0)
    lr = learning_rate_at(hyper, step)
    params = params0 - lr * updates

    healthy = ((state.diverged_step < 0) & jnp.isfinite(loss) & jnp.isfinite(grad_norm)
               & jnp.all(jnp.isfinite(params)))
    keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(healthy, a, b), new, old)  # noqa: E731
    diverged_step = jnp.where(
        state.diverged_step >= 0, state.diverged_step, jnp.where(healthy, -1, step + 1)
    ).astype(jnp.int32)
    new_state = TrainState(
        params=unravel(keep(params, params0)),
        opt_state=_unraveled_moments(keep(opt_state, opt_state0), state.opt_state, state.params, unravel),
        step=jnp.where(healthy, step + 1, step).astype(step.dtype),
        diverged_step=diverged_step,
    )
    return new_state, grad_norm, lr


def _is_params_shaped(params: PyTree) -> Callable[[Any], bool]:
    structure = jax.tree.structure(params)
    return lambda x: not isinstance(x, jax.Array) and jax.tree.structure(x) == structure


def _raveled_moments(opt_state: PyTree, params: PyTree) -> PyTree:
    """The optimiser's state with every subtree shaped like ``params`` (Adam's moments)
    raveled into one vector, as :func:`jax.flatten_util.ravel_pytree` orders the parameters."""
    shaped = _is_params_shaped(params)
    return jax.tree.map(lambda x: ravel_pytree(x)[0] if shaped(x) else x, opt_state, is_leaf=shaped)


def _unraveled_moments(flat_state: PyTree, opt_state: PyTree, params: PyTree, unravel) -> PyTree:
    """:func:`_raveled_moments` undone: ``flat_state``'s vectors back in the structure of
    ``opt_state`` (the state before the step), by ``unravel``."""
    shaped = _is_params_shaped(params)
    return jax.tree.map(lambda old, new: unravel(new) if shaped(old) else new, opt_state, flat_state,
                        is_leaf=shaped)


def averaged_over_devices(value_and_grad_fn, mesh: Mesh, in_specs=PartitionSpec()):
    """``value_and_grad_fn`` run on every device of ``mesh``'s one axis (``jax.shard_map``;
    ``in_specs`` as the map's, every input replicated by default), its value and gradient
    averaged over the devices: the gradient raveled into one vector, so one all-reduce."""

    def averaged(*args):
        value, grads = value_and_grad_fn(*args)
        flat, unravel = ravel_pytree(grads)
        value, flat = jax.lax.pmean((value, flat), AXIS)
        return value, unravel(flat)

    return jax.shard_map(averaged, mesh=mesh, in_specs=in_specs, out_specs=PartitionSpec(),
                         check_vma=False)


def stack_members(trees: list[PyTree]) -> PyTree:
    """Members' trees of the same structure -> one tree with a leading member axis."""
    return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


@jax.jit
def initial_group_state(params: list[PyTree], rest: list[PyTree], hyper: list[PyTree]):
    """Members' initial parameters, untrained state and scalars -> ``(TrainState, rest, hyper)``,
    each stacked along a leading member axis (:func:`stack_members`), with Adam's moments at
    zero, step 0 and no divergence. One compiled program per group shape (run eagerly, every
    leaf's stack and zero moment is a program of its own)."""
    n = len(params)
    optimizer = adam()
    state = TrainState(
        params=stack_members(params),
        opt_state=stack_members([optimizer.init(p) for p in params]),
        step=jnp.zeros(n, jnp.int32),
        diverged_step=jnp.full(n, -1, jnp.int32),
    )
    return state, stack_members(rest), stack_members(hyper)


def member_slice(tree: PyTree, i: int) -> PyTree:
    """Member ``i``'s part of a tree with a leading member axis."""
    return jax.tree.map(lambda a: a[i], tree)


def make_chunk(step_fn, n_steps: int):
    """``n_steps`` training steps in one ``lax.scan``: one host call, metrics stacked (n_steps,)."""

    def chunk(state: TrainState, key: Array, data: TrainData, hyper, rest):
        def body(carry, _):
            return step_fn(carry, key, data, hyper, rest)

        return jax.lax.scan(body, state, None, length=n_steps)

    return chunk


def make_sized_chunk(step_fn, capacity: int):
    """Up to ``capacity`` training steps in one host call, how many given at run time.

    ``chunk(state, key, data, hyper, rest, n)`` runs the first ``n`` (a traced int32, 1 <= n <=
    ``capacity``) steps in a ``lax.fori_loop`` and returns the state and the per-step metrics in
    arrays of length ``capacity``, whose first ``n`` entries are those steps' (the rest are
    zeros; the host reads the first ``n``). The steps are :func:`make_chunk`'s, one after the
    other; a run whose call length changes from call to call (sized from the measured step
    time, :mod:`fae_lab.train.chunks`) compiles this once instead of once per length.
    """

    def chunk(state: TrainState, key: Array, data: TrainData, hyper, rest, n):
        shapes = jax.eval_shape(lambda s: step_fn(s, key, data, hyper, rest)[1], state)
        buffers = jax.tree.map(lambda m: jnp.zeros((capacity, *m.shape), m.dtype), shapes)

        def body(i, carry):
            state, buffers = carry
            state, metrics = step_fn(state, key, data, hyper, rest)
            return state, jax.tree.map(lambda b, m: b.at[i].set(m), buffers, metrics)

        return jax.lax.fori_loop(0, n, body, (state, buffers))

    return chunk


def adam() -> optax.GradientTransformation:
    """Adam's moment scaling; the learning rate and sign are applied by the step."""
    return optax.scale_by_adam()
