"""The `config` file: repository version, id, and the secret chunker parameter.

restic stores a random irreducible polynomial of degree 53 over GF(2) (its Rabin chunker's
parameter). safehold chunks with FastCDC instead, and seeds FastCDC's gear table from this same
secret value, so chunk boundaries stay secret per repository, as in restic's design.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from safehold.repo.format import REPOSITORY_VERSION, encode_json

_POLYNOMIAL_DEGREE = 53


def _gf2_mulmod(a: int, b: int, modulus: int) -> int:
    degree = modulus.bit_length() - 1
    result = 0
    while b:
        if b & 1:
            result ^= a
        b >>= 1
        a <<= 1
        if (a >> degree) & 1:
            a ^= modulus
    return result


def is_irreducible(polynomial: int) -> bool:
    """Rabin's test for a polynomial of prime degree n=53: x^(2^n) = x mod P and P(0), P(1) = 1.

    For prime n the only proper divisor check is gcd(x^2 - x, P) = 1, i.e. no root in GF(2).
    """
    if polynomial.bit_length() - 1 != _POLYNOMIAL_DEGREE:
        return False
    if polynomial & 1 == 0 or bin(polynomial).count("1") % 2 == 0:
        return False
    power = 0b10  # x
    for _ in range(_POLYNOMIAL_DEGREE):
        power = _gf2_mulmod(power, power, polynomial)
    return power == 0b10


def random_irreducible_polynomial() -> int:
    while True:
        candidate = int.from_bytes(os.urandom(8), "little") & ((1 << _POLYNOMIAL_DEGREE) - 1)
        candidate |= (1 << _POLYNOMIAL_DEGREE) | 1
        if is_irreducible(candidate):
            return candidate


@dataclass(frozen=True)
class RepositoryConfig:
    version: int
    id: str
    chunker_polynomial: int

    @classmethod
    def new(cls, chunker_polynomial: int | None = None) -> RepositoryConfig:
        """A new config; `chunker_polynomial` copies another repository's (so copies between
        the two deduplicate), else a random irreducible one is drawn."""
        if chunker_polynomial is None:
            chunker_polynomial = random_irreducible_polynomial()
        elif not is_irreducible(chunker_polynomial):
            raise ValueError(f"chunker polynomial {chunker_polynomial:x} is not irreducible")
        return cls(REPOSITORY_VERSION, os.urandom(32).hex(), chunker_polynomial)

    def encode(self) -> bytes:
        return encode_json(
            {
                "version": self.version,
                "id": self.id,
                "chunker_polynomial": f"{self.chunker_polynomial:x}",
            }
        )

    @classmethod
    def decode(cls, data: bytes) -> RepositoryConfig:
        raw = json.loads(data)
        return cls(int(raw["version"]), str(raw["id"]), int(raw["chunker_polynomial"], 16))

    @property
    def chunker_seed(self) -> int:
        """FastCDC gear-table seed derived from the secret polynomial (never 0 = public table)."""
        return (self.chunker_polynomial * 0x9E3779B97F4A7C15) & 0x7FFFFFFFFFFFFFFF or 1
