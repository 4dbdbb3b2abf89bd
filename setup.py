"""The package is described in pyproject.toml; this file adds its one C extension, the SplitMix64 draws of
``maker._rng`` (``maker/_rngc.c``). It is optional: where it cannot be compiled, the install goes on and the
same draws come from Python, more slowly."""

from setuptools import Extension, setup

setup(ext_modules=[Extension("maker._rngc", ["maker/_rngc.c"], optional=True)])
