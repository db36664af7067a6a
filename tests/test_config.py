"""Settings: precedence, clear errors, and the README's table kept true."""

from pathlib import Path

import pytest

from notifyagent.common.config import ConfigError, load, settings_table
from notifyagent.scheduler.app import make_store


def test_flags_beat_environment_beat_file(tmp_path):
    cfg = tmp_path / "n.toml"
    cfg.write_text('capacity = 3\nlog_level = "DEBUG"\ngrace = 2.5\n')
    env = {"NOTIFY_CONFIG": str(cfg), "NOTIFY_CAPACITY": "7"}
    s = load({"capacity": 9}, env)
    assert (s.capacity, s.log_level, s.grace) == (9, "DEBUG", 2.5)
    assert load({}, env).capacity == 7
    assert load({}, {"NOTIFY_CONFIG": str(cfg)}).capacity == 3


@pytest.mark.parametrize(
    "env, names",
    [
        ({"NOTIFY_CAPACITY": "many"}, "NOTIFY_CAPACITY"),
        ({"NOTIFY_LOG_FORMAT": "xml"}, "NOTIFY_LOG_FORMAT"),
        ({"NOTIFY_GRPC_ADDR": "nowhere"}, "NOTIFY_GRPC_ADDR"),
        ({"NOTIFY_CONFIG": "/no/such/file.toml"}, "NOTIFY_CONFIG"),
        ({"NOTIFY_PARTITIONS": "0"}, "NOTIFY_PARTITIONS"),
        ({"NOTIFY_PARTITIONS": "1025"}, "NOTIFY_PARTITIONS"),
        ({"NOTIFY_PARTITIONS": "sixteen"}, "NOTIFY_PARTITIONS"),
        ({"NOTIFY_OWNERSHIP_TTL": "0.5"}, "NOTIFY_OWNERSHIP_TTL"),
        ({"NOTIFY_RECONNECT_GRACE": "-1"}, "NOTIFY_RECONNECT_GRACE"),
    ],
)
def test_a_bad_setting_fails_with_a_message_naming_it(env, names):
    with pytest.raises(ConfigError, match=names):
        load({}, env)


@pytest.mark.parametrize("url", ["mysql://x", "sqlite://relative.db", "sqlite:///:memory:"])
def test_a_bad_store_url_names_notify_store(url):
    with pytest.raises(ConfigError, match="NOTIFY_STORE"):
        make_store(url)


def test_readme_configuration_table_matches_the_settings():
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    table = readme.split("<!-- settings-table", 1)[1].split("-->", 1)[1].split("<!-- /settings-table -->")[0]
    assert table.strip() == settings_table().strip()


def test_a_scheduler_and_a_dispatcher_have_different_default_http_ports():
    from notifyagent.common.config import ROLE_DEFAULTS

    addrs = {role: load({}, {}, **ROLE_DEFAULTS.get(role, {})).http_addr for role in ("scheduler", "dispatcher")}
    assert addrs == {"scheduler": "127.0.0.1:8080", "dispatcher": "127.0.0.1:8081"}
