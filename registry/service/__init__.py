"""``Registry``: the one facade over the operations that the CLI, the demo and scripts use."""

from registry.service.registry import Registry

__all__ = ["Registry"]
