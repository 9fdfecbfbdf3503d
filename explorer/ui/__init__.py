"""Streamlit-only helpers: cached resources, session state and shared widgets.

The only package of the explorer that imports streamlit.
"""
