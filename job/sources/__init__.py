"""Where tweets come from. Every source has ``fetch(handle) -> UserTweets``.

- ``ArchiveSource``: the official account archive, zip or folder (``archive.py``).
- ``ApiSource``: the Twitter API v2 through tweepy (``api.py``; imports tweepy lazily).
- ``FileSource``: JSON Lines or CSV the user already has (``files.py``).
"""

from job.sources.archive import ArchiveSource
from job.sources.files import FileSource

__all__ = ["ArchiveSource", "FileSource"]
