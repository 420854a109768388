"""kaggle/api.py: the Kaggle client's credentials (kaggle.json, KAGGLE_*), taken or refused in one line."""

from __future__ import annotations

import pytest
from kaggle_stub import kaggle_home, kaggle_stub  # noqa: F401

from conftest import assert_one_line_error, run_cli

pytestmark = pytest.mark.usefixtures("info_logs")  # the stage's INFO lines are captured: no secret in them


def test_missing_credentials_say_where_to_put_them(kaggle_home, tmp_path, capsys):
    code, out, err = run_cli(["download", "--data-dir", str(tmp_path / "data")], capsys)

    assert_one_line_error(code, err, "no Kaggle credentials", "~/.kaggle/kaggle.json", "KAGGLE_USERNAME")
    assert "KAGGLE_API_TOKEN" in err and "--archive ZIP_OR_FOLDER" in err
    assert "Authentication required" not in out + err  # the client's own help text is not shown


def test_rejected_api_token(kaggle_stub, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("KAGGLE_USERNAME")
    monkeypatch.delenv("KAGGLE_KEY")
    monkeypatch.setenv("KAGGLE_API_TOKEN", "tok-revoked-0123456789")

    code, out, err = run_cli(["download", "--data-dir", str(tmp_path / "data")], capsys)

    assert_one_line_error(code, err, "does not accept the API token in KAGGLE_API_TOKEN")
    assert "tok-revoked-0123456789" not in out + err


MALFORMED_KAGGLE_JSON = {  # content -> what the error says about it
    "not JSON": ('{"username": "someone", "key": "key-in-a-broken-file', "is not valid JSON"),
    "empty": ("", "is not valid JSON"),
    "a list": ('[{"username": "someone", "key": "key-in-a-list"}]', "is not a JSON object"),
    "no key": ('{"username": "someone"}', 'has no "key"'),
    "neither": ('{"competition": "dogs-vs-cats"}', 'has no "username" and no "key"'),
}


@pytest.mark.parametrize("case", list(MALFORMED_KAGGLE_JSON))
def test_malformed_kaggle_json_is_named_and_explained(case, kaggle_home, tmp_path, capsys, caplog):
    content, message = MALFORMED_KAGGLE_JSON[case]
    (kaggle_home / ".kaggle" / "kaggle.json").write_text(content)

    code, out, err = run_cli(["download", "--data-dir", str(tmp_path / "data")], capsys)

    assert_one_line_error(code, err, "~/.kaggle/kaggle.json", message)
    assert "no Kaggle credentials" not in err
    assert "key-in-a-" not in out + err + caplog.text
