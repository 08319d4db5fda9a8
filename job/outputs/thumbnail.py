"""``predictions.png``: the card's thumbnail, drawn locally (avatar, name, handle, predictions)."""

from __future__ import annotations

import logging
from pathlib import Path

from job.outputs.fonts import Chain, Writer

log = logging.getLogger(__name__)

WIDTH, HEIGHT = 1200, 630  # the usual social-card size
BG, FG, MUTED, ACCENT = "#ffffff", "#0f1419", "#536471", "#1d9bf0"


def render(
    path: Path,
    users: list[dict[str, str | None]],
    predictions: list[str],
    data_dir: Path,
    language: str | None = None,
) -> Path:
    """Draw the card; ``users`` hold display_name, handle and avatar (a path under data_dir).
    Text of any script is drawn with the fonts of job/outputs/fonts.py; ``language`` (the
    tweets' main one) picks the CJK face."""
    from PIL import Image, ImageDraw, ImageOps

    image = Image.new("RGB", (WIDTH, HEIGHT), BG)
    draw = ImageDraw.Draw(image)
    chain = Chain(language=language)
    big, mid, small = (Writer(chain, size) for size in (40, 28, 26))
    x = 40
    for user in users[:3]:
        avatar = user.get("avatar")
        local = data_dir / avatar if avatar and not avatar.startswith("http") else None
        try:
            face = Image.open(local).convert("RGB") if local and local.is_file() else None
        except OSError:  # an unreadable picture is no reason to fail the job
            face = None
        if face is not None:
            face = ImageOps.fit(face, (96, 96))
            mask = Image.new("L", (96, 96), 0)
            ImageDraw.Draw(mask).ellipse((0, 0, 95, 95), fill=255)
            image.paste(face, (x, 40), mask)
        else:
            draw.ellipse((x, 40, x + 95, 135), fill=ACCENT)
        x += 112
    names = " & ".join(str(u.get("display_name") or u["handle"]) for u in users)
    handles = " ".join(f"@{u['handle']}" for u in users)
    room = WIDTH - 40 - (x + 8)
    big.draw(image, (x + 8, 48), big.shorten(names, room), FG)
    mid.draw(image, (x + 8, 100), mid.shorten(f"AI bot · {handles}", room), MUTED)
    y = 175
    for text in predictions[:3]:
        for line in small.wrap(text, WIDTH - 80, lines=3) or [""]:
            small.draw(image, (40, y), line, FG)
            y += 34
        y += 30
        if y > HEIGHT - 60:
            break
    small.draw(image, (40, HEIGHT - 50), "huggingtweets", ACCENT)
    image.save(path)
    missing = chain.missing(names + "".join(predictions[:3]))
    if missing:  # drawn as boxes: say which, and how to get the fonts
        log.warning(
            "predictions.png: no font has %d character(s) (%s); install fonts-noto-core,"
            " fonts-noto-cjk and fonts-noto-color-emoji (make install does)",
            len(missing),
            " ".join(f"U+{ord(c):04X}" for c in dict.fromkeys(missing)),
        )
    return path
