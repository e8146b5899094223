"""ament_python package definition for flownet2_ros (also a plain pip-installable package)."""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "flownet2_ros"

setup(
    name=PACKAGE,
    version="0.1.0",
    description="Dense optical flow for ROS 2 from FlowNet 2.0: model family, TensorRT path, camera node.",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"]),
    package_data={PACKAGE: ["py.typed"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml") + glob("config/*.rviz")),
    ],
    install_requires=[
        "numpy>=1.23,<3",
        "torch>=2.1",
        "opencv-python-headless>=4.7",
        "tqdm>=4.60",
        "PyYAML>=5.4",
    ],
    extras_require={
        "dev": [
            "pytest>=8",
            "hypothesis>=6.80",
            "ruff>=0.6",
            "mypy>=1.10",
            "types-PyYAML",
            "types-tqdm",
        ],
    },
    zip_safe=True,
    entry_points={
        "console_scripts": [
            "flownet2-infer = flownet2_ros.cli.infer:main",
            "flownet2-benchmark = flownet2_ros.cli.benchmark:main",
        ],
    },
)
