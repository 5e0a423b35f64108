"""Which release images a prune keeps: the running one and the last few before it, so a
rollback always finds its image."""

from taxiway.image.for_release import KEPT_RELEASES, keep_versions


def test_the_running_release_and_the_ones_before_it_are_kept() -> None:
    kept = keep_versions(20, range(1, 21))
    assert 20 in kept and 19 in kept
    assert kept == set(range(20 - KEPT_RELEASES, 21))  # the running one and 5 before it
    assert 1 not in kept


def test_a_failed_newer_release_does_not_push_out_an_older_one() -> None:
    """After v9 failed, v8 runs: v9's image may go, v8 and the ones before it stay."""
    kept = keep_versions(8, range(1, 10))
    assert 8 in kept and 3 in kept and 9 not in kept
