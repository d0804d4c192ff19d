"""Stable seed derivation: every random stream in zeroflow is a private ``torch.Generator``
seeded from a tuple of integers (trial seed, step, query index, ...), never the global RNG."""

_MASK64 = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def derive_seed(*parts: int) -> int:
    """Mix integers into one seed in [0, 2**63): the same parts always give the same seed,
    and changing any part gives an unrelated one (splitmix64 chained over the parts)."""
    h = 0x5A17F10E
    for part in parts:
        h = _splitmix64(h ^ (int(part) & _MASK64))
    return h >> 1
