"""Signed manifests (Ed25519) and the manifest's own hash: keygen files, sign, verify, tamper, wrong key,
unsigned with a trusted key, locally, through the client and through `cuekit transmit fetch`; model arguments
from a manifest checked against the registry. The signature is checked here with `cryptography` directly
(not through cuekit's code), over the exact bytes of manifest.json."""
from __future__ import annotations

import hashlib
import json
import os
import stat
import sys

import pytest
import torch
from transmit_helpers import run_async, small_state

from cuekit.cli import main
from cuekit.errors import DataError, UsageError
from cuekit.transmit.client import ProgressiveClient, iter_stages
from cuekit.transmit.package import (
    IntegrityError,
    load_manifest,
    manifest_hash,
    model_from_manifest,
    pack,
    pack_state_dict,
    read_package_stage,
)
from cuekit.transmit.server import ServerThread, start_server
from cuekit.transmit.signing import SignatureError, generate_keypair, key_paths, parse_public_key, sign_package

ed25519 = pytest.importorskip("cryptography.hazmat.primitives.asymmetric.ed25519")
serialization = pytest.importorskip("cryptography.hazmat.primitives.serialization")


@pytest.fixture
def keys(tmp_path):
    """Two key pairs: `good` (the trusted one) and `other`."""
    good = generate_keypair(tmp_path / "keys" / "good")
    other = generate_keypair(tmp_path / "keys" / "other")
    return {"good": good, "other": other}


@pytest.fixture
def signed(tmp_path, keys):
    """root/small: a 4 x 4-bit package of SmallNet signed with the `good` key."""
    pkg = tmp_path / "root" / "small"
    pack_state_dict(small_state(), pkg, (4, 4, 4, 4), sign=keys["good"][0])
    return pkg


def part_requests(stats) -> list[str]:
    return [r["path"] for r in stats["recent"] if "/part-" in r["path"]]


# ---- keys -------------------------------------------------------------------------------------------


def test_keygen_writes_pkcs8_pem_0600_and_64_hex_pub(tmp_path, keys):
    key_path, pub_path, pub_hex = keys["good"]
    assert (key_path.name, pub_path.name) == ("good.key", "good.pub")
    if os.name == "posix":
        assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    private = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    assert isinstance(private, ed25519.Ed25519PrivateKey)
    assert key_path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")  # PKCS#8, unencrypted
    raw = private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert pub_path.read_text() == raw.hex() + "\n" == pub_hex + "\n"
    assert len(pub_hex) == 64 and pub_hex == pub_hex.lower()
    assert parse_public_key(pub_path) == parse_public_key(pub_hex) == parse_public_key(str(pub_path)) == raw
    assert parse_public_key(pub_hex.upper()) == raw
    with pytest.raises(UsageError, match="exists"):
        generate_keypair(tmp_path / "keys" / "good")
    assert generate_keypair(tmp_path / "keys" / "good", overwrite=True)[2] != pub_hex
    assert key_paths(tmp_path / "k.key") == key_paths(tmp_path / "k") == (tmp_path / "k.key", tmp_path / "k.pub")


def test_bad_trusted_keys_are_usage_errors(tmp_path, keys):
    with pytest.raises(UsageError, match="neither 64 hex"):
        parse_public_key("abc123")
    with pytest.raises(UsageError, match="private key: give its .pub"):
        parse_public_key(keys["good"][0])
    with pytest.raises(UsageError, match="32 bytes"):
        parse_public_key(b"x" * 31)


def test_cli_keygen(tmp_path, capsys):
    assert main(["transmit", "keygen", "--out", str(tmp_path / "k" / "rel")]) == 0
    out = capsys.readouterr().out
    pub = (tmp_path / "k" / "rel.pub").read_text().strip()
    assert pub in out and (tmp_path / "k" / "rel.key").exists()
    assert main(["transmit", "keygen", "--out", str(tmp_path / "k" / "rel")]) == 2
    assert "exists" in capsys.readouterr().err
    assert main(["transmit", "keygen", "--out", str(tmp_path / "k" / "rel"), "--force"]) == 0
    assert (tmp_path / "k" / "rel.pub").read_text().strip() != pub


# ---- the manifest's own hash -------------------------------------------------------------------------


def test_manifest_carries_its_own_hash(tmp_path):
    state = small_state()
    pack_state_dict(state, tmp_path / "p", (8, 8), metadata={"class_names": ["chat", "étoile", "猫"]})
    raw = json.loads((tmp_path / "p" / "manifest.json").read_bytes())
    stated = raw.pop("manifest_sha256")
    canonical = json.dumps(raw, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    assert "étoile".encode() in canonical  # non-ASCII kept as UTF-8 in the canonical form
    assert stated == hashlib.sha256(canonical).hexdigest() == manifest_hash(raw)
    load_manifest(tmp_path / "p")


def test_altered_manifest_fails_its_hash_and_old_manifests_still_load(tmp_path):
    pack_state_dict(small_state(), tmp_path / "p", (8, 8))
    path = tmp_path / "p" / "manifest.json"
    good = path.read_bytes()
    raw = json.loads(good)
    raw["metadata"]["class_names"] = ["x", "y", "z"]  # content changed, hash field kept
    path.write_text(json.dumps(raw))
    with pytest.raises(IntegrityError, match=r"manifest\.json failed its own hash check"):
        load_manifest(tmp_path / "p")
    with pytest.raises(IntegrityError, match="own hash"):
        read_package_stage(tmp_path / "p")
    del raw["manifest_sha256"]  # a manifest written before the field existed
    path.write_text(json.dumps(raw))
    assert load_manifest(tmp_path / "p").metadata["class_names"] == ["x", "y", "z"]
    assert set(read_package_stage(tmp_path / "p")) == set(small_state())
    path.write_bytes(good.replace(b'"manifest_sha256":"', b'"manifest_sha256":"0'))  # field itself altered
    with pytest.raises(IntegrityError, match="own hash"):
        load_manifest(tmp_path / "p")


# ---- sign and verify locally ---------------------------------------------------------------------------


def test_sign_then_verify(signed, keys):
    sig = json.loads((signed / "manifest.sig").read_text())
    assert set(sig) == {"alg", "public_key", "signature"} and sig["alg"] == "Ed25519"
    assert sig["public_key"] == keys["good"][2] and len(sig["signature"]) == 128
    # checked independently: the signature is over the exact bytes of manifest.json on disk
    public = ed25519.Ed25519PublicKey.from_public_bytes(bytes.fromhex(sig["public_key"]))
    public.verify(bytes.fromhex(sig["signature"]), (signed / "manifest.json").read_bytes())
    for trust in (keys["good"][2], keys["good"][1], str(keys["good"][1]), bytes.fromhex(keys["good"][2])):
        assert load_manifest(signed, trust=trust).num_parts == 4
    assert set(read_package_stage(signed, trust=keys["good"][1])) == set(small_state())
    assert load_manifest(signed).num_parts == 4  # no key given: not checked


def test_tampered_manifest_is_refused(signed, keys):
    path = signed / "manifest.json"
    data = path.read_bytes()
    path.write_bytes(data.replace(b'"bits":[4,4,4,4]', b'"bits":[4, 4,4,4]'))  # one space: same JSON, other bytes
    with pytest.raises(SignatureError, match="altered after signing"):
        load_manifest(signed, trust=keys["good"][1])
    path.write_bytes(data)
    load_manifest(signed, trust=keys["good"][1])
    sig = json.loads((signed / "manifest.sig").read_text())
    flipped = sig["signature"][:10] + ("0" if sig["signature"][10] != "0" else "1") + sig["signature"][11:]
    (signed / "manifest.sig").write_text(json.dumps({**sig, "signature": flipped}))
    with pytest.raises(SignatureError, match="altered after signing"):
        load_manifest(signed, trust=keys["good"][1])
    (signed / "manifest.sig").write_text("not json")
    with pytest.raises(SignatureError, match="malformed"):
        load_manifest(signed, trust=keys["good"][1])


def test_wrong_key_is_refused(signed, keys):
    with pytest.raises(SignatureError, match="signed by another key"):
        load_manifest(signed, trust=keys["other"][1])
    # A signature by the other key that claims the trusted key's name is still refused: only the trusted key counts.
    forged = sign_package(signed, keys["other"][0])
    (signed / "manifest.sig").write_text(json.dumps({**forged, "public_key": keys["good"][2]}))
    with pytest.raises(SignatureError, match="altered after signing"):
        load_manifest(signed, trust=keys["good"][1])


def test_unsigned_with_trust_is_refused(tmp_path, keys):
    pack_state_dict(small_state(), tmp_path / "p", (8, 8))
    assert not (tmp_path / "p" / "manifest.sig").exists()
    with pytest.raises(SignatureError, match=r"is not signed \(no manifest.sig\)"):
        load_manifest(tmp_path / "p", trust=keys["good"][2])


def test_repacking_unsigned_removes_an_old_signature(signed):
    pack_state_dict(small_state(seed=1), signed, (4, 4, 4, 4))
    assert not (signed / "manifest.sig").exists()


def test_pack_checks_the_key_before_any_work(tmp_path, keys):
    from cuekit.models import create_model
    from cuekit.train.checkpoint import save_weights

    save_weights(tmp_path / "m.safetensors", create_model("resnet8", num_classes=2, width=4),
                 {"model": "resnet8", "num_classes": 2, "config": {"model_kwargs": {"width": 4}}})
    with pytest.raises(UsageError, match="holds a public key"):
        pack(tmp_path / "m.safetensors", tmp_path / "out", (8, 8), sign=keys["good"][1])
    assert not (tmp_path / "out").exists()
    pack(tmp_path / "m.safetensors", tmp_path / "out", (8, 8), sign=keys["good"][0])
    assert load_manifest(tmp_path / "out", trust=keys["good"][2]).model["name"] == "resnet8"


# ---- through the client: refused before any part is requested -----------------------------------------


def test_client_verifies_before_any_part(signed, keys):
    async def fetch(trust):
        srv = await start_server(signed.parent)
        try:
            async with ProgressiveClient(srv.url + "small/", trust=trust, retries=0) as c:
                try:
                    states = [s async for s in c.stage_states(overlap=True)]
                    return states, c, srv.stats, None
                except DataError as e:
                    return None, c, srv.stats, e
        finally:
            await srv.stop()

    states, client, stats, err = run_async(fetch(keys["good"][2]))
    assert err is None and len(states) == 4 and client.signed_by == keys["good"][2]
    assert [r["path"] for r in stats["recent"]][:2] == ["/small/manifest.json", "/small/manifest.sig"]
    for trust, expected in ((keys["other"][1], "signed by another key"),):
        _, _, stats, err = run_async(fetch(trust))
        assert isinstance(err, SignatureError) and expected in str(err) and part_requests(stats) == []
    data = (signed / "manifest.json").read_bytes()
    (signed / "manifest.json").write_bytes(data.replace(b'"bits":[4,4,4,4]', b'"bits": [4,4,4,4]'))
    _, _, stats, err = run_async(fetch(keys["good"][1]))
    assert isinstance(err, SignatureError) and "altered after signing" in str(err) and part_requests(stats) == []
    (signed / "manifest.json").write_bytes(data)
    (signed / "manifest.sig").unlink()
    _, _, stats, err = run_async(fetch(keys["good"][1]))
    assert isinstance(err, SignatureError) and "is not signed" in str(err) and part_requests(stats) == []
    states, client, stats, err = run_async(fetch(None))  # without a key: unchanged, no signature requested
    assert err is None and len(states) == 4 and client.signed_by is None
    assert "/small/manifest.sig" not in [r["path"] for r in stats["recent"]]


def test_sync_iterator_with_trust(signed, keys):
    with ServerThread(signed.parent) as srv:
        with iter_stages(srv.url + "small/", build_model=False, trust=keys["good"][1]) as it:
            assert [s.bits for s in it] == [4, 8, 12, 16]
        with pytest.raises(SignatureError, match="another key"):
            with iter_stages(srv.url + "small/", build_model=False, trust=keys["other"][2]) as it:
                list(it)
        assert part_requests(srv.stats) == [f"/small/part-{i}.bin" for i in range(4)]


def test_server_serves_the_signature(signed):
    async def main_():
        srv = await start_server(signed.parent)
        try:
            import aiohttp

            async with aiohttp.ClientSession() as s, s.get(srv.url + "small/manifest.sig") as r:
                return r.status, r.headers["Content-Type"], await r.read()
        finally:
            await srv.stop()

    status, ctype, body = run_async(main_())
    assert status == 200 and ctype.startswith("application/json")
    assert body == (signed / "manifest.sig").read_bytes()


@pytest.fixture
def signed_checkpoint_package(tmp_path, keys):
    """root/r8: a signed package of a `cuekit train`-style resnet8 checkpoint (4 classes, 16 px)."""
    from cuekit.models import create_model
    from cuekit.train.checkpoint import save_weights

    torch.manual_seed(0)
    meta = {"model": "resnet8", "num_classes": 4, "in_chans": 3, "img_size": 16, "class_names": list("rgbw"),
            "mean": [0.0] * 3, "std": [1.0] * 3, "resize_ratio": 1.0, "config": {"model_kwargs": {"width": 4}}}
    save_weights(tmp_path / "model.safetensors", create_model("resnet8", num_classes=4, width=4), meta)
    assert main(["transmit", "pack", str(tmp_path / "model.safetensors"), "--bits", "8,8", "--out",
                 str(tmp_path / "root" / "r8"), "--sign", str(keys["good"][0])]) == 0
    return tmp_path / "root" / "r8"


def test_cli_fetch_with_trust(tmp_path, keys, signed_checkpoint_package, capsys):
    from PIL import Image

    Image.new("RGB", (16, 16), (255, 0, 0)).save(tmp_path / "red.png")
    pkg = signed_checkpoint_package
    capsys.readouterr()
    with ServerThread(pkg.parent) as srv:
        url = srv.url + "r8/"
        rc = main(["transmit", "fetch", url, "--image", str(tmp_path / "red.png"), "--no-progress",
                   "--trust", str(keys["good"][1]), "--out", str(tmp_path / "f")])
        assert rc == 0 and "signature verified" in capsys.readouterr().out
        res = json.loads((tmp_path / "f" / "results.json").read_text())
        assert res["signature"] == {"verified": True, "public_key": keys["good"][2]} and len(res["stages"]) == 2
        fetched = len(part_requests(srv.stats))
        for trust, message in ((keys["other"][2], "signed by another key"),):
            rc = main(["transmit", "fetch", url, "--image", str(tmp_path / "red.png"), "--no-progress",
                       "--trust", trust])
            err = capsys.readouterr().err
            assert rc == 2 and err.count("\n") == 1 and err.startswith("cuekit: error:") and message in err
        (pkg / "manifest.sig").unlink()
        rc = main(["transmit", "fetch", url, "--image", str(tmp_path / "red.png"), "--no-progress",
                   "--trust", keys["good"][2]])
        err = capsys.readouterr().err
        assert rc == 2 and err.count("\n") == 1 and "is not signed" in err
        assert len(part_requests(srv.stats)) == fetched  # no part requested by a refused fetch
        rc = main(["transmit", "fetch", url, "--image", str(tmp_path / "red.png"), "--no-progress"])
        assert rc == 0  # without --trust: unchanged
    assert main(["transmit", "fetch", url, "--trust", "nothex", "--no-progress"]) == 2
    assert "neither 64 hex" in capsys.readouterr().err


def test_cli_verify(tmp_path, keys, signed_checkpoint_package, capsys):
    pkg = signed_checkpoint_package
    capsys.readouterr()
    assert main(["transmit", "verify", str(pkg), "--trust", str(keys["good"][1])]) == 0
    out = capsys.readouterr().out
    assert "matches" in out and f"signed by {keys['good'][2]}" in out
    assert main(["transmit", "verify", str(pkg), "--trust", keys["other"][2]]) == 2
    assert "another key" in capsys.readouterr().err
    part = pkg / "part-1.bin"
    data = bytearray(part.read_bytes())
    data[-1] ^= 0x01
    part.write_bytes(bytes(data))
    assert main(["transmit", "verify", str(pkg)]) == 2
    assert "SHA-256" in capsys.readouterr().err


# ---- model arguments from a manifest ------------------------------------------------------------------


def _repack_with_model(pkg, **model):
    raw = json.loads((pkg / "manifest.json").read_bytes())
    raw["model"].update(model)
    raw["manifest_sha256"] = manifest_hash(raw)
    (pkg / "manifest.json").write_text(json.dumps(raw))


@pytest.mark.parametrize("kwargs, message", [
    ({"widht": 4}, "takes no argument 'widht'.*did you mean width"),
    ({"checkpoint": "/etc/passwd"}, "takes no argument 'checkpoint'"),
    ({"num_classes": 7}, "takes no argument 'num_classes'"),
])
def test_unknown_model_arguments_are_refused(signed_checkpoint_package, kwargs, message):
    pkg = signed_checkpoint_package
    _repack_with_model(pkg, model_kwargs=kwargs)
    with pytest.raises(DataError, match=message):
        model_from_manifest(load_manifest(pkg))


def test_unknown_model_and_bad_sizes_are_refused(signed_checkpoint_package):
    pkg = signed_checkpoint_package
    _repack_with_model(pkg, name="resnet8; rm -rf /")
    with pytest.raises(DataError, match="this cuekit does not have"):
        model_from_manifest(load_manifest(pkg))
    _repack_with_model(pkg, name="resnet8", num_classes="4")
    with pytest.raises(DataError, match="num_classes must be a positive integer"):
        model_from_manifest(load_manifest(pkg))
    _repack_with_model(pkg, num_classes=4, model_kwargs={"width": 4})
    assert model_from_manifest(load_manifest(pkg)).fc.out_features == 4


def test_client_refuses_unknown_model_arguments_before_any_part(signed_checkpoint_package):
    pkg = signed_checkpoint_package
    _repack_with_model(pkg, model_kwargs={"width": 4, "checkpoint": "/etc/passwd"})
    with ServerThread(pkg.parent) as srv:
        with pytest.raises(DataError, match="takes no argument 'checkpoint'"):
            with iter_stages(srv.url + "r8/") as it:
                list(it)

        async def async_stages():
            async with ProgressiveClient(srv.url + "r8/") as c:
                return [s async for s in c.stages()]

        with pytest.raises(DataError, match="takes no argument 'checkpoint'"):
            run_async(async_stages())
        assert part_requests(srv.stats) == []
        with iter_stages(srv.url + "r8/", build_model=False) as it:  # the state dict alone is still fine
            assert len(list(it)) == 2


def test_registry_names_forwarded_arguments():
    from cuekit.models import check_model_arguments, model_arguments

    assert {"width", "depth"} <= set(model_arguments("resnet8"))
    assert {"embed_dim", "depth", "drop_path_rate"} <= set(model_arguments("vit_nano"))
    assert "zero_init_residual" in model_arguments("resnet18")  # through torchvision's builder to ResNet
    assert "width" in model_arguments("cam_small") and "checkpoint" not in model_arguments("cam_small")
    with pytest.raises(UsageError, match="takes no argument 'weights'"):  # a manifest never fetches weights
        check_model_arguments("resnet18", {"weights": "IMAGENET1K_V1"})


def test_cli_registers_without_cryptography_import():
    import subprocess

    code = ("import sys, argparse; import cuekit.transmit.cli as c; p = argparse.ArgumentParser(); "
            "c.register(p.add_subparsers()); print('cryptography' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
