try:
    from llmgine_daemon.server import main
except KeyboardInterrupt:  # Ctrl-C while the modules load: nothing started yet, stop as quietly
    raise SystemExit(0) from None

raise SystemExit(main())
