"""Charts: functions `DataFrame -> altair.Chart`, testable without streamlit.

One module per family of views (e.g. `specialists`, `feature`). Every chart has axis
titles, tooltips and a sensible default sort; charts that name a feature carry an `href`
to its page (see `explorer.ui.links.feature_url` for the URL scheme, mirrored here by
`feature_href` so charts need no streamlit import).
"""

from urllib.parse import urlencode


def feature_href(sae: str, feature: int) -> str:
    """Relative URL of a feature's page (same scheme as `explorer.ui.links.feature_url`)."""
    return f"feature?{urlencode({'sae': sae, 'feature': int(feature)})}"
