"""Deep links between pages: every table or chart that names a feature links to its page.

Owns the URL scheme `feature?sae=NAME&feature=ID` (the feature page's `url_path` is
"feature"); the scheme itself is `explorer.charts.feature_href`, shared with the charts.
"""

from __future__ import annotations

from explorer.charts import feature_href


def feature_url(sae: str, feature: int) -> str:
    """Relative URL of one feature's page, usable in LinkColumn, markdown and altair href."""
    return feature_href(sae, feature)
