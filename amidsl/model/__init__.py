"""Plan model: actions (what to do), node steps (how, in shell terms), plans."""
