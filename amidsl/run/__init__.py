"""Running a plan: the phase loop, publishing, leftovers, progress."""
