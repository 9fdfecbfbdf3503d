"""Entry of the SAE feature explorer: page config, shared sidebar, navigation over pages/."""

import streamlit as st

from explorer.ui.state import sidebar

st.set_page_config(page_title="SAE feature explorer", page_icon="🔬", layout="wide")

navigation = st.navigation(
    [
        st.Page("pages/home.py", title="Home", icon=":material/home:", default=True),
        st.Page("pages/feature.py", title="Feature", icon=":material/search:", url_path="feature"),
        st.Page(
            "pages/specialists.py",
            title="Specialist heatmaps",
            icon=":material/grid_on:",
            url_path="specialists",
        ),
        st.Page(
            "pages/frequency.py",
            title="Frequency vs specialization",
            icon=":material/scatter_plot:",
            url_path="frequency",
        ),
        st.Page(
            "pages/tokens.py",
            title="Token highlighting",
            icon=":material/format_color_text:",
            url_path="tokens",
        ),
        st.Page(
            "pages/rankings.py",
            title="Rankings",
            icon=":material/leaderboard:",
            url_path="rankings",
        ),
        st.Page(
            "pages/taxonomy.py",
            title="Token taxonomy",
            icon=":material/category:",
            url_path="taxonomy",
        ),
        st.Page(
            "pages/logit_lens.py",
            title="Logit lens",
            icon=":material/functions:",
            url_path="logit-lens",
        ),
        st.Page(
            "pages/search.py",
            title="Search",
            icon=":material/manage_search:",
            url_path="search",
        ),
        st.Page(
            "pages/compare.py",
            title="Compare SAEs",
            icon=":material/compare:",
            url_path="compare",
        ),
        st.Page(
            "pages/ablation.py",
            title="Ablation lab",
            icon=":material/science:",
            url_path="ablation",
        ),
    ]
)
sidebar()
navigation.run()
