"""ELF binaries built for another machine than the image's platform (an x86-64 executable in a
linux/arm64 image would run nowhere). The layer writer records the machine of every ELF executable or
shared library it writes (files with an exec bit or named *.so*, from their first 20 bytes); the
build compares them with each platform the layer goes into and warns."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

HEAD = 20  # e_ident (16), e_type (2), e_machine (2)
# (EI_CLASS, e_machine) -> GOARCH-style architecture name
_ARCHITECTURES = {
    (1, 3): "386", (2, 62): "amd64", (1, 40): "arm", (2, 183): "arm64", (2, 21): "ppc64le", (2, 22): "s390x",
    (2, 243): "riscv64", (1, 243): "riscv32", (2, 8): "mips64", (1, 8): "mips", (2, 258): "loong64",
    (1, 20): "ppc", (1, 22): "s390", (2, 2): "sparc64", (2, 43): "sparcv9",
}
# what also runs on a platform: 32-bit x86 on x86-64 (its kernels run both)
_COMPATIBLE = {"amd64": {"386"}}
_SHOWN = 10  # warnings per layer and platform; the rest are counted


def machine(head: bytes) -> str | None:
    """The "CLASS:MACHINE" key of an ELF executable or shared object from its first bytes, else None."""
    if len(head) < HEAD or head[:4] != b"\x7fELF" or head[5] not in (1, 2):
        return None
    order = "little" if head[5] == 1 else "big"
    if int.from_bytes(head[16:18], order) not in (2, 3):  # ET_EXEC, ET_DYN: not objects or core files
        return None
    return f"{head[4]}:{int.from_bytes(head[18:20], order)}"


def architecture(key: str) -> str:
    """A machine key's architecture name ("amd64"), or a description of an unknown one."""
    cls, _, number = key.partition(":")
    name = _ARCHITECTURES.get((int(cls), int(number)))
    return name or f"ELF machine {number} ({'64' if cls == '2' else '32'}-bit)"


def foreign(machines: Mapping[str, Sequence[str]], arch: str) -> list[tuple[str, str]]:
    """(in-image path, its architecture) for the binaries among `machines` ({key: paths}, as the writer
    records them) that do not run on architecture `arch` (a platform's "amd64", "arm64" ...)."""
    found = []
    for key, paths in machines.items():
        name = architecture(key)
        if name != arch and name not in _COMPATIBLE.get(arch, ()):
            found.extend((path, name) for path in paths)
    return sorted(found)


def warnings(machines: Mapping[str, Sequence[str]], platform: str, arch: str) -> list[str]:
    """The warning lines for a layer going into an image for `platform` (architecture `arch`)."""
    found = foreign(machines, arch)
    lines = [f"/{path} is an ELF binary for {name}, but the image is for {platform}: it will not run there"
             for path, name in found[:_SHOWN]]
    if len(found) > _SHOWN:
        lines.append(f"... and {len(found) - _SHOWN} more binaries not built for {arch} in the same layer")
    return lines
