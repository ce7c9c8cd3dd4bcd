"""The site's local web console: alarm board, live values, health, local ack and shelving.

Layout (agent/console/)::

    config.py     [console] (pure data) and its checks
    passwords.py  scrypt hashes (``safeedge console add-user``)
    auth.py       sessions, CSRF tokens, login rate limit
    readmodel.py  what the pages show, built from the runtime's alarm events and batches
                  (kept apart so issue 13's status snapshot can replace its health part)
    i18n.py       Chinese first, English; site-time formatting
    render.py     server-rendered HTML (pages and the fragments pushed over SSE)
    server.py     the aiohttp app on the agent's event loop: routes, SSE, actions
    cli.py        ``safeedge console add-user``
    static/       the only assets (no build step, nothing from the internet)

Importing this package is cheap: aiohttp is imported by ``server`` only, which the runtime
loads only when ``[console].enabled`` is true.
"""

from agent.console.config import ConsoleConfig, ConsoleUser, console_issues

__all__ = ["ConsoleConfig", "ConsoleUser", "console_issues"]
