"""Pipelines: what turns a user's turn into a reply.

Every pipeline implements :class:`server.pipelines.base.Pipeline`; the
registry in :mod:`server.pipelines.registry` builds the ones whose models
are present.
"""
