"""Page-specific reads of a `Store`, each through `Store`'s one query helper: `feature`
(examples, co-firing, live features), `lens` (logit-lens rankings), `relations`
(category contrasts) and `search` (labels and promoted tokens).
"""
