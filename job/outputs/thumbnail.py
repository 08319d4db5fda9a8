"""``predictions.png``: the card's thumbnail, drawn locally (avatar, name, handle, predictions)."""

from __future__ import annotations

import textwrap
from pathlib import Path

WIDTH, HEIGHT = 1200, 630  # the usual social-card size
BG, FG, MUTED, ACCENT = "#ffffff", "#0f1419", "#536471", "#1d9bf0"


def render(
    path: Path, users: list[dict[str, str | None]], predictions: list[str], data_dir: Path
) -> Path:
    """Draw the card; ``users`` hold display_name, handle and avatar (a path under data_dir)."""
    from PIL import Image, ImageDraw, ImageFont, ImageOps

    image = Image.new("RGB", (WIDTH, HEIGHT), BG)
    draw = ImageDraw.Draw(image)
    big, mid, small = (ImageFont.load_default(size=s) for s in (40, 28, 26))
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
    draw.text((x + 8, 48), textwrap.shorten(names, 40), font=big, fill=FG)
    draw.text((x + 8, 100), f"AI bot · {textwrap.shorten(handles, 50)}", font=mid, fill=MUTED)
    y = 175
    for text in predictions[:3]:
        lines = textwrap.wrap(text, 70)[:3] or [""]
        for line in lines:
            draw.text((40, y), line, font=small, fill=FG)
            y += 34
        y += 30
        if y > HEIGHT - 60:
            break
    draw.text((40, HEIGHT - 50), "huggingtweets", font=small, fill=ACCENT)
    image.save(path)
    return path
