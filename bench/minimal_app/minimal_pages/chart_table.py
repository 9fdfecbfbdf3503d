"""Page three of the minimal app: one Altair chart and one table, the element kinds whose
code a new browser loads on first use. Not part of the floor (pages one and two are): the
floor of a page that draws a chart and a table, reported beside it."""

import altair as alt
import pandas as pd
import streamlit as st

st.title("Minimal page with a chart and a table")
choice = st.selectbox("Letter", ["a", "b", "c"])
data = pd.DataFrame({"letter": list("abcdefghijk"), "value": range(11)})
st.altair_chart(alt.Chart(data).mark_bar().encode(x="letter", y="value"), width="stretch")
st.dataframe(data)
st.write(f"Chosen: {choice}")
