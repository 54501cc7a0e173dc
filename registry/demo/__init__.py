"""The demo (`memo demo`), its continual-integration study, plots, and the Hub-compatible
server it publishes to on 127.0.0.1. Built on the public :class:`registry.Registry` API.
"""
