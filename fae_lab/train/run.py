"""Training runs, top to bottom: data, model, store, loop, final metrics.

A *group* is one or more runs that share the training program (same data, shapes and
loss type) and differ in the values of ``Hyper`` scalars, seeds and Fourier scales. The
group trains as one ``jax.vmap``-ed program: member i's state is slice i of a stacked
state, and every member writes its own run store. A single run is a group of one; a
``fae-lab sweep`` is a larger group.

The loop keeps the device busy: each host call runs ``steps_per_call`` steps in a
``lax.scan``; the next call is dispatched before the previous call's metrics are read, and
every store write goes through a background writer thread. Evaluations run on the device at
the steps of the store's evaluation schedule; checkpoints are taken at the start (step 0,
before the first evaluation), then at evaluations (once a minute by default, or
``--checkpoint-every``), at the end, at ``--stop-after-step``, at the last finite step of a
diverged run and at the last completed step of an interrupted one
(:mod:`fae_lab.train.loop`), so a run stopped, killed or interrupted resumes from its last
checkpoint. ``--resume`` of a run killed before its first checkpoint starts it again from
step 0; ``--resume`` of a finished run changes nothing. Several local devices hold either
different members (a sweep) or different parts of each batch (data parallel).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from fae_lab.config import RunConfig, tags, to_json_dict
from fae_lab.data.generate import generate_microstructures
from fae_lab.data.npz import MultiscaleData, load_npz
from fae_lab.data.views import resolve_scales, split_samples
from fae_lab.errors import UsageError
from fae_lab.grid import grid_coordinates
from fae_lab.losses import loss_term_names
from fae_lab.models import count_parameters
from fae_lab.models.autodecoder import apply_model, build_rung_model
from fae_lab.spectral import RadialBins, radial_bins, resolve_cutoff
from fae_lab.store import (
    AsyncStoreWriter,
    RunStore,
    StoreLayout,
    eval_schedule,
    train_schedule,
)
from fae_lab.store.layout import FINAL_FILE, PROGRESS_FILE
from fae_lab.store.writer import package_versions
from fae_lab.train import interrupt
from fae_lab.train.budget import check_run_budget
from fae_lab.train.checkpoint import Checkpoints
from fae_lab.train.chunks import MAX_STEPS_PER_CALL, fixed_length
from fae_lab.train.cpu_sizing import cpu_hint, slow_hint
from fae_lab.train.devices import plan_placement
from fae_lab.train.evaluate import (
    SplitEvalData,
    make_evaluate,
    make_split_evaluate,
    prepare_eval_data,
)
from fae_lab.train.loop import GroupLoop, Member, RunResult
from fae_lab.train.output_dir import check_output_dir
from fae_lab.train.progress import ProgressReporter
from fae_lab.train.rows import TrainRowAggregator
from fae_lab.train.step import (
    StepStatics,
    TrainData,
    TrainState,
    adam,
    hyper_from_config,
    initial_group_state,
    make_chunk,
    make_sized_chunk,
    make_train_step,
    member_slice,
    stack_members,
)

# ----------------------------------------------------------------------------- the problem


@dataclasses.dataclass(frozen=True)
class Problem:
    """The data side of a group: fields, split, scale roles, bins, on-device arrays."""

    data: MultiscaleData
    train_idx: np.ndarray
    test_idx: np.ndarray
    training_scales: np.ndarray  # int32, sharpest first
    training_mask: np.ndarray  # (T,) bool
    bins: RadialBins
    cutoff: float
    n_reconstructions: int
    train_data: TrainData
    eval_data: SplitEvalData
    eval_train_idx: np.ndarray  # the training samples evaluated as eval_train_* (data-file indices)
    recon_idx: np.ndarray  # the samples reconstructed at every evaluation (test, or training without encoder)

    @property
    def resolution(self) -> int:
        return self.data.resolution

    @property
    def has_encoder(self) -> bool:
        """False for the ladder's latent-table rungs: they evaluate training samples only."""
        return self.eval_data.test is not None


def load_data(config: RunConfig) -> MultiscaleData:
    """The data file of ``--data-path``, or the built-in generated microstructures."""
    d = config.data
    if d.data_path is not None:
        return load_npz(d.data_path)
    return generated_data(d.generate_n_samples, d.generate_resolution, d.generate_n_scales, d.generate_seed)


@functools.lru_cache(maxsize=1)
def generated_data(n_samples: int, resolution: int, n_scales: int, seed: int) -> MultiscaleData:
    """The built-in microstructures, generated once per process for the last settings asked:
    the groups a phase trains one after another share them instead of each generating them
    again (its time: benchmarks/RESULTS.md). Read-only, as every caller gets the same arrays."""
    data = generate_microstructures(n_samples=n_samples, resolution=resolution, n_scales=n_scales, seed=seed)
    for array in (data.fields, data.times, data.sigmas):
        if array is not None:
            array.setflags(write=False)
    return data


def prepare_problem(config: RunConfig) -> Problem:
    data = load_data(config)
    d = config.data
    roles = resolve_scales(data, d.training_mode, d.single_scale_index, d.held_out_indices)
    train_idx, test_idx = split_samples(data.n_samples, d.test_fraction, d.split_seed)
    R, T = data.resolution, data.n_scales
    for flag, points in (("--encoder-points", d.encoder_points), ("--decoder-points", d.decoder_points)):
        if points is not None and points > R * R:
            raise UsageError(f"{flag}: at most {R * R} points on a {R}x{R} grid, got {points}")
    training_scales = np.asarray(sorted(roles.training), np.int32)
    training_mask = np.isin(np.arange(T), training_scales)
    grid = grid_coordinates(R)
    rung = config.model.rung
    if rung == "decoder_alone":  # the decoder fits one training sample
        if config.model.rung_sample >= len(train_idx):
            raise UsageError(f"--rung-sample: the training split has {len(train_idx)} samples "
                             f"(0..{len(train_idx) - 1}), got {config.model.rung_sample}")
        train_idx = train_idx[[config.model.rung_sample]]
    n_eval_train = min(config.eval.eval_train_samples or len(test_idx), len(train_idx))
    eval_train_idx = train_idx[:n_eval_train]
    has_encoder = rung == "fae"
    recon_pool = test_idx if has_encoder else eval_train_idx
    n_rec = min(config.eval.n_reconstruction_samples, len(recon_pool))
    return Problem(
        data=data,
        train_idx=train_idx,
        test_idx=test_idx,
        training_scales=training_scales,
        training_mask=training_mask,
        bins=radial_bins(R, config.eval.spectral_n_bins),
        cutoff=resolve_cutoff(R, config.eval.spectral_cutoff),
        n_reconstructions=n_rec,
        train_data=TrainData(
            fields=jnp.asarray(data.fields[train_idx]),
            training_scales=jnp.asarray(training_scales),
            grid=jnp.asarray(grid),
        ),
        eval_data=SplitEvalData(
            test=prepare_eval_data(data.fields[test_idx], config.eval.eval_batch_size, training_mask, grid,
                                   at_least=n_rec) if has_encoder else None,
            train=prepare_eval_data(data.fields[eval_train_idx], config.eval.eval_batch_size, training_mask, grid,
                                    sample_index=np.arange(n_eval_train), at_least=n_rec),
        ),
        eval_train_idx=eval_train_idx,
        recon_idx=recon_pool[:n_rec],
    )


# ----------------------------------------------------------------------------- one member


def store_layout(config: RunConfig, problem: Problem, run_name: str) -> StoreLayout:
    data, T = problem.data, problem.data.n_scales
    terms = ("l2",) if config.data.decoder_points is not None else loss_term_names(config.loss.loss_type)
    return StoreLayout(
        train_steps=train_schedule(config.max_steps, config.eval.log_every),
        eval_steps=eval_schedule(config.max_steps, config.eval.eval_every),
        loss_terms=(*terms, "latent"),
        scales=np.arange(T, dtype=np.int64),
        times=np.asarray(data.times, np.float64),
        sigmas=np.asarray(data.sigmas if data.sigmas is not None else np.full(T, np.nan), np.float64),
        held_out=~problem.training_mask,
        k_centres=problem.bins.centres,
        k_lower=problem.bins.lower,
        k_upper=problem.bins.upper,
        spectral_cutoff=problem.cutoff,
        resolution=problem.resolution,
        recon_samples=np.asarray(problem.recon_idx, np.int64),
        run_name=run_name,
        tags=tuple(tags(config)),
    )


def has_checkpoint(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds a committed checkpoint (orbax's temporary directories of a
    save that never finished do not count)."""
    if not (Path(run_dir) / "checkpoints" / "latest").is_dir():
        return False
    checkpoints = Checkpoints(run_dir, keep_best=False)
    try:
        return checkpoints.latest_step() is not None
    finally:
        checkpoints.close()


def open_member_store(member: Member, problem: Problem, n_parameters: int, encoder_kernel: str = "xla",
                      decoder_kernel: str = "xla", *, reopen: bool = False) -> None:
    """Create (or, with ``reopen``, reopen) the member's run store and checkpoints."""
    cfg = member.config
    member.layout = store_layout(cfg, problem, cfg.wandb_name or member.run_dir.name)
    member.rows = TrainRowAggregator(member.layout.train_steps)
    if reopen:
        store = RunStore.open(member.run_dir)
    else:
        payload = {
            "config": to_json_dict(cfg),
            "tags": list(tags(cfg)),
            "command_line": member.command_line,
            "versions": {**package_versions(), "jax_backend": jax.default_backend(),
                         "encoder_kernel": encoder_kernel, "decoder_kernel": decoder_kernel},
            "run_name": member.layout.run_name,
            "group": cfg.wandb_project,
            "n_parameters": n_parameters,
            "roles": {"training_scales": [int(s) for s in problem.training_scales],
                      "held_out_scales": [int(s) for s in np.flatnonzero(~problem.training_mask)]},
            "split": {"train": [int(i) for i in problem.train_idx], "test": [int(i) for i in problem.test_idx],
                      "eval_train": [int(i) for i in problem.eval_train_idx]},
            "rung": cfg.model.rung,
            "recon_split": "test" if problem.has_encoder else "train",
            "data_source": problem.data.source,
        }
        truth = problem.data.fields[problem.recon_idx]
        store = RunStore.create(member.run_dir, member.layout, config=payload, command_line=member.command_line,
                                truth=np.asarray(truth, np.float32),
                                # --resume without a checkpoint starts again; and files without a
                                # progress.json are what a process killed while creating the store left
                                overwrite=cfg.overwrite or cfg.resume
                                or not (member.run_dir / PROGRESS_FILE).exists())
    member.writer = AsyncStoreWriter(store)
    member.checkpoints = Checkpoints(member.run_dir, keep_best=cfg.save_best_model)


# ----------------------------------------------------------------------------- a group


def program_key(config: RunConfig) -> tuple:
    """The settings that shape the compiled program; members of a group must agree on them.

    Everything else (seed, learning rate and its decay, clipping, beta, lambda_grad, p,
    schedules, Fourier scales and feature seed) is a value a vmapped program can vary.
    """
    m = config.model
    shape_model = dataclasses.replace(m, coordinate_sigma=0.0, rff_sigma=0.0, feature_seed=0,
                                      rff_multiscale_sigmas=None if m.rff_multiscale_sigmas is None
                                      else (0.0,) * len(m.rff_multiscale_sigmas))
    return (config.data, shape_model, config.loss.loss_type, config.loss.h1_form, config.loss.h1_k0,
            config.optim.batch_size, config.max_steps, config.steps_per_call, config.precision,
            config.kernels, config.eval, config.checkpoint_every, config.stop_after_step)


def use_fused_encoder(config: RunConfig, mode: str) -> bool:
    """Whether the encoder runs as the fused Pallas kernel (``--kernels``).

    It fuses every pooling type (mean, attention, augmented residual: the per-point MLP and
    the pooling sums; see :class:`~fae_lab.models.encoder.PointSetEncoder`). It needs float32
    compute, and one device or data-parallel placement
    (``mode`` of :class:`~fae_lab.train.devices.Placement`; there each device runs the kernel
    on its share of the batch). Members spread over devices keep XLA's encoder: a Pallas call
    is opaque to XLA's partitioner. ``auto`` takes it on a GPU whenever those hold;
    ``pallas`` insists (off the GPU through Pallas' interpreter, which is slow: for tests),
    and says which condition fails; ``xla`` never takes it.
    """
    if config.kernels == "xla":
        return False
    blockers = []
    if config.precision != "float32":
        blockers.append(f"--precision {config.precision} (needs float32)")
    if mode == "members":
        blockers.append("sweep members spread over several devices (needs --n-devices 1)")
    if config.kernels == "pallas":
        if blockers:
            raise UsageError("--kernels pallas: the fused encoder cannot run with " + ", ".join(blockers))
        return True
    return not blockers and jax.default_backend() == "gpu"


def use_fused_decoder(config: RunConfig, mode: str, resolution: int) -> str:
    """How the decoder's forward pass is computed: ``"kernels"``, the Mosaic GPU kernel of
    :mod:`fae_lab.models.fused_decoder`, or ``"off"``, XLA's layers.

    The kernel computes the value in evaluations and, in training, also what XLA's backward
    pass takes the gradient from. ``--kernels auto`` or ``pallas`` takes it on a
    Hopper GPU, on one device (``mode`` ``"single"``), for the FAE rung with a decoder it can
    run on fields of ``resolution``² points (:func:`~fae_lab.models.fused_decoder.fusable`);
    ``--kernels xla`` never does.
    """
    from fae_lab.models import fused_decoder

    if config.kernels == "xla" or mode != "single" or config.model.rung != "fae" or not fused_decoder.on_hopper():
        return "off"
    if fused_decoder.fusable(config.model, resolution * resolution, config.precision == "float32"):
        return "off"
    return "kernels"


@dataclasses.dataclass
class GroupPrograms:
    """A group's jitted programs: the evaluation of every member, and the vmapped training
    chunks by length (0: the loop of up to MAX_STEPS_PER_CALL steps whose count is an
    argument), made when first asked for."""

    step_fn: Callable
    evaluate: Callable
    chunks: dict[int, Callable] = dataclasses.field(default_factory=dict)
    compiler_options: dict | None = None  # XLA's options for the chunks' compilation

    def chunk(self, n: int) -> Callable:
        if n not in self.chunks:
            if n == 0:
                batched = jax.vmap(make_sized_chunk(self.step_fn, MAX_STEPS_PER_CALL),
                                   in_axes=(0, 0, None, 0, 0, None))
            else:
                batched = jax.vmap(make_chunk(self.step_fn, n), in_axes=(0, 0, None, 0, 0))
            self.chunks[n] = jax.jit(batched, donate_argnums=(0,), compiler_options=self.compiler_options)
        return self.chunks[n]


# The programs of the last few groups, by everything their functions close over. A later group
# of the same model and step in this process (a sweep's next group, a notebook's next phase, a
# test's next run) calls the same jitted functions, so JAX neither traces, lowers nor loads them
# again; their arguments' shapes, dtypes and placements still select the compiled executable.
# The evaluation does not depend on the training step, so groups of one model that train with
# different losses (a phase's groups) share it: _EVALUATIONS, by what it closes over.
_PROGRAMS: dict[tuple, GroupPrograms] = {}
_EVALUATIONS: dict[tuple, Callable] = {}
_PROGRAMS_KEPT = 8
_PROGRAMS_LOCK = threading.Lock()


def _cached(cache: dict, key: tuple, make: Callable):
    """``cache[key]``, made by ``make()`` if absent; the cache keeps the _PROGRAMS_KEPT most
    recently used."""
    with _PROGRAMS_LOCK:  # a notebook may train in a thread of its own (lab.notebook)
        if key in cache:
            cache[key] = cache.pop(key)  # most recently used last
            return cache[key]
    value = make()
    with _PROGRAMS_LOCK:
        cache[key] = value
        while len(cache) > _PROGRAMS_KEPT:
            del cache[next(iter(cache))]
    return value


def group_programs(graphdef: nnx.GraphDef, statics: StepStatics, data_mesh, bins: RadialBins,
                   cutoff: float, n_reconstructions: int, *,
                   members_in_turn: bool = True) -> GroupPrograms:
    """The programs of a group whose model has ``graphdef`` (architecture, compute dtype, fused
    encoder), training step ``statics`` on ``data_mesh``, and evaluation ``bins``, ``cutoff`` and
    ``n_reconstructions``: made once per process for the same values (``bins`` is one object
    per (R, n_bins), :func:`~fae_lab.spectral.radial_bins`); the evaluation once for the same
    model and evaluation values, whatever the training step.

    ``members_in_turn``: the evaluation runs the members one after another (``lax.map``) in one
    call, instead of side by side (``vmap``). Side by side, the hidden layers' products become
    batched GEMMs that XLA gives to slower kernels than one member's (benchmarks/RESULTS.md),
    and every member's activations are held at once; the full-grid decoding is bound by
    memory traffic, so running members together gains nothing back. Members sharded over
    several devices (the ``members`` placement) need side by side."""
    def apply_fn(p, r, x_enc, u_enc, x_dec, field):
        return apply_model(nnx.merge(graphdef, p, r), x_enc, u_enc, x_dec, field)

    def evaluation():
        evaluate_member = make_split_evaluate(make_evaluate(apply_fn, bins, cutoff, n_reconstructions))
        if members_in_turn:
            def evaluate(params, rest, data):
                return jax.lax.map(lambda member: evaluate_member(*member, data), (params, rest))
        else:
            evaluate = jax.vmap(evaluate_member, in_axes=(0, 0, None))
        return jax.jit(evaluate)

    def programs():
        return GroupPrograms(
            step_fn=make_train_step(statics, apply_fn, adam(), data_mesh=data_mesh),
            evaluate=_cached(_EVALUATIONS, (graphdef, bins, cutoff, n_reconstructions, members_in_turn), evaluation),
        )

    return _cached(_PROGRAMS, (graphdef, statics, data_mesh, bins, cutoff, n_reconstructions, members_in_turn),
                 programs)


class CompileAhead:
    """A program's compilation for some arguments, in a thread of its own
    (:func:`compile_ahead`); :meth:`wait` returns once it has ended."""

    def __init__(self, program, args):
        # Not a daemon: a process that ends while XLA compiles (a stop at the first
        # evaluation) waits for it, since a thread cut off inside XLA aborts the process.
        self.thread = threading.Thread(target=self._compile, args=(program, args), daemon=False,
                                       name="fae-lab-compile-ahead")
        self.thread.start()

    @staticmethod
    def _compile(program, args):
        try:
            program.lower(*args).compile()
        except Exception:
            pass  # the call compiles it again, and says what is wrong

    def wait(self) -> None:
        self.thread.join()


def compiles_ahead() -> bool:
    """Whether a group compiles its first training chunk in the background (:func:`compile_ahead`):
    off the CPU, where the host's cores are free while the device evaluates. On a CPU the
    evaluation runs on the cores the compilation would take, and the program is lowered twice
    (once there, once by the first call): ~10 % more CPU time for a tiny run, no time saved."""
    return jax.default_backend() != "cpu"


def compile_ahead(program, *args) -> CompileAhead:
    """Compile the jitted ``program`` for ``args`` in the background. XLA compiles outside
    Python's lock, so a group's training chunk compiles while its first checkpoint is written
    and its first evaluation compiles and runs; the jitted function's cache keeps the result,
    and the first call finds it there. Lowering reads only the arguments' types and
    placements. Wait before that call: it would compile the program a second time while this
    compilation runs, and it may donate the arguments."""
    return CompileAhead(program, args)


def train(config: RunConfig, command_line: list[str] | None = None, *, quiet: bool = False,
          label: str = "") -> RunResult:
    """Train one run as configured; return when it finishes, diverges or is stopped."""
    return train_group([config], [command_line or []], quiet=quiet, labels=[label])[0]


def train_group(configs: list[RunConfig], command_lines: list[list[str]] | None = None, *,
                quiet: bool = False, labels: list[str] | None = None,
                on_step: Callable[[int], None] | None = None) -> list[RunResult]:
    """Train members that share one program as one vmapped computation; ``on_step(step)`` is
    called with the group's step as it advances (:class:`ProgressReporter`)."""
    first = configs[0]
    for cfg in configs[1:]:
        if program_key(cfg) != program_key(first):
            raise UsageError("sweep: members differ in a setting that changes the program's shapes; "
                             "run them as separate groups")
    command_lines = command_lines or [[] for _ in configs]
    labels = labels or [""] * len(configs)
    members = [Member(cfg, check_output_dir(cfg), list(cl), lab)
               for cfg, cl, lab in zip(configs, command_lines, labels, strict=True)]
    if len({m.run_dir.resolve() for m in members}) != len(members):
        raise UsageError("sweep: two members would write the same --output-dir")
    if first.resume:
        done = [m for m in members if _stored_status(m.run_dir) == "finished"]
        if done and len(done) == len(members):
            return [_already_finished(m) for m in members]  # nothing is opened, nothing changes
        if done:
            raise UsageError(f"--resume: {done[0].run_dir} already finished; resume the others without it")
    resumable = [has_checkpoint(m.run_dir) for m in members] if first.resume else [False] * len(members)
    if any(resumable) and not all(resumable):
        missing = members[resumable.index(False)].run_dir
        raise UsageError(f"--resume: {missing} has no checkpoint while other members have one; "
                         "resume them separately")
    reopen = all(resumable) and first.resume
    if first.resume and not reopen:
        for m in members:  # killed before its first checkpoint: nothing to lose, start again
            print(f"--resume: {m.run_dir} has no checkpoint (it was stopped before its first); "
                  "starting it again from step 0", file=sys.stderr)
    _stop_before_writing()
    check_run_budget(configs)  # before the data are made and the stores preallocated
    problem = prepare_problem(first)
    _stop_before_writing()
    R = problem.resolution
    compute_dtype = jnp.bfloat16 if first.precision == "bf16" else jnp.float32

    placement = plan_placement(len(configs), first.optim.batch_size, first.n_devices)
    fused_encoder = first.model.rung == "fae" and use_fused_encoder(first, placement.mode)
    fused_decoder = use_fused_decoder(first, placement.mode, R)
    n_fields = len(problem.train_idx) * problem.data.n_scales  # the ladder's latent table rows

    graphdef, params_list, rest_list = None, [], []
    for cfg in configs:
        model = build_rung_model(cfg.model, R, n_fields, seed=cfg.seed, compute_dtype=compute_dtype,
                                 fused_encoder=fused_encoder, fused_decoder=fused_decoder)
        gd, params, rest = nnx.split(model, nnx.Param, ...)
        graphdef = graphdef or gd
        params_list.append(params)
        rest_list.append(rest)
    state, rest, hyper = initial_group_state(params_list, rest_list, [hyper_from_config(cfg) for cfg in configs])
    keys = jnp.stack([jax.random.key_data(jax.random.key(cfg.seed)) for cfg in configs])
    n_parameters = count_parameters(model)  # the same architecture for every member

    sized = fixed_length(first.steps_per_call, jax.default_backend()) is None
    programs = group_programs(graphdef, StepStatics.from_config(first, R), placement.data_mesh,
                              problem.bins, problem.cutoff, problem.n_reconstructions,
                              members_in_turn=placement.mode != "members")
    evaluate = programs.evaluate

    def run_chunk(state, n):
        """``n`` steps in one host call -> (state, metrics of length >= n per member; the host
        reads the first n). A fixed length compiles one ``lax.scan`` of exactly n steps; a length
        sized from the step time (the CPU) compiles one loop of up to MAX_STEPS_PER_CALL steps
        whose count is an argument, so its changing lengths share one compilation."""
        if sized:
            return programs.chunk(0)(state, keys_typed, problem.train_data, hyper, rest, jnp.int32(n))
        return programs.chunk(n)(state, keys_typed, problem.train_data, hyper, rest)

    def compile_chunk(n):
        """Begin compiling the program of a chunk of ``n`` steps, for the group's arguments."""
        extra = (jnp.int32(n),) if sized else ()
        return compile_ahead(programs.chunk(0 if sized else n), state, keys_typed, problem.train_data,
                             hyper, rest, *extra)

    state, rest, hyper, keys = placement.place_members((state, rest, hyper, keys))
    keys_typed = jax.random.wrap_key_data(keys)
    problem = dataclasses.replace(problem, train_data=placement.place_shared(problem.train_data),
                                  eval_data=placement.place_shared(problem.eval_data))

    _stop_before_writing()
    for member in members:
        open_member_store(member, problem, n_parameters, "pallas" if fused_encoder else "xla",
                          "mosaic" if fused_decoder == "kernels" else "xla", reopen=reopen)
    if reopen:
        state, rest = restore_group(members, state, rest)
        state, rest = placement.place_members((state, rest))

    progress = ProgressReporter(first.max_steps, quiet=quiet,
                                label=labels[0] if len(members) == 1 else f"{len(members)} members",
                                on_step=on_step)
    tracker = None
    if first.eval.track_ntk_every is not None:
        from fae_lab.ntk.run import NTKTracker

        tracker = NTKTracker(first.eval.track_ntk_every, configs, problem.data.fields, problem.test_idx,
                             problem.training_scales)
    # A run sized for a GPU on a CPU gets one line (fae_lab.train.cpu_sizing); one whose
    # measured step time makes it long gets one once the time is known.
    on_cpu = jax.default_backend() == "cpu" and not quiet
    hint = cpu_hint(first, R) if on_cpu else None
    if hint:
        progress.note(hint)
    loop = GroupLoop(first, members, progress, evaluate, problem.eval_data, run_chunk, rest,
                     on_evaluation=tracker, slow_note=slow_hint if on_cpu and not hint else None,
                     compile_chunk=compile_chunk if compiles_ahead() else None)
    try:
        loop.run(state)
    except BaseException as err:
        # Signals are handled by the loop (interrupt.stop_on_signals); this is an error, or a
        # KeyboardInterrupt where no handler was installed: say what the disk holds.
        for member in members:
            if member.status == "running":
                cause = ("interrupted" if isinstance(err, KeyboardInterrupt)
                         else f"{type(err).__name__}: {err}".splitlines()[0])
                saved = member.checkpoints.latest_step()
                where = ("no checkpoint: --resume starts it again from step 0" if saved is None
                         else f"last checkpoint at step {saved}: continue with --resume")
                member.status, member.message = "failed", f"{cause} at step {loop.step}; {where}"
                member.writer.set_status("failed", member.message)
        raise
    finally:
        for member in members:
            member.writer.close()
            member.checkpoints.wait()
            member.checkpoints.close()
        progress.close()
    return [member.result() for member in members]


def _stop_before_writing() -> None:
    """A signal before the run store is touched ends the command at once: nothing to save."""
    sig = interrupt.requested()
    if sig is not None:
        raise interrupt.Interrupted(f"interrupted by {interrupt.signal_name(sig)} before training started; "
                                    "nothing was written", sig)


def restore_group(members: list[Member], state: TrainState, rest: nnx.State) -> tuple[TrainState, nnx.State]:
    """Each member's latest checkpoint, stacked, with the fixed features it was saved with
    (``rest``'s redrawn ones for a checkpoint that has none); all members must stand at the
    same step."""
    restored, restored_rest = [], []
    for i, member in enumerate(members):
        if member.checkpoints.latest_step() is None:
            raise UsageError(f"--resume: {member.run_dir} has no checkpoint yet")
        member_rest = member_slice(rest, i)
        member_state, member.record, fixed = member.checkpoints.restore_latest(
            member_slice(state, i), member_rest.to_pure_dict())
        if fixed is not None:
            nnx.replace_by_pure_dict(member_rest, fixed)
        restored_rest.append(member_rest)
        member.checkpoint_step = int(member.record["step"])
        member.rows.restore(member.record["rows"])
        n_eval = int(member.record["n_eval"])
        if n_eval:  # final.json of a run resumed at its end (or diverging before its next evaluation)
            member.last_metrics = member.writer.store.read_eval_row(n_eval - 1)
        member.writer.truncate(n_train=member.rows.n_rows, n_eval=n_eval)
        member.writer.update_progress(status="running", message="")
        restored.append(member_state)
    steps = {int(s.step) for s in restored}
    if len(steps) != 1:
        raise UsageError(f"--resume: the sweep's members stopped at different steps {sorted(steps)}")
    return stack_members(restored), stack_members(restored_rest)


def _stored_status(run_dir: Path) -> str | None:
    try:
        return json.loads((run_dir / PROGRESS_FILE).read_text()).get("status")
    except (OSError, ValueError):
        return None


def _already_finished(member: Member) -> RunResult:
    """``--resume`` of a finished run: report it as it stands on disk."""
    progress = json.loads((member.run_dir / PROGRESS_FILE).read_text())
    final_path = member.run_dir / FINAL_FILE
    final = json.loads(final_path.read_text()) if final_path.exists() else None
    return RunResult(run_dir=member.run_dir, status="finished", step=int(progress["step"]), final=final,
                     message="already finished; nothing changed")
