"""Live work on the loaded model: `text` (typed-text activations), `interventions` (ablate,
clamp, scale, swap, steer and their effects) and `runs` (intervention runs and the ledger).
Imports `explorer.sources` and `explorer.tokenize`, never `explorer.build`.
"""
