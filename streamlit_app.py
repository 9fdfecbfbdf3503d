"""Entry of the SAE feature explorer: page config, shared sidebar, navigation over app_pages/."""

import streamlit as st

from explorer.ui.resources import import_model_libraries
from explorer.ui.state import sidebar

# Pages whose imports hold no model library, so a server that serves only them stays small
# (tests/unit/test_imports.py checks their imports). Their live parts (a typed text, an atlas
# map the store does not keep) load the model through current_source(), which imports the
# libraries under the same lock first.
STORE_PAGES = (
    "specialists",
    "frequency",
    "compare",
    "taxonomy",
    "methods",
    "tokens",
    "rankings",
    "search",
    "atlas",
)

st.set_page_config(page_title="SAE feature explorer", page_icon="🔬", layout="wide")

navigation = st.navigation(
    [
        st.Page("app_pages/home.py", title="Home", icon=":material/home:", default=True),
        st.Page(
            "app_pages/feature.py", title="Feature", icon=":material/search:", url_path="feature"
        ),
        st.Page(
            "app_pages/specialists.py",
            title="Specialist heatmaps",
            icon=":material/grid_on:",
            url_path="specialists",
        ),
        st.Page(
            "app_pages/frequency.py",
            title="Frequency vs specialization",
            icon=":material/scatter_plot:",
            url_path="frequency",
        ),
        st.Page(
            "app_pages/tokens.py",
            title="Token highlighting",
            icon=":material/format_color_text:",
            url_path="tokens",
        ),
        st.Page(
            "app_pages/rankings.py",
            title="Rankings",
            icon=":material/leaderboard:",
            url_path="rankings",
        ),
        st.Page(
            "app_pages/taxonomy.py",
            title="Token taxonomy",
            icon=":material/category:",
            url_path="taxonomy",
        ),
        st.Page(
            "app_pages/logit_lens.py",
            title="Logit lens",
            icon=":material/functions:",
            url_path="logit-lens",
        ),
        st.Page(
            "app_pages/search.py",
            title="Search",
            icon=":material/manage_search:",
            url_path="search",
        ),
        st.Page(
            "app_pages/atlas.py",
            title="Feature atlas",
            icon=":material/bubble_chart:",
            url_path="atlas",
        ),
        st.Page(
            "app_pages/compare.py",
            title="Compare SAEs",
            icon=":material/compare:",
            url_path="compare",
        ),
        st.Page(
            "app_pages/ablation.py",
            title="Ablation lab",
            icon=":material/science:",
            url_path="ablation",
        ),
        st.Page(
            "app_pages/methods.py",
            title="Methods",
            icon=":material/menu_book:",
            url_path="methods",
        ),
    ],
    expanded=True,  # every page in view: past 10 links Streamlit folds them under "View more"
)
if navigation.url_path not in STORE_PAGES:
    import_model_libraries()  # before the page imports them: see its docstring
sidebar()
navigation.run()
