"""``maker ui``: a local web app over a store, live while runs write to it.

Pages: the runs (filtered, searched, forks under their parents, evaluations grouped), a run (live facts and plots,
its hardest steps and failures), a step (input, samples, tally, speculation), a solve run's task tree and an
evaluation's table. With actions enabled: stop a running run at its next commit, resume one, fork one from a step.
It serves on 127.0.0.1 unless told otherwise, and anywhere else only with a token. See ``docs/ui.md``.
"""

from maker.ui._app import UiSettings, create_app
from maker.ui._serve import serve

__all__ = ["UiSettings", "create_app", "serve"]
