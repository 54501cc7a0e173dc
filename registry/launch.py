"""The ``memo`` command's entry point: the process settings that must precede torch, then the CLI.

OpenMP reads its settings once, when torch loads it, and the CLI's modules
import torch; so they are set here, before the CLI is imported
(:func:`osutil.tuning.share_cores`: brief spinning, a fair share of the
cores among memo processes).
"""

from __future__ import annotations


def main() -> None:
    from osutil.tuning import share_cores

    share_cores()
    from registry.cli import main as cli_main  # the CLI loads torch: after share_cores

    cli_main()
