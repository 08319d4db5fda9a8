"""Hostile inputs and servers, by class of input: one section a class, each case through the
command, each asserting its exit code, one ``error:`` line and no traceback (or, where the
input is valid, that it is read). Records and races that touch consent have their own file,
tests/cloud/test_consent_classes.py. Cases beyond those a report named are marked ``(ours)``.
Each class is fixed where it entered:

- text no UTF-8 can hold, ids too long for Python's int: ``Tweet``/``Profile``/``Avatar`` and
  ``loads`` in job/data/tweets.py, the one boundary every source goes through;
- archive members no reader here can open: ``archive.UNREADABLE``;
- a file or folder where the job writes, a path too long: ``errors.classify`` by OSError kind;
- values that pass a bound and fail later: no inf or NaN in any config field, and bounds;
- records the job keeps in storage: job/records.py reads a damaged one as damaged;
- API answers of the wrong shape: the paginator's ``meta``, any requests failure retried.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from job import errors
from tests.helpers import SAMPLE
from tests.helpers.archives import sentences, tweet, write_archive
from tests.helpers.cli import Result, one_line
from tests.helpers.cli import invoke as cli
from tests.helpers.twitter_api import FakeUser, Fault, TwitterAPI, v2_tweet

TOKEN = "tw-hostile-token-7741"
FEW = ["--min-chars", "10"]  # these tests' files are small


def prepared(result: Result, out: Path, bot: str = "x") -> list[dict]:
    """The run went through: its raw tweets, read back as UTF-8 JSON."""
    assert result.returncode == 0, result.stderr
    raw = (out / bot / "data" / "raw.jsonl").read_bytes().decode("utf-8")
    assert not set(raw) & {"\x85", "\u2028", "\u2029"}  # escaped: any line reader reads it
    return [json.loads(line) for line in raw.splitlines()]


def tweets_file(tmp: Path, lines: list[str], name: str = "t.jsonl") -> Path:
    """A JSONL file whose first records are ``lines`` as written (raw), then enough tweets."""
    good = [json.dumps({"text": f"an ordinary tweet number {i} of words"}) for i in range(40)]
    path = tmp / name
    path.write_text("\n".join([*lines, *good]) + "\n", encoding="utf-8")
    return path


# --- Text no UTF-8 can hold, ids no int can hold: read around, never exit 1 -------------------

LONG = "9" * 5000
TEXT_CASES = {
    "a lone surrogate in a JSONL text": ['{"text": "bad \\ud800 surrogate here now"}'],
    "a lone surrogate in the display name (ours)": [
        '{"text": "a tweet with words", "name": "Sam \\udfff"}'
    ],
    "a low surrogate before a high one (ours)": ['{"text": "pair \\udc00\\ud800 reversed"}'],
    "a raw U+2028 inside a string": ['{"text": "one\u2028two words here"}'],
    "raw U+2029 and U+0085 inside strings (ours)": ['{"text": "one\u2029two\u0085three"}'],
    "a 5,000-digit integer id": [f'{{"id": {LONG}, "text": "a tweet of words"}}'],
    "a 5,000-digit id string": [f'{{"id": "{LONG}", "text": "a tweet of words"}}'],
    "a 41-digit integer id (ours)": [f'{{"id": {"1" * 41}, "text": "a tweet of words"}}'],
    "a 10,000-character lang (ours)": [f'{{"lang": "{"e" * 10_000}", "text": "a tweet x"}}'],
}


@pytest.mark.parametrize("case", TEXT_CASES)
def test_text_no_utf8_holds_and_ids_no_int_holds_are_read_around(case: str, tmp_path: Path) -> None:
    path = tweets_file(tmp_path, TEXT_CASES[case])
    out = tmp_path / "out"
    rows = prepared(cli("prepare", "x", "--jsonl", str(path), "--out", str(out), *FEW), out)
    assert len(rows) == 41
    assert all(len(r["id"]) <= 64 for r in rows)
    assert all(r["lang"] is None or len(r["lang"]) <= 16 for r in rows)


@pytest.mark.parametrize(
    "where", ["tweet text", "display name", "tweet id (5,000 digits, as a number)"]
)
def test_an_archive_with_text_no_utf8_holds_is_read_around(where: str, tmp_path: Path) -> None:
    entries = sentences(60)
    entries[0] = tweet(1, "SURROGATE in an archive tweet of words")
    path = write_archive(tmp_path / "a", entries, display_name="Sample NAME User", username="x")
    # JSON's escapes, as a file holds them: "\ud800" alone is valid JSON, and no text
    changes = {
        "tweet text": ("data/tweets.js", "SURROGATE", "\\ud800"),
        "display name": ("data/account.js", "NAME", "\\udbff"),
        "tweet id (5,000 digits, as a number)": (
            "data/tweets.js",
            '"id_str": "1001"',
            f'"id_str": {LONG}',
        ),
    }
    name, old, new = changes[where]
    text = (path / name).read_text()
    assert old in text
    (path / name).write_text(text.replace(old, new))
    out = tmp_path / "out"
    rows = prepared(cli("prepare", "x", "--archive", str(path), "--out", str(out), *FEW), out)
    assert len(rows) == 60


def test_an_api_tweet_with_a_lone_surrogate_is_read_around(tmp_path: Path) -> None:
    texts = [f"tweet {i} says a few words today" for i in range(60)]
    texts[0] = "a lone \ud800 surrogate from the API here"
    with TwitterAPI(token=TOKEN) as api:
        api.add(
            FakeUser(
                id="1", username="x", tweets=[v2_tweet(99 - i, t) for i, t in enumerate(texts)]
            )
        )
        env = {"TWITTER_BEARER_TOKEN": TOKEN, "TWITTER_API_URL": api.url}
        out = tmp_path / "out"
        result = cli("prepare", "x", "--api", "--out", str(out), *FEW, env=env)
    assert "\ufffd" in prepared(result, out)[0]["text"]


# --- Archive members no reader here opens: corrupt input (5) ----------------------------------


def patched_zip(
    tmp: Path,
    method: int = zipfile.ZIP_DEFLATED,
    *,
    flag: int = 0,
    as_method: int | None = None,
    damage: bool = False,
) -> Path:
    """An archive zip whose tweets.js is stored with ``method``; then its headers (the local
    one and the central directory's) say ``as_method`` or carry ``flag`` (0x1: encrypted), or
    its data is damaged."""
    folder = write_archive(tmp / "a", sentences(200), username="x")
    path = tmp / "a.zip"
    with zipfile.ZipFile(path, "w", compression=method) as z:
        for file in sorted(folder.rglob("*")):
            if file.is_file():
                z.write(file, file.relative_to(folder).as_posix())
    raw = bytearray(path.read_bytes())
    name = b"data/tweets.js"
    with zipfile.ZipFile(path) as z:
        info = z.getinfo(name.decode())
    flags = [info.header_offset + 6]  # the local header's flags; its method follows them
    at = raw.find(b"PK\x01\x02")
    while at != -1:  # the central directory's entry for it: flags at 8, the name at 46
        if raw[at + 46 : at + 46 + len(name)] == name:
            flags.append(at + 8)
        at = raw.find(b"PK\x01\x02", at + 4)
    assert len(flags) == 2
    for offset in flags:
        raw[offset] |= flag
        if as_method is not None:
            raw[offset + 2 : offset + 4] = as_method.to_bytes(2, "little")
    if damage:
        start = info.header_offset + 30 + len(name) + len(info.extra)
        for i in range(start + 40, start + 80):
            raw[i] ^= 0x5A
    path.write_bytes(bytes(raw))
    return path


ZIP_CASES = {
    "an encrypted member": dict(flag=0x1),
    "a member of method 9 (deflate64)": dict(as_method=9),
    "a member of a method nobody has (99) (ours)": dict(as_method=99),
    "a member of corrupt LZMA data": dict(method=zipfile.ZIP_LZMA, damage=True),
    "a member of corrupt bzip2 data (ours)": dict(method=zipfile.ZIP_BZIP2, damage=True),
}


@pytest.mark.parametrize("case", ZIP_CASES)
def test_an_archive_member_no_reader_opens_is_corrupt_input(case: str, tmp_path: Path) -> None:
    path = patched_zip(tmp_path, **ZIP_CASES[case])  # type: ignore[arg-type]
    result = cli("prepare", "x", "--archive", str(path), "--out", str(tmp_path / "out"))
    assert "cannot read data/tweets.js" in one_line(result, errors.CORRUPT_INPUT)


# --- Where the job writes ---------------------------------------------------------------------


@pytest.mark.parametrize("blocked", ["x", ".x"])
def test_a_file_where_the_job_writes_a_folder_is_one_line(blocked: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / blocked).parent.mkdir(parents=True, exist_ok=True)
    (out / blocked).write_text("in the way")
    path = tweets_file(tmp_path, [])
    result = cli("prepare", "x", "--jsonl", str(path), "--out", str(out), "--min-chars", "10")
    assert result.returncode in (errors.NOT_WRITABLE, errors.BAD_CONFIG), result.stderr
    one_line(result, result.returncode)


def test_an_avatar_whose_suffix_is_a_path_of_its_own_is_read_around(tmp_path: Path) -> None:
    path = write_archive(tmp_path / "a", sentences(60), username="x")
    profile = path / "data" / "profile.js"
    media = path / "data" / "profile_media"
    (picture,) = list(media.iterdir())
    odd = media / f"avatar.{'p' * 240}"
    picture.rename(odd)
    profile.write_text(profile.read_text().replace(picture.name, odd.name))
    out = tmp_path / "out"
    prepared(cli("prepare", "x", "--archive", str(path), "--out", str(out), *FEW), out)
    stats = json.loads((out / "x" / "data" / "stats.json").read_text())
    assert stats["users"]["x"]["avatar"] in (None, "avatars/x.jpg")


# --- Values that passed a bound and failed after the data stage: exit 10 before it -------------

CONFIG_CASES = {
    "epochs inf": ["--epochs", "inf"],
    "epochs huge": ["--epochs", "1e12"],
    "epochs NaN (ours)": ["--epochs", "nan"],
    "a negative seed": ["--seed", "-1"],
    "a huge seed": ["--seed", str(2**64)],
    "balance ratio NaN": ["--balance-ratio", "nan"],
    "balance ratio inf": ["--balance-ratio", "inf"],
    "learning rate inf": ["--learning-rate", "inf"],
    "learning rate 1e9 (ours)": ["--learning-rate", "1e9"],
    "top_p NaN (ours)": ["--top-p", "nan"],
    "temperature inf (ours)": ["--temperature", "inf"],
    "a 5,000-character start text (ours)": ["--start-text", "x" * 5000],
    "predictions per prompt 1e6 (ours)": ["--predictions-per-prompt", "1000000"],
}


@pytest.mark.parametrize("case", CONFIG_CASES)
def test_values_that_would_fail_after_the_data_stage_are_refused_first(
    case: str, tmp_path: Path
) -> None:
    result = cli("run", "x", "--jsonl", str(SAMPLE), *CONFIG_CASES[case], "--out", str(tmp_path))
    one_line(result, errors.BAD_CONFIG)
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    "yaml_value", [".nan", ".inf", "-.inf", ".NaN"], ids=["nan", "inf", "-inf", "NaN (ours)"]
)
def test_yamls_own_infinities_in_a_config_file_are_refused(yaml_value: str, tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(f"prepare: {{balance_ratio: {yaml_value}}}\n")
    result = cli("run", "x", "--jsonl", str(SAMPLE), "--config", str(config))
    one_line(result, errors.BAD_CONFIG)


@pytest.mark.parametrize(
    "files",
    [
        {"vocab.json": "not json", "merges.txt": "#version: 0.2\n"},
        {"vocab.json": "[1, 2, 3]", "merges.txt": "#version: 0.2\n"},
        {"vocab.json": '{"a": "b"}', "merges.txt": "#version: 0.2\n"},
        {"vocab.json": '{"a": 0}', "merges.txt": b"\xff\xfe\x00"},
    ],
    ids=["not JSON", "a list", "ids not numbers (ours)", "merges not text (ours)"],
)
def test_a_tokenizer_folder_that_is_not_one_is_refused_before_any_work(
    files: dict, tmp_path: Path
) -> None:
    folder = tmp_path / "tok"
    folder.mkdir()
    for name, content in files.items():
        target = folder / name
        target.write_bytes(content if isinstance(content, bytes) else content.encode())
    result = cli(
        *("run", "x", "--jsonl", str(SAMPLE), "--base-model", "tiny"),
        *("--tokenizer", str(folder), "--out", str(tmp_path / "out")),
    )
    assert "--tokenizer" in one_line(result, errors.CORRUPT_INPUT)


@pytest.mark.parametrize("value", ["²", "-1", "1e3", "0x1", " 1", "1" * 12, "١"])
def test_an_array_index_that_is_not_one_is_refused(value: str, tmp_path: Path) -> None:
    manifest = tmp_path / "m.yaml"
    manifest.write_text(
        f"version: 1\noutput: {tmp_path / 'out'}\nbots:\n  - users: [{{handle: a}}]\n"
    )
    result = cli("run", "--manifest", str(manifest), env={"AWS_BATCH_JOB_ARRAY_INDEX": value})
    assert "is not an index" in one_line(result, errors.BAD_CONFIG)


# --- Records the job keeps in storage, damaged by anyone who may write there -------------------

RECORDS = {
    "status.json not JSON": ("status.json", b"{not json"),
    "status.json of an unknown state": ("status.json", b'{"bot": "a", "state": "exploded"}'),
    "status.json a list (ours)": ("status.json", b"[1, 2]"),
    "status.json with a field of the wrong type (ours)": (
        "status.json",
        b'{"bot": "a", "state": "failed", "hub": "yes"}',
    ),
    "status.json empty (ours)": ("status.json", b""),
}


@pytest.mark.parametrize("case", RECORDS)
def test_a_damaged_status_is_shown_as_unknown_not_a_crash(case: str, tmp_path: Path) -> None:
    name, data = RECORDS[case]
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / name).write_bytes(data)
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "status.json").write_text('{"bot": "b", "state": "queued"}')
    result = cli("status", "--output", str(tmp_path))
    assert result.returncode == 0, result.stderr
    rows = [line.split("\t") for line in result.stdout.splitlines()[1:]]
    assert [r[:2] for r in rows] == [["a", "unknown"], ["b", "queued"]]


@pytest.mark.parametrize(
    "record",
    [b"", b"{", b"[]", b"null", b'"x"', b"[" * 100_000, b'{"at": "' + b"x" * (2 << 20) + b'"}'],
    ids=["empty", "{", "[]", "null", "a string", "100,000 [", "2 MiB"],
)
def test_a_damaged_opt_out_still_opts_out_and_stops_no_other_bot(
    record: bytes, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    (out / "_opt-out").mkdir(parents=True)
    (out / "_opt-out" / "a.json").write_bytes(record)
    manifest = tmp_path / "m.yaml"
    manifest.write_text(f"version: 1\noutput: {out}\nbots:\n  - users: [{{handle: a}}]\n")
    result = cli("run", "--manifest", str(manifest))
    assert "@a asked not to be made" in one_line(result, errors.OPTED_OUT)
    assert not (out / "a").exists()
    # It once stopped every bot of the task (a JSON error): the others go on to be made (b
    # here reaches its own check, its missing input, and its record says so).
    manifest.write_text(
        f"version: 1\noutput: {out}\nbots:\n  - users: [{{handle: a}}]\n"
        f"  - users: [{{handle: b, source: jsonl, uri: {tmp_path / 'none.jsonl'}}}]\n"
    )
    cli("run", "--manifest", str(manifest))
    status = json.loads((out / "b" / "status.json").read_text())
    assert status["state"] == "failed" and "not found" in status["reason"]
    assert not (out / "a").exists()


# --- API answers of the wrong shape --------------------------------------------------------------


@pytest.mark.parametrize(
    "meta", [None, [], "x", 7], ids=["null", "[]", "a string (ours)", "7 (ours)"]
)
def test_an_api_page_whose_meta_is_not_an_object_ends_the_pages(meta, tmp_path: Path) -> None:
    with TwitterAPI(token=TOKEN) as api:
        api.add(
            FakeUser(
                id="1",
                username="x",
                tweets=[v2_tweet(999 - i, f"tweet {i} says a few words") for i in range(150)],
            )
        )
        api.meta = meta
        env = {"TWITTER_BEARER_TOKEN": TOKEN, "TWITTER_API_URL": api.url}
        out = tmp_path / "out"
        result = cli("prepare", "x", "--api", "--out", str(out), *FEW, env=env)
    assert len(prepared(result, out)) == 100  # the first page; no next token to follow


@pytest.mark.parametrize(
    "fault",
    [Fault(302, redirect=True), Fault(200, body=b"\x00\xff not json")],
    ids=["a redirect loop", "a 200 of bytes (ours)"],
)
def test_an_api_that_loops_or_garbles_is_transient(fault: Fault) -> None:
    from job.data.sources.api import ApiSource

    with TwitterAPI(token=TOKEN) as api:
        api.always = fault
        source = ApiSource(TOKEN, base_url=api.url, max_retries=1, sleep=lambda s: None)
        with pytest.raises(errors.TransientError, match="Twitter API still"):
            source.fetch("x")


# --- Cost that input controls: bounded by the input's size ------------------------------------


def test_notes_are_attached_in_time_that_grows_with_notes_plus_tweets() -> None:
    """300 notes and 20,000 tweets took 13 s when each note read every tweet: the same sizes
    here take ~0.1 s, the time growing with notes plus tweets, not their product."""
    import time

    from job.data.sources.archive import _attach_notes
    from job.data.tweets import Tweet

    tweets = [
        Tweet(user="x", id=str(i), text=f"tweet {i:05d} opens a long post") for i in range(20_000)
    ]
    notes = [
        {"core": {"text": f"tweet {i:05d} opens a long post about things, in full"}}
        for i in range(0, 20_000, 66)
    ]
    started = time.monotonic()
    _attach_notes(tweets, notes)
    assert time.monotonic() - started < 5  # linear: ~0.1 s here; quadratic: 13 s and more
    assert tweets[66].text.endswith("in full") and tweets[67].text.endswith("post")


def test_a_jsonl_on_s3_over_the_bound_is_refused_by_its_size_before_it_is_read(
    s3, monkeypatch, tmp_path: Path
) -> None:
    import boto3

    from job.data.sources import files
    from tests.helpers.s3 import FaultProxy

    monkeypatch.setattr(files, "MAX_FILE_BYTES", 1 << 10)  # as a 270 MB file is to 256 MiB
    boto3.client("s3").put_object(Bucket="results", Key="in/x.jsonl", Body=b"{}\n" * 1000)
    manifest = (
        f"version: 1\noutput: {tmp_path / 'out'}\nwandb: {{mode: disabled}}\nbots:\n"
        "  - users: [{handle: x, source: jsonl, uri: s3://results/in/x.jsonl}]\n"
    )
    (tmp_path / "m.yaml").write_text(manifest)
    with FaultProxy(s3.url) as proxy:
        result = cli(
            "run", "--manifest", str(tmp_path / "m.yaml"), env={"AWS_ENDPOINT_URL": proxy.url}
        )
    assert "over 0 MiB: not a tweets file" in one_line(result, errors.CORRUPT_INPUT)
    assert ("GET", "/results/in/x.jsonl") not in proxy.requests  # a HEAD, never the body


def test_an_avatar_of_a_huge_size_in_a_small_file_is_left_out(tmp_path: Path) -> None:
    """A 10,000 x 10,000 PNG is ~100 KB and would decode to 400 MB for the card's picture."""
    import io

    from PIL import Image

    path = write_archive(tmp_path / "a", sentences(200), username="x")
    (picture,) = list((path / "data" / "profile_media").iterdir())
    buffer = io.BytesIO()
    Image.new("1", (10_000, 10_000)).save(buffer, "PNG", optimize=True)
    assert len(buffer.getvalue()) < 5 << 20
    picture.write_bytes(buffer.getvalue())
    out = tmp_path / "out"
    result = cli("prepare", "x", "--archive", str(path), "--out", str(out))
    assert result.returncode == 0 and "10000 x 10000 pixels" in result.stderr
    assert (
        json.loads((out / "x" / "data" / "stats.json").read_text())["users"]["x"]["avatar"] is None
    )


@pytest.mark.integration  # 2 MB of YAML: seconds to write and read
def test_a_manifest_of_more_bots_than_its_bound_is_one_line(tmp_path: Path) -> None:
    from job.spec import MAX_BOTS

    bots = "".join(f"  - users: [{{handle: u{i}}}]\n" for i in range(MAX_BOTS + 1))
    (tmp_path / "m.yaml").write_text(f"version: 1\noutput: {tmp_path}\nbots:\n{bots}")
    result = cli("run", "--manifest", str(tmp_path / "m.yaml"))
    assert "manifest.bots" in one_line(result, errors.BAD_CONFIG)


# --- Values the job writes from a run: what it once wrote or crashed on after training --------


@pytest.mark.integration
def test_no_validation_share_and_a_prompt_past_the_context_end_in_a_valid_result(
    tmp_path: Path,
) -> None:
    """--val-fraction 0 wrote NaN into job.json (not JSON); a start text longer than the tiny
    model's 128 positions ran past its position embeddings."""
    from tests.helpers.jobs import TINY_FLAGS

    long_prompt = " ".join(["bread"] * 160)  # 960 characters, more tokens than 128
    result = cli(
        *("run", "sourdough_sam", "--jsonl", str(SAMPLE), *TINY_FLAGS, "--val-fraction", "0"),
        *("--start-text", long_prompt, "--wandb-mode", "disabled", "--out", str(tmp_path)),
    )
    assert result.returncode == 0, result.stderr
    text = (tmp_path / "sourdough_sam" / "job.json").read_text()

    def no_constants(name: str) -> None:
        raise AssertionError(f"{name} in job.json")

    made = json.loads(text, parse_constant=no_constants)  # strict JSON: no NaN, no Infinity
    assert made["result"]["val_loss"] is None
    assert "its last tokens are used" in result.stderr


@pytest.mark.integration
@pytest.mark.parametrize("hf_home", [True, False], ids=["HF_HOME set", "nothing set"])
def test_a_user_with_no_home_folder_gets_a_line_or_a_bot(tmp_path: Path, hf_home: bool) -> None:
    """A container's uid with no passwd entry and no HOME: the card's fonts once looked for
    ~/.local/share/fonts after training (exit 1)."""
    import os
    import shutil
    import subprocess
    import sys
    import tempfile

    from tests.helpers import REPO
    from tests.helpers.jobs import TINY_FLAGS

    setpriv = shutil.which("setpriv")
    assert setpriv, "setpriv (util-linux) is needed to run as a uid with no passwd entry"
    # pytest's own folders are root's alone (0700): this user could not reach one
    tmp_path = Path(tempfile.mkdtemp(prefix="no-home-", dir="/tmp"))
    tmp_path.chmod(0o777)
    # no home, and no folder that an earlier run in this process pointed a cache at
    gone = ("HOME", "XDG_CACHE_HOME", "HF_HOME", "TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR")
    env = {k: v for k, v in os.environ.items() if k not in gone}
    env.update({"WANDB_MODE": "disabled", "TMPDIR": str(tmp_path)})
    if hf_home:
        env["HF_HOME"] = str(tmp_path / "hf")
    try:
        done = subprocess.run(
            [setpriv, "--reuid=54321", "--regid=54321", "--clear-groups", sys.executable, "-m",
             "job", "run", "sourdough_sam", "--jsonl", str(SAMPLE), *TINY_FLAGS,
             "--out", str(tmp_path / "o")],
            env=env, cwd=REPO, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
    finally:
        shutil.rmtree(tmp_path, ignore_errors=True)
    if hf_home:
        assert done.returncode == 0, done.stderr
    else:
        assert done.returncode == errors.BAD_CONFIG, done.stderr
        assert "no home folder: set HF_HOME" in done.stderr and "Traceback" not in done.stderr
