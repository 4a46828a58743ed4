"""The ACE counter: from a model's cost declarations to an :class:`AceReport`.

How a model is counted:

1. The model is built on the meta device (no memory, no values) and run once on a
   ``(1, C, R, R)`` meta tensor; forward hooks record each counted module's first tensor input
   shape and output shape on every call. Only shapes matter in this pass, so elementwise
   modules (:class:`space.costs.ShapePreserving`, pikenas quantizers and activations, plain
   torch norms / activations) return their input instead of computing.
2. The module tree is walked from the root. A module with ``inference_ops`` is counted from its
   own declaration (its children are not visited: the declaration covers them). A
   :class:`space.costs.CostContainer`, ``nn.Sequential``, ``nn.ModuleList`` or ``nn.ModuleDict``
   is recursed into. A plain torch module of the exact types in
   :data:`evaluators._torch_handlers.TORCH_HANDLERS` is counted at float widths. Anything else
   raises :class:`space.errors.CostModelError` naming its type and path: a silent undercount
   corrupts the Pareto front.
3. A counted module called several times is counted once per call (its params once). A module
   that never ran is skipped if it holds no parameters and is an error otherwise.

ACE v1 (PokeBNN) = sum over mac ops of ``bits_a * bits_b`` at the declared widths (independent
of the cost table). ACE v2 = sum over all ops of the cost table's cost.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from evaluators._cost_table import CostTable
from evaluators._report import AceReport, BreakdownRow, LayerSummary
from evaluators._torch_handlers import TORCH_HANDLERS
from space.arch import ArchConfig
from space.costs import OP_KINDS, CostDeclaration
from space.errors import CostModelError

__all__ = ["count_ace", "declarations", "ROOT_LAYER"]

logger = logging.getLogger(__name__)

Shape = tuple[int, ...]
ROOT_LAYER = "(model)"

# How a module class is treated: "declares", "container", "handler" or "unknown".
_KIND_CACHE: dict[type, str] = {}
_SEQUENTIAL_FORWARD = nn.Sequential.forward


def _module_kind(module_type: type) -> str:
    kind = _KIND_CACHE.get(module_type)
    if kind is not None:
        return kind
    if callable(getattr(module_type, "inference_ops", None)):
        kind = "declares"
    elif getattr(module_type, "cost_container", False) is True:
        kind = "container"
    elif issubclass(module_type, nn.Sequential):
        # A subclass that overrides forward may compute something between its children.
        kind = "container" if module_type.forward is _SEQUENTIAL_FORWARD else "unknown"
    elif issubclass(module_type, nn.ModuleList | nn.ModuleDict):
        kind = "container"
    elif module_type in TORCH_HANDLERS:
        kind = "handler"
    else:
        kind = "unknown"
    _KIND_CACHE[module_type] = kind
    return kind


def _counted_modules(root: nn.Module) -> list[tuple[str, nn.Module, str]]:
    """``(path, module, kind)`` of every module the counter charges, in tree order.

    Raises :class:`CostModelError` for a module it does not know, naming its type and path.
    """
    counted: list[tuple[str, nn.Module, str]] = []
    stack: list[tuple[str, nn.Module]] = [("", root)]
    seen: set[int] = set()
    while stack:
        path, module = stack.pop()
        if id(module) in seen:  # registered under two names: its calls are counted once
            continue
        seen.add(id(module))
        kind = _module_kind(type(module))
        if kind == "declares" or kind == "handler":
            counted.append((path or ROOT_LAYER, module, kind))
            continue
        if kind == "unknown":
            type_name = f"{type(module).__module__}.{type(module).__qualname__}"
            raise CostModelError(
                f"cannot count ACE: module {path or ROOT_LAYER!r} of type {type_name} neither "
                "declares inference_ops nor is a CostContainer or a known torch module "
                "(strict: a silent undercount corrupts the Pareto front); give it an "
                "inference_ops method or mark it a CostContainer"
            )
        own = [name for name, param in module._parameters.items() if param is not None]
        if own:
            raise CostModelError(
                f"cannot count ACE: container {path or ROOT_LAYER!r} "
                f"({type(module).__qualname__}) holds parameters of its own ({', '.join(own)}) "
                "that no declaration covers; move them into a module that declares its ops"
            )
        prefix = f"{path}." if path else ""
        children = [(prefix + name, child) for name, child in module._modules.items() if child]
        stack.extend(reversed(children))
    return counted


# Exact torch types whose forward is elementwise (output shape = input shape).
_TORCH_ELEMENTWISE: frozenset[type] = frozenset(
    {
        nn.BatchNorm1d,
        nn.BatchNorm2d,
        nn.ReLU,
        nn.ReLU6,
        nn.PReLU,
        nn.Hardtanh,
        nn.Sigmoid,
        nn.Hardsigmoid,
        nn.Identity,
        nn.Dropout,
    }
)
_ELEMENTWISE_CACHE: dict[type, bool] = {}


def _space_elementwise_bases() -> tuple[type, ...]:
    """pikenas's quantizers and activations: elementwise by their contract (space/), whether
    or not they carry the :class:`space.costs.ShapePreserving` marker."""
    from space.activations import Activation
    from space.quantizers import Quantizer

    return (Quantizer, Activation)


def _is_elementwise(module_type: type) -> bool:
    known = _ELEMENTWISE_CACHE.get(module_type)
    if known is None:
        known = (
            module_type in _TORCH_ELEMENTWISE
            or getattr(module_type, "preserves_shape", False) is True
            or issubclass(module_type, _space_elementwise_bases())
        )
        _ELEMENTWISE_CACHE[module_type] = known
    return known


def _pass_through(x: Any, *args: Any, **kwargs: Any) -> Any:
    return x


def _all_modules(root: nn.Module) -> list[nn.Module]:
    """Every module under ``root`` once (a plain walk: ``nn.Module.modules`` is slower)."""
    found = [root]
    seen = {id(root)}
    index = 0
    while index < len(found):
        for child in found[index]._modules.values():
            if child is not None and id(child) not in seen:
                seen.add(id(child))
                found.append(child)
        index += 1
    return found


def _skip_elementwise_arithmetic(modules: list[nn.Module]) -> list[nn.Module]:
    """Make every elementwise module return its input during the shape pass.

    Shapes are all the pass needs, and on the meta device each elementwise op costs about a
    millisecond of Python (torch's reference kernels), so fake quantizers would dominate the
    time. Hooks still fire. Returns the patched modules (undo with :func:`_restore`).
    """
    patched = []
    for module in modules:
        if "forward" not in module.__dict__ and _is_elementwise(type(module)):
            object.__setattr__(module, "forward", _pass_through)
            patched.append(module)
    return patched


def _restore(patched: list[nn.Module]) -> None:
    for module in patched:
        object.__delattr__(module, "forward")


def _first_tensor_shape(value: Any) -> Shape | None:
    if isinstance(value, torch.Tensor):
        return tuple(value.shape)
    if isinstance(value, list | tuple):
        for item in value:
            shape = _first_tensor_shape(item)
            if shape is not None:
                return shape
    if isinstance(value, dict):
        for item in value.values():
            shape = _first_tensor_shape(item)
            if shape is not None:
                return shape
    return None


def _recorder(calls: list[tuple[Shape, Shape]]) -> Callable[..., None]:
    def hook(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        input_shape = _first_tensor_shape(args)
        if input_shape is None:
            input_shape = _first_tensor_shape(kwargs)
        output_shape = _first_tensor_shape(output)
        calls.append((input_shape or (), output_shape or ()))

    return hook


def _meta_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose parameters and buffers live on the meta device (no data copy)."""
    memo: dict[int, Any] = {}
    for tensor in list(model.parameters()) + list(model.buffers()):
        if id(tensor) in memo:
            continue
        meta = torch.empty_like(tensor, device="meta")
        if isinstance(tensor, nn.Parameter):
            meta = nn.Parameter(meta, requires_grad=tensor.requires_grad)
        memo[id(tensor)] = meta
    return copy.deepcopy(model, memo)


def _on_meta(model: nn.Module) -> bool:
    for module in _all_modules(model):
        for tensor in (*module._parameters.values(), *module._buffers.values()):
            if tensor is not None and tensor.device.type != "meta":
                return False
    return True


def _prepare(
    target: ArchConfig | nn.Module, input_shape: tuple[int, ...] | None
) -> tuple[nn.Module, Shape, str]:
    """The meta model to run, the input shape and a display name."""
    if isinstance(target, ArchConfig):
        from space.build import build_model

        with torch.device("meta"):
            model = build_model(target)
        if input_shape is None:
            input_shape = (1, target.input_channels, target.resolution, target.resolution)
        return model, tuple(input_shape), target.name
    if not isinstance(target, nn.Module):
        raise CostModelError(
            f"count_ace needs an ArchConfig or a torch nn.Module, not {type(target).__name__}"
        )
    if input_shape is None:
        arch = getattr(target, "arch", None)
        if not isinstance(arch, ArchConfig):
            raise CostModelError(
                "count_ace(module) needs input_shape=(1, C, H, W) when the module carries "
                "no ArchConfig in .arch"
            )
        input_shape = (1, arch.input_channels, arch.resolution, arch.resolution)
    model = target if _on_meta(target) else _meta_copy(target)
    return model, tuple(input_shape), type(target).__name__


def declarations(
    target: ArchConfig | nn.Module, input_shape: tuple[int, ...] | None = None
) -> tuple[list[tuple[str, str, CostDeclaration]], Shape, str]:
    """Every counted module's declaration for one forward pass.

    Returns ``([(layer path, module type name, declaration), ...], input shape, model name)``,
    one entry per module call, in module-tree order.
    """
    model, shape, name = _prepare(target, input_shape)
    counted = _counted_modules(model)
    calls: list[list[tuple[Shape, Shape]]] = [[] for _ in counted]
    handles = [
        module.register_forward_hook(_recorder(calls[index]), with_kwargs=True)
        for index, (_, module, _) in enumerate(counted)
    ]
    modules = _all_modules(model)
    training = [module.training for module in modules]
    patched = _skip_elementwise_arithmetic(modules)
    try:
        for module in modules:  # eval mode: running statistics, no batch statistics
            object.__setattr__(module, "training", False)
        with torch.no_grad():
            model(torch.empty(shape, device="meta"))
    except CostModelError:
        raise
    except Exception as exc:  # the forward of a user model can fail in any way
        raise CostModelError(
            f"cannot count ACE: the forward pass on a meta tensor of shape {shape} failed: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    finally:
        _restore(patched)
        for handle in handles:
            handle.remove()
        for module, mode in zip(modules, training, strict=True):
            object.__setattr__(module, "training", mode)

    logger.debug("ACE shape pass: %d counted modules, %d patched", len(counted), len(patched))
    result: list[tuple[str, str, CostDeclaration]] = []
    for (path, module, kind), module_calls in zip(counted, calls, strict=True):
        type_name = type(module).__name__
        if not module_calls:
            if any(True for _ in module.parameters()):
                raise CostModelError(
                    f"cannot count ACE: module {path!r} ({type_name}) holds parameters but "
                    "never ran in the forward pass; remove it or call it"
                )
            continue
        for call_index, (in_shape, out_shape) in enumerate(module_calls):
            if kind == "declares":
                declaration = module.inference_ops(in_shape, out_shape)  # type: ignore[operator]
            else:
                declaration = TORCH_HANDLERS[type(module)](module, in_shape, out_shape)
            if not isinstance(declaration, CostDeclaration):
                raise CostModelError(
                    f"module {path!r} ({type_name}).inference_ops returned "
                    f"{type(declaration).__name__}, not a CostDeclaration"
                )
            if call_index:  # params are stored once, however often the module runs
                declaration = CostDeclaration(declaration.ops, declaration.elements, 0)
            result.append((path, type_name, declaration))
    return result, shape, name


def count_ace(
    target: ArchConfig | nn.Module,
    *,
    input_shape: tuple[int, ...] | None = None,
    cost_table: CostTable | None = None,
) -> AceReport:
    """ACE v1, ACE v2, MACs, params and the per-layer breakdown of one forward pass.

    ``target``: an :class:`ArchConfig` (built on the meta device, input
    ``(1, input_channels, resolution, resolution)``) or an ``nn.Module`` (then ``input_shape``
    ``(1, C, H, W)`` is needed unless the module carries its ArchConfig as ``.arch``; a module
    with real weights is counted on a meta copy, its weights untouched).
    ``cost_table``: defaults to :meth:`CostTable.default` (DESIGN.md's table, fp32 floats).
    """
    table = cost_table if cost_table is not None else CostTable.default()
    entries, shape, name = declarations(target, input_shape)
    return _aggregate(entries, shape, name, table)


def _aggregate(
    entries: list[tuple[str, str, CostDeclaration]],
    shape: Shape,
    name: str,
    table: CostTable,
) -> AceReport:
    # (layer, op, bits_a, bits_b, float) -> [count, ace_v1, labels]
    rows: dict[tuple[str, str, int, int, bool], list[Any]] = {}
    layer_info: dict[str, list[Any]] = {}  # layer -> [module type, params]
    elements: dict[str, int] = {}
    counted_widths = table.counted_widths
    for path, type_name, declaration in entries:
        info = layer_info.get(path)
        if info is None:
            info = layer_info[path] = [type_name, 0]
        info[1] += declaration.params
        for kind, count in declaration.elements.items():
            elements[kind] = elements.get(kind, 0) + count
        for op in declaration.ops:
            bits_a, bits_b = counted_widths(op.bits_a, op.bits_b, op.float_operands)
            key = (path, op.op, bits_a, bits_b, op.float_operands)
            row = rows.get(key)
            if row is None:
                row = rows[key] = [0, 0, []]
            row[0] += op.count
            if op.op == "mac":
                row[1] += op.count * op.bits_a * op.bits_b
            if op.label and op.label not in row[2]:
                row[2].append(op.label)

    # layer -> [macs, ace_v1, mac cost, elementwise cost]
    layer_totals: dict[str, list[Any]] = {path: [0, 0, 0, 0] for path in layer_info}
    op_totals: dict[str, Any] = {}
    breakdown: list[BreakdownRow] = []
    unit_cost = table.unit_cost
    for (path, op_kind, bits_a, bits_b, is_float), (count, v1, labels) in rows.items():
        cost = count * unit_cost(op_kind, bits_a, bits_b, is_float)
        breakdown.append(
            BreakdownRow(
                layer=path,
                module=layer_info[path][0],
                op=op_kind,
                count=count,
                bits_a=bits_a,
                bits_b=bits_b,
                float_operands=is_float,
                labels="+".join(labels),
                cost=cost,
                ace_v1=v1,
            )
        )
        op_totals[op_kind] = op_totals.get(op_kind, 0) + cost
        totals = layer_totals[path]
        if op_kind == "mac":
            totals[0] += count
            totals[1] += v1
            totals[2] += cost
        else:
            totals[3] += cost

    layers = tuple(
        LayerSummary(
            layer=path,
            module=type_name,
            params=params,
            macs=layer_totals[path][0],
            ace_v1=layer_totals[path][1],
            mac_cost=layer_totals[path][2],
            elementwise_cost=layer_totals[path][3],
        )
        for path, (type_name, params) in layer_info.items()
    )
    ace_v2 = sum(row.cost for row in breakdown)
    mac_cost = sum(row.cost for row in breakdown if row.op == "mac")
    elementwise_cost = sum(row.cost for row in breakdown if row.op != "mac")
    return AceReport(
        ace_v1=sum(layer.ace_v1 for layer in layers),
        ace_v2=ace_v2,
        macs=sum(layer.macs for layer in layers),
        params=sum(layer.params for layer in layers),
        mac_cost=mac_cost,
        elementwise_cost=elementwise_cost,
        elementwise_share=elementwise_cost / ace_v2 if ace_v2 else 0.0,
        elementwise_elements=elements,
        breakdown=tuple(breakdown),
        layers=layers,
        cost_table=table.name,
        cost_unit=table.unit,
        float_bits=table.float_bits,
        input_shape=shape,
        model=name,
        op_totals={kind: op_totals[kind] for kind in OP_KINDS if kind in op_totals},
    )
