"""`python -m bpool.sim`: see bpool.sim.cli."""

from bpool.sim.cli import main

raise SystemExit(main())
