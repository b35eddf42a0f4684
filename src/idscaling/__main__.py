from idscaling.cli import main

raise SystemExit(main())
