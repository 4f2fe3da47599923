"""``python -m agent`` in the image (``python -m sandbox.agent`` on a host, for tests)."""

from .main import main

main()
