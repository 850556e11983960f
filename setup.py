"""Only the list of compiled extensions; everything else lives in pyproject.toml."""
import os

from Cython.Build import cythonize
from setuptools import Extension, setup

# OBITUI_OPT=-O0 builds quickly (packaging checks, not speed); releases use the default -O3
OPT = os.environ.get("OBITUI_OPT", "-O3")
CFLAGS = [OPT, "-std=c11", "-Wno-unused-function"]


def ext(name: str, lang: str = "c") -> Extension:
    path = name.replace(".", "/") + ".pyx"
    args = CFLAGS if lang == "c" else [OPT, "-std=c++17"]
    return Extension(name, [path], include_dirs=["obitui/core"], extra_compile_args=args, language=lang)


setup(
    ext_modules=cythonize(
        [
            ext("obitui.core.shm"),
            ext("obitui.core.fixed"),
            ext("obitui.core.ring"),
            ext("obitui.core.book"),
            ext("obitui.core.engine_core"),
            ext("obitui.feeds.binance._scan"),
            ext("obitui.bus._encode"),
            ext("obitui.bench._ringloops"),
            ext("obitui.bench._bookloops", "c++"),
        ],
        build_dir="build/cython",
        compiler_directives={"language_level": "3"},
    ),
)
