"""A stand-in for an Optuna trial that picks every choice at random (seeded): random
candidates of a search space without a study."""

from __future__ import annotations

import random


class RandomTrial:
    def __init__(self, seed: int) -> None:
        self.random = random.Random(seed)

    def suggest_categorical(self, name: str, choices: object) -> object:
        return self.random.choice(list(choices))  # type: ignore[call-overload]
