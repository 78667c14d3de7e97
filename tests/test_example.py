"""The built-in example: the shipped throwaway signing pair is the one its fixed seed derives."""

from amidsl.example import example_credentials
from amidsl.example.derive import derive_example_credentials


def test_shipped_example_pair_equals_the_deterministic_derivation():
    assert example_credentials() == derive_example_credentials()
