"""The repository explains itself: no citations of notes kept outside it, and no dead links.

Comments and docs point into the repository's own documentation (CONTRIBUTING.md#documentation),
so a reader with only a clone can follow every reference. These tests read every tracked text
file and fail on a citation of an outside note, on a relative Markdown link to a missing file or
heading, and on a `docs/…md#anchor` (from code or prose) that does not resolve. Anchors are
GitHub's: the heading text in lower case, punctuation dropped, spaces turned into hyphens.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Directories a file walk skips when git is not available (build output, virtualenvs, caches,
# the vendored npm assets).
_SKIP_DIRS = {".git", "build", "dist", "node_modules", "__pycache__", "vendor"}

# Citations of the research notes the project was started from, which never were part of the
# repository: their facts now live in docs/.
_OUTSIDE = [
    # the word is joined at run time so that this file does not itself read as a citation
    (
        re.compile(r"\.\./{0}/|/work/{0}|\b{0}/spec\b".format("sha" + "red")),
        "a path outside the repository",
    ),
    (re.compile(r"\bspec\s+(?:webgateway|ngff_iiif|performance)\b", re.I), "an outside spec"),
    (re.compile(r"\bngff_iiif\b"), "an outside spec"),
    (re.compile(r"\b(?:STYLE|aesthetics)\.md\b"), "an outside style guide"),
]
# A section sign cites a numbered section; inside the repository sections are cited by
# anchor, so only RFCs (`RFC 9110 §14.2`) may use it.
_SECTION = re.compile("\u00a7")
_RFC_BEFORE = re.compile(r"RFC\s?\d+\s?$")
# `name.md` mentioned anywhere (not as part of a URL).
_MD_NAME = re.compile(r"(?<![\w/.:-])(?:\.\./|\./)*([\w.-]+/)*[\w.-]+\.md\b")
_URL = re.compile(r"[a-z][a-z0-9+.-]*://\S+", re.I)
# A file name template in a usage line (`--out bench/results/zarr-vm-DATE.md`).
_PLACEHOLDER = re.compile(r"DATE|HOST|MACHINE")

_FENCE = re.compile(r"^\s*(```|~~~)")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_INLINE_CODE = re.compile(r"`+[^`]*`+")
_LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*:", re.I)
# A repository-root path to a Markdown file, with an optional anchor, cited anywhere.
_ROOT_DOC = re.compile(
    r"(?<![\w./#-])((?:docs|cache|deploy|bench)/[\w./-]*?\.md|"
    r"(?:README|CONTRIBUTING|CHANGELOG)\.md)(#[\w-]+)?"
)
# A file under one of the repository's top-level directories (or the package's), cited by path.
_REPO_FILE = re.compile(
    r"(?<![\w./-])((?:idrserve|tests|bench|docs|deploy|scripts|cache|http|render|sources|encode)"
    r"/[\w./-]*\.(?:py|md|conf|sh|toml|yaml|service|html|js|css))\b"
)


def _tracked() -> list[Path]:
    try:
        out = subprocess.run(
            ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return sorted(_walk(ROOT))
    return sorted(ROOT / name for name in out.decode().split("\0") if name)


def _walk(directory: Path) -> Iterator[Path]:
    for path in directory.iterdir():
        if path.is_dir():
            if path.name not in _SKIP_DIRS and not path.name.startswith("."):
                yield from _walk(path)
        elif path.is_file():
            yield path


@cache
def text_files() -> dict[Path, str]:
    """Every tracked file that decodes as UTF-8, by absolute path."""
    out = {}
    for path in _tracked():
        if not path.is_file():
            continue  # deleted in the work tree but still in the index
        try:
            out[path] = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue  # binary data (LUT files)
    return out


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else str(path)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading's text."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # links keep their text
    text = text.replace("`", "").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _markdown_lines(text: str) -> Iterator[tuple[int, str]]:
    """(line number, line) of a Markdown text outside fenced code blocks."""
    fenced = False
    for number, line in enumerate(text.splitlines(), 1):
        if _FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            yield number, line


@cache
def anchors(path: Path) -> frozenset[str]:
    """The heading anchors of a Markdown file, numbered as GitHub numbers repeats."""
    seen: dict[str, int] = {}
    out = set()
    for _number, line in _markdown_lines(path.read_text(encoding="utf-8")):
        match = _HEADING.match(line)
        if match is None:
            continue
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        out.add(base if count == 0 else f"{base}-{count}")
    return frozenset(out)


def _check_target(target: Path, anchor: str | None, where: str) -> str | None:
    """None if `target` (and `anchor` in it) exists, else what is wrong."""
    if not target.exists():
        return f"{where}: {_rel(target)} is missing"
    if anchor and target.suffix == ".md" and anchor not in anchors(target):
        return f"{where}: no heading #{anchor} in {_rel(target)}"
    return None


def test_no_citation_of_notes_outside_the_repository() -> None:
    md_names = {path.name for path in text_files() if path.suffix == ".md"}
    problems = []
    for path, text in text_files().items():
        if path == Path(__file__).resolve():
            continue  # this file names the patterns it looks for
        for number, line in enumerate(text.splitlines(), 1):
            where = f"{_rel(path)}:{number}"
            for pattern, what in _OUTSIDE:
                if pattern.search(line):
                    problems.append(f"{where}: cites {what}: {line.strip()[:120]}")
            for match in _SECTION.finditer(line):
                if not _RFC_BEFORE.search(line[max(0, match.start() - 12) : match.start()]):
                    problems.append(f"{where}: a § citation (cite a docs/…md#anchor instead)")
            for match in _MD_NAME.finditer(_URL.sub(" ", line)):
                name = match.group(0).rsplit("/", 1)[-1]
                if name not in md_names and not _PLACEHOLDER.search(name):
                    problems.append(f"{where}: cites {match.group(0)}, not in the repository")
    assert not problems, "\n".join(dict.fromkeys(problems))


def test_relative_markdown_links_resolve() -> None:
    problems = []
    checked = 0
    for path, text in text_files().items():
        if path.suffix != ".md":
            continue
        for number, line in _markdown_lines(text):
            for match in _LINK.finditer(_INLINE_CODE.sub("", line)):
                link = match.group(1)
                if _SCHEME.match(link):
                    continue  # http:, https:, mailto:
                target_text, _, anchor = link.partition("#")
                target = (path.parent / target_text).resolve() if target_text else path
                checked += 1
                problem = _check_target(target, anchor or None, f"{_rel(path)}:{number}")
                if problem:
                    problems.append(problem)
    assert checked > 50, "the link pattern no longer finds the docs' links"
    assert not problems, "\n".join(dict.fromkeys(problems))


def test_cited_doc_anchors_resolve() -> None:
    """`docs/rendering.md#families` in a comment, docstring or doc names a real heading."""
    problems = []
    cited = 0
    for path, text in text_files().items():
        if path == Path(__file__).resolve():
            continue
        for number, line in enumerate(text.splitlines(), 1):
            for match in _ROOT_DOC.finditer(_URL.sub(" ", line)):
                doc, anchor = match.group(1), match.group(2)
                if _PLACEHOLDER.search(doc):
                    continue
                cited += 1
                problem = _check_target(
                    ROOT / doc, anchor[1:] if anchor else None, f"{_rel(path)}:{number}"
                )
                if problem:
                    problems.append(problem)
    assert cited > 30, "the citation pattern no longer finds the code's references"
    assert not problems, "\n".join(dict.fromkeys(problems))


def test_cited_repository_files_exist() -> None:
    """`tests/ops/test_ops_http.py`, `render/kernels.py`: a file a comment sends readers to exists.

    Paths are taken relative to the repository, to the package (`http/fastpath.py` means
    `idrserve/http/fastpath.py`) or to the citing file's directory.
    """
    problems = []
    checked = 0
    for path, text in text_files().items():
        for number, line in enumerate(text.splitlines(), 1):
            for match in _REPO_FILE.finditer(_URL.sub(" ", line)):
                cited = match.group(1)
                if _PLACEHOLDER.search(cited):
                    continue
                checked += 1
                bases = (ROOT, ROOT / "idrserve", path.parent)
                if not any((base / cited).exists() for base in bases):
                    problems.append(f"{_rel(path)}:{number}: {cited} does not exist")
    assert checked > 100, "the path pattern no longer finds the cited files"
    assert not problems, "\n".join(dict.fromkeys(problems))


@pytest.mark.parametrize(
    ("heading", "anchor"),
    [
        (
            "Errors: what clients see, what the log gets",
            "errors-what-clients-see-what-the-log-gets",
        ),
        ("`_rdef` routes", "_rdef-routes"),
        ("Differences from OMERO.web", "differences-from-omeroweb"),
        ("Quantization of 8-bit and 16-bit data", "quantization-of-8-bit-and-16-bit-data"),
        ("Watching it: `/metrics`", "watching-it-metrics"),
        ("[LICENSE](LICENSE) text", "license-text"),
    ],
)
def test_slug_is_githubs(heading: str, anchor: str) -> None:
    assert slug(heading) == anchor


def test_the_checks_catch_what_they_should(tmp_path: Path) -> None:
    """The patterns find an outside citation and a dead anchor (guards the guards)."""
    # Assembled from words, so that no line of this file reads as a citation itself.
    words = ["see", "spec", "webgateway", "\u00a7" + "6.3", "and", "..", "sha" + "red", "spec"]
    outside = " ".join(words[:5]) + " " + "/".join(words[5:]) + "/performance.md"
    assert any(pattern.search(outside) for pattern, _ in _OUTSIDE)
    assert _SECTION.search(outside)
    assert _RFC_BEFORE.search("RFC 8288 ") and not _RFC_BEFORE.search("spec ")
    doc = tmp_path / "x.md"
    doc.write_text("# Title\n\n```\n# not a heading\n```\n## Title\n", encoding="utf-8")
    assert anchors(doc) == {"title", "title-1"}
    assert _check_target(doc, "not-a-heading", "here") is not None
    assert _check_target(doc, "title-1", "here") is None
    assert _ROOT_DOC.search("# see docs/rendering.md#families.").groups() == (
        "docs/rendering.md",
        "#families",
    )
