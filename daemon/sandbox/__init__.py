"""The worker pool that runs user code (tools, handlers) in bubblewrap sandboxes, never in the
daemon; see docs/sandbox.md and docs/architecture.md."""
