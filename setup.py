"""Only the list of compiled extensions; everything else lives in pyproject.toml."""
from Cython.Build import cythonize
from setuptools import Extension, setup

CFLAGS = ["-O3", "-std=c11", "-Wno-unused-function"]


def ext(name: str, lang: str = "c") -> Extension:
    path = name.replace(".", "/") + ".pyx"
    args = CFLAGS if lang == "c" else ["-O3", "-std=c++17"]
    return Extension(name, [path], include_dirs=["obitui/core"], extra_compile_args=args, language=lang)


setup(
    ext_modules=cythonize(
        [
            ext("obitui.core.shm"),
            ext("obitui.core.fixed"),
            ext("obitui.core.ring"),
            ext("obitui.core.book"),
            ext("obitui.bench._ringloops"),
            ext("obitui.bench._bookloops", "c++"),
        ],
        build_dir="build/cython",
        compiler_directives={"language_level": "3"},
    ),
)
