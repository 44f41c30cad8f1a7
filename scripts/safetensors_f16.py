#!/usr/bin/env python3
"""Rewrites a safetensors file with its F32 tensors stored as F16 (other dtypes unchanged), in plain Python.

Why: a checkpoint of the 6-layer, 384-wide model is 87 MB in F32, more than the GPU machine's transfer limits
allow each way (64 MiB). F16 halves it; its rounding (relative 2^-11) is far below the int8 quantization the
package applies after it, and `cosee-trainer`, `cosee-tools` and the runtime read F16 tensors as F32
(`cosee_format::checkpoint`). Every value must fit F16's range (|x| <= 65504), or the conversion stops.

    scripts/safetensors_f16.py IN.safetensors OUT.safetensors
"""
import json
import struct
import sys
from array import array


def to_f16(src, dst):
    with open(src, "rb") as f:
        data = f.read()
    (header_len,) = struct.unpack_from("<Q", data, 0)
    header = json.loads(data[8 : 8 + header_len])
    body = memoryview(data)[8 + header_len :]
    metadata = header.pop("__metadata__", None)
    out_header, chunks, offset = {}, [], 0
    # Tensors in the order they lie in the file, so the output keeps the same layout.
    for name, info in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
        begin, end = info["data_offsets"]
        raw = body[begin:end]
        if info["dtype"] == "F32":
            values = array("f")
            values.frombytes(raw)
            if sys.byteorder != "little":
                values.byteswap()
            try:
                raw = struct.pack(f"<{len(values)}e", *values)
            except (OverflowError, struct.error) as err:
                sys.exit(f"safetensors_f16: {src}: tensor '{name}' does not fit F16: {err}")
            info = dict(info, dtype="F16")
        chunks.append(bytes(raw))
        out_header[name] = dict(info, data_offsets=[offset, offset + len(raw)])
        offset += len(raw)
    if metadata is not None:
        out_header["__metadata__"] = metadata
    encoded = json.dumps(out_header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)  # the data section starts 8-byte aligned, as the format recommends
    with open(dst, "wb") as f:
        f.write(struct.pack("<Q", len(encoded)))
        f.write(encoded)
        for chunk in chunks:
            f.write(chunk)
    return len(data), 8 + len(encoded) + offset


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__.strip().splitlines()[-1].strip())
    before, after = to_f16(sys.argv[1], sys.argv[2])
    print(f"safetensors_f16: {sys.argv[1]} ({before / 1e6:.1f} MB) -> {sys.argv[2]} ({after / 1e6:.1f} MB)", file=sys.stderr)
