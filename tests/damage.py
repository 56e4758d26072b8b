"""Ways to damage a checkpoint file's bytes: cut its end, flip a bit in tensor data or in the JSON header."""
from safetensors.torch import load as safetensors_load


def truncate(data: bytes) -> bytes:
    return data[:-40]


def flip_tensor_byte(data: bytes) -> bytes:
    """One bit of the last tensor's data: safetensors alone reads the file without complaint."""
    damaged = data[:-1] + bytes([data[-1] ^ 0x01])
    safetensors_load(damaged)
    return damaged


def flip_header_byte(data: bytes) -> bytes:
    """The state's step 4 becomes 5 (one bit): still valid JSON and a valid safetensors file."""
    at = data.index(b'\\"step\\": 4') + len(b'\\"step\\": ')
    damaged = data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1:]
    safetensors_load(damaged)
    return damaged
