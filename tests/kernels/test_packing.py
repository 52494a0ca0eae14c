import pytest
import torch

from svdtune.kernels.packing import pack_nibbles, unpack_nibbles


@pytest.mark.parametrize("signed,lo,hi", [(True, -8, 7), (False, 0, 15)])
def test_pack_unpack_roundtrip(signed, lo, hi):
    codes = torch.randint(lo, hi + 1, (5, 3, 64), dtype=torch.int8)
    packed = pack_nibbles(codes)
    assert packed.dtype == torch.uint8 and packed.shape == (5, 3, 32)
    assert torch.equal(unpack_nibbles(packed, signed), codes)


def test_layout_low_nibble_first():
    packed = pack_nibbles(torch.tensor([1, 2, -1, 7], dtype=torch.int8))
    assert packed.tolist() == [0x21, 0x7F]


def test_odd_length_is_refused():
    with pytest.raises(ValueError, match="odd"):
        pack_nibbles(torch.zeros(3, dtype=torch.int8))
