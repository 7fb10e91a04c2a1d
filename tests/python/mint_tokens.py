#!/usr/bin/env python3
"""Mints waiting-room tokens with code independent of edge, for its verifier tests.

Queue-it tokens are built as Queue-it's KnownUser SDKs define them (hmac + hashlib); JWTs with
PyJWT and `cryptography` (RS256, ES256, EdDSA, HS256), plus the attacks PyJWT will not make
(alg none, HS256 signed with the RSA public key). Writes into OUT_DIR:

  queueit.secret   the Queue-it secret key (mode 600)
  jwks.json        the JWT verification keys (holds an oct key, so mode 600)
  cases.json       [{"name", "kind", "token", "ip", "expect"}], expect = "ok" or the reason

Usage: mint_tokens.py OUT_DIR NOW ISSUER AUDIENCE EVENT
"""
import base64
import hashlib
import hmac
import json
import os
import sys
import uuid

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

out, now, issuer, audience, event = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
IP = "192.0.2.30"
cases = []


def case(name, kind, token, expect, ip=IP):
    cases.append({"name": name, "kind": kind, "token": token, "ip": ip, "expect": expect})


def write_secret(name, data):
    path = os.path.join(out, name)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(data)


# --- Queue-it -----------------------------------------------------------------------------
secret = str(uuid.uuid4()) + "-" + str(uuid.uuid4())
write_secret("queueit.secret", secret + "\n")


def queueit(body, key=secret):
    mac = hmac.new(key.encode(), body.encode(), hashlib.sha256).hexdigest()
    return body + "~h_" + mac


queue_id = str(uuid.uuid4())
valid_q = queueit(f"e_{event}~q_{queue_id}~ts_{now + 300}~ce_False~rt_Queue")
case("queueit valid", "queueit", valid_q, "ok")
case("queueit event id in other case", "queueit",
     queueit(f"e_{event.upper()}~q_{uuid.uuid4()}~ts_{now + 300}~rt_Queue"), "ok")
case("queueit expired", "queueit", queueit(f"e_{event}~q_{uuid.uuid4()}~ts_{now - 10}~rt_Queue"), "expired")
case("queueit other event", "queueit", queueit(f"e_other~q_{uuid.uuid4()}~ts_{now + 300}"), "wrong_event")
case("queueit other secret", "queueit",
     queueit(f"e_{event}~q_{uuid.uuid4()}~ts_{now + 300}", key="another-secret"), "bad_hash")
hip = hmac.new(secret.encode(), IP.encode(), hashlib.sha256).hexdigest()
bound = queueit(f"e_{event}~q_{uuid.uuid4()}~ts_{now + 300}~hip_{hip}")
case("queueit bound to its address", "queueit", bound, "ok")
case("queueit bound to another address", "queueit", bound, "wrong_ip", ip="192.0.2.31")
case("queueit with no address", "queueit", valid_q, "no_source", ip="")
case("queueit valid for a year", "queueit", queueit(f"e_{event}~q_{uuid.uuid4()}~ts_{now + 365 * 86400}"), "exp_too_far")
case("queueit bound, from its v4-mapped address", "queueit", bound, "ok", ip="::ffff:" + IP)

# --- JWTs ---------------------------------------------------------------------------------
rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
rsa_other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
ec_key = ec.generate_private_key(ec.SECP256R1())
ed_key = ed25519.Ed25519PrivateKey.generate()
hs_secret = os.urandom(32)


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def public_jwk(algorithm, key, kid):
    jwk = json.loads(algorithm.to_jwk(key.public_key()))
    jwk.update({"kid": kid, "use": "sig"})
    return jwk


keys = [
    public_jwk(jwt.algorithms.RSAAlgorithm, rsa_key, "rsa1"),
    public_jwk(jwt.algorithms.ECAlgorithm, ec_key, "ec1"),
    public_jwk(jwt.algorithms.OKPAlgorithm, ed_key, "ed1"),
    {"kty": "oct", "k": b64(hs_secret), "kid": "hs1", "alg": "HS256"},
]
write_secret("jwks.json", json.dumps({"keys": keys}, indent=1))


def claims(**extra):
    c = {"iss": issuer, "aud": audience, "sub": str(uuid.uuid4()), "jti": str(uuid.uuid4()),
         "token_use": "access", "iat": now, "nbf": now - 5, "exp": now + 300}
    c.update(extra)
    return {k: v for k, v in c.items() if v is not None}


def signed(key, alg, kid, **extra):
    return jwt.encode(claims(**extra), key, algorithm=alg, headers={"kid": kid})


def by_hand(header, payload, sign):
    """A JWT assembled without PyJWT (for what it refuses to make)."""
    head = b64(json.dumps(header).encode())
    body = b64(json.dumps(payload).encode())
    return f"{head}.{body}." + b64(sign(f"{head}.{body}".encode()))


valid_rs = signed(rsa_key, "RS256", "rsa1")
case("jwt RS256 valid", "jwt", valid_rs, "ok")
case("jwt ES256 valid", "jwt", signed(ec_key, "ES256", "ec1"), "ok")
case("jwt EdDSA valid", "jwt", signed(ed_key, "EdDSA", "ed1"), "ok")
case("jwt HS256 valid", "jwt", signed(hs_secret, "HS256", "hs1"), "ok")
case("jwt aud as a list", "jwt", signed(rsa_key, "RS256", "rsa1", aud=["other", audience]), "ok")
case("jwt without jti or sub", "jwt", signed(rsa_key, "RS256", "rsa1", jti=None, sub=None), "ok")
case("jwt expired", "jwt", signed(rsa_key, "RS256", "rsa1", exp=now - 100, nbf=now - 400), "expired")
case("jwt not yet valid", "jwt", signed(rsa_key, "RS256", "rsa1", nbf=now + 200), "not_yet_valid")
case("jwt wrong audience", "jwt", signed(rsa_key, "RS256", "rsa1", aud="other-event"), "wrong_audience")
case("jwt wrong issuer", "jwt", signed(rsa_key, "RS256", "rsa1", iss="https://evil.example"), "wrong_issuer")
case("jwt no exp", "jwt", signed(rsa_key, "RS256", "rsa1", exp=None), "missing_claim")
case("jwt valid for a year", "jwt", signed(rsa_key, "RS256", "rsa1", exp=now + 365 * 86400), "exp_too_far")
case("jwt with a numeric jti", "jwt", signed(rsa_key, "RS256", "rsa1", jti=12345), "ok")
case("jwt id token", "jwt", signed(rsa_key, "RS256", "rsa1", token_use="id"), "claim_mismatch")
case("jwt wrong key", "jwt", signed(rsa_other, "RS256", "rsa1"), "bad_signature")
case("jwt unknown kid", "jwt", signed(rsa_other, "RS256", "rsa9"), "unknown_kid")
case("jwt RS384 not allowed", "jwt", signed(rsa_key, "RS384", "rsa1"), "alg_not_allowed")
case("jwt ES256 header on the RSA key", "jwt", signed(ec_key, "ES256", "rsa1"), "alg_key_mismatch")
case("jwt alg none", "jwt", by_hand({"alg": "none", "kid": "rsa1", "typ": "JWT"}, claims(), lambda m: b""),
     "alg_none")
public_pem = rsa_key.public_key().public_bytes(
    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
case("jwt HS256 signed with the RSA public key", "jwt",
     by_hand({"alg": "HS256", "kid": "rsa1", "typ": "JWT"}, claims(),
             lambda m: hmac.new(public_pem, m, hashlib.sha256).digest()),
     "alg_key_mismatch")
case("jwt oversized", "jwt", signed(rsa_key, "RS256", "rsa1", pad="x" * 5000), "oversized")
case("jwt with no address", "jwt", valid_rs, "no_source", ip="")
case("jwt whose alg would write to a terminal", "jwt",
     by_hand({"alg": "X\u001b[2J\nedge: valid", "kid": "rsa1"}, claims(), lambda m: b"sig"), "alg_not_allowed")
case("empty text", "", "", "malformed")
case("a JWT with a part missing", "", valid_rs.rsplit(".", 1)[0], "malformed")

# Every single-character change of a valid token must be refused.
ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_"
for name, kind, token in [("queueit", "queueit", valid_q), ("jwt RS256", "jwt", valid_rs),
                          ("jwt HS256", "jwt", signed(hs_secret, "HS256", "hs1"))]:
    for i, c in enumerate(token):
        other = ALPHABET[(ALPHABET.find(c) + 1) % len(ALPHABET)] if c in ALPHABET else "a"
        case(f"{name} with character {i} changed", kind, token[:i] + other + token[i + 1:], "refused")

with open(os.path.join(out, "cases.json"), "w") as f:
    json.dump(cases, f)
print(len(cases))
