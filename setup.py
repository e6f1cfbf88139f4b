# Only here because setuptools takes cffi_modules from setup(); all metadata
# lives in pyproject.toml.
from setuptools import setup

setup(cffi_modules=["engine/build_engine.py:ffibuilder"])
