"""The registry's operations, one module per noun; each takes a :class:`registry.store.Workspace`
(or just its database) and returns records. :class:`registry.Registry` is their facade."""
