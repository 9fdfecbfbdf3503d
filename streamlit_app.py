"""Entry of the SAE feature explorer: page config, shared sidebar, navigation over pages/."""

import streamlit as st

from explorer.ui.state import sidebar

st.set_page_config(page_title="SAE feature explorer", page_icon="🔬", layout="wide")

navigation = st.navigation(
    [
        st.Page("pages/home.py", title="Home", icon="🏠", default=True),
    ]
)
sidebar()
navigation.run()
