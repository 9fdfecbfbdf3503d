"""The steps a build runs after its forward passes, named for a progress display.

No torch here: the app's progress bar reads these names before the model code is imported.
"""

from __future__ import annotations

from collections.abc import Callable

# The step that runs (one of STAGES), its parts done, its parts in all.
Stage = Callable[[str, int, int], None]
QUALITY, LOGIT_LENS, WRITING = "reconstruction quality", "logit lens", "writing the store"
# A build given `derive` (explorer.analysis.precompute) computes the analyses a store keeps
# after its tables are written; the caller that passes it reports this step.
ANALYSES = "keeping the whole-store analyses"
STAGES = (QUALITY, LOGIT_LENS, WRITING, ANALYSES)  # in the order a build runs them
