"""The ACE v2 cost table: how much one operation costs, as data.

For each operation kind of :data:`space.program.OP_KINDS` the table holds a *rule* that turns the
operand widths ``n`` and ``m`` (bits) into a cost, and a *scale* that multiplies it:

========  ==================  =====================================================
rule      cost of one op      used by default for
========  ==================  =====================================================
product   ``n * m``           mac, mul
max       ``max(n, m)``       add, round, compare
first     ``n``               shift
========  ==================  =====================================================

``float_bits`` is the width at which float operands are counted: 32, the only width the integer
program executes and ``pikenas verify`` checks (emulating fp16 changes 2.6-14 % of requantized
codes), so a table that prices fp16 is refused: it would price a network nothing runs.

A table is loaded from YAML or JSON (:meth:`CostTable.load`)::

    name: energy-45nm-illustrative
    unit: pJ
    float_bits: 32
    ops:
      mac: {rule: product, scale: 0.0035}
      mul: {rule: product, scale: 0.003}
      add: {rule: max, scale: 0.0035}
      round: {rule: max, scale: 0.0035}
      compare: {rule: max, scale: 0.0035}
      shift: {rule: first, scale: 0.001}

Every kind must be priced; unknown keys, kinds and rules are rejected with
:class:`space.errors.CostModelError` naming the file and the key.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from pikenas.space._parse import parse_json, parse_yaml, read_text
from pikenas.space.errors import CostModelError
from pikenas.space.program.ir import FLOAT_BITS, OP_KINDS

__all__ = ["COST_RULES", "FLOAT_WIDTHS", "CostRule", "OpPrice", "CostTable"]

CostRule = Literal["product", "max", "first"]
COST_RULES: tuple[str, ...] = get_args(CostRule)
FLOAT_WIDTHS: tuple[int, ...] = (32,)

# DESIGN.md's table: MAC and multiply n*m; add, round, compare max(n, m); shift n.
_DEFAULT_RULES: dict[str, str] = {
    "mac": "product",
    "mul": "product",
    "add": "max",
    "round": "max",
    "compare": "max",
    "shift": "first",
}
#: the price of the largest plausible network must stay a finite float64 (and print as JSON):
#: this many executions of every op kind, on operands this wide (bits)
PLAUSIBLE_OPS = 10**15
WIDEST_OPERAND = 64
_TOP_LEVEL_KEYS = ("name", "description", "unit", "float_bits", "ops")
_PRICE_KEYS = ("rule", "scale", "float_scale")


@dataclass(frozen=True)
class OpPrice:
    """The price of one operation kind: ``scale * rule(n, m)`` per execution.

    ``float_scale`` (default: ``scale``) replaces ``scale`` for operations on float operands,
    for tables where float and integer units differ (an energy table: a 32-bit float add costs
    about nine times a 32-bit integer add at 45 nm).
    """

    rule: CostRule
    scale: int | float = 1
    float_scale: int | float | None = None

    def unit_cost(self, bits_a: int, bits_b: int, float_operands: bool = False) -> int | float:
        """Cost of one execution on ``bits_a``-bit and ``bits_b``-bit operands."""
        if self.rule == "product":
            base = bits_a * bits_b
        elif self.rule == "max":
            base = bits_a if bits_a >= bits_b else bits_b
        else:
            base = bits_a
        if float_operands and self.float_scale is not None:
            return base * self.float_scale
        return base * self.scale


@dataclass(frozen=True)
class CostTable:
    """Prices of the six ACE v2 operation kinds and the width of float operands.

    ``name`` is reported with every ACE v2 figure (a number means nothing without its table);
    ``unit`` says what the cost is in (``"bit-ops"`` for the default table, ``"pJ"`` for an
    energy table).
    """

    name: str
    prices: Mapping[str, OpPrice]
    float_bits: int = FLOAT_BITS
    unit: str = "bit-ops"
    description: str = ""
    _unit_cost_cache: dict[tuple[str, int, int, bool], int | float] = field(
        default_factory=dict, init=False, repr=False, compare=False, hash=False
    )

    def __post_init__(self) -> None:
        missing = [kind for kind in OP_KINDS if kind not in self.prices]
        unknown = [kind for kind in self.prices if kind not in OP_KINDS]
        if missing or unknown:
            raise CostModelError(
                f"cost table {self.name!r}: op kinds must be exactly {list(OP_KINDS)} "
                f"(missing {missing}, unknown {unknown})"
            )
        if self.float_bits not in FLOAT_WIDTHS:
            raise CostModelError(
                f"cost table {self.name!r}: float_bits={self.float_bits} is not supported: the "
                "integer program runs float32 (nothing executes fp16); remove float_bits"
            )
        self._check_prices()

    def _check_prices(self) -> None:
        """Every scale a finite non-negative number, and the price of the largest plausible
        network (:data:`PLAUSIBLE_OPS` of every kind at :data:`WIDEST_OPERAND` bits) a finite
        float64: a table that would print ``Infinity`` / ``NaN`` is refused up front."""
        worst = 0.0
        for kind in OP_KINDS:
            price = self.prices[kind]
            for key in ("scale", "float_scale"):
                value = getattr(price, key)
                if value is not None:
                    _parse_scale(value, f"ops.{kind}.{key}", f"cost table {self.name!r}")
            try:
                for is_float in (False, True):
                    unit = float(price.unit_cost(WIDEST_OPERAND, WIDEST_OPERAND, is_float))
                    worst += unit * PLAUSIBLE_OPS
            except OverflowError:
                worst = math.inf
            if not math.isfinite(worst):
                raise CostModelError(
                    f"cost table {self.name!r}: ops.{kind} is priced so high that a network of "
                    f"{PLAUSIBLE_OPS:.0e} operations would cost more than a float64 holds; "
                    "use smaller scales (another unit)"
                )

    # ---- construction ----------------------------------------------------------------
    @classmethod
    def default(cls, float_bits: int = FLOAT_BITS) -> CostTable:
        """DESIGN.md's ACE v2 table (scale 1: the cost is in bit-operations)."""
        name = "ace_v2" if float_bits == FLOAT_BITS else f"ace_v2-fp{float_bits}"
        prices = {kind: OpPrice(rule) for kind, rule in _DEFAULT_RULES.items()}  # type: ignore[arg-type]
        return cls(
            name=name,
            prices=prices,
            float_bits=float_bits,
            unit="bit-ops",
            description="ACE v2 as pikenas defines it (DESIGN.md)",
        )

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "cost table") -> CostTable:
        """Validate ``data`` (the parsed YAML / JSON); ``source`` names it in errors."""
        if not isinstance(data, dict):
            raise CostModelError(f"{source}: expected a mapping with an 'ops' key")
        for key in data:
            if key not in _TOP_LEVEL_KEYS:
                raise CostModelError(
                    f"{source}: unknown key {key!r}; allowed keys are {list(_TOP_LEVEL_KEYS)}"
                )
        if "ops" not in data:
            raise CostModelError(f"{source}: missing key 'ops' (the price of every op kind)")
        ops = data["ops"]
        if not isinstance(ops, dict):
            raise CostModelError(f"{source}: 'ops' must map op kinds to {{rule, scale}}")
        prices: dict[str, OpPrice] = {}
        for kind, entry in ops.items():
            prices[str(kind)] = _parse_price(kind, entry, source)
        missing = [kind for kind in OP_KINDS if kind not in prices]
        if missing:
            raise CostModelError(
                f"{source}: ops.{missing[0]} is missing; every op kind {list(OP_KINDS)} "
                "needs a price"
            )
        float_bits = data.get("float_bits", FLOAT_BITS)
        if isinstance(float_bits, bool) or float_bits not in FLOAT_WIDTHS:
            raise CostModelError(
                f"{source}: float_bits={float_bits!r} is not supported: the integer program "
                "runs float32 (nothing executes fp16); remove float_bits"
            )
        for key in ("name", "unit", "description"):
            if key in data and not isinstance(data[key], str):
                raise CostModelError(f"{source}: {key} must be a string")
        return cls(
            name=data.get("name", "custom"),
            prices=prices,
            float_bits=int(float_bits),
            unit=data.get("unit", "bit-ops"),
            description=data.get("description", ""),
        )

    @classmethod
    def load(cls, path: str | Path) -> CostTable:
        """Read a table from a YAML (``.yaml`` / ``.yml``) or JSON file.

        The table's name defaults to the file name without its suffix.
        """
        path = Path(path)
        text = read_text(path, CostModelError)
        parse = parse_json if path.suffix.lower() == ".json" else parse_yaml
        data = parse(text, f"cost table {path}", CostModelError)
        if isinstance(data, dict) and "name" not in data:
            data = {**data, "name": path.stem}
        return cls.from_dict(data, source=f"cost table {path}")

    # ---- use -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The table as :meth:`from_dict` reads it (JSON-able)."""
        return {
            "name": self.name,
            "description": self.description,
            "unit": self.unit,
            "float_bits": self.float_bits,
            "ops": {kind: _price_dict(self.prices[kind]) for kind in OP_KINDS},
        }

    @property
    def integral(self) -> bool:
        """True when every cost is an integer (all scales are integers)."""
        return all(
            isinstance(price.scale, int) and isinstance(price.float_scale, int | None)
            for price in self.prices.values()
        )

    def unit_cost(
        self, op: str, bits_a: int, bits_b: int, float_operands: bool = False
    ) -> int | float:
        """Cost of one ``op`` on operands already at their counted widths (cached)."""
        key = (op, bits_a, bits_b, float_operands)
        cached = self._unit_cost_cache.get(key)
        if cached is None:
            cached = self.prices[op].unit_cost(bits_a, bits_b, float_operands)
            self._unit_cost_cache[key] = cached
        return cached

    def counted_widths(self, bits_a: int, bits_b: int, float_operands: bool) -> tuple[int, int]:
        """Operand widths as charged: 32-bit float operands become ``float_bits`` wide."""
        if not float_operands or self.float_bits == FLOAT_BITS:
            return bits_a, bits_b
        return (
            self.float_bits if bits_a == FLOAT_BITS else bits_a,
            self.float_bits if bits_b == FLOAT_BITS else bits_b,
        )


def _parse_price(kind: Any, entry: Any, source: str) -> OpPrice:
    if kind not in OP_KINDS:
        raise CostModelError(
            f"{source}: unknown op kind ops.{kind}; use the kinds {list(OP_KINDS)}"
        )
    if not isinstance(entry, dict):
        raise CostModelError(f"{source}: ops.{kind} must be a mapping {{rule, scale}}")
    for key in entry:
        if key not in _PRICE_KEYS:
            raise CostModelError(
                f"{source}: unknown key ops.{kind}.{key}; allowed keys are {list(_PRICE_KEYS)}"
            )
    rule = entry.get("rule", _DEFAULT_RULES[kind])
    if rule not in COST_RULES:
        raise CostModelError(
            f"{source}: ops.{kind}.rule={rule!r} is unknown; use one of {list(COST_RULES)}"
        )
    scale = _parse_scale(entry.get("scale", 1), f"ops.{kind}.scale", source)
    float_scale = entry.get("float_scale")
    if float_scale is not None:
        float_scale = _parse_scale(float_scale, f"ops.{kind}.float_scale", source)
    return OpPrice(rule=rule, scale=scale, float_scale=float_scale)


def _parse_scale(value: Any, key: str, source: str) -> int | float:
    finite = isinstance(value, int | float) and not isinstance(value, bool)
    try:
        finite = finite and math.isfinite(value)
    except OverflowError:  # an integer beyond float64
        finite = False
    if not finite:
        shown = repr(value) if len(repr(value)) < 40 else repr(value)[:37] + "..."
        raise CostModelError(f"{source}: {key} must be a finite number, not {shown}")
    if value < 0:
        raise CostModelError(f"{source}: {key}={value} must not be negative")
    return value


def _price_dict(price: OpPrice) -> dict[str, Any]:
    data: dict[str, Any] = {"rule": price.rule, "scale": price.scale}
    if price.float_scale is not None:
        data["float_scale"] = price.float_scale
    return data
