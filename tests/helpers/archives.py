"""Writes small Twitter archives in each shape real exports come in."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any, Literal

V1_DATE = "%a %b %d %H:%M:%S +0000 %Y"


def picture(kind: str, color: str = "orange") -> bytes:
    """A real 8x8 image: the job keeps only profile pictures that Pillow can read."""
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (8, 8), color).save(out, kind)
    return out.getvalue()


AVATAR_PNG = picture("PNG")
AVATAR_JPEG = picture("JPEG", "teal")


def tweet(
    id: int,
    text: str,
    *,
    created_at: str = "Mon Jan 02 10:00:00 +0000 2023",
    lang: str = "en",
    reply_to: str | None = None,
    urls: list[str] = (),  # type: ignore[assignment]
) -> dict[str, Any]:
    """A tweet as an archive stores it: numbers as strings, text HTML-escaped by the caller."""
    return {
        "id_str": str(id),
        "id": str(id),
        "full_text": text,
        "created_at": created_at,
        "lang": lang,
        "retweeted": False,
        "favorite_count": "0",
        "in_reply_to_status_id_str": reply_to,
        "in_reply_to_status_id": reply_to,
        "entities": {
            "urls": [
                {"url": u, "expanded_url": "https://example.org/x", "indices": ["0", "1"]}
                for u in urls
            ],
            "hashtags": [],
            "user_mentions": [],
        },
    }


def js(global_name: str, value: Any) -> str:
    return f"window.{global_name} = {json.dumps(value, indent=2, ensure_ascii=False)}"


def write_archive(
    root: Path,
    tweets: list[dict[str, Any]],
    *,
    username: str = "sample_user",
    display_name: str = "Sample User",
    file_name: Literal["tweets", "tweet"] = "tweets",
    parts: int = 1,
    wrapped: bool = True,
    manifest: Literal["thar", "ytd", None] = "thar",
    avatar: Literal["relative", "url", None] = "relative",
    notes: list[dict[str, Any]] | None = None,
    as_zip: bool = False,
    zip_prefix: str = "",
) -> Path:
    """Write an archive at ``root`` (a folder) or ``root.zip``; return its path."""
    files: dict[str, bytes | str] = {}
    entries = [{"tweet": t} if wrapped else t for t in tweets]
    chunk = -(-len(entries) // parts) if entries else 0
    tweet_files = []
    for p in range(parts):
        # Real exports: tweets.js, then tweets-part1.js, tweets-part2.js, ...
        name = f"data/{file_name}.js" if p == 0 else f"data/{file_name}-part{p}.js"
        files[name] = js(f"YTD.{file_name}.part{p}", entries[p * chunk : (p + 1) * chunk])
        tweet_files.append(
            {
                "fileName": name,
                "globalName": f"YTD.{file_name}.part{p}",
                "count": str(len(entries[p * chunk : (p + 1) * chunk])),
            }
        )
    files["data/account.js"] = js(
        "YTD.account.part0",
        [
            {
                "account": {
                    "username": username,
                    "accountId": "42",
                    "accountDisplayName": display_name,
                    "createdAt": "2010-01-01T00:00:00.000Z",
                }
            }
        ],
    )
    avatar_ref = None
    if avatar == "relative":
        avatar_ref = "./data/profile_media/avatar-1.png"
        files["data/profile_media/avatar-1.png"] = AVATAR_PNG
    elif avatar == "url":
        avatar_ref = "https://pbs.twimg.com/profile_images/1/old_avatar.jpg"
        files["data/profile_media/42-old_avatar.jpg"] = AVATAR_JPEG
    files["data/profile.js"] = js(
        "YTD.profile.part0",
        [
            {
                "profile": {
                    "description": {"bio": "I write tests", "website": "", "location": ""},
                    "avatarMediaUrl": avatar_ref,
                }
            }
        ],
    )
    data_types = {
        file_name: {"files": tweet_files},
        "account": {"files": [{"fileName": "data/account.js"}]},
    }
    info = {
        "userInfo": {"accountId": "42", "userName": username, "displayName": display_name},
        "dataTypes": data_types,
    }
    if manifest == "thar":
        files["data/manifest.js"] = "window.__THAR_CONFIG = " + json.dumps(info, indent=2)
    elif manifest == "ytd":
        files["data/manifest.js"] = js("YTD.manifest.part0", info)
    if notes is not None:
        files["data/note-tweet.js"] = js("YTD.note_tweet.part0", [{"noteTweet": n} for n in notes])

    if as_zip:
        path = root.with_suffix(".zip")
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
            for name, content in files.items():
                z.writestr(zip_prefix + name, content)
        return path
    for name, content in files.items():
        target = root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            target.write_bytes(content)
        else:
            target.write_text(content, encoding="utf-8")
    return root


def sentences(n: int, *, user: str = "u", start: int = 1000) -> list[dict[str, Any]]:
    """``n`` distinct, long-enough tweets, newest first by id."""
    return [
        tweet(start + n - i, f"{user} says thought number {i} about testing software today")
        for i in range(n)
    ]
