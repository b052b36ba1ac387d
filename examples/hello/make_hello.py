"""Writes `hello`: a complete static Linux x86-64 program of 184 bytes that prints one line and exits 0.

It is the README's example application: a real program, so that the image runs, small enough to read here
whole, and made by this script (part of dockwright, same license) rather than copied from anywhere.
Run `python examples/hello/make_hello.py` to write it again; the result is byte-for-byte the committed file.

    mov eax, 1            ; write(
    mov edi, 1            ;   stdout,
    lea rsi, [rip+msg]    ;   msg,
    mov edx, len          ;   len)
    syscall
    mov eax, 60           ; exit(
    xor edi, edi          ;   0)
    syscall
    msg: "Hello from a dockwright image!\n"
"""

from __future__ import annotations

import struct
from pathlib import Path

MESSAGE = b"Hello from a dockwright image!\n"
BASE = 0x400000  # where the one loadable segment (the whole file) is mapped
HEADERS = 64 + 56  # ELF header, one program header


def program() -> bytes:
    code = (b"\xb8\x01\x00\x00\x00"                     # mov eax, 1 (write)
            b"\xbf\x01\x00\x00\x00"                     # mov edi, 1 (stdout)
            b"\x48\x8d\x35" + struct.pack("<i", 16) +   # lea rsi, [rip+16]: the message after the code
            b"\xba" + struct.pack("<I", len(MESSAGE)) +  # mov edx, len
            b"\x0f\x05"                                 # syscall
            b"\xb8\x3c\x00\x00\x00"                     # mov eax, 60 (exit)
            b"\x31\xff"                                 # xor edi, edi
            b"\x0f\x05")                                # syscall
    size = HEADERS + len(code) + len(MESSAGE)
    elf = (b"\x7fELF\x02\x01\x01" + bytes(9)            # 64-bit, little-endian, version 1, System V
           + struct.pack("<HHIQQQIHHHHHH", 2, 0x3E, 1,  # executable, x86-64, version
                         BASE + HEADERS, 64, 0, 0,      # entry, program headers at 64, no sections, flags
                         64, 56, 1, 64, 0, 0))          # header sizes, one program header
    segment = struct.pack("<IIQQQQQQ", 1, 5, 0, BASE, BASE, size, size, 0x1000)  # PT_LOAD, read + execute
    return elf + segment + code + MESSAGE


if __name__ == "__main__":
    target = Path(__file__).with_name("hello")
    target.write_bytes(program())
    target.chmod(0o755)
