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
    package_data={PACKAGE: ["py.typed", "ops/cuda/*.cu", "ops/cuda/*.cuh", "resources/*", "resources/*/*"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        # Node parameters, the RViz view, and the DDS profiles for large images (config/*.xml).
        (f"share/{PACKAGE}/config", glob("config/*.yaml") + glob("config/*.rviz") + glob("config/*.xml")),
    ],
    install_requires=[
        "numpy>=1.23,<3",
        "torch>=2.1",
        "opencv-python-headless>=4.7",
        "tqdm>=4.60",
        "PyYAML>=5.4",
        # ROS 2 bags (MCAP, SQLite3) without ROS installed: flownet2-bag, the player's bag mode, the demo
        # bag. Required rather than an extra: it is small, has wheels for every platform, and the demo uses it.
        "rosbags>=0.11",
    ],
    extras_require={
        # ONNX export and its validation on ONNX Runtime (correlation custom op in Python).
        "export": ["onnx>=1.15", "onnxruntime>=1.17", "onnxruntime-extensions>=0.10"],
        # Training logs and evaluation plots.
        "train": ["matplotlib>=3.6", "tensorboard>=2.14", "scikit-image>=0.21"],
        # The correlation kernel compiled with NVRTC and launched through CUDA's Python bindings (GPU machines).
        # Pinned to CUDA 12: cuda-bindings 13 needs a CUDA 13 driver (R580+), while JetPack 6 (TensorRT 10.3)
        # and the TensorRT cu12 wheels run on CUDA 12 drivers, where it fails to load; without the pin a plain
        # install picks 13. NVRTC 12 emits code every CUDA 12 driver loads (cubin for the GPU's sm_XY).
        "cuda": ["cuda-bindings>=12,<13", "nvidia-cuda-nvrtc-cu12", "nvidia-cuda-runtime-cu12"],
        # The TensorRT path on a CUDA 12 system (Jetson JetPack 6, desktop TensorRT cu12): ONNX export plus the
        # kernel's CUDA-12 toolchain above. TensorRT itself comes from JetPack or NVIDIA (not from here).
        "tensorrt-cu12": [
            "onnx>=1.15",
            "cuda-bindings>=12,<13",
            "nvidia-cuda-nvrtc-cu12",
            "nvidia-cuda-runtime-cu12",
        ],
        # What the tests need (the "test" extra is also how `colcon test` knows to run pytest).
        "test": ["pytest>=8", "hypothesis>=6.80"],
        "dev": [
            "onnx>=1.15",
            "onnxruntime>=1.17",
            "onnxruntime-extensions>=0.10",
            "matplotlib>=3.6",
            "tensorboard>=2.14",
            # Real photographs (its bundled sample images) for the learned-vs-classical comparison.
            "scikit-image>=0.21",
            # TensorRT's lean runtime: the real plugin classes and registry, importable without a GPU,
            # so the plugin's Python side is tested on CPU machines.
            "tensorrt-lean-cu12>=10.3; platform_machine == 'x86_64'",
            # NVRTC: compiles the correlation kernel to PTX on CPU-only machines (compile test).
            "cuda-bindings>=12,<13",
            "nvidia-cuda-nvrtc-cu12",
            "nvidia-cuda-runtime-cu12",
            "pytest>=8",
            "hypothesis>=6.80",
            "ruff>=0.6",
            "mypy>=1.10",
            "types-PyYAML",
            "types-tqdm",
        ],
    },
    zip_safe=False,
    entry_points={
        "console_scripts": [
            "flownet2-infer = flownet2_ros.cli.infer:main",
            "flownet2-benchmark = flownet2_ros.cli.benchmark:main",
            "flownet2-export-onnx = flownet2_ros.cli.export_onnx:main",
            "flownet2-build-engine = flownet2_ros.cli.build_engine:main",
            "flownet2-train = flownet2_ros.cli.train:main",
            "flownet2-evaluate = flownet2_ros.cli.evaluate:main",
            "flownet2-compare = flownet2_ros.cli.compare:main",
            "flownet2-bag = flownet2_ros.cli.bag:main",
            "flow_node = flownet2_ros.ros.flow_node:main",
            "image_sequence_player = flownet2_ros.ros.sequence_player:main",
            "flow_recorder = flownet2_ros.ros.flow_recorder:main",
        ],
    },
)
