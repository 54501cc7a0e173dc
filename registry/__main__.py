"""``python -m registry`` is the ``memo`` command (for launchers: ``accelerate launch -m registry train ...``)."""

from registry.launch import main

main()
