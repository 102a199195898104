"""Image encodings <-> numpy arrays, and JPEG/PNG, on plain fields (no ROS messages here).

Decoding is where camera data enters the pipeline, so it is zero-copy where the layout allows
and strict everywhere else: a wrong ``step``, a short buffer or an unknown encoding fails here
with an :class:`ImageDecodeError` naming the numbers, instead of as garbage pixels later.

Arrays follow cv_bridge's layout: one-channel encodings are (H, W), the others (H, W, C).
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass

import cv2
import numpy as np

HOST_IS_BIGENDIAN = sys.byteorder == "big"

# encoding -> (channels, dtype); the generic 8UC1/8UC3/16UC1 follow cv_bridge (8UC3 is taken as BGR).
_LAYOUTS: dict[str, tuple[int, np.dtype]] = {
    "bgr8": (3, np.dtype(np.uint8)),
    "rgb8": (3, np.dtype(np.uint8)),
    "bgra8": (4, np.dtype(np.uint8)),
    "rgba8": (4, np.dtype(np.uint8)),
    "mono8": (1, np.dtype(np.uint8)),
    "mono16": (1, np.dtype(np.uint16)),
    "8UC1": (1, np.dtype(np.uint8)),
    "8UC3": (3, np.dtype(np.uint8)),
    "16UC1": (1, np.dtype(np.uint16)),
}
SUPPORTED_ENCODINGS: tuple[str, ...] = tuple(_LAYOUTS)

# cv2 colour conversion to BGR for every encoding that is not BGR already.
_TO_BGR_CODE = {
    "rgb8": cv2.COLOR_RGB2BGR,
    "bgra8": cv2.COLOR_BGRA2BGR,
    "rgba8": cv2.COLOR_RGBA2BGR,
    "mono8": cv2.COLOR_GRAY2BGR,
    "8UC1": cv2.COLOR_GRAY2BGR,
    "mono16": cv2.COLOR_GRAY2BGR,
    "16UC1": cv2.COLOR_GRAY2BGR,
}

_COMPRESSED_EXT = {"jpeg": ".jpg", "png": ".png"}
# Format tokens as written by compressed_image_transport ("bgr8; jpeg compressed bgr8") or plain "jpeg"/"png".
_FORMAT_TOKEN = {"jpeg": "jpeg", "jpg": "jpeg", "png": "png"}


class ImageDecodeError(ValueError):
    """Image data that cannot be turned into an array: the message says which field is wrong and by how much."""


def _layout(encoding: str, error: type[ValueError]) -> tuple[int, np.dtype]:
    try:
        return _LAYOUTS[encoding]
    except KeyError:
        raise error(f"unsupported encoding {encoding!r}; supported: {', '.join(SUPPORTED_ENCODINGS)}") from None


def _check_array(array: np.ndarray, encoding: str, error: type[ValueError]) -> tuple[int, np.dtype]:
    """Check that ``array`` has the shape and dtype that ``encoding`` implies; return the layout."""
    channels, dtype = _layout(encoding, error)
    shape_ok = array.ndim == 3 and array.shape[2] == channels
    if channels == 1:
        shape_ok = array.ndim == 2 or shape_ok
    expected = "(H, W)" if channels == 1 else f"(H, W, {channels})"
    if not shape_ok or array.dtype.kind != dtype.kind or array.dtype.itemsize != dtype.itemsize:
        raise error(f"{encoding} needs a {expected} {dtype} array, got {array.shape} {array.dtype}")
    return channels, dtype


def raw_to_array(data, encoding: str, width: int, height: int, step: int, is_bigendian: bool) -> np.ndarray:
    """View raw image bytes as an (H, W) or (H, W, C) array without copying.

    ``data`` is any buffer (bytes, bytearray, array.array, memoryview). Row padding (``step`` larger
    than a row) is skipped by strides, so the result may not be C-contiguous. The only copy is the
    byte swap of 16-bit data whose endianness differs from the host's. The result is read-only so
    that nobody writes through it into the source message.
    """
    channels, dtype = _layout(encoding, ImageDecodeError)
    where = f"{encoding} {width}x{height}"
    if width <= 0:
        raise ImageDecodeError(f"width is {width} for {where}: an image needs at least one column")
    if height <= 0:
        raise ImageDecodeError(f"height is {height} for {where}: an image needs at least one row")
    row_bytes = width * channels * dtype.itemsize
    if step < row_bytes:
        raise ImageDecodeError(f"step {step} < width*bytes_per_pixel {row_bytes} for {where}")
    if step % dtype.itemsize:
        raise ImageDecodeError(
            f"step {step} is not a multiple of {dtype.itemsize} for {where}: 16-bit rows would be misaligned")
    buffer = np.frombuffer(data, np.uint8)
    if buffer.size < step * height:
        raise ImageDecodeError(f"data has {buffer.size} bytes < step*height {step * height} for {where}")
    rows = buffer[: step * height].reshape(height, step)[:, :row_bytes]
    pixels = rows.view(dtype.newbyteorder(">" if is_bigendian else "<"))
    if not pixels.dtype.isnative:
        pixels = pixels.astype(dtype)
    image = pixels.reshape((height, width) if channels == 1 else (height, width, channels))
    image.flags.writeable = False
    return image


def to_bgr(array: np.ndarray, encoding: str) -> np.ndarray:
    """Convert an array in ``encoding`` to the network's (H, W, 3) uint8 BGR.

    bgr8 and 8UC3 come back as the same object (no copy, strides and read-only flag kept); every
    other encoding is converted by cv2 into a new C-contiguous array. 16-bit is scaled by
    255/65535 (rounded), as cv_bridge does.
    """
    _check_array(array, encoding, ImageDecodeError)
    code = _TO_BGR_CODE.get(encoding)
    if code is None:
        return array
    if array.dtype.itemsize == 2:
        array = cv2.convertScaleAbs(np.asarray(array, np.uint16), alpha=255.0 / 65535.0)
    return cv2.cvtColor(array, code)


def array_to_raw(array: np.ndarray, encoding: str) -> tuple[memoryview, int]:
    """Return ``(data, step)``: the array's pixels as tightly packed host-endian bytes.

    ``data`` is a flat memoryview of ``array`` itself when that is C-contiguous and native-endian
    (no copy: copy it before mutating ``array``), else of one packed copy. Raises ValueError when
    the array does not fit the encoding.
    """
    channels, dtype = _check_array(array, encoding, ValueError)
    height, width = array.shape[:2]
    if width == 0 or height == 0:
        raise ValueError(f"cannot encode an empty {array.shape} array as {encoding}")
    packed = np.ascontiguousarray(array, dtype=dtype)
    return memoryview(packed).cast("B"), width * channels * dtype.itemsize


def _compressed_kind(format_str: str) -> str:
    """Map a CompressedImage ``format`` to "jpeg" or "png"; compressedDepth and the rest are refused."""
    tokens = [t for t in re.split(r"[;\s]+", format_str.lower()) if t]
    kinds = {_FORMAT_TOKEN[t] for t in tokens if t in _FORMAT_TOKEN}
    if len(kinds) != 1 or "compresseddepth" in tokens:
        raise ImageDecodeError(
            f"unsupported compressed format {format_str!r}; supported: jpeg, png"
            " (e.g. 'jpeg' or 'bgr8; jpeg compressed bgr8')")
    return kinds.pop()


def decode_compressed(data, format_str: str) -> np.ndarray:
    """Decode JPEG/PNG bytes (any buffer) to a new (H, W, 3) uint8 BGR array; grey and alpha are converted."""
    kind = _compressed_kind(format_str)
    buffer = np.frombuffer(data, np.uint8)
    if buffer.size == 0:
        raise ImageDecodeError(f"empty compressed {kind} data (0 bytes)")
    image = cv2.imdecode(buffer, cv2.IMREAD_COLOR)
    if image is None:
        raise ImageDecodeError(f"cannot decode {buffer.size} bytes as {kind}: corrupt or truncated data")
    return image


def encode_compressed(bgr: np.ndarray, fmt: str = "jpeg", quality: int = 90) -> bytes:
    """Encode an (H, W, 3) uint8 BGR array as JPEG (``quality`` 0-100) or PNG (lossless; ignores quality)."""
    if fmt not in _COMPRESSED_EXT:
        raise ValueError(f"unsupported compressed format {fmt!r}; supported: {', '.join(_COMPRESSED_EXT)}")
    _check_array(bgr, "bgr8", ValueError)
    if not 0 <= quality <= 100:
        raise ValueError(f"jpeg quality must be in [0, 100], got {quality}")
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if fmt == "jpeg" else []
    ok, encoded = cv2.imencode(_COMPRESSED_EXT[fmt], bgr, params)
    if not ok:
        raise ValueError(f"cv2.imencode failed for a {bgr.shape} image as {fmt}")
    return encoded.tobytes()


@dataclass(frozen=True)
class EncodedImage:
    """A camera message's payload without the message: raw pixels or compressed bytes.

    Raw images set ``encoding``/``width``/``height``/``step``/``is_bigendian``; compressed ones set
    ``compressed_format`` (a CompressedImage ``format`` string) and leave the rest at defaults.
    ``data`` is any buffer (bytes, array.array, memoryview) and is never copied here.
    """

    data: object
    encoding: str = ""
    width: int = 0
    height: int = 0
    step: int = 0
    is_bigendian: bool = False
    compressed_format: str = ""


def decode_image(encoded: EncodedImage) -> np.ndarray:
    """Any supported payload -> (H, W, 3) uint8 BGR; raises ImageDecodeError naming what is wrong."""
    if encoded.compressed_format:
        return decode_compressed(encoded.data, encoded.compressed_format)
    array = raw_to_array(encoded.data, encoded.encoding, encoded.width, encoded.height, encoded.step,
                         encoded.is_bigendian)
    return to_bgr(array, encoded.encoding)


_FROM_BGR_CODE = {"rgb8": cv2.COLOR_BGR2RGB, "bgra8": cv2.COLOR_BGR2BGRA, "rgba8": cv2.COLOR_BGR2RGBA,
                  "mono8": cv2.COLOR_BGR2GRAY}


def from_bgr(bgr: np.ndarray, encoding: str) -> np.ndarray:
    """A BGR frame as a camera with ``encoding`` delivers it (bgr8: the same array, no copy)."""
    if encoding == "bgr8":
        return bgr
    if encoding not in _FROM_BGR_CODE:
        raise ValueError(f"cannot convert BGR to {encoding!r}; supported: bgr8, {', '.join(_FROM_BGR_CODE)}")
    return cv2.cvtColor(bgr, _FROM_BGR_CODE[encoding])
