"""``Registry``: the one facade over the operations that the CLI, the demo and scripts use; and the
database schema's administration, which works without opening a registry."""

from registry.service.registry import Registry
from registry.service.schema_admin import database_revisions, upgrade_database

__all__ = ["Registry", "database_revisions", "upgrade_database"]
