"""The one build step pyproject.toml cannot express: the model zoo (``weights/``: ``zoo.json``, the
safetensors weights, configs, reports, model cards) is copied into the built package as
``xnet/_zoo``, so an installed xnet lists and loads it by name (``xnet.weights.zoo_root``). An editable
install reads ``weights/`` in place."""
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ZOO = Path(__file__).resolve().parent / "weights"


class BuildPyWithZoo(build_py):
    def run(self) -> None:
        super().run()
        if ZOO.is_dir() and not self.editable_mode:
            shutil.copytree(ZOO, Path(self.build_lib) / "xnet" / "_zoo", dirs_exist_ok=True)


setup(cmdclass={"build_py": BuildPyWithZoo})
