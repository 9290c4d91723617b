from modelreuse.cli import main

raise SystemExit(main())
