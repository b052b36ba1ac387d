from dockwright.cli.main import main

raise SystemExit(main())
