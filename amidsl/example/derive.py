"""The example's throwaway signing pair, derived from a public seed so anyone can re-derive it.

Each prime is the first candidate, counting from 0, that is prime: candidate i of a label is 1024 bits
of SHA-256 output over the seed, the label and i, with the top two bits and the low bit set. Searching
for it costs most of a second in pure Python, so the indices the search finds are written down here;
`first_prime_index` is the search, and a test checks it still gives these indices.
"""

from __future__ import annotations

import datetime
import hashlib
import random

from cryptography.hazmat.primitives.asymmetric import rsa

from amidsl.keypairs import self_signed_pair

EXAMPLE_SEED = b"amidsl example signing key, throwaway"
EXAMPLE_SUBJECT = "amidsl example (throwaway, not valid on AWS)"
PUBLIC_EXPONENT = 65537
PRIME_BITS = 1024
P_INDEX = 257  # first_prime_index(b"p")
Q_INDEX = 291  # first_prime_index(b"q")

SMALL_PRIMES = [n for n in range(3, 4000, 2) if all(n % f for f in range(3, int(n**0.5) + 1, 2))]


def candidate(label: bytes, index: int) -> int:
    """Candidate `index` for the prime named `label` (b"p" or b"q")."""
    blocks = (
        hashlib.sha256(EXAMPLE_SEED + label + index.to_bytes(4, "big") + block.to_bytes(2, "big")).digest()
        for block in range(PRIME_BITS // 256)
    )
    return int.from_bytes(b"".join(blocks), "big") | (3 << (PRIME_BITS - 2)) | 1


def is_probable_prime(n: int, rounds: int = 40) -> bool:
    """Trial division, then Miller-Rabin with bases drawn from a generator seeded by n (repeatable)."""
    for small in SMALL_PRIMES:
        if n % small == 0:
            return n == small
    d, r = n - 1, 0
    while d % 2 == 0:
        d, r = d // 2, r + 1
    bases = random.Random(n)
    for _ in range(rounds):
        x = pow(bases.randrange(2, n - 1), d, n)
        if x in (1, n - 1):
            continue
        for _ in range(r - 1):
            x = pow(x, 2, n)
            if x == n - 1:
                break
        else:
            return False
    return True


def first_prime_index(label: bytes) -> int:
    """The search: the first index whose candidate is prime and fits the public exponent."""
    index = 0
    while True:
        n = candidate(label, index)
        if n % PUBLIC_EXPONENT != 1 and is_probable_prime(n):
            return index
        index += 1


def derive_example_credentials() -> tuple[str, str]:
    """(private key PEM, certificate PEM) of the example's throwaway 2048-bit RSA signing pair."""
    e = PUBLIC_EXPONENT
    p, q = candidate(b"p", P_INDEX), candidate(b"q", Q_INDEX)
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
    # Fixed dates and serial: the certificate, like the key, is the same on every run. OpenSSL's key
    # check (tens of milliseconds of primality tests) is left to tests/test_example.py, which checks p
    # and q and loads the key with it.
    return self_signed_pair(
        EXAMPLE_SUBJECT,
        key=numbers.private_key(unsafe_skip_rsa_key_validation=True),
        not_before=datetime.datetime(2020, 1, 1, tzinfo=datetime.timezone.utc),
        days=10957,
        serial=1,
    )
