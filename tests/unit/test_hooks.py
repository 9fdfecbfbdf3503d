"""Hook-name conventions: block index and residual-stream boundary."""

import pytest

from explorer.hooks import block_of, residual_boundary


@pytest.mark.parametrize(
    ("hook_name", "block", "boundary"),
    [
        ("blocks.8.hook_resid_pre", 8, 8),
        ("blocks.3.hook_resid_post", 3, 4),
        ("blocks.0.hook_resid_mid", 0, None),
        ("blocks.11.attn.hook_z", 11, None),
        ("hook_embed", None, None),
        ("ln_final.hook_normalized", None, None),
    ],
)
def test_block_and_residual_boundary(hook_name, block, boundary):
    assert block_of(hook_name) == block
    assert residual_boundary(hook_name) == boundary
