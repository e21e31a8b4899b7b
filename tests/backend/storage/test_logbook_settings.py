"""zulip.cfg, the logbook settings the original DAMNIT reads, read and written here."""

from __future__ import annotations

import stat

import pytest

from backend.storage.logbook_settings import (
    LogbookSettings,
    LogbookSettingsError,
    read_logbook_settings,
    settings_path,
    update_logbook_settings,
    write_logbook_settings,
)

# What the facility writes into every proposal's DAMNIT folder.
FACILITY_FILE = "[ZULIP]\nkey = t425dYYQAVAT9AZiPx5fe0nrLzQSPpjZW-54EdxOUPQ\nurl = https://proxy.example.org/api\ntopics = []\n"


def test_the_facilitys_file_is_read(tmp_path):
    settings_path(tmp_path).write_text(FACILITY_FILE)
    s = read_logbook_settings(tmp_path)
    assert s.url == "https://proxy.example.org/api"
    assert s.key == "t425dYYQAVAT9AZiPx5fe0nrLzQSPpjZW-54EdxOUPQ"
    assert s.topics == ()
    assert s.configured and not s.direct
    assert s.key not in repr(s)


def test_no_file_means_not_configured(tmp_path):
    s = read_logbook_settings(tmp_path)
    assert s == LogbookSettings()
    assert s.missing() == ["url", "key"]


def test_direct_zulip_needs_a_stream(tmp_path):
    s = LogbookSettings(url="https://zulip.example.org", key="k", email="bot@zulip.example.org")
    assert s.direct and s.missing() == ["stream"]


def test_round_trip_keeps_other_keys_and_the_files_mode(tmp_path):
    path = settings_path(tmp_path)
    path.write_text(FACILITY_FILE + "note = kept\n\n[OTHER]\nx = 1\n")
    path.chmod(0o666)
    update_logbook_settings(tmp_path, topics='["beamtime", "alignment"]', key="new%key")
    text = path.read_text()
    assert "note = kept" in text and "[OTHER]" in text
    assert "key = new%%key" in text  # as the original's ConfigParser reads it back
    assert stat.S_IMODE(path.stat().st_mode) == 0o666
    s = read_logbook_settings(tmp_path)
    assert s.key == "new%key"
    assert s.topics == ("beamtime", "alignment")
    assert s.url == "https://proxy.example.org/api"


def test_new_file_is_not_world_readable(tmp_path):
    write_logbook_settings(tmp_path, LogbookSettings(url="https://p.example.org/api", key="secret"))
    assert stat.S_IMODE(settings_path(tmp_path).stat().st_mode) == 0o660
    assert not list(tmp_path.glob(".zulip.cfg.*"))  # no temporary file left behind


def test_topics_as_a_list_or_comma_separated(tmp_path):
    update_logbook_settings(tmp_path, topics="a, b,,a\nc")
    assert read_logbook_settings(tmp_path).topics == ("a", "b", "c")
    update_logbook_settings(tmp_path, topics=["x", " y "])
    assert read_logbook_settings(tmp_path).topics == ("x", "y")
    assert '["x", "y"]' in settings_path(tmp_path).read_text()


def test_a_broken_value_can_be_replaced_or_removed(tmp_path):
    settings_path(tmp_path).write_text(FACILITY_FILE.replace("topics = []", "topics = [oops"))
    with pytest.raises(LogbookSettingsError):
        read_logbook_settings(tmp_path)
    update_logbook_settings(tmp_path, topics="beamtime")
    assert read_logbook_settings(tmp_path).topics == ("beamtime",)
    settings_path(tmp_path).write_text("no section header\n")
    with pytest.raises(LogbookSettingsError, match="fix or remove it first"):
        update_logbook_settings(tmp_path, topics="beamtime")
    assert settings_path(tmp_path).read_text() == "no section header\n"


def test_removing_everything_removes_the_file(tmp_path):
    update_logbook_settings(tmp_path, url="https://p.example.org/api", key="k")
    update_logbook_settings(tmp_path, url=None, key="")
    assert not settings_path(tmp_path).exists()


@pytest.mark.parametrize("content, words", [
    ("[ZULIP]\ntopics = [not json\n", "not a valid JSON list"),
    ('[ZULIP]\ntopics = {"a": 1}\n', "list of topic names"),
    ("[ZULIP]\nkey = 50%\n", "[ZULIP] key"),
    ("key = outside any section\n", "not a valid settings file"),
])
def test_a_broken_file_is_named_with_the_problem(tmp_path, content, words):
    settings_path(tmp_path).write_text(content)
    with pytest.raises(LogbookSettingsError) as e:
        read_logbook_settings(tmp_path)
    assert "zulip.cfg" in str(e.value) and words in str(e.value)


@pytest.mark.parametrize("changes, words", [
    ({"url": "proxy.example.org"}, "must start with http"),
    ({"key": "two\nlines"}, "one line"),
    ({"colour": "red"}, "unknown logbook setting"),
])
def test_bad_values_are_refused_and_nothing_written(tmp_path, changes, words):
    with pytest.raises(LogbookSettingsError, match=words):
        update_logbook_settings(tmp_path, **changes)
    assert not settings_path(tmp_path).exists()
