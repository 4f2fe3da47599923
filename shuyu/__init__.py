"""shuyu (数域): compute on public data you may use but never see.

The composition root: settings, orchestration, API, CLI, SDK and reviewer console.
"""

__version__ = "0.1.0"
