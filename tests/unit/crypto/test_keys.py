"""Keys: generation, public-key serialization and fingerprint, private key at rest."""

from __future__ import annotations

import hashlib
import os
import stat

import pytest

from ffa_lora.crypto.keys import (
    PrivateKey,
    PublicKey,
    generate_keypair,
    load_fernet_key,
    load_private_key,
    new_fernet_key,
    save_private_key,
)
from ffa_lora.errors import ConfigError, CryptoError, KeyFileError


def test_small_keys_need_test_only_flag() -> None:
    with pytest.raises(ConfigError, match="2048"):
        generate_keypair(bits=512)


def test_public_key_roundtrip_and_fingerprint(keypair) -> None:
    pub, _ = keypair
    assert pub.bits == 512
    n_bytes = pub.n.to_bytes((pub.n.bit_length() + 7) // 8, "big")
    assert pub.fingerprint == hashlib.sha256(n_bytes).hexdigest()
    back = PublicKey.from_bytes(pub.to_bytes())
    assert back == pub and back.fingerprint == pub.fingerprint
    assert PublicKey.from_phe(pub.phe_key) == pub


@pytest.mark.parametrize("mutate", [
    lambda b: b[:-1],                       # truncated modulus
    lambda b: b"XXXXXX" + b[6:],            # bad magic
    lambda b: b[:6] + b"\x09" + b[7:],      # unknown version
    lambda b: b[:4],                        # too short
])
def test_public_key_from_bad_bytes(keypair, mutate) -> None:
    pub, _ = keypair
    with pytest.raises(CryptoError):
        PublicKey.from_bytes(mutate(pub.to_bytes()))


def test_private_key_matches_phe_and_hides_primes(keypair) -> None:
    pub, priv = keypair
    assert priv.public_key == pub
    assert priv.p * priv.q == pub.n and priv.p < priv.q
    assert str(int(priv.p)) not in repr(priv)
    c = pub.phe_key.raw_encrypt(12345)
    assert priv.raw_decrypt(c) == 12345
    assert priv.phe_key.raw_decrypt(c) == 12345
    assert PrivateKey.from_phe(priv.phe_key).raw_decrypt(c) == 12345


def test_private_key_rejects_wrong_primes(keypair) -> None:
    pub, priv = keypair
    with pytest.raises(CryptoError):
        PrivateKey(pub, int(priv.p), int(priv.q) + 2)


def test_fernet_roundtrip_atomic_and_private(tmp_path, keypair) -> None:
    pub, priv = keypair
    fkey = new_fernet_key()
    path = tmp_path / "keys" / "coordinator.key"
    save_private_key(path, priv, fernet_key=fkey)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert os.listdir(path.parent) == ["coordinator.key"]  # no temp files left behind
    assert int(priv.p).to_bytes(32, "big") not in path.read_bytes()
    back = load_private_key(path, fernet_key=fkey)
    assert back.public_key == pub and back.p == priv.p and back.q == priv.q
    # overwrite is atomic too
    save_private_key(path, priv, fernet_key=fkey)
    assert load_private_key(path, fernet_key=fkey).public_key == pub


def _saved(tmp_path, priv):
    fkey = new_fernet_key()
    path = tmp_path / "priv.key"
    save_private_key(path, priv, fernet_key=fkey)
    return path, fkey


def test_wrong_fernet_key(tmp_path, keypair) -> None:
    path, _ = _saved(tmp_path, keypair[1])
    with pytest.raises(KeyFileError, match="wrong Fernet key") as exc:
        load_private_key(path, fernet_key=new_fernet_key())
    assert str(path) in str(exc.value)


@pytest.mark.parametrize("cut", [10, 45, 100])
def test_truncated_file(tmp_path, keypair, cut) -> None:
    path, fkey = _saved(tmp_path, keypair[1])
    path.write_bytes(path.read_bytes()[:cut])
    with pytest.raises(KeyFileError, match="truncated") as exc:
        load_private_key(path, fernet_key=fkey)
    assert str(path) in str(exc.value)


def test_corrupt_file(tmp_path, keypair) -> None:
    path, fkey = _saved(tmp_path, keypair[1])
    data = bytearray(path.read_bytes())
    data[80] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(KeyFileError, match="corrupt") as exc:
        load_private_key(path, fernet_key=fkey)
    assert str(path) in str(exc.value)


def test_not_a_key_file_and_missing(tmp_path) -> None:
    bad = tmp_path / "notes.txt"
    bad.write_bytes(b"hello, this is not a key file at all" * 3)
    with pytest.raises(KeyFileError, match="bad magic"):
        load_private_key(bad, fernet_key=new_fernet_key())
    with pytest.raises(KeyFileError, match="does not exist"):
        load_private_key(tmp_path / "nope.key", fernet_key=new_fernet_key())


def test_load_fernet_key_sources(tmp_path) -> None:
    k = new_fernet_key()
    f = tmp_path / "fernet"
    f.write_bytes(k + b"\n")
    assert load_fernet_key(file=str(f)) == k
    assert load_fernet_key(env_value=k.decode()) == k
    with pytest.raises(ConfigError):
        load_fernet_key()
    with pytest.raises(ConfigError):
        load_fernet_key(file=str(f), env_value=k.decode())
    with pytest.raises(KeyFileError, match="does not exist"):
        load_fernet_key(file=str(tmp_path / "missing"))
    f.write_bytes(b"not-a-key")
    with pytest.raises(KeyFileError, match=str(f)):
        load_fernet_key(file=str(f))
    with pytest.raises(KeyFileError, match="environment"):
        load_fernet_key(env_value="short")
