"""predictions.png: the card's picture, drawn locally."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from job.outputs.thumbnail import HEIGHT, WIDTH, render


def test_draws_a_social_card_with_or_without_an_avatar(tmp_path: Path) -> None:
    Image.new("RGB", (400, 300), "red").save(tmp_path / "face.png")
    users = [
        {"handle": "alice", "display_name": "Alice", "avatar": "face.png"},
        {"handle": "bob", "display_name": None, "avatar": "https://pbs.twimg.com/b.jpg"},
        {"handle": "carol", "display_name": "Carol", "avatar": "missing.png"},
    ]
    out = render(tmp_path / "p.png", users, ["first prediction", "second " * 80, ""], tmp_path)
    image = Image.open(out).convert("RGB")
    assert image.size == (WIDTH, HEIGHT)
    assert image.getpixel((40 + 48, 40 + 48)) == (255, 0, 0)  # alice's avatar, in its circle
    assert image.getpixel((40 + 112 + 48, 40 + 48)) != (255, 0, 0)  # bob has none drawn


def test_an_unreadable_avatar_is_no_reason_to_fail(tmp_path: Path) -> None:
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    users = [{"handle": "alice", "display_name": "Alice", "avatar": "bad.jpg"}]
    assert render(tmp_path / "p.png", users, ["hello"], tmp_path).is_file()
