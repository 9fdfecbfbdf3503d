"""The framework's floor for bench/pages.py: a two-page Streamlit app with a title, a select
box and a line of text per page, run and timed the same way as the explorer."""

import streamlit as st

st.set_page_config(page_title="Minimal app", layout="wide")
navigation = st.navigation(
    [
        st.Page("minimal_pages/one.py", title="Page one", default=True),
        st.Page("minimal_pages/two.py", title="Page two", url_path="two"),
    ]
)
with st.sidebar:
    st.text_input("Source", value="demo")
navigation.run()
