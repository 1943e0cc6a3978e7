import pytest
import torch

from bmz_cosdd.nn.blocks import Downsample, GatedResBlock, Upsample


@pytest.mark.parametrize("batch_norm", [True, False])
@pytest.mark.parametrize("kernel_size", [3, 5])
def test_gated_res_block_keeps_shape(batch_norm, kernel_size):
    block = GatedResBlock(6, kernel_size=kernel_size, batch_norm=batch_norm, dropout=0.1)
    x = torch.randn(2, 6, 12, 20)
    assert block(x).shape == x.shape
    block.eval()
    y1, y2 = block(x), block(x)
    assert torch.equal(y1, y2)  # dropout off in eval


def test_gated_res_block_is_residual():
    block = GatedResBlock(4).eval()
    torch.nn.init.zeros_(block.gate.weight)
    torch.nn.init.constant_(block.gate.bias, 0.0)
    x = torch.randn(1, 4, 8, 8)
    # gate output a = 0 -> the block is the identity
    assert torch.allclose(block(x), x)


def test_gated_res_block_rejects_even_kernel():
    with pytest.raises(ValueError):
        GatedResBlock(4, kernel_size=4)


def test_resampling_shapes():
    x = torch.randn(2, 3, 16, 24)
    down = Downsample(3, 5)(x)
    assert down.shape == (2, 5, 8, 12)
    assert Upsample(5, 7)(down).shape == (2, 7, 16, 24)
