"""Wire protocols: pure translators between messages and ``server.events``."""
