"""Building a store: running the model and SAEs over a corpus and handing the results to the
store writer. `extract` (the compute), `quality` (CE loss recovered, explained variance),
`single` (one process), `shards` and `ray_engine` (many), `demo_training` (the demo bundle),
`stages` (the steps' names for a progress bar). Nothing here is imported by the app's read
path or by `explorer.live`, but for `stages` (no torch), which the first-run build's bar reads.
"""
