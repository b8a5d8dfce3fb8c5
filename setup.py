"""Build the optional native row copy (shoal.emulation._rowcopy); everything else is in pyproject.toml.

The extension is optional: without a C compiler the install goes on and shoal copies rows with memoryviews.
"""

import numpy
from setuptools import Extension, setup

setup(ext_modules=[Extension("shoal.emulation._rowcopy", ["shoal/emulation/_rowcopy.c"],
                             include_dirs=[numpy.get_include()], optional=True)])
