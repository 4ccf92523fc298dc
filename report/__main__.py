from report.generate import main

raise SystemExit(main())
