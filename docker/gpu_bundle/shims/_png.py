"""The PNG subset the GPU check's generated data needs: 8-bit grey, palette and RGB,
non-interlaced; the bundle's stand-ins for cv2.imread and PIL.Image use it."""
import struct
import zlib

import numpy as np

SIGNATURE = b"\x89PNG\r\n\x1a\n"
CHANNELS = {0: 1, 2: 3, 3: 1}  # colour type -> samples per pixel (grey, RGB, palette)


class PNGError(ValueError):
    pass


def _chunk(kind, data):
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)


def encode(array, palette=None):
    """PNG bytes of an (H, W) or (H, W, 3) uint8 array; ``palette`` (N, 3) makes it a
    palette image of the (H, W) indices."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    height, width = array.shape[:2]
    if array.ndim == 3:
        colour_type = 2
    else:
        colour_type = 3 if palette is not None else 0
    rows = array.reshape(height, -1)
    raw = b"".join(b"\x00" + row.tobytes() for row in rows)  # filter 0 on every row
    out = SIGNATURE + _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0))
    if colour_type == 3:
        out += _chunk(b"PLTE", np.asarray(palette, np.uint8)[:256].tobytes())
    return out + _chunk(b"IDAT", zlib.compress(raw, 6)) + _chunk(b"IEND", b"")


def _paeth(a, b, c):
    p = a.astype(np.int16) + b - c
    pa, pb, pc = np.abs(p - a), np.abs(p - b), np.abs(p - c)
    return np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c)).astype(np.uint8)


def decode(data):
    """(array, colour type) of PNG bytes; (H, W) for grey and palette, (H, W, 3) for RGB."""
    if data[:8] != SIGNATURE:
        raise PNGError("not a PNG file")
    pos, idat, header = 8, [], None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
    if header is None:
        raise PNGError("PNG without IHDR")
    width, height, depth, colour_type, _, _, interlace = header
    if depth != 8 or colour_type not in CHANNELS or interlace:
        raise PNGError(f"PNG of bit depth {depth}, colour type {colour_type}, interlace "
                       f"{interlace}: the GPU bundle reads 8-bit non-interlaced grey, RGB "
                       "and palette PNGs only")
    bpp = CHANNELS[colour_type]
    stride = width * bpp
    raw = np.frombuffer(zlib.decompress(b"".join(idat)), np.uint8).reshape(height, stride + 1)
    out = np.zeros((height, stride), np.uint8)
    previous = np.zeros(stride, np.uint8)
    for y in range(height):
        kind, line = raw[y, 0], raw[y, 1:]
        if kind == 0:
            row = line.copy()
        elif kind == 2:
            row = line + previous
        else:  # Sub, Average, Paeth depend on the pixel to the left: go pixel by pixel
            row = np.zeros(stride, np.uint8)
            for x in range(0, stride, bpp):
                left = row[x - bpp:x] if x else np.zeros(bpp, np.uint8)
                up = previous[x:x + bpp]
                up_left = previous[x - bpp:x] if x else np.zeros(bpp, np.uint8)
                if kind == 1:
                    pred = left
                elif kind == 3:
                    pred = ((left.astype(np.uint16) + up) // 2).astype(np.uint8)
                else:
                    pred = _paeth(left, up, up_left)
                row[x:x + bpp] = line[x:x + bpp] + pred
        out[y] = row
        previous = row
    shape = (height, width, 3) if bpp == 3 else (height, width)
    return out.reshape(shape), colour_type
