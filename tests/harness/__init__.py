"""Test harness shared by the tiers: prerequisites, real binaries, real servers."""
