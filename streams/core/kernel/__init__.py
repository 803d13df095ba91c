"""The decision kernel (`decision.evaluate`) and sizing: pure functions the levels call, no state of their own."""
