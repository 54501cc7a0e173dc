"""A base's training defaults: the fine-tuning settings corpora registered on it get when no flag says
otherwise. A pretrained base that knows the world (probed with memo's bank) is given the settings that keep
its knowledge (:data:`training.settings.KEEP_KNOWLEDGE`); the tiny base, and a base not probed so, keep
memo's own defaults (the corpus alone), which its studies were measured with (what a new base is given:
:func:`registry.operations.bases.defaults_for_new_base`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from registry.operations.bases import find_base, to_record
from registry.operations.probes import current_probe_set
from registry.store.database import Database
from registry.store.errors import InvalidInput
from registry.store.records import BaseModelRecord
from training.settings import SFTSettings, sft_settings


def checked(choices: Mapping[str, Any]) -> dict[str, Any]:
    """``choices`` as they would be stored: every field a fine-tuning setting of a value it accepts."""
    try:
        sft_settings(choices)
    except (TypeError, ValueError) as e:
        raise InvalidInput(str(e)) from None
    return dict(choices)


def training_settings(db: Database, base: str, choices: Mapping[str, Any]) -> SFTSettings:
    """The settings a training on ``base`` runs with: its defaults, each overridden by ``choices``."""
    with db.read() as session:
        defaults = find_base(session, base).training_defaults or {}
    try:
        return sft_settings(defaults, choices)
    except (TypeError, ValueError) as e:
        raise InvalidInput(str(e)) from None


def set_training_defaults(
    db: Database, base: str, choices: Mapping[str, Any], *, clear: bool = False
) -> BaseModelRecord:
    """Change ``base``'s defaults: ``choices`` over the ones it has (``clear``: over none; nothing then
    leaves memo's own defaults)."""
    with db.write() as session:
        row = find_base(session, base)
        merged = checked({**({} if clear else row.training_defaults or {}), **choices})
        row.training_defaults = merged or None
        session.flush()
        return to_record(row, current_probe_set(session, row.id))
