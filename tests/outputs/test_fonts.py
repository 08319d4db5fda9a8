"""The picture's fonts: every script a name or tweet is written in has a glyph.

The check is on what the fonts report (their character maps, read by fontTools), not on pixels.
The fonts are Debian's fonts-noto-core, fonts-noto-cjk and fonts-noto-color-emoji, which
`make install` (and so CI) installs; without them these tests fail, they do not skip.
"""

from __future__ import annotations

import logging
import unicodedata
from pathlib import Path

import pytest
from fontTools.ttLib import TTFont
from PIL import Image

from job.outputs.fonts import Chain, Writer
from job.outputs.thumbnail import render

SAMPLES = {  # script: (text, the face expected to draw its letters)
    "latin with diacritics": ("André Ruffert, Łódź, Ærøskøbing, Nguyễn", "NotoSans-Regular"),
    "greek": ("Καλημέρα κόσμε", "NotoSans-Regular"),
    "cyrillic": ("Привет, мир", "NotoSans-Regular"),
    "arabic": ("مرحبا بالعالم", "NotoSansArabic-Regular"),
    "hebrew": ("שלום עולם", "NotoSansHebrew-Regular"),
    "cjk": ("你好世界 こんにちは 안녕하세요", "NotoSansCJK-Regular"),
    "emoji": ("🤖🎉👍🏽👨‍👩‍👧", "NotoColorEmoji"),
}


@pytest.fixture(scope="module")
def chain() -> Chain:
    chain = Chain()
    names = [face.path.name for face in chain.head]
    if "NotoSans-Regular.ttf" not in names:
        pytest.fail(
            "the Noto fonts are not installed (fonts-noto-core, fonts-noto-cjk,"
            f" fonts-noto-color-emoji; `make install` installs them); found: {names}"
        )
    return chain


@pytest.mark.parametrize("script", SAMPLES)
def test_every_character_has_a_glyph_in_the_face_that_draws_it(chain: Chain, script: str) -> None:
    text, expected = SAMPLES[script]
    assert chain.missing(text) == ""
    for run, face in chain.runs(text):
        assert face is not None, run
        # Ask the font file itself, independently of the chain's own bookkeeping.
        cmap = TTFont(face.path, fontNumber=face.index, lazy=True).getBestCmap()
        for char in run:
            assert ord(char) in cmap, f"{char!r} (U+{ord(char):04X}) not in {face.name}"
        letters = [c for c in run if unicodedata.category(c)[0] in "LS"]
        if letters:
            assert face.path.stem == expected, (run, face.name)


def test_fallback_is_per_character_and_marks_stay_with_their_letter(chain: Chain) -> None:
    runs = chain.runs("André 你好 🤖 ok")
    assert [face.path.stem for _, face in runs if face] == [
        "NotoSans-Regular",
        "NotoSansCJK-Regular",
        "NotoColorEmoji",
        "NotoSans-Regular",
    ]
    # e + COMBINING ACUTE, and a family joined by ZWJ, are one run each.
    assert [r for r, _ in chain.runs("e\u0301")] == ["e\u0301"]
    assert [r for r, _ in chain.runs("👨\u200d👩\u200d👧")] == ["👨\u200d👩\u200d👧"]


def test_scripts_beyond_the_head_come_from_the_other_installed_faces(chain: Chain) -> None:
    face = chain.face_for("क")  # Devanagari: in none of the head faces
    assert face is not None and face.path.stem == "NotoSansDevanagari-Regular"


def test_the_cjk_face_follows_the_bots_language(chain: Chain) -> None:
    # One code point, four regional forms: the face index picks which.
    assert Chain(language="ja").face_for("直").index == 0  # type: ignore[union-attr]
    assert Chain(language="zh").face_for("直").index == 2  # type: ignore[union-attr]
    assert Chain(language="ko").face_for("直").index == 1  # type: ignore[union-attr]


def test_control_characters_in_a_sampled_tweet_draw_as_spaces(chain: Chain, tmp_path: Path) -> None:
    # raqm refuses to lay out a "\r" (RuntimeError: raqm_layout() failed): seen in the image
    # test, where the tiny model sampled one.
    controls = "".join(chr(c) for c in [*range(0x20), 0x7F, 0x85, 0x2028, 0x2029])
    text = f"bread{controls}is good\r\n"
    writer = Writer(chain, 26)
    assert writer.width(text) > 0 and writer.wrap(text, 600, lines=3)
    users = [{"handle": "sam", "display_name": "Sam\r", "avatar": None}]
    assert render(tmp_path / "p.png", users, [text, "\r", controls], tmp_path).is_file()


def test_lines_are_wrapped_by_width_in_scripts_without_spaces(chain: Chain) -> None:
    writer = Writer(chain, 26)
    lines = writer.wrap("你好世界今天天气很好" * 20, 600, lines=3)
    assert len(lines) == 3 and lines[-1].endswith("…")
    assert all(writer.width(line) <= 600 for line in lines)
    assert writer.shorten("André Ruffert " * 10, 300).endswith("…")
    assert writer.width(writer.shorten("André Ruffert " * 10, 300)) <= 300


def test_the_picture_draws_every_script_in_colour_where_emoji_are(
    chain: Chain, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    users = [{"handle": "andreruffert", "display_name": "André Ruffert 🤖", "avatar": None}]
    predictions = [SAMPLES["arabic"][0] + " " + SAMPLES["cjk"][0], SAMPLES["emoji"][0], "ok"]
    with caplog.at_level(logging.WARNING):
        out = render(tmp_path / "p.png", users, predictions, tmp_path)
    assert "no font has" not in caplog.text
    # The emoji line (the second prediction, at y=175+34+30) has colour: the fonts drew it
    # from the colour bitmap face, not as a black outline box.
    image = Image.open(out).convert("RGB")
    band = image.crop((40, 239, 300, 273))
    colours = [c for _, c in band.getcolors(maxcolors=band.width * band.height) or []]
    assert any(abs(r - g) > 60 or abs(g - b) > 60 for r, g, b in colours)


def test_without_fonts_the_picture_still_renders_and_says_what_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("HUGGINGTWEETS_FONT_DIRS", str(tmp_path / "none"))
    assert Chain().missing("André 你好") == "é你好"
    users = [{"handle": "andreruffert", "display_name": "André", "avatar": None}]
    with caplog.at_level(logging.WARNING):
        assert render(tmp_path / "p.png", users, ["你好"], tmp_path).is_file()
    assert "no font has 3 character(s) (U+00E9 U+4F60 U+597D)" in caplog.text
    assert "fonts-noto-core" in caplog.text
