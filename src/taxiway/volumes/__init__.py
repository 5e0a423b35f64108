"""Volume snapshots: archives of a volume's folder, taken consistently, kept for the
volume's retention, and restored into new volumes.

`archive` writes and unpacks the files, `snapshots` is what a snapshot is (take,
list, prune, restore) on the store and the folders, `pausing` holds a running machine
still while its volume is copied, and `schedule` is the daemon's daily round.
"""
