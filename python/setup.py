"""pip install --no-build-isolation ./python: procsafe's Python package.

The extension is compiled from python/src/_procsafe.cpp against the headers
in ../include (or PROCSAFE_INCLUDE_DIR) and Boost's headers (libboost-dev).
"""
import os
import re

from setuptools import Extension, setup

here = os.path.dirname(os.path.abspath(__file__))
include = os.environ.get("PROCSAFE_INCLUDE_DIR", os.path.join(here, "..", "include"))
if not os.path.exists(os.path.join(include, "procsafe", "procsafe.hpp")):
    raise SystemExit("procsafe: the C++ headers are not in %s; set PROCSAFE_INCLUDE_DIR" % include)

with open(os.path.join(include, "procsafe", "version.hpp")) as f:
    parts = dict(re.findall(r"#define PROCSAFE_VERSION_(MAJOR|MINOR|PATCH) (\d+)", f.read()))

setup(
    name="procsafe",
    version="%s.%s.%s" % (parts["MAJOR"], parts["MINOR"], parts["PATCH"]),
    description="Process-safe shared counters: exact from every process, from Python and C++ alike",
    license="MIT",
    python_requires=">=3.8",
    packages=["procsafe"],
    package_data={"procsafe": ["__init__.pyi", "py.typed"]},
    ext_modules=[
        Extension(
            "procsafe._procsafe",
            sources=["src/_procsafe.cpp"],
            include_dirs=[include],
            language="c++",
            extra_compile_args=["-std=c++20", "-fvisibility=hidden", "-g0"],  # -g0: half the build time
            libraries=["rt"],
            extra_link_args=["-pthread"],
        )
    ],
    zip_safe=False,
)
