"""Home: what is loaded (model, SAEs) and how good the SAEs are."""

import streamlit as st

from explorer.overview import bundle_manifest, model_facts, sae_table
from explorer.ui.state import current_source

st.title("SAE feature explorer")
loaded = current_source()
st.caption(f"Source: `{loaded.source.spec()}`")

st.subheader("Model")
facts = model_facts(loaded)
columns = st.columns(len(facts))
for column, (name, value) in zip(columns, facts.items(), strict=True):
    column.metric(name, f"{value:,}" if isinstance(value, int) else str(value))

manifest = bundle_manifest(loaded)
if manifest:
    st.caption(
        f"Offline demo bundle, trained here from {manifest['corpus']['n_chars']:,} characters "
        f"of installed packages' text and the project's labelled texts; "
        f"held-out LM loss {manifest['lm_held_out_loss']:.3f} nats/token."
    )

st.subheader("Sparse autoencoders")
saes = sae_table(loaded)
st.dataframe(
    saes,
    hide_index=True,
    column_config={
        "explained_variance": st.column_config.NumberColumn("explained variance", format="%.3f"),
        "ce_loss_recovered": st.column_config.NumberColumn("CE loss recovered", format="%.3f"),
        "dead_fraction": st.column_config.NumberColumn("dead fraction", format="%.3f"),
        "l0": st.column_config.NumberColumn("L0", format="%.1f"),
    },
)
if saes[["explained_variance"]].isna().all().all() and not manifest:
    st.info("Quality numbers appear once a store has been built for this source.")
