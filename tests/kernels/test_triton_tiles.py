"""The pieces the Triton kernels share (the kernels themselves are checked in the interpreter by
test_xunit_triton.py and test_depthwise_triton.py)."""
from xnet.kernels.triton_tiles import channel_block


def test_the_channel_block_is_the_next_power_of_two_within_16_to_64():
    assert [channel_block(c) for c in (1, 3, 16, 17, 33, 64, 65, 200)] == [16, 16, 16, 32, 64, 64, 64, 64]
