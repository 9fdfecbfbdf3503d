"""Home: what is loaded (model, SAEs), how good the SAEs are, and what the store holds."""

import streamlit as st

from explorer.analysis.compare import QUALITY_METRICS, quality_sample_note
from explorer.errors import markdown_escaped
from explorer.sources.overview import bundle_manifest, model_facts, sae_table
from explorer.ui import guide_views
from explorer.ui.state import current_source, current_store
from explorer.ui.tables import NUMBER, plain_table

st.title("SAE feature explorer")
loaded = current_source()
st.caption(
    f"Source {markdown_escaped(loaded.source.spec())} · model "
    f"{markdown_escaped(loaded.model.cfg.model_name)}"
)
store = current_store()
st.subheader("Features worth opening")
guide_views.show_features_worth_opening(store)
st.subheader("What each page answers")
guide_views.show_page_questions()

st.subheader("Model")
facts = model_facts(loaded)
for column, (name, value) in zip(st.columns(len(facts)), facts.items(), strict=True):
    column.metric(name, f"{value:,}" if isinstance(value, int) else str(value))
manifest = bundle_manifest(loaded)
if manifest:
    st.caption(
        f"Offline demo bundle, trained on this kind of machine from "
        f"{manifest['corpus']['n_chars']:,} characters of installed packages' text and the "
        f"project's labelled texts; held-out LM loss {manifest['lm_held_out_loss']:.3f} "
        "nats/token."
    )

st.subheader("Sparse autoencoders")
st.caption("Quality measured on the bundle's held-out text when the bundle was trained.")
plain_table(sae_table(loaded))

st.subheader("Store")
meta = store.meta()
st.caption(
    f"{markdown_escaped(store.path)} · source {markdown_escaped(meta.get('source'))} · corpus "
    f"{markdown_escaped(meta.get('corpus'))} · "
    f"built {markdown_escaped(meta.get('created_at'))}"
)
counts = store.table_counts()
left, middle, right = st.columns(3)
left.metric("texts", f"{counts['texts']:,}")
middle.metric("tokens", f"{counts['tokens']:,}")
right.metric("activation rows", f"{counts['acts']:,}")
st.markdown("**SAE quality on the store's corpus**")
measured = [name for name in QUALITY_METRICS if name != "quality_texts"]  # the caption's size
quality_columns = ["sae", "hook_name", "layer", "d_sae", *measured]
st.caption(quality_sample_note(store.saes(), meta))
plain_table(store.saes(), quality_columns)
st.markdown("**Texts per category**")
plain_table(
    store.categories(),
    n_texts=NUMBER("texts", format="%d"),
    n_tokens=NUMBER("tokens", format="%d", help="over the category's texts"),
)
