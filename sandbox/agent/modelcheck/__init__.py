"""Model checks: what a model must pass before a reviewer may release it (issue 7).

This package runs inside the sandbox image, as trusted code in a check job
(:mod:`.job`), next to the decrypted sample; it imports nothing of the host's. Models leave
only as skops files loaded against a type allow-list (:mod:`.safe_format`).
:func:`.checks.check_loaded_model` runs the class and structure checks (:mod:`.structure`),
capacity (:mod:`.capacity`), memorization and refit (:mod:`.memorization`), membership
inference (:mod:`.membership`) and the DP check (:mod:`.dp`), and returns a report with a
:class:`.card.ModelCard`. The verdict is ``block`` or ``review``: no model releases without
a reviewer. The host side (policy → thresholds, report → egress findings) is
``egress.models``; ``docs/models.md`` explains each check.
"""
