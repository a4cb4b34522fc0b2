"""The compliance report drawn for people (host_agent/custody/report_html.py).

A world seeded with findings is reported, drawn, parsed back (the charts and tables are there,
every finding code is in the table, what recorders signed is escaped), and rendered in a real
headless Chromium whose screenshot must show the coverage chart's bars."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import zlib
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import pytest

from host_agent.custody import report, report_html
from tests.custody_world import UNSET, World

HOSTILE_OFFICER = "<b>x</b>&"
HOSTILE_CASE = "<script>alert(1)</script>"
SEEDED = {"gap_in_phase", "no_segment", "refused", "no_notice", "clock_drift",
          "clock_never_set", "readiness_failed", "battery_override"}
WINDOW = (1280, 2000)
GAP_RED, SEGMENT_BLUE = bytes.fromhex("d62728"), bytes.fromhex("2f6db5")


class Page(HTMLParser):
    """Tags as (tag, attrs, the classes of the enclosing svg), and the text."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str], str]] = []
        self.svg = ""
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "svg":
            self.svg = a.get("class", "")
        self.tags.append((tag, a, self.svg))

    def handle_endtag(self, tag: str) -> None:
        if tag == "svg":
            self.svg = ""

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def find(self, tag: str, cls: str | None = None,
             svg: str | None = None) -> list[dict[str, str]]:
        return [a for t, a, s in self.tags if t == tag and (svg is None or s == svg)
                and (cls is None or cls in a.get("class", "").split())]


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path / "world")
    w.recorder("REC-A")
    w.recorder("REC-B", clock=UNSET)
    w.phase("REC-A", gap="power_loss", refuse="pause")
    w.phase("REC-A", notice=False, segments=0, override=True, officer=HOSTILE_OFFICER)
    w.phase("REC-B", case=HOSTILE_CASE, segments=3)
    w.docking("REC-A", offset_before_us=900)
    w.docking("REC-A", offset_before_us=2_500_000)
    w.docking("REC-B", ready=False, reasons=["backup battery 12% < 50%"])
    yield w
    w.close()


def parse(page: str) -> Page:
    p = Page()
    p.feed(page)
    p.close()
    return p


def test_the_page_has_its_charts_and_tables_and_escapes_what_recorders_signed(
        world: World, tmp_path: Path) -> None:
    r = report.build(world.vault, report.Scope())
    assert SEEDED <= set(r["counts"]["by_code"])
    page = report_html.render(r)
    (tmp_path / "report.html").write_text(page, encoding="utf-8")
    p = parse(page)

    assert len(p.find("g", "lane", svg="coverage")) == len(r["phases"]) == 3
    assert len(p.find("rect", "gap", svg="coverage")) == 1  # REC-A's power loss
    assert len(p.find("rect", "segment", svg="coverage")) == 2 + 3
    series = p.find("g", "series", svg="drift")
    assert [s["data-device"] for s in series] == ["REC-A", "REC-B"]
    assert len(p.find("circle", svg="drift")) == 3
    assert len(p.find("line", "bound", svg="drift")) == 2
    table_codes = {a["data-code"] for a in p.find("tr") if "data-code" in a}
    assert set(r["counts"]["by_code"]) <= table_codes
    assert set(report.CODES) <= table_codes  # the summary names every code, found or not
    assert set(report_html.LABELS) == set(report.CODES)

    assert not p.find("script") and not p.find("b")
    assert "<b>x" not in page and "<script>alert" not in page
    assert "&lt;b&gt;x&lt;/b&gt;&amp;" in page and "&lt;script&gt;alert(1)" in page
    assert any(HOSTILE_OFFICER in t for t in p.text)
    assert any(HOSTILE_CASE in t for t in p.text)


def test_an_empty_report_draws_without_charts(tmp_path: Path) -> None:
    w = World(tmp_path)
    try:
        page = report_html.render(report.build(w.vault, report.Scope()))
    finally:
        w.close()
    p = parse(page)
    assert not p.find("svg")
    assert "No mandated phase" in page and "No docking" in page
    assert "Summary: 0 findings" in page
    assert parse(report_html.render({})).find("h1")  # nothing at all still draws a page


def png_rows(path: Path) -> tuple[int, int, list[bytes]]:
    """Width, height and the unfiltered RGB rows of an 8-bit PNG (no Pillow here)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height, depth, colour = struct.unpack(">IIBB", data[16:26])
    assert depth == 8 and colour in (2, 6), (depth, colour)
    bpp, pos, idat = 3 if colour == 2 else 4, 8, b""
    while pos < len(data):
        (n,), kind = struct.unpack(">I", data[pos:pos + 4]), data[pos + 4:pos + 8]
        idat += data[pos + 8:pos + 8 + n] if kind == b"IDAT" else b""
        pos += 12 + n
    raw, stride = zlib.decompress(idat), width * bpp
    prev, rows = bytearray(stride), []
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1:start + 1 + stride])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], prev[i - bpp] if i >= bpp else 0
            if kind == 1:
                line[i] = (line[i] + a) & 255
            elif kind == 2:
                line[i] = (line[i] + b) & 255
            elif kind == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif kind == 4:
                pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - 2 * c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(b"".join(bytes(line[i:i + 3]) for i in range(0, stride, bpp)))
        prev = line
    return width, height, rows


def longest_run(rows: list[bytes], rgb: bytes) -> int:
    best = 0
    for row in rows:
        run = 0
        for i in range(0, len(row), 3):
            run = run + 1 if row[i:i + 3] == rgb else 0
            best = max(best, run)
    return best


def test_chromium_draws_the_page(world: World, tmp_path: Path) -> None:
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(chromium).exists():
        if os.environ.get("CI"):
            pytest.fail("chromium is missing (CI installs it: .ci/run)")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    page = tmp_path / "report.html"
    page.write_text(report_html.render(report.build(world.vault, report.Scope())),
                    encoding="utf-8")
    shot = tmp_path / "report.png"
    result = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}",
         f"--window-size={WINDOW[0]},{WINDOW[1]}", f"--screenshot={shot}", page.as_uri()],
        capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0 and shot.exists(), result.stderr[-2000:]

    width, height, rows = png_rows(shot)
    assert (width, height) == WINDOW
    assert len(set(rows)) > 200, "the screenshot is (nearly) blank"
    assert len({row[i:i + 3] for row in rows for i in range(0, len(row), 30)}) > 20
    assert longest_run(rows, GAP_RED) > 100  # the gap bar, not the bound's 6-px dashes
    assert longest_run(rows, SEGMENT_BLUE) > 100
