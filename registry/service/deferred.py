"""What the facades load on first use: the operations that need torch, transformers, the Hub or the
OpenAI client, so that opening a registry to list or show loads none of them
(:mod:`osutil.lazy_import`). The eager imports stay for type checkers and import-linter."""

from __future__ import annotations

from typing import TYPE_CHECKING

from osutil.lazy_import import lazy_module

if TYPE_CHECKING:
    import executive.protocol as protocol
    import training.reflections as reflect
    from registry.operations import (
        asking,
        bases,
        devices,
        evaluation,
        fine_tuning,
        integration,
        merge_inputs,
        merge_making,
        questions,
        reflections,
        registration,
        task_vectors,
        training_defaults,
    )
else:
    asking = lazy_module("registry.operations.asking")
    bases = lazy_module("registry.operations.bases")
    devices = lazy_module("registry.operations.devices")
    evaluation = lazy_module("registry.operations.evaluation")
    fine_tuning = lazy_module("registry.operations.fine_tuning")
    integration = lazy_module("registry.operations.integration")
    merge_inputs = lazy_module("registry.operations.merge_inputs")
    merge_making = lazy_module("registry.operations.merge_making")
    questions = lazy_module("registry.operations.questions")
    reflections = lazy_module("registry.operations.reflections")
    registration = lazy_module("registry.operations.registration")
    task_vectors = lazy_module("registry.operations.task_vectors")
    training_defaults = lazy_module("registry.operations.training_defaults")
    protocol = lazy_module("executive.protocol")
    reflect = lazy_module("training.reflections")

__all__ = [
    "asking",
    "bases",
    "devices",
    "evaluation",
    "fine_tuning",
    "integration",
    "merge_inputs",
    "merge_making",
    "protocol",
    "questions",
    "reflect",
    "reflections",
    "registration",
    "task_vectors",
    "training_defaults",
]
