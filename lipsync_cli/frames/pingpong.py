"""Which template frame an output frame shows: the template is played forward, then backward, and again."""


def ping_pong(i: int, n: int) -> int:
    """Template frame of output frame i: 0, 1, .., n-1, n-2, .., 1, 0, 1, .."""
    if n <= 1:
        return 0
    period = 2 * n - 2
    r = i % period
    return r if r < n else period - r
