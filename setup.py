"""What pyproject.toml cannot express: the configs live at the repository's top (``conf/``) and install
as the package ``xnet.conf``; and the model zoo (``weights/``: ``zoo.json``, the
safetensors weights, configs, reports, model cards) is copied into the built package as
``xnet/_zoo``, so an installed xnet lists and loads it by name (``xnet.deploy.weights.zoo_root``). An editable
install reads ``weights/`` in place."""

import shutil
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

ZOO = Path(__file__).resolve().parent / "weights"


class BuildPyWithZoo(build_py):
    def run(self) -> None:
        super().run()
        if ZOO.is_dir() and not self.editable_mode:
            shutil.copytree(ZOO, Path(self.build_lib) / "xnet" / "_zoo", dirs_exist_ok=True)


setup(
    packages=[*find_packages(include=["xnet", "xnet.*"]), "xnet.conf"],
    package_dir={"xnet.conf": "conf"},
    cmdclass={"build_py": BuildPyWithZoo},
)
