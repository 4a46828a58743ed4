"""Small real Optuna studies following the docs/study_contract.md contract, for results tests."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna

from pikenas.results.record import FinalResult, StudyRecord, update_study_record
from pikenas.results.storage import DEFAULT_STUDY_NAME, open_storage
from pikenas.space.arch import ArchConfig, ConvQuantSpec, ConvStemSpec, HeadSpec, PikeBlockSpec

optuna.logging.set_verbosity(optuna.logging.WARNING)


def tiny_arch(
    bits: Sequence[tuple[int, int]] = ((8, 8), (4, 4)),
    channels: int = 8,
    name: str = "",
) -> ArchConfig:
    """8x8x1 input, conv stem (8/8), one PikeLPN block per (weight_bits, activation_bits), head.

    Block ``i`` has depthwise and pointwise weight bits ``bits[i][0]`` and activation bits
    ``bits[i][1]``.
    """
    blocks = tuple(
        PikeBlockSpec(
            out_channels=channels,
            depthwise=ConvQuantSpec(weight_bits=w),
            pointwise=ConvQuantSpec(weight_bits=w),
            activation_bits=a,
        )
        for w, a in bits
    )
    return ArchConfig(
        name=name,
        input_channels=1,
        resolution=8,
        num_classes=10,
        stem=ConvStemSpec(out_channels=channels, stride=1),
        blocks=blocks,
        head=HeadSpec(),
    )


@dataclass
class Point:
    """One trial to record. ``state``: COMPLETE, PRUNED, FAIL or RUNNING."""

    accuracy: float = 0.5
    ace_v2: float = 1000.0
    state: str = "COMPLETE"
    bits: Sequence[tuple[int, int]] = ((8, 8), (4, 4))
    attrs: dict[str, Any] = field(default_factory=dict)
    #: block width: points that differ only here are different architectures (archids)
    channels: int = 8


def record(study: optuna.Study, point: Point) -> int:
    """Ask / set the contract's user attrs / tell, like the search does; the trial number."""
    trial = study.ask()
    arch = tiny_arch(point.bits, point.channels, name=point.attrs.get("baseline", ""))
    attrs: dict[str, Any] = {
        "arch": arch.to_json(indent=None),
        "archid": arch.archid,
        "ace_v1": point.ace_v2 / 2,
        "ace_v2": point.ace_v2,
        "macs": 1000,
        "params": 200,
        "elementwise_share": 0.25,
        "proxy_wall_s": 1.5,
        "val_accuracy": point.accuracy,
        "status": {"COMPLETE": "ok", "PRUNED": "over_budget", "FAIL": "failed"}.get(
            point.state, "ok"
        ),
        "worker": "host:1",
    }
    if point.state == "PRUNED":
        attrs["reason"] = "ACE v2 over budget"
    attrs.update(point.attrs)
    # Full-training results go to the study (as search.finalize stores them: Optuna does
    # not let a finished trial change).
    final = {key: attrs.pop(key) for key in list(attrs) if key.startswith("final_")}
    if final:
        final = {
            "final_accuracy": point.accuracy,
            "final_val_accuracy": point.accuracy,
            "final_wall_s": 1.0,
            "final_dir": "/nonexistent",
            **final,
        }
        stored = dict(StudyRecord.of(study).final_results)
        stored[trial.number] = FinalResult(**final)
        update_study_record(study, final_results=stored)
    for key, value in attrs.items():
        trial.set_user_attr(key, value)
    if point.state == "COMPLETE":
        study.tell(trial, [point.accuracy, point.ace_v2])
    elif point.state == "PRUNED":
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    elif point.state == "FAIL":
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
    return trial.number


def make_run(
    run_dir: Path, points: Sequence[Point], study_name: str = DEFAULT_STUDY_NAME
) -> optuna.Study:
    """A run folder ``run_dir`` (journal ``study.log``) holding one study with ``points``."""
    storage = open_storage(run_dir, create=True)
    study = optuna.create_study(
        study_name=study_name, storage=storage, directions=["maximize", "minimize"]
    )
    update_study_record(
        study,
        pikenas_version="0.1.0",
        dataset="digits",
        cost_table="ace_v2",
        cost_unit="bit-ops",
        search_config=json.dumps({"search": {"sampler": "nsga2"}, "dataset": {"name": "digits"}}),
    )
    for point in points:
        record(study, point)
    return study


#: a small mixed study: front = trials 0 (0.5, 100), 2 (0.8, 300), 3 (0.8, 300, the same
#: architecture as 2), 5 (0.9, 900); as a set of architectures: 0, 2, 5.
MIXED = (
    Point(0.5, 100.0, attrs={"baseline": "mobilenet_v1-0.25-w4a4"}),
    Point(0.4, 200.0, channels=16),
    Point(0.8, 300.0, bits=((4, 4), (4, 4))),
    Point(0.8, 300.0, bits=((4, 4), (4, 4)), attrs={"status": "duplicate", "duplicate_of": 2}),
    Point(0.7, 500.0, channels=24),
    Point(0.9, 900.0, channels=32, attrs={"final_accuracy": 0.95, "final_dir": "/nonexistent"}),
    Point(0.0, 5000.0, state="PRUNED"),
    Point(state="FAIL"),
    Point(state="RUNNING"),
)
