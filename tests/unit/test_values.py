"""The one validator for outside values (xtcp2.values) and Config.validate built on it:
flags, gRPC and destination options refuse the same non-finite, absurd and hostile values."""
from __future__ import annotations

import math

import pytest

from xtcp2 import values
from xtcp2.config import RANGES, Config
from xtcp2.dest import known_schemes
from xtcp2.dest.queued import num_option
from xtcp2.errors import ConfigError, DestinationError
from xtcp2.marshal import MARSHALLERS


@pytest.mark.parametrize("bad", [math.inf, -math.inf, math.nan, True, "5", None])
def test_number_refuses_non_finite_and_non_numbers(bad):
    with pytest.raises(ValueError):
        values.number(bad, 0, 10)


def test_number_bounds_and_integers():
    assert values.number(10, 0, 10) == 10
    assert values.number(2.0, 0, 10, integer=True) == 2 and isinstance(values.number(2.0, 0, 10, integer=True), int)
    for bad, kw in [(10.5, {}), (-1, {}), (0, {"above": True}), (1.5, {"integer": True})]:
        with pytest.raises(ValueError):
            values.number(bad, 0, 10, **kw)


@pytest.mark.parametrize("text", ["inf", "nan", "-inf", "1e400", "-1", "169h", "604801", "Infinity", "5x"])
def test_durations_refused(text):
    with pytest.raises(ValueError) as err:
        values.parse_duration(text)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("text", ["ok", "web-1.example", "Zürich", "rack 7", "a" * 255])
def test_printable_text_passes(text):
    assert values.text(text, 255) == text


@pytest.mark.parametrize("text", ["a\nb", "a\rb", "\x1b[31m", "nul\x00", "tab\t", "del\x7f", "c1\x85",
                                  "ls\u2028", "ps\u2029", "surrogate\udcff"])
def test_control_characters_refused(text):
    with pytest.raises(ValueError) as err:
        values.text(text, 255)
    msg = str(err.value)
    assert "control character" in msg and msg.isprintable()


@pytest.mark.parametrize("field", sorted(RANGES))
@pytest.mark.parametrize("bad", [math.inf, math.nan, -1e18, 1e18])
def test_every_ranged_field_refuses_non_finite_and_absurd(field, bad):
    with pytest.raises(ConfigError) as err:
        Config(**{field: bad}).validate()
    assert err.value.field == field


@pytest.mark.parametrize("field", ["hostname", "location", "label", "tag", "dest", "topic", "prom_path",
                                   "capture_path", "grpc_listen", "prom_listen"])
def test_text_fields_refuse_control_characters(field):
    value = {"dest": "file:/tmp/x\ny"}.get(field, "x\x1b[2Jy")
    with pytest.raises(ConfigError) as err:
        Config(**{field: value}).validate()
    assert err.value.field == field and "control character" in str(err.value)


def test_netns_names_checked():
    with pytest.raises(ConfigError) as err:
        Config(netns=["ok", "bad\nname"]).validate()
    assert err.value.field == "netns" and "name 2" in str(err.value)


def test_declared_bpf_settings_are_validated():
    cfg = Config(bpf_refresh_frequency=0.0, bpf_coalesce_window=0.01, bpf_close_wait=0.5).validate()
    assert cfg.bpf_refresh_frequency == 0.0
    for field, bad in [("bpf_refresh_frequency", math.nan), ("bpf_coalesce_window", 11.0), ("bpf_close_wait", -1.0),
                       ("bpf_ringbuf_bytes", 12288)]:
        with pytest.raises(ConfigError) as err:
            Config(**{field: bad}).validate()
        assert err.value.field == field


def test_names_come_from_the_registries():
    from xtcp2.config import MARSHALLERS as CONFIG_MARSHALLERS
    assert CONFIG_MARSHALLERS == tuple(MARSHALLERS)
    for name in MARSHALLERS:
        Config(marshal_to=name).validate()
    for scheme in known_schemes():
        Config(dest=f"{scheme}:x").validate()
    with pytest.raises(ConfigError, match="valid: " + ", ".join(sorted(known_schemes()))):
        Config(dest="pigeon:x").validate()


@pytest.mark.parametrize("raw, kind, words", [
    ("nan", float, "finite"), ("inf", float, "finite"), ("1e400", float, "finite"), ("-1", float, ">= 0"),
    ("1e9", float, "<= 3600"), ("x", float, "is not a number"), ("1.5", int, "whole number"), ("inf", int, "whole"),
])
def test_destination_options_use_the_same_checks(raw, kind, words):
    with pytest.raises(DestinationError) as err:
        num_option("udp", {"flushTimeout": raw}, "flushTimeout", 5.0, 0.0, kind, maximum=3600.0)
    msg = str(err.value)
    assert msg.startswith(f"udp: option flushTimeout={raw!r} ") and words in msg and "\n" not in msg


def test_destination_float_options_capped_at_a_week_by_default():
    assert num_option("unix", {"timeout": "604800"}, "timeout", 5.0, 0.1, float) == 604800.0
    with pytest.raises(DestinationError):
        num_option("unix", {"timeout": "604801"}, "timeout", 5.0, 0.1, float)


def test_read_buffer_memory_is_bounded():
    from xtcp2.config import CHUNK_MEMORY_MAX, Config
    from xtcp2.errors import ConfigError

    Config(netlinkers=4, packet_size=65536).validate()
    Config(netlinkers=85).validate()  # 85 x 3 x 4 MiB fits in 1 GiB
    for changes in ({"netlinkers": 86}, {"netlinkers": 256, "packet_size": 16 << 20},
                    {"netlinkers": 8, "packet_size": 16 << 20}):
        with pytest.raises(ConfigError) as e:
            Config(**changes).validate()
        assert e.value.args and "read buffers" in str(e.value) and str(CHUNK_MEMORY_MAX >> 20) in str(e.value)
