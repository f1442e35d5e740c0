"""Config loading: the example parses, typos and wrong types are errors that name the key."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from nordlys.daemon.config import Config, ConfigError, check_paths, load_config, parse_config

REPO = Path(__file__).resolve().parents[2]


def test_example_config_parses_with_every_section():
    config = load_config(REPO / "config.example.yaml")
    assert [i.path for i in config.inboxes] == [Path("/srv/photos/inbox"), Path("/srv/photos/phone-uploads")]
    assert config.inboxes[1].recursive is True  # short form takes the defaults
    assert config.output_root == Path("/srv/photos/sorted")
    assert config.model.path is None and config.model.providers == ["auto"]
    assert config.folders.review == "review"


def test_every_yaml_snippet_in_readme_parses():
    text = (REPO / "README.md").read_text()
    snippets = re.findall(r"```yaml\n(.*?)```", text, flags=re.S)
    assert snippets, "README should show config snippets"
    for snippet in snippets:
        parse_config(yaml.safe_load(snippet) or {})


def test_empty_config_is_all_defaults():
    assert parse_config({}) == Config()


@pytest.mark.parametrize("raw, key, expected", [
    ({"output_rot": "/x"}, "output_rot", "expected one of"),
    ({"model": {"treshold": 0.5}}, "model.treshold", "expected one of"),
    ({"model": {"threshold": 1.5}}, "model.threshold", "from 0 to 1"),
    ({"model": {"threshold": "high"}}, "model.threshold", "a number"),
    ({"model": {"batch_size": 0}}, "model.batch_size", "from 1 to 256"),
    ({"model": {"batch_size": 2.5}}, "model.batch_size", "an integer"),
    ({"keep_subfolders": "yes"}, "keep_subfolders", "true or false"),
    ({"log": {"level": "loud"}}, "log.level", "one of ['debug', 'info', 'warning', 'error']"),
    ({"inboxes": [{"path": "/a", "poling": True}]}, "inboxes[0].poling", "expected one of"),
    ({"inboxes": [{"recursive": True}]}, "inboxes[0].path", "is missing"),
    ({"inboxes": "/a"}, "inboxes", "a list"),
    ({"folders": {"aurora": "a/b"}}, "folders.aurora", "plain folder name"),
    ({"folders": {"aurora": "x", "other": "x"}}, "folders", "different folder names"),
])
def test_bad_values_name_key_value_and_expectation(raw, key, expected):
    with pytest.raises(ConfigError) as info:
        parse_config(raw, source="cfg.yaml")
    message = str(info.value)
    assert message.startswith("cfg.yaml: ")
    assert key in message and expected in message


def test_relative_paths_are_relative_to_the_config_file(tmp_path):
    (tmp_path / "in").mkdir()
    cfg = tmp_path / "c.yaml"
    cfg.write_text("inboxes: [in]\njournal: state/j.sqlite\n")
    config = load_config(cfg)
    assert config.inboxes[0].path == tmp_path / "in"
    assert config.journal == tmp_path / "state" / "j.sqlite"


def test_missing_inbox_path_is_named(tmp_path):
    config = parse_config({"inboxes": [str(tmp_path / "nope")]})
    with pytest.raises(ConfigError, match=r"inboxes\[0\]\.path = .*nope' does not exist: expected an existing folder"):
        check_paths(config)


def test_output_root_that_is_a_file_is_an_error(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(ConfigError, match="output_root .* is not a directory"):
        check_paths(parse_config({"output_root": str(tmp_path / "f")}))


def test_bad_config_exits_2_naming_the_key(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("model:\n  threshhold: 0.4\n")
    proc = subprocess.run([sys.executable, "-m", "nordlys.daemon", "sort", str(tmp_path), "--config", str(cfg)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "model.threshhold" in proc.stderr and "expected one of" in proc.stderr


def test_invalid_yaml_is_a_config_error(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(cfg)
