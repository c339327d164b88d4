from llmgine_daemon.server import main

raise SystemExit(main())
