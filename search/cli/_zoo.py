"""`pikenas zoo`."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from pikenas.search.cli._app import app, echo, fail


@app.command()
def zoo(
    name: Annotated[
        str | None,
        typer.Argument(
            metavar="NAME",
            help="Zoo model name (e.g. mobilenet_v1-1.0-w8a8); omit to list them all.",
        ),
    ] = None,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help="With NAME: print its ArchConfig JSON. Without: a JSON list of names "
            "and descriptions.",
        ),
    ] = False,
    resolution: Annotated[
        int | None,
        typer.Option("--resolution", min=1, help="Input size in pixels (default: the model's)."),
    ] = None,
    input_channels: Annotated[
        int | None,
        typer.Option("--input-channels", min=1, help="Image channels (default: the model's)."),
    ] = None,
    num_classes: Annotated[
        int | None,
        typer.Option("--num-classes", min=2, help="Classifier outputs (default: the model's)."),
    ] = None,
) -> None:
    """List the reference zoo, or show one model.

    Without NAME: every zoo name with its one-line description. With NAME: its description and
    feature-map sizes; with --json exactly the ArchConfig JSON that `pikenas ace`, `train` and
    `search` accept. --resolution, --input-channels and --num-classes override the model's
    defaults (224x224x3 and 1000 classes for ImageNet models, 8x8x1 and 10 for tiny-*).
    """
    from pikenas.space.errors import PikeNASError, UnknownNameError
    from pikenas.space.zoo.catalog import ZOO, get_zoo_arch, zoo_names

    if name is None:
        entries = [ZOO.get(zoo_name) for zoo_name in zoo_names()]
        if as_json:
            listing = [{"name": e.name, "description": e.description} for e in entries]
            echo(json.dumps(listing, indent=2))
            return
        width = max(len(e.name) for e in entries)
        for entry in entries:
            echo(f"{entry.name:<{width}}  {entry.description}")
        return

    try:
        arch = get_zoo_arch(
            name, resolution=resolution, input_channels=input_channels, num_classes=num_classes
        )
    except UnknownNameError as exc:
        raise fail(f"{exc} ('pikenas zoo' lists them with descriptions)") from None
    except PikeNASError as exc:  # e.g. a resolution too small for the strides
        raise fail(str(exc)) from None
    if as_json:
        echo(arch.to_json())
        return
    sizes = " -> ".join(f"{channels}x{size}x{size}" for channels, size in arch.feature_sizes())
    echo(f"{arch.name}: {ZOO.get(name).description}")
    echo(
        f"input {arch.input_channels}x{arch.resolution}x{arch.resolution}, "
        f"{len(arch.blocks)} blocks, {arch.num_classes} classes, archid {arch.archid}"
    )
    echo(f"features: {sizes}")
