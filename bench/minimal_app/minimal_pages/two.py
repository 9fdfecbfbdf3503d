"""Page two of the minimal app."""

import streamlit as st

st.title("Minimal page two")
choice = st.selectbox("Number", ["1", "2", "3"])
st.write(f"Chosen: {choice}")
