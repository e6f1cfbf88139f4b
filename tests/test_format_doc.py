"""docs/FORMAT.md states the version of each on-disk structure in several
places; each must be the version the code writes (the document says the code
is right where they differ: this test keeps them from differing)."""
from __future__ import annotations

import re
from pathlib import Path

from snapshotd.image import IMAGE_VERSION
from snapshotd.storage.pack import PACK_VERSION
from snapshotd.storage.rounds import ROUND_VERSION
from snapshotd.storage.snapshot import FORMAT_VERSION
from snapshotd.storage.store import CATALOG_VERSION

DOC = (Path(__file__).resolve().parent.parent / "docs" / "FORMAT.md").read_text()


def test_the_opening_paragraph_names_the_versions_written():
    head = " ".join(DOC.split("\n\n")[1].split())
    stated = {k: int(v) for k, v in re.findall(r"\*\*(\w+)(?: format| record)? version (\d+)\*\*", head)}
    assert stated == {"snapshot": FORMAT_VERSION, "pack": PACK_VERSION, "catalog": CATALOG_VERSION,
                      "image": IMAGE_VERSION, "round": ROUND_VERSION}, head


def _section(title: str) -> str:
    m = re.search(rf"^#+ {re.escape(title)}\n(.*?)(?=^## |\Z)", DOC, re.S | re.M)
    assert m, title
    return m.group(1)


def test_the_versions_table_of_section_11():
    rows = {m.group(1): int(m.group(2)) for m in
            re.finditer(r"^\| (snapshot `format_version`|pack `format_version`|catalog `version`|image `version`) "
                        r"\|.*\| \*\*(\d+)\*\*", _section("11. Versions and compatibility"), re.M)}
    assert rows == {"snapshot `format_version`": FORMAT_VERSION, "pack `format_version`": PACK_VERSION,
                    "catalog `version`": CATALOG_VERSION, "image `version`": IMAGE_VERSION}


def test_the_attribute_tables_give_the_versions_written():
    def stated(section: str, key: str) -> int:
        m = re.search(rf"^\| `{key}` \| int \| `(\d+)`", section, re.M)
        assert m, key
        return int(m.group(1))

    assert stated(_section("4. The snapshot file"), "format_version") == FORMAT_VERSION
    assert stated(_section("3. Pack files"), "format_version") == PACK_VERSION
    assert stated(_section("15. Rounds and the daemon's state"), "format_version") == ROUND_VERSION
    m = re.search(r"^\| `version` \| int \|[^|]*\|[^|]*`(\d+)` for this document", _section("7. The image (JSON)"),
                  re.M)
    assert m and int(m.group(1)) == IMAGE_VERSION


def test_examples_show_the_current_snapshot_version():
    for m in re.finditer(r'"format": "snapshotd-snapshot", "format_version": (\d+)', DOC):
        assert int(m.group(1)) == FORMAT_VERSION
