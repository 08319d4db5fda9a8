"""Fonts for ``predictions.png``: wide coverage, chosen character by character.

Pillow's default font covers ASCII only: "André Ruffert" came out as "Andr▯ Ruffert", and
Greek, Cyrillic, Arabic, CJK and emoji as rows of boxes. Here each run of text is drawn with
the first face of a fallback chain whose character map (read with fontTools: what the font
says it has, not what its pixels look like) holds the run's characters:

1. Noto Sans (Latin, Greek, Cyrillic, ...), Noto Sans Arabic, Noto Sans Hebrew, Noto Sans CJK
   (its Japanese, Korean or Chinese face by the bot's language: the same code point is drawn
   differently in each), Noto Color Emoji;
2. then, only for a character none of those has, every other ``Noto*-Regular`` face installed
   (Devanagari, Thai, Ethiopic, symbols, ...);
3. then DejaVu Sans, then Pillow's own font (boxes; ``missing`` lists those characters).

The faces come from Debian's and Ubuntu's packages fonts-noto-core, fonts-noto-cjk and
fonts-noto-color-emoji (~150 MB): maintained, and not vendored here. The image installs them;
``make install`` installs them where apt can and says so where it cannot. The folders searched
are the system's font folders, or ``HUGGINGTWEETS_FONT_DIRS`` (``:``-separated) when set.

Right-to-left and joining scripts (Arabic, Hebrew) are shaped and ordered inside a run by
Pillow's raqm layout (its wheels bundle raqm; it loads the system's FriBiDi). A line whose
first strong character is right-to-left has its runs laid out right to left. Noto Color Emoji
is a colour bitmap font with one size (109 px): its runs are drawn at that size and scaled to
the line. A combining mark, variation selector or joiner stays in the run of the character
before it, so "👨‍👩‍👧" and "é" written as e + U+0301 are drawn as one glyph.
"""

from __future__ import annotations

import functools
import logging
import os
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

SYSTEM_DIRS = ("/usr/share/fonts", "/usr/local/share/fonts", "~/.local/share/fonts", "~/.fonts")
# The chain's head, in order. Noto Sans first: it has Latin, Greek and Cyrillic, the scripts
# most names are in; emoji last of the head, so digits and "#" keep their text glyphs.
HEAD = (
    "NotoSans-Regular.ttf",
    "NotoSansArabic-Regular.ttf",
    "NotoSansHebrew-Regular.ttf",
    "NotoSansCJK-Regular.ttc",
    "NotoColorEmoji.ttf",
)
TAIL = ("DejaVuSans.ttf",)
# Faces inside NotoSansCJK-Regular.ttc: JP, KR, SC, TC, HK (fonts-noto-cjk's order). Twitter's
# lang codes; anything else gets the Japanese face, as fontconfig's default does.
CJK_FACE = {"ja": 0, "ko": 1, "zh": 2, "zh-cn": 2, "zh-tw": 3, "zh-hk": 4}


@dataclass(frozen=True, eq=False)
class Face:
    path: Path
    index: int  # the face inside a .ttc collection
    codepoints: frozenset[int]
    strike: int | None  # a bitmap font's one pixel size (colour emoji), else None

    @property
    def name(self) -> str:
        return self.path.name if not self.index else f"{self.path.name}#{self.index}"


def font_dirs() -> list[Path]:
    given = os.environ.get("HUGGINGTWEETS_FONT_DIRS")
    dirs = given.split(os.pathsep) if given is not None else SYSTEM_DIRS
    # os.path's expanduser leaves "~" as it is for a user without a home (Path's raises)
    return [
        Path(os.path.expanduser(d)) for d in dirs if d and not os.path.expanduser(d).startswith("~")
    ]


@functools.cache
def _files(dirs: tuple[Path, ...]) -> dict[str, Path]:
    """Font files by name, the first folder that has one winning."""
    found: dict[str, Path] = {}
    for folder in dirs:
        if folder.is_dir():
            for path in sorted(folder.rglob("*.tt[fc]")):
                found.setdefault(path.name, path)
    return found


@functools.cache
def _face(path: Path, index: int) -> Face | None:
    from fontTools.ttLib import TTFont

    try:
        font = TTFont(path, fontNumber=index, lazy=True)
        codepoints = frozenset(font.getBestCmap() or {})
        strike = font["CBLC"].strikes[0].bitmapSizeTable.ppemY if "CBLC" in font else None
    except Exception as e:  # a broken or odd file is skipped, not fatal to the picture
        log.debug("font %s skipped: %s", path, e)
        return None
    return Face(path, index, codepoints, strike)


def _joins(char: str) -> bool:
    """Characters drawn with the one before them: marks, joiners, selectors, skin tones."""
    cp = ord(char)
    return (
        unicodedata.category(char) in ("Mn", "Me", "Cf")
        or 0xFE00 <= cp <= 0xFE0F
        or 0x1F3FB <= cp <= 0x1F3FF
    )


class Chain:
    """The fallback chain of the faces in ``font_dirs()``, for a bot's ``language``."""

    def __init__(self, language: str | None = None) -> None:
        self.files = _files(tuple(font_dirs()))
        cjk = CJK_FACE.get((language or "").lower(), 0)
        head = [(name, cjk if name.startswith("NotoSansCJK") else 0) for name in HEAD]
        self.head = self._load(head)
        self.tail = self._load([(name, 0) for name in TAIL])
        self._rest: list[Face] | None = None  # the other Noto faces, read when first needed

    def _load(self, wanted: list[tuple[str, int]]) -> list[Face]:
        faces = [_face(self.files[n], i) for n, i in wanted if n in self.files]
        return [f for f in faces if f is not None]

    @property
    def rest(self) -> list[Face]:
        if self._rest is None:
            taken = set(HEAD) | set(TAIL)
            names = [
                n
                for n in self.files
                if n.startswith("Noto") and n.endswith("-Regular.ttf") and n not in taken
            ]
            # Sans before Serif, so a script with both gets the Sans face.
            names.sort(key=lambda n: ("Serif" in n, n))
            self._rest = self._load([(n, 0) for n in names])
        return self._rest

    def face_for(self, char: str) -> Face | None:
        cp = ord(char)
        for face in self.head:
            if cp in face.codepoints:
                return face
        for face in [*self.rest, *self.tail]:
            if cp in face.codepoints:
                return face
        return None

    def runs(self, text: str) -> list[tuple[str, Face | None]]:
        """``text`` cut where the face changes; ``None`` where no face has the character."""
        out: list[tuple[str, Face | None]] = []
        for char in _printable(text):
            if out:
                last, face = out[-1]
                # A space stays with text (an emoji font's space is as wide as an emoji).
                if _joins(char) or (
                    char.isspace()
                    and face is not None
                    and not face.strike
                    and ord(char) in face.codepoints
                ):
                    out[-1] = (last + char, face)
                    continue
            face = self.face_for(char)
            if out and out[-1][1] is face:
                out[-1] = (out[-1][0] + char, face)
            else:
                out.append((char, face))
        return out

    def missing(self, text: str) -> str:
        """The characters of ``text`` no face has (drawn as boxes; Pillow's own font, the last
        resort, has ASCII)."""
        return "".join(
            c
            for c in text
            if not c.isascii() and not _joins(c) and not c.isspace() and self.face_for(c) is None
        )


def _printable(text: str) -> str:
    """Control characters and line separators as spaces: a sampled tweet can hold a "\r",
    which raqm refuses to lay out (RuntimeError), and none of them draws anything."""
    return "".join(" " if unicodedata.category(c) in ("Cc", "Zl", "Zp") else c for c in text)


def _right_to_left(text: str) -> bool:
    for char in text:
        kind = unicodedata.bidirectional(char)
        if kind in ("R", "AL"):
            return True
        if kind == "L":
            return False
    return False


class Writer:
    """Draws and measures text at one size with a chain's faces."""

    def __init__(self, chain: Chain, size: int) -> None:
        self.chain, self.size = chain, size
        self._fonts: dict[tuple[Path, int], Any] = {}

    def _font(self, face: Face | None) -> Any:
        from PIL import ImageFont

        if face is None:
            return ImageFont.load_default(size=self.size)
        key = (face.path, face.index)
        if key not in self._fonts:
            size = face.strike or self.size
            self._fonts[key] = ImageFont.truetype(str(face.path), size, index=face.index)
        return self._fonts[key]

    def _scale(self, face: Face | None) -> float:
        # A bitmap face (colour emoji) is drawn at its one size and scaled to the line's.
        return self.size / face.strike if face is not None and face.strike else 1.0

    def width(self, text: str) -> float:
        return sum(
            self._font(face).getlength(run) * self._scale(face)
            for run, face in self.chain.runs(text)
        )

    def draw(self, image: Any, xy: tuple[float, float], text: str, fill: str) -> None:
        from PIL import Image, ImageDraw

        runs = self.chain.runs(text)
        if _right_to_left(text):
            runs.reverse()
        # Every run on one baseline (faces differ in ascent): the first face's, at this size.
        x, baseline = xy[0], xy[1] + self._ascent()
        draw = ImageDraw.Draw(image)
        for run, face in runs:
            font = self._font(face)
            if face is not None and face.strike:  # colour bitmap: draw big, scale down
                w, h = max(1, int(font.getlength(run))), int(face.strike * 1.25)
                layer = Image.new("RGBA", (w, h), (0, 0, 0, 0))
                draw_layer = ImageDraw.Draw(layer)
                draw_layer.text((0, face.strike), run, font=font, anchor="ls", embedded_color=True)
                scale = self._scale(face)
                layer = layer.resize((max(1, round(w * scale)), max(1, round(h * scale))))
                image.paste(layer, (round(x), round(baseline - face.strike * scale)), layer)
                x += w * scale
            else:
                draw.text((x, baseline), run, font=font, fill=fill, anchor="ls")
                x += font.getlength(run)

    def _ascent(self) -> int:
        face = self.chain.head[0] if self.chain.head else None
        return int(self._font(face).getmetrics()[0]) if face else self.size

    def wrap(self, text: str, width: float, lines: int) -> list[str]:
        """At most ``lines`` lines of at most ``width`` pixels, broken at spaces where there
        are any (a script written without spaces, CJK, breaks between characters)."""
        out: list[str] = []
        line = ""
        for word in _words(text):
            if self.width(line + word) <= width or not line:
                line += word
                while self.width(line.rstrip()) > width and len(line) > 1:  # a long word
                    cut = self._fit(line, width)
                    out.append(line[:cut])
                    line = line[cut:]
            else:
                out.append(line.rstrip())
                line = word.lstrip()
        if line.strip():
            out.append(line.rstrip())
        if len(out) > lines:
            out = out[:lines]
            out[-1] = self.shorten(out[-1] + " …", width)
        return out

    def shorten(self, text: str, width: float) -> str:
        """``text`` cut to ``width`` pixels, with "…" where it was cut."""
        if self.width(text) <= width:
            return text
        cut = self._fit(text, width - self.width("…"))
        return text[:cut].rstrip() + "…"

    def _fit(self, text: str, width: float) -> int:
        cut = 1
        while cut < len(text) and self.width(text[: cut + 1]) <= width:
            cut += 1
        return cut


def _words(text: str) -> list[str]:
    """Words with their trailing space; each CJK character is a word of its own."""
    words: list[str] = []
    for char in text:
        last = words[-1][-1] if words else " "
        after_space = last.isspace() and not char.isspace() and not _joins(char)
        if not words or after_space or (_breaks_before(char) and last != "\u200d"):
            words.append(char)
        else:
            words[-1] += char
    return words


def _breaks_before(char: str) -> bool:
    """A wide character (CJK, emoji) starts a word of its own: those scripts use no spaces."""
    return unicodedata.east_asian_width(char) in ("W", "F") and not _joins(char)
