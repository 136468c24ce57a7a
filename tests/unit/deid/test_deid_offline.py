"""Nothing in de-identification touches the network (a regression here would hang or leak)."""

from __future__ import annotations

import socket

import pytest
import tldextract
import tldextract.tldextract

from ffa_lora.deid import DeidConfig, Deidentifier
from ffa_lora.deid.recognizers_common import offline_tld_extractor


@pytest.fixture()
def no_network(monkeypatch: pytest.MonkeyPatch, tmp_path) -> list[str]:  # type: ignore[no-untyped-def]
    """Record (and refuse) every attempt to resolve a name or open a connection.

    tldextract's module-level extractor is swapped for one with an empty cache, so code that
    fell back to ``tldextract.extract`` would try to fetch the suffix list here even on a
    machine whose disk cache already holds it.
    """
    attempts: list[str] = []
    monkeypatch.setattr(tldextract.tldextract, "TLD_EXTRACTOR",
                        tldextract.TLDExtract(cache_dir=str(tmp_path / "tld")))

    def refuse(name: str):  # type: ignore[no-untyped-def]
        def _refuse(*args, **kwargs):  # type: ignore[no-untyped-def]
            attempts.append(name)
            raise OSError(f"network disabled in tests ({name})")

        return _refuse

    monkeypatch.setattr(socket.socket, "connect", refuse("connect"))
    monkeypatch.setattr(socket.socket, "connect_ex", refuse("connect_ex"))
    monkeypatch.setattr(socket, "create_connection", refuse("create_connection"))
    monkeypatch.setattr(socket, "getaddrinfo", refuse("getaddrinfo"))
    return attempts


def test_scrubbing_is_offline(no_network: list[str], secret_a: bytes) -> None:
    offline_tld_extractor.cache_clear()  # force the first-use path of the suffix list
    deid = Deidentifier(DeidConfig(operator="surrogate"), site_secret=secret_a)
    text = ("患者张伟，邮箱zhangwei@163.com，手机13812345678；Contact jane.roe@hospital.co.uk, "
            "card 4111 1111 1111 1111, phone +44 20 7946 0958, user@foo.invalidtld")
    out = deid.scrub(text)
    assert "zhangwei@163.com" not in out and "jane.roe@hospital.co.uk" not in out
    assert "user@foo.invalidtld" in out  # unknown TLD: judged offline, not by a lookup
    assert no_network == []


def test_jieba_fallback_is_offline(no_network: list[str]) -> None:
    deid = Deidentifier(DeidConfig(operator="tag", use_lac=False, name_fallback="jieba"),
                        site_secret=None)
    deid.scrub("医生李秀英说明天复查。")
    assert no_network == []


def test_offline_extractor_configuration() -> None:
    extractor = offline_tld_extractor()
    assert extractor.suffix_list_urls == ()
    assert extractor("mail.example.co.uk").fqdn == "mail.example.co.uk"


def test_the_guard_catches_a_network_fallback(no_network: list[str]) -> None:
    """Self-check of the fixture: the library default really would go online."""
    import logging

    logging.disable(logging.CRITICAL)
    try:
        tldextract.extract("zhang@163.com".rpartition("@")[2])
    finally:
        logging.disable(logging.NOTSET)
    assert no_network  # the default extractor tried to fetch the public suffix list
