"""Page one of the minimal app."""

import streamlit as st

st.title("Minimal page one")
choice = st.selectbox("Letter", ["a", "b", "c"])
st.write(f"Chosen: {choice}")
