"""Methods: docs/methods.md served inside the app, one section per heading with the anchor
every page's links name (`explorer.methods_doc.methods_link`), so a link opens the definition
of the running code wherever the app runs."""

import streamlit as st

from explorer.methods_doc import methods_sections

st.title("Methods")
for section in methods_sections():
    if section.level == 2:
        st.header(section.title, anchor=section.anchor)
    elif section.level == 3:
        st.subheader(section.title, anchor=section.anchor)
    st.markdown(section.body)
