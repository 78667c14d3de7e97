"""How the example's throwaway signing pair was derived: a fixed seed, so anyone can re-derive it.

amidsl ships the result (example-pk.pem, example-cert.pem) because deriving 2048-bit primes in pure
Python takes most of a second; a test checks that the shipped files equal this derivation.
"""

from __future__ import annotations

import datetime
import random

from cryptography.hazmat.primitives.asymmetric import rsa

from amidsl.keypairs import self_signed_pair

EXAMPLE_SEED = "amidsl example signing key, throwaway"
EXAMPLE_SUBJECT = "amidsl example (throwaway, not valid on AWS)"

SMALL_PRIMES = [n for n in range(3, 4000, 2) if all(n % f for f in range(3, int(n**0.5) + 1, 2))]


def _is_probable_prime(n: int, rng: random.Random, rounds: int = 40) -> bool:
    # Trial division first: it rejects most candidates far more cheaply than Miller-Rabin.
    for small in SMALL_PRIMES:
        if n % small == 0:
            return n == small
    d, r = n - 1, 0
    while d % 2 == 0:
        d, r = d // 2, r + 1
    for _ in range(rounds):
        x = pow(rng.randrange(2, n - 1), d, n)
        if x in (1, n - 1):
            continue
        for _ in range(r - 1):
            x = pow(x, 2, n)
            if x == n - 1:
                break
        else:
            return False
    return True


def _seeded_prime(rng: random.Random, bits: int, e: int) -> int:
    while True:
        candidate = rng.getrandbits(bits) | (3 << (bits - 2)) | 1
        if candidate % e != 1 and _is_probable_prime(candidate, rng):
            return candidate


def derive_example_credentials() -> tuple[str, str]:
    """(private key PEM, certificate PEM) of the example's throwaway 2048-bit RSA signing pair."""
    rng = random.Random(EXAMPLE_SEED)
    e = 65537
    p = _seeded_prime(rng, 1024, e)
    q = _seeded_prime(rng, 1024, e)
    d = pow(e, -1, (p - 1) * (q - 1))
    numbers = rsa.RSAPrivateNumbers(
        p=p,
        q=q,
        d=d,
        dmp1=rsa.rsa_crt_dmp1(d, p),
        dmq1=rsa.rsa_crt_dmq1(d, q),
        iqmp=rsa.rsa_crt_iqmp(p, q),
        public_numbers=rsa.RSAPublicNumbers(e, p * q),
    )
    # Fixed dates and serial: the certificate, like the key, is the same on every run.
    return self_signed_pair(
        EXAMPLE_SUBJECT,
        key=numbers.private_key(),
        not_before=datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC),
        days=10957,
        serial=1,
    )
