"""Stable seed derivation: every random stream in zeroflow is a private ``torch.Generator``
seeded from a tuple of integers (trial seed, step, query index, ...), never the global RNG.

The streams derived from a trial's seed are named here, in one table, so that two of them never
share a tag: ``derive_seed(config.seed, DATA_STREAM, task, epoch)`` and so on."""

_MASK64 = (1 << 64) - 1

DATA_STREAM = 0xDA7A  # (task, epoch): the order of a task's training samples in an epoch
AUG_STREAM = 0xA06  # (task,): the augmentation seed a task's training set draws from per epoch
OPT_STREAM = 0x0971  # (task, group): a task's optimizer of parameter group ``group``
DROPOUT_STREAM = 0xD209  # (task, epoch, batch): the adapter dropout masks of one training batch
INIT_STREAM = 0x1A17  # (...): a learner's own initialisations (heads, prompts)
PROBE_STREAM = 0x9B0E  # (task,): which samples form a task's probe batch (analysis)
SHARPNESS_STREAM = 0x5A4B  # (task,): the perturbations of the sharpness measure (analysis)
MASK_STREAM = 0x3A5C  # (group,): a group's sparsity masks for a whole trial (sparsity_resample)


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
