"""Worker settings: defaults, environment, flags, validation, and secrets kept out of output."""

from __future__ import annotations

import pytest

from stream.service.settings import Settings, SettingsError


def test_flags_override_environment_which_overrides_defaults():
    s = Settings.from_env({"TAGSTREAM_MAX_BATCH": "32", "TAGSTREAM_INPUT_TOPIC": "env.in"}, input_topic="flag.in")
    assert (s.max_batch, s.input_topic, s.max_wait) == (32, "flag.in", 0.05)


@pytest.mark.parametrize("env, message", [
    ({"TAGSTREAM_MAX_BATCH": "many"}, "TAGSTREAM_MAX_BATCH: expected int, got 'many'"),
    ({"TAGSTREAM_MAX_BATCH": "0"}, "TAGSTREAM_MAX_BATCH must be at least 1"),
    ({"TAGSTREAM_DEVICE": "tpu"}, "TAGSTREAM_DEVICE: expected one of auto, cpu, cuda"),
    ({"TAGSTREAM_SECURITY_PROTOCOL": "SASL_PLAINTEXT"}, "needs TAGSTREAM_SASL_USERNAME"),
    ({"TAGSTREAM_PRODUCER_LINGER": "2"}, r"TAGSTREAM_PRODUCER_LINGER must be in \[0, 1\) seconds, got 2.0"),
    ({"TAGSTREAM_PRODUCER_LINGER": "-0.1"}, r"TAGSTREAM_PRODUCER_LINGER must be in \[0, 1\)"),
    ({"TAGSTREAM_PRODUCER_BATCH_BYTES": "100"}, r"PRODUCER_BATCH_BYTES must be in \[1024, 1000000\], got 100"),
    ({"TAGSTREAM_PRODUCER_BATCH_BYTES": "2000000"}, "TAGSTREAM_PRODUCER_BATCH_BYTES must be in"),
    ({"TAGSTREAM_FETCH_MAX_WAIT": "0"}, r"TAGSTREAM_FETCH_MAX_WAIT must be in \(0, 1\] seconds, got 0.0"),
    ({"TAGSTREAM_FETCH_MAX_WAIT": "1.5"}, r"TAGSTREAM_FETCH_MAX_WAIT must be in \(0, 1\]"),
])
def test_bad_settings_name_the_variable(env, message):
    with pytest.raises(SettingsError, match=message):
        Settings.from_env(env)


@pytest.mark.parametrize("raw, expected", [("false", False), ("0", False), ("off", False), ("True", True),
                                           ("yes", True), ("1", True)])
def test_booleans_are_spelled_out_not_truthy_strings(raw, expected):
    assert Settings.from_env({"TAGSTREAM_SKIP_UNCHANGED": raw}).skip_unchanged is expected
    assert Settings.from_env({}, skip_unchanged=raw).skip_unchanged is expected


def test_a_bad_boolean_names_the_variable():
    with pytest.raises(SettingsError, match="TAGSTREAM_SKIP_UNCHANGED: expected true or false, got 'maybe'"):
        Settings.from_env({"TAGSTREAM_SKIP_UNCHANGED": "maybe"})


def test_secrets_are_masked_in_every_rendering():
    s = Settings.from_env({"TAGSTREAM_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "TAGSTREAM_SASL_USERNAME": "svc",
                           "TAGSTREAM_SASL_PASSWORD": "hunter2-secret"})
    assert s.sasl_password == "hunter2-secret"
    for text in (repr(s), str(s), str(s.public()), f"{s}"):
        assert "hunter2-secret" not in text and "svc" in text


def test_every_setting_is_documented():
    for name, env, default, text in Settings.describe():
        assert env == f"TAGSTREAM_{name.upper()}" and text


def test_the_readme_settings_table_lists_every_setting_with_its_default():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    for name, env, default, text in Settings.describe():
        assert f"| `--{name.replace('_', '-')}` | `{env}` | `{default}` | {text} |" in readme, name


def test_the_worker_producer_gathers_outputs_as_the_settings_say():
    """The Faust app hands the linger and batch size to the aiokafka producer it builds."""
    from stream.service.worker import faust_app

    producer = faust_app(Settings.from_env({}, producer_linger=0.02, producer_batch_bytes=65536)).producer
    options = producer._settings_default()
    assert (options["linger_ms"], options["max_batch_size"], options["acks"]) == (20, 65536, -1)
    assert faust_app(Settings.from_env({})).producer._settings_default()["linger_ms"] == 5
