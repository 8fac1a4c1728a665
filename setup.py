"""Builds the OpenMP extensions ``qmlnb._openmp`` (state-vector Gram), ``qmlnb._mps_openmp`` (MPS Gram),
``qmlnb._states_openmp`` (feature-map state vectors), ``qmlnb._circuit_openmp`` (state vectors of any compiled
circuit) and ``qmlnb._shots_openmp`` (the shot-sampled Gram estimate) from ``native/``.

Everything else about the package lives in ``pyproject.toml``.

Environment:
    QMLNB_MARCH  value for ``-march=`` (default ``native``: the build machine's
                 SIMD, e.g. AVX-512).  ``none`` leaves it out, for a binary
                 that runs on any x86-64.  A value the compiler rejects is
                 dropped with a warning, never an error.
"""
import os

from pybind11.setup_helpers import Pybind11Extension, build_ext, has_flag
from setuptools import setup


class BuildWithOpenMP(build_ext):
    """Adds -fopenmp (required) and a guarded -march to every extension."""

    def build_extensions(self):
        if not has_flag(self.compiler, "-fopenmp"):
            raise RuntimeError(
                "the C++ compiler does not accept -fopenmp; qmlnb._openmp needs a compiler "
                "with OpenMP (e.g. gcc/g++ with libgomp)"
            )
        march = os.environ.get("QMLNB_MARCH", "native").strip()
        extra = ["-fopenmp"]
        if march and march.lower() != "none":
            if has_flag(self.compiler, f"-march={march}"):
                extra.append(f"-march={march}")
            else:
                print(f"warning: the compiler rejects -march={march}; building for the generic target")
        for ext in self.extensions:
            ext.extra_compile_args += extra
            ext.extra_link_args += ["-fopenmp"]
        super().build_extensions()


setup(
    ext_modules=[
        Pybind11Extension(
            "qmlnb._openmp",
            ["native/gram_openmp.cpp"],
            depends=["native/mirror.h"],
            cxx_std=17,
            # fp-contract: let a*b+c become one FMA (C++ standard modes may forbid it)
            extra_compile_args=["-O3", "-ffp-contract=fast"],
        ),
        Pybind11Extension(
            "qmlnb._mps_openmp",
            ["native/mps_openmp.cpp"],
            cxx_std=17,
            extra_compile_args=["-O3", "-ffp-contract=fast"],
        ),
        Pybind11Extension(
            "qmlnb._states_openmp",
            ["native/states_openmp.cpp"],
            depends=["native/state_kernels.h"],
            cxx_std=17,
            extra_compile_args=["-O3", "-ffp-contract=fast"],
        ),
        Pybind11Extension(
            "qmlnb._circuit_openmp",
            ["native/circuit_openmp.cpp"],
            depends=["native/state_kernels.h"],
            cxx_std=17,
            extra_compile_args=["-O3", "-ffp-contract=fast"],
        ),
        Pybind11Extension(
            "qmlnb._shots_openmp",
            ["native/shots_openmp.cpp"],
            depends=["native/mirror.h"],
            cxx_std=17,
            # no FMA contraction, no fast-math: every entry's arithmetic is the numba sampler's, bit for bit
            # (-Wno-psabi: the eight-lane types only pass between this file's own inline functions)
            extra_compile_args=["-O3", "-ffp-contract=off", "-Wno-psabi"],
        ),
    ],
    cmdclass={"build_ext": BuildWithOpenMP},
)
