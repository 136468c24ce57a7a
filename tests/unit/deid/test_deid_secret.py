"""The site secret: validated, never shown, never pickled, never logged."""

from __future__ import annotations

import logging
import os
import pickle

import pytest

from ffa_lora.deid import (
    DeidConfig,
    DeidConfigError,
    Deidentifier,
    SiteSecretError,
    generate_site_secret,
    load_site_secret,
    write_site_secret,
)
from ffa_lora.deid.keys import SiteKeys
from ffa_lora.errors import ConfigError, DeidError


@pytest.mark.parametrize("secret", [b"", b"short", os.urandom(31)])
def test_short_secret_rejected(secret: bytes) -> None:
    with pytest.raises(SiteSecretError, match=r"at least 256 bits") as info:
        Deidentifier(DeidConfig(), site_secret=secret)
    if secret:
        assert secret.hex() not in str(info.value) and repr(secret) not in str(info.value)


def test_secret_type_and_entropy_checks() -> None:
    with pytest.raises(SiteSecretError, match="bytes, not str"):
        Deidentifier(DeidConfig(), site_secret="x" * 64)  # type: ignore[arg-type]
    with pytest.raises(SiteSecretError, match="not random"):
        Deidentifier(DeidConfig(), site_secret=b"\x00" * 32)
    with pytest.raises(SiteSecretError, match="needs a site secret"):
        Deidentifier(DeidConfig(operator="pseudonym"), site_secret=None)
    assert issubclass(SiteSecretError, DeidError)


def test_secret_not_in_repr_or_pickle(secret_a: bytes) -> None:
    deid = Deidentifier(DeidConfig(use_lac=False, name_fallback="none"), site_secret=secret_a)
    keys = SiteKeys(secret_a)
    for text in (repr(deid), str(deid), repr(keys), str(keys), repr(deid.__dict__)):
        assert secret_a.hex() not in text and repr(secret_a) not in text
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(keys)
    with pytest.raises(TypeError):
        pickle.dumps(deid)


def test_no_raw_values_or_secret_in_logs(secret_a: bytes, caplog: pytest.LogCaptureFixture) -> None:
    raw = ["张伟", "11010519491231002X", "13812345678", "zw@163.com", "6222021234567890128"]
    text = f"患者{raw[0]}，身份证{raw[1]}，电话{raw[2]}，邮箱{raw[3]}，卡号{raw[4]}"
    with caplog.at_level(logging.DEBUG):
        deid = Deidentifier(DeidConfig(operator="surrogate"), site_secret=secret_a)
        out = deid.scrub(text)
    logged = "\n".join(r.getMessage() for r in caplog.records)
    for value in raw:
        assert value not in out
        assert value not in logged
    assert secret_a.hex() not in logged


def test_secret_file_round_trip(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = write_site_secret(tmp_path / "site.secret")
    assert (path.stat().st_mode & 0o777) == 0o600
    secret = load_site_secret(path)
    assert len(secret) == 32
    raw = tmp_path / "raw.secret"
    raw.write_bytes(generate_site_secret())
    assert load_site_secret(raw) == raw.read_bytes()
    with pytest.raises(FileExistsError):
        write_site_secret(path)
    with pytest.raises(SiteSecretError, match="does not exist"):
        load_site_secret(tmp_path / "missing")
    (tmp_path / "weak").write_text("abcd\n")
    with pytest.raises(SiteSecretError, match="16 bits"):
        load_site_secret(tmp_path / "weak")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"operator": "hash"}, "deid.operator"),
        ({"entities": ["NAME"]}, "unknown types"),
        ({"entities": "PERSON"}, "list of entity types"),
        ({"entities": []}, "is empty"),
        ({"languages": ("fr",)}, "deid.languages"),
        ({"score_threshold": 2.0}, "score_threshold"),
        ({"token_hex_chars": 4}, "token_hex_chars"),
    ],
)
def test_config_validation(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(DeidConfigError, match=message) as info:
        DeidConfig(**kwargs)  # type: ignore[arg-type]
    assert isinstance(info.value, ConfigError) and isinstance(info.value, DeidError)


def test_entities_without_recognizer_in_languages() -> None:
    with pytest.raises(DeidConfigError, match="no recognizer finds"):
        Deidentifier(DeidConfig(operator="tag", entities=["US_SSN"], languages=("zh",)),
                     site_secret=None)


def test_missing_spacy_package_is_a_clear_error() -> None:
    with pytest.raises(DeidConfigError, match="not installed"):
        Deidentifier(DeidConfig(operator="tag", en_ner_model="no_such_spacy_pipeline"),
                     site_secret=None)
