"""Analyses: pure functions over store reads or tensors (specialists, frequency,
enrichment, logit lens, similarity). No streamlit, no SQL (reads go through the store)."""
