"""Int8 decode copies of Linear weights: the int8 path against its dequantized reference, the 16-bit
path for many rows, and the swap leaving the model's state dict as it was."""

import torch
from torch import nn

from svdtune.kernels.cpu.int8_weights import INT8_MAX_ROWS, Int8DecodeLinear, int8_weights_
from svdtune.quant.metrics import sqnr_db


def test_few_rows_run_on_int8_and_many_rows_on_the_16_bit_weight():
    torch.manual_seed(0)
    linear = nn.Linear(96, 40)
    layer = Int8DecodeLinear(linear)
    x = torch.randn(2, 3, 96)  # 6 rows: int8
    dequantized = layer.int8_weight.float() * layer.int8_scale[:, None]
    reference = x @ dequantized.T + linear.bias
    assert (layer(x) - reference).norm() / reference.norm() < 1e-5
    assert sqnr_db(linear(x), layer(x)) > 35  # int8 per output channel: about 7 bits of the weight
    many = torch.randn(INT8_MAX_ROWS + 1, 96)
    assert torch.equal(layer(many), linear(many))
    last_tokens = torch.randn(INT8_MAX_ROWS + 1, 5, 96)[:, -1:]  # strided, as generate slices a batch
    assert layer(last_tokens).shape == (INT8_MAX_ROWS + 1, 1, 40)
    assert torch.allclose(layer(last_tokens), linear(last_tokens), rtol=1e-5, atol=1e-6)


def test_swap_keeps_the_state_dict_and_is_idempotent():
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Sequential(nn.Linear(16, 4, bias=False)))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert int8_weights_(model) == 2 and int8_weights_(model) == 0
    assert isinstance(model[2][0], Int8DecodeLinear)
    after = model.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], v) for k, v in before.items())
