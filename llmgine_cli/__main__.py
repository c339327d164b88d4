from llmgine_cli.app import main

raise SystemExit(main())
