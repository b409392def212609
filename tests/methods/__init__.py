"""Tests of mmanet.methods, one file per module (a package: tests/losses/test_mar.py has the same name)."""
