"""Where a model and its SAEs come from: `source` (the `Source` spec, `LoadedSource` and the
loaders), `hub` (SAELens registry and the offline switch), `topk_checkpoint` (plain TopK
checkpoints), `demo_bundle` (the committed offline bundle), `memory` (will it fit),
`request_hooks` (per-request hooks on a shared model), `unembed` and `overview`.
"""
