"""The framework's floor for bench/pages.py: a two-page Streamlit app with a title, a select
box and a line of text per page, run and timed the same way as the explorer; and a third
page with one chart and one table, the floor of a page that draws those (reported beside the
floor, not part of it)."""

import streamlit as st

st.set_page_config(page_title="Minimal app", layout="wide")
navigation = st.navigation(
    [
        st.Page("minimal_pages/one.py", title="Page one", default=True),
        st.Page("minimal_pages/two.py", title="Page two", url_path="two"),
        st.Page("minimal_pages/chart_table.py", title="Chart and table", url_path="chart-table"),
    ]
)
with st.sidebar:
    st.text_input("Source", value="demo")
navigation.run()
