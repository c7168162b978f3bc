"""rnnforge: the lecture's recurrent cells, exact and fast, and generation by
inverse transform sampling checked with the probability integral transform."""

__version__ = "0.1.0"
