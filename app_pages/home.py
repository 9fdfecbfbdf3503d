"""Home: what is loaded (model, SAEs), how good the SAEs are, and what the store holds."""

import streamlit as st

from explorer.analysis.compare import quality_sample_note
from explorer.errors import markdown_escaped
from explorer.sources.overview import bundle_manifest, model_facts, sae_table
from explorer.ui.state import current_source, current_store

QUALITY_FORMAT = {
    "l0": st.column_config.NumberColumn("L0", format="%.1f"),
    "explained_variance": st.column_config.NumberColumn("explained variance", format="%.3f"),
    "ce_loss_recovered": st.column_config.NumberColumn("CE loss recovered", format="%.3f"),
    "dead_fraction": st.column_config.NumberColumn("dead fraction", format="%.3f"),
}
STORE_QUALITY_FORMAT = QUALITY_FORMAT | {
    "kl_divergence": st.column_config.NumberColumn("KL divergence", format="%.3f"),
    "l2_ratio": st.column_config.NumberColumn("shrinkage (L2 ratio)", format="%.3f"),
    "dense_fraction": st.column_config.NumberColumn("dense fraction", format="%.3f"),
    "quality_texts": st.column_config.NumberColumn("quality sample (texts)", format="%d"),
}

st.title("SAE feature explorer")
loaded = current_source()
st.caption(
    f"Source {markdown_escaped(loaded.source.spec())} · model "
    f"{markdown_escaped(loaded.model.cfg.model_name)}"
)

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
st.dataframe(sae_table(loaded), hide_index=True, column_config=QUALITY_FORMAT)

store = current_store()
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
quality_columns = ["sae", "hook_name", "layer", "d_sae", *STORE_QUALITY_FORMAT]
st.caption(quality_sample_note(store.saes(), meta))
st.dataframe(
    store.saes()[quality_columns], hide_index=True, column_config=STORE_QUALITY_FORMAT
)
st.markdown("**Texts per category**")
st.dataframe(store.categories(), hide_index=True)
