"""The Ray backend: Ray Tune runs the candidates, Optuna (through ``OptunaSearch``) proposes them.

This is the only module of pikenas that imports Ray. It writes the same two-objective study as
the local backend, with the same trial user attributes and states (see docs/study_contract.md):

* ``OptunaSearch`` is the multi-objective searcher (``metric`` / ``mode`` are set on it only:
  set in ``TuneConfig`` too, the study silently becomes single-objective), bound to the run's
  storage object and study, with the sampler from :data:`search.samplers.SAMPLERS`. Its
  define-by-run function asks the space for a genome (:meth:`SearchSpace.suggest`) and hands the
  decoded architecture to the trial.
* The trial function runs the backend-independent decision,
  :func:`search.objective.evaluate_candidate` (fit, ACE v2 before training, over-budget,
  duplicate, proxy training), with ``cpus_per_trial`` torch threads, and reports
  ``{"accuracy", "ace_v2", outcome state, user attributes as JSON}`` with ``tune.report``.
  Tune requires the metrics in every report, so a PRUNED or FAIL outcome reports NaN.
* :class:`_PikeNASOptunaSearch` writes those user attributes onto the Optuna trial that
  OptunaSearch asked, then tells the state: COMPLETE with ``[accuracy, ace_v2]``, PRUNED for an
  over-budget candidate, FAIL for a failed one. A trial whose Ray actor died is retried by
  Tune (``FailureConfig(max_failures)``) and FAILs only after the last retry.
* Duplicates: the trial looks the fitted archid up in a small Ray actor (:class:`_ArchTable`)
  seeded from the study's COMPLETE trials and fed by every finished proxy training, so it works
  on a multi-node cluster where trials cannot read the driver's journal file.
* Counting: the searcher asks only while ``complete + running < N`` and ends the run once the
  study holds N COMPLETE trials, so ``--trials N`` means N COMPLETE trials, as in the local
  backend. Rerunning after the driver was killed fails its RUNNING trials
  (:func:`search.worker.recover_stale_trials`: its driver process is gone, or its heartbeat is
  stale), enqueues their genomes again, and continues to N.
* While a trial runs its Optuna trial carries ``worker`` = the driver's ``host:pid`` and a
  heartbeat refreshed by the driver; when it finishes, ``worker`` is the ``host:pid`` of the
  Ray actor that ran it.

Actors are reused between trials (``reuse_actors=True``: about 0.3 s instead of 1.5 s a trial).
Without an address a local Ray is started on 127.0.0.1 with no dashboard and no usage
statistics; with one, the driver joins that cluster.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from space.errors import PikeNASError, SearchConfigError

if TYPE_CHECKING:
    import optuna

    from search.backends import ProgressCallback, RunRequest
    from search.config import SearchConfig

__all__ = [
    "RaySearchSummary",
    "ray_options",
    "run_ray",
    "run_ray_search",
    "ray_environment",
]

logger = logging.getLogger(__name__)

ACCURACY_KEY = "accuracy"
ACE_KEY = "ace_v2"
_STATE_KEY = "pikenas_state"
_ATTRS_KEY = "pikenas_user_attrs"
_ARCH_KEY = "pikenas_arch"
_ERROR_KEY = "pikenas_suggest_error"
_NUMBER_KEY = "pikenas_trial_number"


@dataclass
class RaySearchSummary:
    """What one Ray run did: trials it told, by state; stale trials it failed at start; why it
    gave up (every candidate rejected), if it did; the Tune experiment folder; seconds of
    ``Tuner.fit``."""

    complete: int = 0
    pruned: int = 0
    failed: int = 0
    recovered: list[int] = field(default_factory=list)
    gave_up: str | None = None
    experiment_dir: str = ""
    wall_s: float = 0.0


def ray_environment() -> dict[str, str]:
    """Environment for a quiet, local-only Ray: no usage statistics, no auth token, trials
    stay in the driver's working directory, and no per-trial CSV / JSON / TensorBoard result
    files (the study holds every result; those files cost about 0.25 s a trial)."""
    return {
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_AUTH_MODE": "disabled",
        "RAY_CHDIR_TO_TRIAL_DIR": "0",
        "RAY_AIR_NEW_OUTPUT": "0",
        "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",
    }


def ray_options(
    backend: str,
    *,
    address: str | None = None,
    cpus_per_trial: int | None = None,
    gpus_per_trial: float | None = None,
) -> dict[str, Any]:
    """The ``RunRequest.options`` of the command-line Ray settings, validated (imports no Ray).

    The settings belong to ``--backend ray`` only: given with another backend they are
    refused rather than silently ignored.
    """
    given = {
        "--address": address,
        "--cpus-per-trial": cpus_per_trial,
        "--gpus-per-trial": gpus_per_trial,
    }
    if backend != "ray":
        named = [name for name, value in given.items() if value is not None]
        if named:
            raise SearchConfigError(
                f"{', '.join(named)} apply to --backend ray only; add --backend ray or drop them"
            )
        return {}
    if cpus_per_trial is not None and cpus_per_trial < 1:
        raise SearchConfigError(f"--cpus-per-trial must be at least 1 (got {cpus_per_trial})")
    if gpus_per_trial is not None and gpus_per_trial < 0:
        raise SearchConfigError(f"--gpus-per-trial must be 0 or more (got {gpus_per_trial})")
    if address is not None and not address.strip():
        raise SearchConfigError("--address must be HOST:PORT of a Ray head (ray start --head)")
    options: dict[str, Any] = {}
    if address:
        options["address"] = address.strip()
    if cpus_per_trial is not None:
        options["cpus_per_trial"] = cpus_per_trial
    if gpus_per_trial is not None:
        options["gpus_per_trial"] = gpus_per_trial
    return options


# ---- the trial (runs in a Ray actor) ---------------------------------------------------------
_EVALUATORS: dict[tuple[str, str, int], Any] = {}


def _cached_evaluator(spec: str, config: SearchConfig, threads: int) -> Any:
    """One evaluator per actor (reused actors keep the loaded data set between trials)."""
    from search.objective import make_evaluator

    key = (spec, config.to_json(), threads)
    if key not in _EVALUATORS:
        _EVALUATORS.clear()
        _EVALUATORS[key] = make_evaluator(spec, config, threads)
    return _EVALUATORS[key]


def _trial_function(
    trial_config: dict[str, Any],
    *,
    search_config: SearchConfig,
    evaluator_spec: str,
    threads: int,
    arch_table: Any,
) -> None:
    """Ray Tune trial: decide one candidate and report its outcome (one report)."""
    import ray
    import torch
    from ray import tune

    from search.objective import Outcome, evaluate_candidate
    from search.worker import worker_label
    from space.arch import ArchConfig

    torch.set_num_threads(threads)
    if trial_config.get(_ERROR_KEY):
        outcome = Outcome("FAIL", None, {"status": "failed", "reason": trial_config[_ERROR_KEY]})
    else:
        arch = ArchConfig.from_json(trial_config[_ARCH_KEY])
        evaluator = _cached_evaluator(evaluator_spec, search_config, threads)
        outcome = evaluate_candidate(
            arch,
            evaluator,
            max_ace=search_config.max_ace,
            find_duplicate=lambda archid: ray.get(arch_table.lookup.remote(archid)),
        )
        if outcome.state == "COMPLETE" and outcome.user_attrs.get("status") == "ok":
            assert outcome.values is not None
            arch_table.record.remote(
                outcome.user_attrs["archid"], trial_config[_NUMBER_KEY], list(outcome.values)
            )
    attrs = {**outcome.user_attrs, "worker": worker_label()}
    accuracy, ace_v2 = outcome.values if outcome.values is not None else (math.nan, math.nan)
    tune.report(
        {
            ACCURACY_KEY: accuracy,
            ACE_KEY: ace_v2,
            _STATE_KEY: outcome.state,
            _ATTRS_KEY: json.dumps(attrs, sort_keys=True),
        }
    )


class _ArchTableImpl:
    """archid -> (trial number, values) of COMPLETE, really trained trials (a Ray actor)."""

    def __init__(self, entries: dict[str, tuple[int, list[float]]]) -> None:
        self.entries = dict(entries)

    def lookup(self, archid: str) -> tuple[int, list[float]] | None:
        return self.entries.get(archid)

    def record(self, archid: str, number: int, values: list[float]) -> None:
        self.entries.setdefault(archid, (number, values))


# ---- the driver side -------------------------------------------------------------------------
def _known_archs(study: optuna.Study) -> dict[str, tuple[int, list[float]]]:
    from optuna.trial import TrialState

    entries: dict[str, tuple[int, list[float]]] = {}
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        attrs = trial.user_attrs
        if attrs.get("status") == "ok" and attrs.get("archid") and trial.values:
            entries.setdefault(str(attrs["archid"]), (trial.number, list(trial.values)))
    return entries


def _make_searcher_class() -> type:
    """OptunaSearch subclass (built lazily: Ray is imported only when the backend runs)."""
    from optuna.trial import TrialState
    from ray.tune.search import Searcher
    from ray.tune.search.optuna import OptunaSearch

    from search._journal import flush
    from search.objective import set_trial_user_attrs
    from search.worker import HEARTBEAT_ATTR, max_rejected, worker_label

    class _PikeNASOptunaSearch(OptunaSearch):
        """OptunaSearch that stores pikenas user attributes, tells PRUNED / FAIL outcomes and
        stops once the study holds ``n_trials`` COMPLETE trials (or gives up, like
        :func:`search.worker.work`, when too many were rejected)."""

        def __init__(
            self,
            *,
            n_trials: int,
            complete: int,
            rejected: int,
            summary: RaySearchSummary,
            **kwargs: Any,
        ) -> None:
            super().__init__(**kwargs)
            self.n_trials = n_trials
            self.complete = complete
            self.rejected = rejected
            self.summary = summary
            self.driver_label = worker_label()
            self.live: dict[str, Any] = {}

        def suggest(self, trial_id: str) -> dict[str, Any] | None | str:
            if self.complete >= self.n_trials or self.summary.gave_up:
                return Searcher.FINISHED
            if self.rejected >= max_rejected(self.n_trials):
                self.summary.gave_up = (
                    f"{self.rejected} trials were rejected or failed for {self.complete} "
                    "complete ones; check the trials' reason attribute (raise max_ace? a "
                    "broken data set?)"
                )
                logger.error("giving up: %s", self.summary.gave_up)
                return Searcher.FINISHED
            if self.complete + len(self.live) >= self.n_trials:
                return None  # a running trial may still be PRUNED or FAIL: wait for it
            config = super().suggest(trial_id)
            ot_trial = self._ot_trials[trial_id]
            self.live[trial_id] = ot_trial
            storage = self._ot_study._storage
            storage.set_trial_user_attr(ot_trial._trial_id, "worker", self.driver_label)
            flush(storage)  # the owner must be visible at once (stale-trial checks)
            return config

        def beat(self) -> None:
            """Refresh the heartbeat of every trial this driver runs."""
            storage = self._ot_study._storage
            now = time.time()
            for ot_trial in list(self.live.values()):
                try:
                    storage.set_trial_system_attr(ot_trial._trial_id, HEARTBEAT_ATTR, now)
                except Exception as exc:  # noqa: BLE001 - told meanwhile, or a storage hiccup
                    logger.debug("heartbeat of trial %d: %s", ot_trial.number, exc)

        def on_trial_complete(
            self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
        ) -> None:
            ot_trial = self._ot_trials.get(trial_id)
            self.live.pop(trial_id, None)
            if ot_trial is None or trial_id in self._completed_trials:
                return
            result = result or {}
            state = result.get(_STATE_KEY, "FAIL")
            if error or _ATTRS_KEY not in result:
                state = "FAIL"
                attrs = {
                    "status": "failed",
                    "reason": "the Ray trial failed (its actor died or raised) on every retry; "
                    "see error.txt in the Tune experiment folder",
                }
            else:
                attrs = json.loads(result[_ATTRS_KEY])
            storage = self._ot_study._storage
            set_trial_user_attrs(storage, ot_trial._trial_id, attrs)
            if state == "COMPLETE":
                self._ot_study.tell(ot_trial, [result[ACCURACY_KEY], result[ACE_KEY]])
                self.complete += 1
                self.summary.complete += 1
            elif state == "PRUNED":
                self._ot_study.tell(ot_trial, state=TrialState.PRUNED)
                self.rejected += 1
                self.summary.pruned += 1
            else:
                self._ot_study.tell(ot_trial, state=TrialState.FAIL)
                self.rejected += 1
                self.summary.failed += 1
            self._completed_trials.add(trial_id)

        def save(self, checkpoint_path: str) -> None:
            # The study lives in the Optuna storage; the searcher keeps nothing else worth
            # saving (and its storage objects hold locks that cannot be pickled).
            Path(checkpoint_path).write_text("{}")

        def restore(self, checkpoint_path: str) -> None:
            pass

    return _PikeNASOptunaSearch


def _define_by_run(space: Any) -> Callable[[Any], dict[str, Any]]:
    def ask(trial: Any) -> dict[str, Any]:
        try:
            arch = space.suggest(trial)
        except PikeNASError as exc:  # e.g. a stale enqueued genome
            return {_ERROR_KEY: f"{type(exc).__name__}: {exc}"[:500], _NUMBER_KEY: trial.number}
        return {_ARCH_KEY: arch.to_json(indent=None), _NUMBER_KEY: trial.number}

    return ask


def _connect(address: str | None, num_cpus: int) -> None:
    """Join the cluster at ``address``, or start a local Ray with ``num_cpus`` CPUs (GPUs
    are detected) bound to 127.0.0.1."""
    import ray

    if ray.is_initialized():
        return
    common: dict[str, Any] = {
        "include_dashboard": False,
        "logging_level": logging.WARNING,
        "log_to_driver": False,
    }
    if address:
        try:
            # The cluster's processes were started elsewhere: give the trials our settings.
            env_vars = {key: os.environ[key] for key in ray_environment()}
            ray.init(address=address, runtime_env={"env_vars": env_vars}, **common)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise PikeNASError(
                f"cannot join the Ray cluster at {address!r}: {str(exc).splitlines()[0]}; "
                "start it with 'ray start --head --port 6379 --node-ip-address 127.0.0.1' "
                "or check the address"
            ) from None
    else:
        ray.init(address="local", num_cpus=num_cpus, _node_ip_address="127.0.0.1", **common)


def _driver_callback(
    searcher: Any, interval_s: float, on_progress: Callable[[], None] | None
) -> Any:
    """Tune callback of the driver's loop: heartbeats every ``interval_s`` seconds and
    ``on_progress()`` every second."""
    from ray.tune import Callback

    class _DriverTicks(Callback):
        # No closure over the arguments: Tune pickles its run config (tuner.pkl, for
        # Tuner.restore, which pikenas does not use), and the hooks hold a live display and
        # storage locks, which __getstate__ leaves out.
        def __init__(
            self, searcher: Any, interval_s: float, on_progress: Callable[[], None] | None
        ) -> None:
            self.searcher = searcher
            self.interval_s = interval_s
            self.on_progress = on_progress
            self.last_beat = 0.0
            self.last_progress = 0.0

        def __getstate__(self) -> dict[str, Any]:
            return {**self.__dict__, "searcher": None, "on_progress": None}

        def on_step_end(self, iteration: int, trials: list[Any], **info: Any) -> None:
            now = time.monotonic()
            if self.searcher is not None and now - self.last_beat >= self.interval_s:
                self.last_beat = now
                self.searcher.beat()
            if self.on_progress is not None and now - self.last_progress >= 1.0:
                self.last_progress = now
                self.on_progress()

    return _DriverTicks(searcher, interval_s, on_progress)


def run_ray_search(
    config: SearchConfig,
    study: optuna.Study,
    sampler: optuna.samplers.BaseSampler,
    *,
    n_trials: int,
    out_dir: str | Path,
    evaluator_spec: str = "proxy",
    workers: int | None = None,
    cpus_per_trial: int = 1,
    gpus_per_trial: float = 0.0,
    address: str | None = None,
    max_failures: int = 2,
    reuse_actors: bool = True,
    heartbeat_interval: float = 5.0,
    stale_after: float = 60.0,
    on_progress: Callable[[], None] | None = None,
    shutdown: bool = True,
) -> RaySearchSummary:
    """Run Ray Tune until ``study`` holds ``n_trials`` COMPLETE trials.

    ``study`` is the run's study, already created with its directions and study attributes
    (its storage must be reachable from the driver only). ``workers`` is the number of trials
    run at once (default: local Ray 1, a cluster all its CPUs // ``cpus_per_trial``); each gets
    ``cpus_per_trial`` CPUs (and torch threads) and ``gpus_per_trial`` GPUs. Ray's own files go
    to ``OUT/ray``. ``on_progress()`` is called about once a second while trials run.
    ``shutdown=False`` leaves Ray running (benchmarks, tests).
    """
    for key, value in ray_environment().items():
        os.environ.setdefault(key, value)
    from optuna.trial import TrialState
    from ray import tune

    from search._journal import buffered
    from search.worker import count_trials, recover_stale_trials

    if cpus_per_trial < 1:
        raise PikeNASError(f"--cpus-per-trial must be at least 1 (got {cpus_per_trial})")
    if gpus_per_trial < 0:
        raise PikeNASError(f"--gpus-per-trial must be 0 or more (got {gpus_per_trial})")
    if workers is not None and workers < 1:
        raise PikeNASError(f"--workers must be at least 1 (got {workers})")
    out = Path(out_dir).expanduser().resolve()
    summary = RaySearchSummary()
    summary.recovered = recover_stale_trials(study, stale_after=stale_after)
    trials = study.get_trials(deepcopy=False)
    complete, _ = count_trials(trials)
    rejected = sum(1 for t in trials if t.state in (TrialState.PRUNED, TrialState.FAIL))
    if complete >= n_trials:
        logger.info("study %s already holds %d COMPLETE trials", study.study_name, complete)
        return summary

    import ray

    _connect(address, num_cpus=(workers or 1) * cpus_per_trial)
    if workers is None and address:
        cluster_cpus = int(ray.cluster_resources().get("CPU", 1))
        workers = max(1, cluster_cpus // cpus_per_trial)
    workers = workers or 1

    search_config = _absolute_paths(config)
    # One buffered append per trial instead of one fsync'd append per gene (journal files).
    storage = buffered(study._storage)
    arch_table = ray.remote(num_cpus=0)(_ArchTableImpl).remote(_known_archs(study))
    searcher_class = _make_searcher_class()
    searcher = searcher_class(
        space=_define_by_run(search_config.space),
        metric=[ACCURACY_KEY, ACE_KEY],
        mode=["max", "min"],
        sampler=sampler,
        storage=storage,
        study_name=study.study_name,
        n_trials=n_trials,
        complete=complete,
        rejected=rejected,
        summary=summary,
    )
    resources: dict[str, float] = {"cpu": cpus_per_trial}
    if gpus_per_trial:
        resources["gpu"] = gpus_per_trial
    trainable = tune.with_resources(
        tune.with_parameters(
            _trial_function,
            search_config=search_config,
            evaluator_spec=evaluator_spec,
            threads=cpus_per_trial,
            arch_table=arch_table,
        ),
        resources,
    )
    name = f"{study.study_name}-{datetime.now():%Y%m%d-%H%M%S}"
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            num_samples=-1,  # the searcher ends the run at N COMPLETE trials
            max_concurrent_trials=workers,
            reuse_actors=reuse_actors,
            trial_dirname_creator=lambda trial: f"trial-{trial.trial_id}",
        ),
        run_config=tune.RunConfig(
            name=name,
            storage_path=str(out / "ray"),
            failure_config=tune.FailureConfig(max_failures=max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            callbacks=[_driver_callback(searcher, heartbeat_interval, on_progress)],
            verbose=0,
        ),
    )
    # Without the result files Tune's result grid warns once per trial at the end; the study
    # is the result.
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)
    started = time.perf_counter()
    try:
        tuner.fit()
    finally:
        summary.wall_s = time.perf_counter() - started
        summary.experiment_dir = str(out / "ray" / name)
        ray.kill(arch_table)
        if shutdown:
            ray.shutdown()
    return summary


def _absolute_paths(config: SearchConfig) -> SearchConfig:
    """The config with its data folder made absolute (trials may run elsewhere)."""
    data_dir = config.dataset.data_dir
    if not data_dir or Path(data_dir).is_absolute():
        return config
    dataset = config.dataset.model_copy(update={"data_dir": str(Path(data_dir).resolve())})
    return config.model_copy(update={"dataset": dataset})


def run_ray(request: RunRequest, progress: ProgressCallback | None = None) -> None:
    """The ``ray`` entry of :data:`search.backends.BACKENDS`: run ``request`` on Ray Tune.

    ``request.options`` may hold ``address`` (join that cluster), ``cpus_per_trial`` (default:
    local Ray ``cores // workers``, a cluster 1) and ``gpus_per_trial`` (default 0);
    ``request.workers`` trials run at once.
    """
    import optuna

    from results.storage import open_storage
    from search._journal import buffered
    from search.local import threads_per_worker
    from search.progress import snapshot
    from search.samplers import make_sampler
    from space.errors import EvaluationError

    options = dict(request.options)
    address = options.pop("address", None) or None
    cpus_per_trial = options.pop("cpus_per_trial", None)
    gpus_per_trial = float(options.pop("gpus_per_trial", None) or 0.0)
    if options:
        raise PikeNASError(f"unknown Ray backend options: {', '.join(sorted(options))}")
    if cpus_per_trial is None:
        cpus_per_trial = 1 if address else threads_per_worker(request.workers)
    settings = request.config.search
    study = optuna.load_study(
        study_name=request.study_name, storage=buffered(open_storage(request.storage_target))
    )

    def report() -> None:
        if progress is not None:
            progress(snapshot(study, request.n_trials))

    summary = run_ray_search(
        request.config,
        study,
        make_sampler(settings.sampler, settings.seed, settings.population_size),
        n_trials=request.n_trials,
        out_dir=request.out,
        evaluator_spec=request.evaluator,
        workers=request.workers,
        cpus_per_trial=int(cpus_per_trial),
        gpus_per_trial=gpus_per_trial,
        address=address,
        heartbeat_interval=request.heartbeat_interval,
        stale_after=request.stale_after,
        on_progress=report if progress is not None else None,
    )
    final = snapshot(study, request.n_trials)
    if progress is not None:
        progress(final)
    if final.complete < request.n_trials:
        reason = summary.gave_up or "the Ray run stopped early"
        raise EvaluationError(
            f"the study holds {final.complete} of {request.n_trials} COMPLETE trials: {reason}"
        )
