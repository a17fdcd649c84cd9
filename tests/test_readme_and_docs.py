"""README.md and docs/: every relative link lands (on a file, and on a heading where it names
one), the settings table lists exactly the settings the processes read, the error types are all
named, and the README stays short enough to read."""

from __future__ import annotations

import re
from pathlib import Path
from typing import get_args

import pytest
from pydantic import AliasChoices

from app.errors import GatewayErrorType
from app.settings import GatewaySettings
from contract.envelope import FailureType
from contract.violations import RuleType
from jobs.settings import REPO_ROOT, SECRET_FILE_NAMES, TEST_PREFIX, TOOLING_NAMES
from workers.settings import WorkerSettings

README = REPO_ROOT / "README.md"
DOCS = [README, *sorted((REPO_ROOT / "docs").glob("*.md"))]
SETTINGS_DOC = REPO_ROOT / "docs" / "operations.md"
API_DOC = REPO_ROOT / "docs" / "api.md"
README_LIMIT = 12 * 1024

_FENCE = re.compile(r"^```.*?^```", re.M | re.S)
_CODE_SPAN = re.compile(r"`[^`\n]*`")
_LINK = re.compile(r"\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.M)
_SETTING = re.compile(r"\b(?:IMAGEGEN_[A-Z0-9_]+|REDIS_URL)\b")


def prose(text: str) -> str:
    """The text without fenced blocks and code spans, where brackets are code, not links."""
    return _CODE_SPAN.sub("", _FENCE.sub("", text))


def links(path: Path) -> list[str]:
    return _LINK.findall(prose(path.read_text()))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its text lower-cased, punctuation dropped, spaces as
    hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link reads as its text
    text = re.sub(r"[`*]", "", text).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found: set[str] = set()
    for heading in _HEADING.findall(_FENCE.sub("", path.read_text())):
        base = slug(heading)
        anchor, n = base, 0
        while anchor in found:  # GitHub numbers repeated headings: x, x-1, x-2
            n += 1
            anchor = f"{base}-{n}"
        found.add(anchor)
    return found


def broken_links(path: Path) -> list[str]:
    broken = []
    for target in links(path):
        if re.match(r"(?i)(https?|mailto):", target):
            continue
        file_part, _, fragment = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        if not linked.exists():
            broken.append(f"{target}: no such file")
        elif fragment and linked.suffix == ".md" and fragment not in anchors(linked):
            broken.append(f"{target}: no heading #{fragment} in {linked.name}")
    return broken


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_every_relative_link_lands(path: Path) -> None:
    assert broken_links(path) == []


def test_the_readme_links_every_page_of_docs() -> None:
    linked = {(REPO_ROOT / target.partition("#")[0]).resolve() for target in links(README)}
    assert {page for page in DOCS[1:] if page.resolve() not in linked} == set()


def test_the_link_check_sees_a_missing_file_and_a_missing_heading(tmp_path: Path) -> None:
    (tmp_path / "other.md").write_text("# Other\n\n## The `make bench` run — 2 cores\n")
    page = tmp_path / "page.md"
    page.write_text(
        "[ok](other.md#the-make-bench-run--2-cores) [ok](#here) [web](https://example.com)\n"
        "`[not a link](gone.md)`\n\n## Here\n\n[gone](gone.md) [no](other.md#nowhere)\n"
    )
    assert broken_links(page) == [
        "gone.md: no such file",
        "other.md#nowhere: no heading #nowhere in other.md",
    ]


def test_readme_fits_on_a_few_screens() -> None:
    size = len(README.read_bytes())
    assert size < README_LIMIT, f"README.md is {size} bytes; move detail into docs/"


def settings_read() -> set[str]:
    """Every variable the gateway's and the workers' settings read, by every name each takes."""
    names: set[str] = set()
    for cls in (GatewaySettings, WorkerSettings):
        prefix = cls.model_config.get("env_prefix", "")
        for field_name, field in cls.model_fields.items():
            alias = field.validation_alias
            if isinstance(alias, AliasChoices):
                names |= {choice for choice in alias.choices if isinstance(choice, str)}
            elif isinstance(alias, str):
                names.add(alias)
            else:
                names.add(f"{prefix}{field_name}".upper())
    return names


def settings_section() -> str:
    return SETTINGS_DOC.read_text().split("\n## Settings\n", 1)[1].split("\n## ", 1)[0]


def settings_table() -> set[str]:
    """The variables the table's rows name in their first column."""
    rows = [line for line in settings_section().splitlines() if line.startswith("|")]
    assert "..." not in "\n".join(rows), "write each name in full: a reader copies it"
    first_cells = [row.split("|")[1] for row in rows[2:]]  # after the header and its rule
    return {name for cell in first_cells for name in _SETTING.findall(cell)}


def test_the_settings_table_lists_exactly_the_settings_that_are_read() -> None:
    """Found by a hostile pass: the table's `..._PER_KEY` read as a name that does nothing."""
    read, table = settings_read(), settings_table()
    assert {"REDIS_URL", "IMAGEGEN_POOL"} <= read  # what is read was found
    assert table - read == set(), "rows for settings nothing reads"
    assert read - table == set(), "settings the table does not list"


def test_host_and_test_variables_are_named_beside_the_table_not_in_it() -> None:
    section, table = settings_section(), settings_table()
    assert TOOLING_NAMES.isdisjoint(table)
    assert not any(name.startswith(TEST_PREFIX) for name in table)
    beside = set(_SETTING.findall(section.split("\n|", 1)[0]))
    assert beside >= TOOLING_NAMES, "compose's host variables belong beside the table"
    assert f"`{TEST_PREFIX}*`" in section


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_every_variable_the_docs_name_is_read_somewhere(path: Path) -> None:
    """A stale or mistyped name in prose is as misleading as one in the table."""
    named = set(_SETTING.findall(path.read_text()))
    known = settings_read() | TOOLING_NAMES | SECRET_FILE_NAMES
    unknown = {name for name in named - known if not name.startswith(TEST_PREFIX)}
    assert unknown == set()


def test_the_api_doc_names_every_error_type() -> None:
    text = API_DOC.read_text()
    types = {*get_args(GatewayErrorType), *get_args(RuleType), *(f.value for f in FailureType)}
    assert {t for t in types if f"`{t}`" not in text} == set()
