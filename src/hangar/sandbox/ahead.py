"""Work made ahead of a request yields to a request's own.

A warm pool's spare and a template's next prepared fork are made ahead of the sessions that will use them; a session
that found none ready forks on its request path. Both meet at the template, which forks one request at a time
(``sandbox/namespace/templates.py``): a request's own fork goes first, and the template's prepared fork is kept for
a request. Whoever starts ahead work sets ``AHEAD`` in its task (a task's context is its own copy)."""

from __future__ import annotations

from contextvars import ContextVar

AHEAD: ContextVar[bool] = ContextVar("hangar_ahead", default=False)
