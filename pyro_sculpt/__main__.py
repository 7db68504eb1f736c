from pyro_sculpt.cli import main

raise SystemExit(main())
