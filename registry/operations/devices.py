"""The device a command runs on, chosen at run time."""

from __future__ import annotations

from registry.store.errors import InvalidInput
from training.distributed import resolve_device


def device_for(requested: str) -> str:
    """``auto`` (a GPU when there is one), ``cpu``, ``cuda``, ``cuda:1``...; an unknown or absent
    device is a one-line error."""
    try:
        return resolve_device(requested)
    except ValueError as e:
        raise InvalidInput(str(e)) from e
