"""``python -m pve_simulator``: same as the ``pve-simulator`` console script."""

from pve_simulator.cli import main

raise SystemExit(main())
