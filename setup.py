"""Build the optional native row copy (shoal.emulation._rowcopy); everything else is in pyproject.toml.

The extension is optional: without a C compiler (or numpy's headers) the install goes on and shoal copies rows with
memoryviews.
"""

from setuptools import Extension, setup

try:
    import numpy
except ImportError:  # a build without isolation and without numpy: no native module
    extensions = []
else:
    extensions = [Extension("shoal.emulation._rowcopy", ["shoal/emulation/_rowcopy.c"],
                            include_dirs=[numpy.get_include()], optional=True)]

setup(ext_modules=extensions)
