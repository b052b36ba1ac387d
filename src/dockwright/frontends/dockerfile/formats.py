"""Docker's value formats, as the Go code behind `docker build` reads and prints them: durations
(HEALTHCHECK flags), port specs (EXPOSE), signals (STOPSIGNAL), and the Go `%q` / `%v` renderings
BuildKit writes into history `created_by` texts."""

from __future__ import annotations

import re
from collections.abc import Sequence

_UNITS_NS = {"ns": 1, "us": 1_000, "µs": 1_000, "μs": 1_000, "ms": 1_000_000, "s": 1_000_000_000,
             "m": 60_000_000_000, "h": 3_600_000_000_000}
_DURATION_PART = re.compile(r"(\d*)(?:\.(\d*))?(ns|us|µs|μs|ms|s|m|h)")


def parse_duration(text: str) -> int:
    """Go's time.ParseDuration, in nanoseconds (`1m30s`, `500ms`, `1.5h`, `0`). ValueError if bad."""
    body = text[1:] if text[:1] in "+-" else text
    if body == "0":
        return 0
    total, pos = 0, 0
    while pos < len(body):
        match = _DURATION_PART.match(body, pos)
        if not match or not (match.group(1) or match.group(2)):
            raise ValueError(f"invalid duration {text!r}")
        whole, frac, unit = match.group(1) or "0", match.group(2) or "", _UNITS_NS[match.group(3)]
        total += int(whole) * unit + (int(frac) * unit // 10 ** len(frac) if frac else 0)
        pos = match.end()
    if not body:
        raise ValueError(f"invalid duration {text!r}")
    return -total if text.startswith("-") else total


def _trim_fraction(whole: int, frac: int, digits: int) -> str:
    text = str(whole)
    frac_text = str(frac).rjust(digits, "0").rstrip("0")
    return f"{text}.{frac_text}" if frac_text else text


def format_duration(ns: int) -> str:
    """Go's time.Duration.String(): `0s`, `500ms`, `1.5s`, `1m30s`, `1h0m0s`."""
    if ns == 0:
        return "0s"
    sign, ns = ("-", -ns) if ns < 0 else ("", ns)
    if ns < 1_000:
        return f"{sign}{ns}ns"
    if ns < 1_000_000:
        return f"{sign}{_trim_fraction(ns // 1_000, ns % 1_000, 3)}µs"
    if ns < 1_000_000_000:
        return f"{sign}{_trim_fraction(ns // 1_000_000, ns % 1_000_000, 6)}ms"
    seconds, frac = divmod(ns, 1_000_000_000)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{_trim_fraction(secs, frac, 9)}s"
    if hours or minutes:
        text = f"{minutes}m{text}"
    if hours:
        text = f"{hours}h{text}"
    return sign + text


def parse_port_specs(specs: Sequence[str]) -> list[str]:
    """The exposed ports of EXPOSE words (go-connections nat.ParsePortSpecs): `80` -> `80/tcp`,
    `80/UDP` -> `80/udp`, `8000-8002` -> three ports; `[ip:][hostport:]port` keeps the container
    port. Sorted as Go prints the map. ValueError names the bad spec."""
    ports: set[str] = set()
    for spec in specs:
        raw = spec
        if spec.startswith("[") and "]:" in spec:  # [ipv6]:host:container
            spec = spec.split("]:", 1)[1]
        container = spec.rsplit(":", 1)[-1]
        port, _, proto = container.partition("/")
        proto = (proto or "tcp").lower()
        if proto not in ("tcp", "udp", "sctp"):
            raise ValueError(f"invalid proto: {proto}")
        if not port:
            raise ValueError(f"no port specified: {raw}<empty>")
        start_text, _, end_text = port.partition("-")
        try:
            start, end = int(start_text), int(end_text or start_text)
        except ValueError:
            raise ValueError(f"invalid containerPort: {port}") from None
        if not (0 <= start <= end <= 65535):
            raise ValueError(f"invalid containerPort: {port}")
        ports.update(f"{number}/{proto}" for number in range(start, end + 1))
    return sorted(ports)


_SIGNALS = {"ABRT", "ALRM", "BUS", "CHLD", "CLD", "CONT", "FPE", "HUP", "ILL", "INT", "IO", "IOT", "KILL",
            "PIPE", "POLL", "PROF", "PWR", "QUIT", "SEGV", "STKFLT", "STOP", "SYS", "TERM", "TRAP", "TSTP",
            "TTIN", "TTOU", "URG", "USR1", "USR2", "VTALRM", "WINCH", "XCPU", "XFSZ", "UNUSED"}
_RT_SIGNAL = re.compile(r"^RTM(?:IN(?:\+([0-9]+))?|AX(?:-([0-9]+))?)$")


def is_signal(text: str) -> bool:
    """Docker's signal.ParseSignal: a number 1..64 or a Linux name with or without `SIG`."""
    if text.isdigit():
        return 0 < int(text) <= 64
    name = text.upper().removeprefix("SIG")
    if name in _SIGNALS:
        return True
    match = _RT_SIGNAL.match(name)
    return bool(match) and all(int(n) <= 30 for n in match.groups() if n)


def go_quote(text: str) -> str:
    """Go's strconv.Quote (what `%q` prints for a string)."""
    out = ['"']
    for ch in text:
        code = ord(ch)
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch in "\a\b\f\n\r\t\v":
            out.append("\\" + "abfnrtv"["\a\b\f\n\r\t\v".index(ch)])
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\x{code:02x}")
        elif not ch.isprintable():
            out.append(f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def go_quote_list(items: Sequence[str]) -> str:
    """`%q` of a []string: `["a" "b"]`."""
    return "[" + " ".join(go_quote(item) for item in items) + "]"


def go_quote_int(number: int) -> str:
    """`%q` of an int: the quoted rune (`'\\x03'`)."""
    if 0x20 <= number < 0x7F:
        return "'\\''" if number == 0x27 else "'\\\\'" if number == 0x5C else f"'{chr(number)}'"
    return f"'\\x{number:02x}'" if number < 0x80 else f"'\\u{number:04x}'"


def go_list(items: Sequence[str]) -> str:
    """`%v` of a []string: `[a b]`."""
    return "[" + " ".join(items) + "]"
