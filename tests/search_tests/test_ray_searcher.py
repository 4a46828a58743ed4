"""The Ray backend's searcher, driven by hand as Tune would drive it (no Ray started)."""

from __future__ import annotations

import json
import math
from typing import Any

SPACE = {"stages": [{"blocks": 1, "stride": 1, "channels": [8, 16]}]}


def _searcher(n_trials: int, complete: int = 0, rejected: int = 0) -> tuple[Any, Any, Any]:
    import optuna

    from search._ray_backend import (
        ACCURACY_KEY,
        ACE_KEY,
        RaySearchSummary,
        _define_by_run,
        _make_searcher_class,
    )
    from search.config import config_from_dict

    assert (ACCURACY_KEY, ACE_KEY) == ("accuracy", "ace_v2")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    config = config_from_dict({"space": SPACE})
    storage = optuna.storages.InMemoryStorage()
    summary = RaySearchSummary()
    searcher = _make_searcher_class()(
        space=_define_by_run(config.space),
        metric=["accuracy", "ace_v2"],
        mode=["max", "min"],
        sampler=optuna.samplers.RandomSampler(seed=0),
        storage=storage,
        study_name="pikenas",
        n_trials=n_trials,
        complete=complete,
        rejected=rejected,
        summary=summary,
    )
    study = optuna.load_study(study_name="pikenas", storage=storage)
    return searcher, study, summary


def _report(state: str, values: tuple[float, float] | None, **attrs: Any) -> dict[str, Any]:
    accuracy, ace = values if values is not None else (math.nan, math.nan)
    return {
        "accuracy": accuracy,
        "ace_v2": ace,
        "pikenas_state": state,
        "pikenas_user_attrs": json.dumps(attrs),
    }


def test_outcomes_become_trial_states_with_user_attrs() -> None:
    from optuna.trial import TrialState

    from search.worker import worker_label

    searcher, study, summary = _searcher(n_trials=5)
    configs = [searcher.suggest(f"t{i}") for i in range(4)]
    assert all("pikenas_arch" in config for config in configs)
    assert [c["pikenas_trial_number"] for c in configs] == [0, 1, 2, 3]
    running = study.get_trials(states=(TrialState.RUNNING,))
    assert [t.user_attrs["worker"] for t in running] == [worker_label()] * 4

    searcher.on_trial_complete("t0", _report("COMPLETE", (0.75, 1234.0), status="ok", worker="w:1"))
    searcher.on_trial_complete(
        "t1", _report("PRUNED", None, status="over_budget", reason="ACE v2 is over max_ace")
    )
    searcher.on_trial_complete("t2", _report("FAIL", None, status="failed", reason="boom"))
    searcher.on_trial_complete("t3", None, error=True)  # the Ray trial died on every retry

    trials = study.trials
    assert [t.state for t in trials] == [
        TrialState.COMPLETE,
        TrialState.PRUNED,
        TrialState.FAIL,
        TrialState.FAIL,
    ]
    assert trials[0].values == [0.75, 1234.0]
    assert trials[0].user_attrs == {"status": "ok", "worker": "w:1"}
    assert trials[1].values is None and trials[1].user_attrs["status"] == "over_budget"
    assert trials[2].user_attrs["reason"] == "boom"
    assert trials[3].user_attrs["status"] == "failed"
    assert "Ray trial failed" in trials[3].user_attrs["reason"]
    assert (summary.complete, summary.pruned, summary.failed) == (1, 1, 2)


def test_asks_only_while_complete_plus_running_is_below_n() -> None:
    from ray.tune.search import Searcher

    searcher, study, _ = _searcher(n_trials=3, complete=1)
    assert searcher.suggest("a") is not None
    assert searcher.suggest("b") is not None
    assert searcher.suggest("c") is None  # 1 complete + 2 running: wait, do not overshoot
    searcher.on_trial_complete("a", _report("PRUNED", None, status="over_budget"))
    assert searcher.suggest("c") is not None  # the pruned one made room
    searcher.on_trial_complete("b", _report("COMPLETE", (0.5, 10.0), status="ok"))
    searcher.on_trial_complete("c", _report("COMPLETE", (0.6, 20.0), status="ok"))
    assert searcher.suggest("d") == Searcher.FINISHED
    assert len(study.trials) == 3


def test_gives_up_when_everything_is_rejected() -> None:
    from ray.tune.search import Searcher

    from search.worker import max_rejected

    searcher, study, summary = _searcher(n_trials=2, rejected=max_rejected(2))
    assert searcher.suggest("a") == Searcher.FINISHED
    assert summary.gave_up is not None and "rejected" in summary.gave_up
    assert study.trials == []


def test_driver_callback_pickles_without_its_live_hooks() -> None:
    """Tune pickles its run config (with the callbacks) into the experiment folder; the hooks
    hold a live display and storage locks."""
    import threading

    from ray import cloudpickle

    from search._ray_backend import _driver_callback

    searcher, _, _ = _searcher(n_trials=2)
    lock = threading.RLock()
    callback = _driver_callback(searcher, 1.0, on_progress=lambda: lock.acquire())
    restored = cloudpickle.loads(cloudpickle.dumps(callback))
    assert restored.searcher is None and restored.on_progress is None
    restored.on_step_end(0, [])  # a restored callback does nothing, and does not fail
