"""`--variant` for the benchmarks that compare this tree's server under other settings, and
`--setting` for a setting every server of a run gets.

A variant is a label and some `IDRSERVE_*` settings; the benchmark runs a server with them
interleaved with the default one, so a setting's effect is read from one run on one machine
state rather than from two runs minutes apart (bench_http.py, bench_iiif.py).
"""

from __future__ import annotations

VARIANT_HELP = (
    "also run this tree's server with these IDRSERVE_* settings, interleaved, as row LABEL "
    "(e.g. `'1 per turn:IDRSERVE_SERVER__INLINE_RENDERS_PER_TURN=1'`)"
)


def parse_variants(specs: list[str]) -> dict[str, dict[str, str]]:
    """`--variant LABEL:VAR=VALUE[,VAR=VALUE]` arguments as {label: env}; ValueError if bad."""
    variants: dict[str, dict[str, str]] = {}
    for spec in specs:
        label, _, assignments = spec.partition(":")
        pairs = [a.partition("=") for a in assignments.split(",") if a]
        if (
            not label
            or not pairs
            or any(not k.startswith("IDRSERVE_") or not eq for k, eq, _ in pairs)
        ):
            raise ValueError(f"--variant {spec!r}: expected LABEL:IDRSERVE_VAR=VALUE[,…]")
        variants[label] = {k: v for k, _, v in pairs}
    return variants


def parse_settings(specs: list[str]) -> dict[str, str]:
    """`--setting VAR=VALUE` arguments (for every server, a baseline's included) as an env;
    ValueError if one is not an IDRSERVE_* assignment."""
    env: dict[str, str] = {}
    for spec in specs:
        name, eq, text = spec.partition("=")
        if not name.startswith("IDRSERVE_") or not eq:
            raise ValueError(f"--setting {spec!r}: expected IDRSERVE_VAR=VALUE")
        env[name] = text
    return env
