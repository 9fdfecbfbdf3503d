"""Deep links between pages: every table or chart that names a feature links to its page.

Owns the URL scheme `feature?sae=NAME&feature=ID` (the feature page's `url_path` is
"feature"); the scheme itself is `explorer.charts.feature_href`, shared with the charts. Also
the ablation lab's `ablation?sae=NAME&features=ID`, from a feature page to intervene on it.
"""

from __future__ import annotations

from urllib.parse import urlencode

from explorer.charts import feature_href


def feature_url(sae: str, feature: int) -> str:
    """Relative URL of one feature's page, usable in LinkColumn, markdown and altair href."""
    return feature_href(sae, feature)


def ablation_url(sae: str, feature: int) -> str:
    """Relative URL of the ablation lab set to one feature."""
    return f"ablation?{urlencode({'sae': sae, 'features': int(feature)})}"
