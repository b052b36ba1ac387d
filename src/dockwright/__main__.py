from dockwright.cli import main

raise SystemExit(main())
