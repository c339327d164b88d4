"""The domain: sessions, commands, events, streams, engines, tools, handlers and credentials
(``core.Bus`` owns them). Never imports aiohttp or the API; see docs/architecture.md."""
