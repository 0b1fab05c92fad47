"""Build kata-shim: the Python package, the Cython extensions and the cffi module.

Metadata lives here (not in pyproject.toml) so that openEuler's %py3_build /
%py3_install (setup.py build/install) and `pip install` both work.
"""

import os
import runpy
from pathlib import Path

from Cython.Build import cythonize
from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext
from setuptools.command.install_scripts import install_scripts

# The runtime libraries and their minimum versions: one table, also behind the RPM's Requires.
DEPS = runpy.run_path(str(Path(__file__).parent / "kata_shim" / "deps.py"))

CYTHON_MODULES = [
    Extension("kata_shim._fastio", ["kata_shim/_fastio.pyx"]),
    Extension("kata_shim.ttrpc._framing", ["kata_shim/ttrpc/_framing.pyx"]),
]

# containerd-shim-kata-v2 is a small C program (csrc/shimfront.c) in front of the Python
# entry point containerd-shim-kata-v2-py; it is installed beside the console scripts.
FRONT_SOURCES = ["csrc/shimfront.c", "csrc/sha256.c"]
FRONT_BINARY = "build/front/containerd-shim-kata-v2"
FRONT_FLAGS = ["-O2", "-Wall", "-Wextra", "-Werror", "-D_FORTIFY_SOURCE=2"]


class BuildWithFront(build_ext):
    """build_ext, then the front executable (same compiler, no Python linkage)."""

    def run(self) -> None:
        super().run()
        objects = self.compiler.compile(
            FRONT_SOURCES, output_dir=self.build_temp, extra_preargs=FRONT_FLAGS
        )
        self.compiler.link_executable(objects, FRONT_BINARY)


class InstallScriptsWithFront(install_scripts):
    """The console scripts, then the front beside them (pip, editable installs, %py3_install)."""

    def run(self) -> None:
        super().run()
        target = os.path.join(self.install_dir, os.path.basename(FRONT_BINARY))
        self.copy_file(FRONT_BINARY, target)
        os.chmod(target, 0o755)
        self.outfiles = [*getattr(self, "outfiles", []), target]


setup(
    name="kata-shim",
    version="0.1.0",
    description="containerd shim v2 runtime for VM-isolated (Kata-style) containers",
    license="Apache-2.0",
    python_requires=">=3.11",
    packages=find_packages(include=["kata_shim", "kata_shim.*"]),
    package_data={
        "kata_shim": [
            "py.typed",
            "proto/*.proto",
            "proto/*.pyi",
            "config/*.toml",
            "image/init.sh",
            "image/loader.sh",
        ]
    },
    ext_modules=cythonize(
        CYTHON_MODULES,
        language_level=3,
        compiler_directives={"boundscheck": False, "wraparound": False},
    ),
    cffi_modules=["csrc/build_native.py:ffibuilder"],
    cmdclass={"build_ext": BuildWithFront, "install_scripts": InstallScriptsWithFront},
    setup_requires=["cffi>=1.16"],
    install_requires=DEPS["install_requires"](),
    entry_points={
        "console_scripts": [
            "protoc-gen-kata-ttrpc = kata_shim.plugin.protoc_gen_ttrpc:main",
            "kata-agent-py = kata_shim.guest.main:main",
            "containerd-shim-kata-v2-py = kata_shim.shim.main:main",
            "kata-shim = kata_shim.cli.main:main",
            "kata-shim-monitor = kata_shim.monitor.main:main",
        ],
    },
    zip_safe=False,
)
