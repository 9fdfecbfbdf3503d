"""SAE feature explorer: a library for building and querying stores of sparse-autoencoder
feature activations of TransformerLens models, plus the Streamlit app that reads them.

Only `explorer.ui` imports streamlit; everything else is plain Python usable from notebooks.
"""

__version__ = "0.1.0"
