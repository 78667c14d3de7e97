"""The built-in example: its throwaway signing pair is the one its public seed derives; it builds as a
config of one's own does by default."""

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from amidsl.example import example_config_path, example_credentials
from amidsl.example.derive import P_INDEX, Q_INDEX, candidate, first_prime_index, is_probable_prime
from amidsl.settings import load_toml, resolve


def test_the_written_down_indices_are_the_ones_the_search_finds():
    assert (first_prime_index(b"p"), first_prime_index(b"q")) == (P_INDEX, Q_INDEX)


def test_the_example_key_is_made_of_the_two_seeded_primes_and_matches_its_certificate():
    key_pem, cert_pem = example_credentials()
    key = serialization.load_pem_private_key(key_pem.encode(), password=None)
    numbers = key.private_numbers()
    assert {numbers.p, numbers.q} == {candidate(b"p", P_INDEX), candidate(b"q", Q_INDEX)}
    assert is_probable_prime(numbers.p) and is_probable_prime(numbers.q)
    assert key.key_size == 2048
    certificate = x509.load_pem_x509_certificate(cert_pem.encode())
    assert certificate.public_key().public_numbers() == key.public_key().public_numbers()


def test_the_example_pair_is_the_same_on_every_derivation():
    from amidsl.example.derive import derive_example_credentials

    assert derive_example_credentials() == example_credentials()


def test_the_example_builds_what_a_config_of_ones_own_builds_by_default_an_hvm_disk():
    raw = load_toml(example_config_path())
    assert not {"virtualization-type", "virtualization_type"} & set(raw)
    assert resolve(raw).virtualization_type == "hvm"
