"""Thin CLI commands, one module per resource."""
