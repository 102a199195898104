"""perception_core.codec without ROS: raw encodings, zero-copy views, malformed data, JPEG/PNG."""

import re

import cv2
import numpy as np
import pytest

from perception_core.codec import (
    HOST_IS_BIGENDIAN,
    SUPPORTED_ENCODINGS,
    ImageDecodeError,
    array_to_raw,
    decode_compressed,
    encode_compressed,
    raw_to_array,
    to_bgr,
)

H, W = 6, 5
LAYOUT = {  # encoding -> (channels, dtype), written out independently of the codec's table
    "bgr8": (3, np.uint8), "rgb8": (3, np.uint8), "bgra8": (4, np.uint8), "rgba8": (4, np.uint8),
    "mono8": (1, np.uint8), "8UC1": (1, np.uint8), "8UC3": (3, np.uint8),
    "mono16": (1, np.uint16), "16UC1": (1, np.uint16),
}


def sample(encoding: str, height: int = H, width: int = W, seed: int = 0) -> np.ndarray:
    """A random array in the encoding's layout: (H, W) for one channel, else (H, W, C)."""
    channels, dtype = LAYOUT[encoding]
    shape = (height, width) if channels == 1 else (height, width, channels)
    return np.random.default_rng(seed).integers(0, np.iinfo(dtype).max, shape, dtype, endpoint=True)


def pack(array: np.ndarray, pad: int = 0, bigendian: bool = HOST_IS_BIGENDIAN) -> tuple[bytes, int]:
    """Raw rows as a camera driver would write them: chosen byte order, ``pad`` junk bytes after each row."""
    typed = array.astype(array.dtype.newbyteorder(">" if bigendian else "<"))
    rows = typed.view(np.uint8).reshape(array.shape[0], -1)
    step = rows.shape[1] + pad
    raw = np.full((array.shape[0], step), 0xAB, np.uint8)
    raw[:, : rows.shape[1]] = rows
    return raw.tobytes(), step


def smooth_bgr(height: int = 48, width: int = 64) -> np.ndarray:
    """Gradients: JPEG keeps them within a few grey levels."""
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 255 // width, y * 255 // height, (x + y) * 255 // (width + height)], -1).astype(np.uint8)


def test_the_table_covers_every_encoding():
    assert set(SUPPORTED_ENCODINGS) == set(LAYOUT)


@pytest.mark.parametrize("encoding", sorted(LAYOUT))
@pytest.mark.parametrize("pad", [0, 3, 8])
def test_raw_round_trip(encoding, pad):
    array = sample(encoding)
    pad += pad % np.dtype(LAYOUT[encoding][1]).itemsize  # 16-bit rows need an even step
    raw, step = pack(array, pad)
    decoded = raw_to_array(raw, encoding, W, H, step, HOST_IS_BIGENDIAN)
    np.testing.assert_array_equal(decoded, array)
    assert decoded.dtype == array.dtype and decoded.dtype.isnative
    data, packed_step = array_to_raw(decoded, encoding)
    assert packed_step == W * array.itemsize * (array.shape[2] if array.ndim == 3 else 1)
    assert bytes(data) == pack(array)[0]


@pytest.mark.parametrize("encoding", ["mono16", "16UC1"])
@pytest.mark.parametrize("bigendian", [False, True])
@pytest.mark.parametrize("pad", [0, 4])
def test_16_bit_either_byte_order(encoding, bigendian, pad):
    array = sample(encoding)
    raw, step = pack(array, pad, bigendian)
    decoded = raw_to_array(raw, encoding, W, H, step, bigendian)
    np.testing.assert_array_equal(decoded, array)
    assert decoded.dtype == np.uint16 and decoded.dtype.isnative
    # Swapping is the only copy: host-order data stays a view.
    assert np.shares_memory(decoded, np.frombuffer(raw, np.uint8)) == (bigendian == HOST_IS_BIGENDIAN)


@pytest.mark.parametrize("encoding", ["bgr8", "mono8", "8UC3", "rgba8"])
@pytest.mark.parametrize("source", [bytes, bytearray])
@pytest.mark.parametrize("pad", [0, 7])
def test_8_bit_decode_is_zero_copy(encoding, source, pad):
    raw, step = pack(sample(encoding), pad)
    data = source(raw)
    view = raw_to_array(data, encoding, W, H, step, False)
    assert np.shares_memory(view, np.frombuffer(data, np.uint8))
    assert not view.flags.writeable, "a writable view would let callers write into the message"
    if pad:
        assert not view.flags.c_contiguous, "padding is skipped by strides, not by a copy"


def test_bgr8_to_bgr_is_the_same_object():
    raw, step = pack(sample("bgr8"), pad=4)
    view = raw_to_array(raw, "bgr8", W, H, step, False)
    assert to_bgr(view, "bgr8") is view


@pytest.mark.parametrize(("fields", "message"), [
    (dict(encoding="yuv422"), "unsupported encoding 'yuv422'; supported: bgr8"),
    (dict(encoding="bgr8", width=640, height=480, step=1000),
     "step 1000 < width*bytes_per_pixel 1920 for bgr8 640x480"),
    (dict(encoding="mono16", width=4, step=7), "step 7 < width*bytes_per_pixel 8 for mono16 4x6"),
    (dict(encoding="bgr8", width=4, step=12, data=bytes(12 * 6 - 1)),
     "data has 71 bytes < step*height 72 for bgr8 4x6"),
    (dict(encoding="mono8", width=0, step=0), "width is 0 for mono8 0x6"),
    (dict(encoding="mono8", height=0), "height is 0 for mono8 4x0"),
    (dict(encoding="mono16", width=4, step=9), "step 9 is not a multiple of 2 for mono16 4x6"),
])
def test_malformed_raw_data_says_what_is_wrong(fields, message):
    args = dict(data=bytes(4096), encoding="mono8", width=4, height=6, step=4, is_bigendian=False) | fields
    with pytest.raises(ImageDecodeError, match=re.escape(message)):
        raw_to_array(**args)


def test_decode_error_is_a_value_error():
    assert issubclass(ImageDecodeError, ValueError)


def expected_bgr(array: np.ndarray, encoding: str) -> np.ndarray:
    """Reference conversions in plain numpy (no cv2), to check the codec's cv2 calls."""
    if encoding in ("mono16", "16UC1"):
        array = np.floor(array.astype(np.float64) * 255 / 65535 + 0.5).astype(np.uint8)
    if array.ndim == 2:
        return np.repeat(array[..., None], 3, axis=2)
    return {"bgr8": array, "8UC3": array, "rgb8": array[..., ::-1], "bgra8": array[..., :3],
            "rgba8": array[..., 2::-1]}[encoding]


@pytest.mark.parametrize("encoding", sorted(LAYOUT))
def test_to_bgr(encoding):
    raw, step = pack(sample(encoding), pad=2)
    array = raw_to_array(raw, encoding, W, H, step, HOST_IS_BIGENDIAN)
    before = array.copy()
    bgr = to_bgr(array, encoding)
    assert bgr.shape == (H, W, 3) and bgr.dtype == np.uint8
    np.testing.assert_array_equal(bgr, expected_bgr(before, encoding))
    np.testing.assert_array_equal(array, before)


def test_mono16_scaling_ends():
    bgr = to_bgr(np.array([[0, 128, 129, 65535]], np.uint16), "mono16")
    assert bgr[0, :, 0].tolist() == [0, 0, 1, 255]


@pytest.mark.parametrize(("array", "encoding", "message"), [
    (np.zeros((H, W), np.uint8), "bgr8", "bgr8 needs a (H, W, 3) uint8 array, got (6, 5) uint8"),
    (np.zeros((H, W, 3), np.uint16), "rgb8", "rgb8 needs a (H, W, 3) uint8 array, got (6, 5, 3) uint16"),
    (np.zeros((H, W), np.uint8), "mono16", "mono16 needs a (H, W) uint16 array"),
    (np.zeros((H, W, 3), np.uint8), "hsv8", "unsupported encoding 'hsv8'"),
])
def test_array_that_does_not_fit_the_encoding(array, encoding, message):
    with pytest.raises(ImageDecodeError, match=re.escape(message)):
        to_bgr(array, encoding)
    with pytest.raises(ValueError, match=re.escape(message)):
        array_to_raw(array, encoding)


def test_array_to_raw_packs_strided_and_foreign_endian_input():
    array = sample("mono16", width=2 * W)
    strided = array[:, ::2]
    foreign = strided.astype(strided.dtype.newbyteorder("S"))
    for source in (strided, foreign):
        data, step = array_to_raw(source, "mono16")
        assert step == 2 * W
        np.testing.assert_array_equal(raw_to_array(data, "mono16", W, H, step, HOST_IS_BIGENDIAN), strided)


def test_array_to_raw_accepts_a_channel_axis_for_mono():
    array = sample("mono8")
    data, step = array_to_raw(array[..., None], "mono8")
    assert step == W and bytes(data) == array.tobytes()


def test_array_to_raw_aliases_contiguous_input_and_never_mutates_it():
    array = sample("bgr8")
    before = array.copy()
    data, _ = array_to_raw(array, "bgr8")
    assert np.shares_memory(np.frombuffer(data, np.uint8), array), "contiguous input must not be copied"
    np.testing.assert_array_equal(array, before)


@pytest.mark.parametrize("shape", [(0, W, 3), (H, 0, 3)])
def test_array_to_raw_refuses_empty_images(shape):
    with pytest.raises(ValueError, match="empty"):
        array_to_raw(np.zeros(shape, np.uint8), "bgr8")


@pytest.mark.parametrize("format_str", ["png", "PNG", "bgr8; png compressed bgr8", "rgb8; png compressed bgr8"])
def test_png_round_trip_is_exact(format_str):
    bgr = sample("bgr8", 24, 32)
    decoded = decode_compressed(encode_compressed(bgr, "png"), format_str)
    np.testing.assert_array_equal(decoded, bgr)


@pytest.mark.parametrize("format_str", ["jpeg", "jpg", "bgr8; jpeg compressed bgr8"])
@pytest.mark.parametrize("source", [bytes, bytearray, memoryview])
def test_jpeg_round_trip_within_tolerance(format_str, source):
    bgr = smooth_bgr()
    decoded = decode_compressed(source(encode_compressed(bgr, "jpeg", quality=95)), format_str)
    assert decoded.shape == bgr.shape and decoded.dtype == np.uint8
    assert np.abs(decoded.astype(int) - bgr).mean() < 2.0


def test_jpeg_quality_trades_size():
    bgr = sample("bgr8", 48, 64)
    assert len(encode_compressed(bgr, "jpeg", quality=20)) < len(encode_compressed(bgr, "jpeg", quality=95))


def test_grey_png_decodes_to_bgr():
    grey = sample("mono8", 8, 8)
    ok, encoded = cv2.imencode(".png", grey)
    assert ok
    np.testing.assert_array_equal(decode_compressed(encoded, "png"), np.repeat(grey[..., None], 3, axis=2))


def truncated_jpeg() -> bytes:
    encoded = encode_compressed(sample("bgr8", 32, 32), "jpeg")
    return encoded[: len(encoded) // 2]


@pytest.mark.parametrize(("data", "format_str", "message"), [
    (b"", "jpeg", "empty compressed jpeg data (0 bytes)"),
    (bytearray(), "png", "empty compressed png data (0 bytes)"),
    (b"this is not an image at all", "jpeg", "cannot decode 27 bytes as jpeg: corrupt or truncated data"),
    (truncated_jpeg(), "jpeg", "as jpeg: corrupt or truncated data"),
    (b"\x00" * 10, "tiff", "unsupported compressed format 'tiff'; supported: jpeg, png"),
    (b"\x00" * 10, "", "unsupported compressed format ''"),
    (b"\x00" * 10, "16UC1; compressedDepth png", "unsupported compressed format '16UC1; compressedDepth png'"),
    (b"\x00" * 10, "jpeg png", "unsupported compressed format 'jpeg png'"),
])
def test_bad_compressed_data_says_what_is_wrong(data, format_str, message):
    with pytest.raises(ImageDecodeError, match=re.escape(message)):
        decode_compressed(data, format_str)


@pytest.mark.parametrize(("kwargs", "message"), [
    (dict(fmt="bmp"), "unsupported compressed format 'bmp'; supported: jpeg, png"),
    (dict(quality=101), "jpeg quality must be in [0, 100], got 101"),
    (dict(bgr=np.zeros((4, 4), np.uint8)), "bgr8 needs a (H, W, 3) uint8 array"),
])
def test_bad_encode_arguments(kwargs, message):
    args = dict(bgr=np.zeros((4, 4, 3), np.uint8)) | kwargs
    with pytest.raises(ValueError, match=re.escape(message)):
        encode_compressed(**args)
