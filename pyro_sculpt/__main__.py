from pyro_sculpt.experiments.cli import main

raise SystemExit(main())
