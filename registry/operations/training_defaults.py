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


def training_settings(db: Database, base: str, choices: Mapping[str, Any]) -> SFTSettings:
    """The settings a training on ``base`` runs with: its defaults, each overridden by ``choices``."""
    with db.read() as session:
        defaults = find_base(session, base).training_defaults or {}
    return _with_neurons_checked(_resolved(defaults, choices), choices)


def _with_neurons_checked(settings: SFTSettings, choices: Mapping[str, Any]) -> SFTSettings:
    """``settings``, unless ``choices`` name a share of neurons that the method they resolve to would not
    use (a flag silently ignored): ``--neurons`` alone on a base whose defaults train the MLP blocks, say."""
    if "neurons" in choices and settings.method != "sparse":
        raise InvalidInput(f"--neurons goes with --method sparse, not --method {settings.method}")
    return settings


def _resolved(*layers: Mapping[str, Any]) -> SFTSettings:
    """SFTSettings of the layers (a later one winning), or one line on what no setting accepts (a default
    stored by another memo, or by hand, is checked again here)."""
    try:
        return sft_settings(*layers)
    except (TypeError, ValueError) as e:
        raise InvalidInput(str(e)) from None


def set_training_defaults(
    db: Database, base: str, choices: Mapping[str, Any], *, clear: bool = False
) -> BaseModelRecord:
    """Change ``base``'s defaults: ``choices`` over the ones it has (``clear``: over none; nothing then
    leaves memo's own defaults)."""
    with db.write() as session:
        row = find_base(session, base)
        merged = {**({} if clear else row.training_defaults or {}), **choices}
        _with_neurons_checked(_resolved(merged), choices)
        row.training_defaults = merged or None
        session.flush()
        return to_record(row, current_probe_set(session, row.id))
