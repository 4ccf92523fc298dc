from ablations.cli import main

raise SystemExit(main())
