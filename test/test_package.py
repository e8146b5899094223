"""The ament_python package: package.xml is valid and declares every import, `colcon build` and `colcon test`
work in a fresh workspace, the DDS profiles in config/ load, and the robot install script works."""

from __future__ import annotations

import ast
import os
import random
import re
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import uuid
import xml.etree.ElementTree as ET
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "flownet2_ros"
COPY_IGNORE = shutil.ignore_patterns(
    ".venv", ".git", "build", "install", "log", "__pycache__", "*.egg-info", ".*cache", ".hypothesis"
)


def test_package_xml_is_format_3_with_real_dependencies():
    from catkin_pkg.package import parse_package

    package = parse_package(str(REPO / "package.xml"))
    assert package.name == "flownet2_ros" and package.package_format == 3
    assert package.get_build_type() == "ament_python"
    exec_deps = {d.name for d in package.exec_depends}
    assert {"rclpy", "sensor_msgs", "std_msgs", "diagnostic_msgs", "python3-numpy"} <= exec_deps
    assert all("@" in m.email for m in package.maintainers)


# ------------------------------------------------------------------------------ imports vs package.xml


@dataclass(frozen=True)
class PipOnly:
    """A library with no (usable) rosdep key: installed with pip. ``extra`` is the setup.py extra that
    carries it ("install_requires" for a required one, None for one in no extra)."""

    distribution: str
    extra: str | None


FIRST_PARTY = "first-party"

# Every third-party module that code in flownet2_ros/, launch/, test/ or scripts/ imports, and how it is
# installed: a rosdep key (declared in package.xml), PipOnly (named in package.xml's pip comment) or
# FIRST_PARTY. A new import must be added here, and so to package.xml, or test_every_import_... fails.
IMPORT_SOURCES: dict[str, str | PipOnly] = {
    PACKAGE: FIRST_PARTY,  # (and test/*.py modules, which the tests import from each other)
    # ROS packages: the rosdep key is the package name
    "rclpy": "rclpy",
    "builtin_interfaces": "builtin_interfaces",
    "rcl_interfaces": "rcl_interfaces",
    "std_msgs": "std_msgs",
    "sensor_msgs": "sensor_msgs",
    "diagnostic_msgs": "diagnostic_msgs",
    "lifecycle_msgs": "lifecycle_msgs",
    "launch": "launch",
    "launch_ros": "launch_ros",
    "launch_testing": "launch_testing",
    "launch_testing_ros": "launch_testing_ros",
    "launch_pytest": "launch_pytest",
    "ament_index_python": "ament_index_python",
    # Python libraries with rosdep keys (rosdistro's rosdep/python.yaml)
    "numpy": "python3-numpy",
    "cv2": "python3-opencv",
    "yaml": "python3-yaml",
    "tqdm": "python3-tqdm",
    "pytest": "python3-pytest",
    "hypothesis": "python3-hypothesis",
    "catkin_pkg": "python3-catkin-pkg-modules",
    # pip only
    "torch": PipOnly("torch", "install_requires"),
    "onnx": PipOnly("onnx", "export"),
    "onnxruntime": PipOnly("onnxruntime", "export"),
    "onnxruntime_extensions": PipOnly("onnxruntime-extensions", "export"),
    "cuda": PipOnly("cuda-bindings", "cuda"),
    "nvidia": PipOnly("nvidia-cuda-runtime-cu12", "cuda"),
    "cupy": PipOnly("cupy-cuda12x", None),
    "tensorrt": PipOnly("tensorrt", None),
    "tensorrt_lean": PipOnly("tensorrt-lean-cu12", "dev"),
    "matplotlib": PipOnly("matplotlib", "train"),
    "skimage": PipOnly("scikit-image", "train"),
    "tensorboard": PipOnly("tensorboard", "train"),
    "rosbags": PipOnly("rosbags", "install_requires"),
}

# Declared dependencies that are not imported, and why they are declared.
USED_WITHOUT_IMPORT = {
    "ros2launch": "test/test_launch.py runs `ros2 launch`",
    "python3-colcon-common-extensions": "test/test_package.py runs colcon build / colcon test",
}

# Calls whose first (string) argument is a module imported at run time.
_DYNAMIC_IMPORTERS = {"import_module", "__import__", "importorskip", "find_spec"}


def _imported_modules(path: Path) -> set[str]:
    """Top-level modules that ``path`` imports: import statements (relative ones excluded) and dynamic
    imports with a literal name (importlib.import_module, __import__, pytest.importorskip, find_spec)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            first = node.args[0]
            if (
                name in _DYNAMIC_IMPORTERS
                and isinstance(first, ast.Constant)
                and isinstance(first.value, str)
            ):
                found.add(first.value.split(".")[0])
    return found


def _sources() -> list[Path]:
    files = [*(REPO / PACKAGE).rglob("*.py"), *(REPO / "launch").glob("*.py")]
    files += [*(REPO / "test").glob("*.py"), *(REPO / "scripts").glob("*.py")]
    return sorted(files)


def _declared() -> tuple[set[str], set[str], str]:
    """(exec dependencies, all dependencies, the text of package.xml's comments)."""
    from catkin_pkg.package import parse_package

    package = parse_package(str(REPO / "package.xml"))
    runtime = {d.name for d in package.exec_depends + package.run_depends}
    every = runtime | {
        d.name
        for d in package.build_depends
        + package.buildtool_depends
        + package.test_depends
        + package.doc_depends
    }
    comments = "\n".join(re.findall(r"<!--(.*?)-->", (REPO / "package.xml").read_text(), re.S))
    return runtime, every, comments


def _setup_requirements() -> dict[str, set[str]]:
    """setup.py's requirement names: {"install_requires": {...}, <extra>: {...}} (read from its source)."""
    tree = ast.parse((REPO / "setup.py").read_text())
    call = next(n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "setup")
    keywords = {
        k.arg: ast.literal_eval(k.value)
        for k in call.keywords
        if k.arg in {"install_requires", "extras_require"}
    }

    def names(requirements: list[str]) -> set[str]:
        return {re.split(r"[\s<>=!~;\[]", r, maxsplit=1)[0].lower() for r in requirements}

    groups = {"install_requires": names(keywords["install_requires"])}
    groups.update({extra: names(reqs) for extra, reqs in keywords["extras_require"].items()})
    return groups


def test_every_import_is_a_declared_dependency():
    runtime, every, comments = _declared()
    requirements = _setup_requirements()
    problems = []
    for path in _sources():
        relative = path.relative_to(REPO)
        is_runtime = relative.parts[0] in {PACKAGE, "launch"}
        for module in sorted(_imported_modules(path)):
            if module in sys.stdlib_module_names or module == "__future__":
                continue
            source = IMPORT_SOURCES.get(module)
            if source is None and (REPO / "test" / f"{module}.py").is_file():
                source = FIRST_PARTY
            if source is None:
                problems.append(
                    f"{relative}: imports '{module}', which is in no table: add its rosdep key to package.xml "
                    "(or name it in the pip-only comment) and to IMPORT_SOURCES in test/test_package.py"
                )
            elif isinstance(source, PipOnly):
                if source.distribution not in comments:
                    problems.append(
                        f"{relative}: '{module}' is pip-only but package.xml's comment does not name "
                        f"{source.distribution}"
                    )
                if source.extra is not None and source.distribution not in requirements.get(
                    source.extra, set()
                ):
                    problems.append(
                        f"{relative}: '{module}': {source.distribution} is not in setup.py's {source.extra}"
                    )
            elif source != FIRST_PARTY:
                if source not in every:
                    problems.append(
                        f"{relative}: imports '{module}' but package.xml does not declare {source}"
                    )
                elif is_runtime and source not in runtime:
                    problems.append(
                        f"{relative}: imports '{module}' at run time but {source} is not an exec_depend"
                    )
    assert not problems, "\n".join(problems)


def test_every_declared_dependency_is_used():
    _, every, _ = _declared()
    imported = set().union(*(_imported_modules(path) for path in _sources()))
    used = {IMPORT_SOURCES[m] for m in imported if isinstance(IMPORT_SOURCES.get(m), str)}
    unused = every - used - set(USED_WITHOUT_IMPORT)
    assert not unused, (
        f"declared in package.xml but never imported (or listed in USED_WITHOUT_IMPORT): {unused}"
    )


def test_an_unknown_import_is_reported(tmp_path):
    """The import scan sees plain, from- and dynamic imports (so a new dependency cannot slip through)."""
    source = tmp_path / "mod.py"
    source.write_text(
        "import a.b\nfrom c import d\nfrom . import e\nimport importlib, pytest\n"
        "importlib.import_module('f.g')\npytest.importorskip('h')\n__import__('i')\n"
    )
    assert _imported_modules(source) == {"a", "c", "importlib", "pytest", "f", "h", "i"}


# ------------------------------------------------------------------------------ colcon


def _colcon() -> str:
    colcon = shutil.which("colcon") or str(Path(sys.executable).with_name("colcon"))
    assert Path(colcon).exists(), "colcon not installed (scripts/setup_env.sh installs it)"
    return colcon


def _fresh_workspace(root: Path) -> Path:
    """A workspace with this package in src/, and no shared/ beside it (as a user's checkout has)."""
    shutil.copytree(REPO, root / "src" / PACKAGE, ignore=COPY_IGNORE)
    assert not (root / "src" / "shared").exists() and not (root / "shared").exists()
    return root


@pytest.mark.slow
def test_colcon_build_and_test_in_a_fresh_workspace(tmp_path):
    """`colcon build` installs the package where ROS looks; `colcon test` passes in a workspace without
    ../shared: the tests that need the reference vectors skip (with the reason), the others run."""
    colcon = _colcon()
    ws = _fresh_workspace(tmp_path)
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    for name in ("CI", "FLOWNET2_REQUIRE_SHARED", "FLOWNET2_SHARED", "PYTEST_ADDOPTS"):
        env.pop(name, None)  # CI=true / FLOWNET2_REQUIRE_SHARED=1 would turn the skip into a failure
    build = subprocess.run(
        [colcon, "build", "--base-paths", "src"], cwd=ws, capture_output=True, text=True, timeout=300, env=env
    )
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    assert f"Finished <<< {PACKAGE}" in build.stdout
    install = ws / "install" / PACKAGE
    assert (install / "share" / PACKAGE / "package.xml").is_file()
    assert (install / "share" / "ament_index" / "resource_index" / "packages" / PACKAGE).is_file()
    for profile in ("fastdds_large_images.xml", "cyclonedds_large_images.xml"):
        assert (install / "share" / PACKAGE / "config" / profile).is_file(), f"{profile} not installed"
    for script in ("flownet2-infer", "flownet2-benchmark", "flow_node"):
        assert (install / "lib" / PACKAGE / script).is_file(), f"{script} not where ros2 run looks"
    installed_packages = list(install.glob(f"lib/python3*/site-packages/{PACKAGE}/models/stacks.py"))
    assert installed_packages, "the Python package was not installed"

    # A fast selection: one test that needs ../shared (skips here), the package.xml tests (run). Not this
    # test itself, nor the other slow ones.
    selection = "reference_keys or package_xml or declared_dependency"
    test = subprocess.run(
        [
            colcon,
            "test",
            "--base-paths",
            "src",
            "--packages-select",
            PACKAGE,
            "--return-code-on-test-failure",
            "--event-handlers",
            "console_direct+",
            "--pytest-args",
            "test/test_models.py",
            "test/test_package.py",
            "-k",
            selection,
        ],
        cwd=ws,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    output = test.stdout[-4000:] + test.stderr[-3000:]
    assert test.returncode == 0, output
    result = subprocess.run(
        [colcon, "test-result", "--test-result-base", "build", "--verbose"],
        cwd=ws,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert result.returncode == 0, result.stdout + result.stderr

    report = ET.parse(ws / "build" / PACKAGE / "pytest.xml")
    cases = {case.get("name"): case for case in report.iter("testcase")}
    skipped = cases["test_infer_stack_name_from_reference_keys"].find("skipped")
    assert skipped is not None, "the reference test did not skip without ../shared"
    assert "reference vectors not found" in skipped.get("message", "") and "FLOWNET2_SHARED" in skipped.get(
        "message", ""
    )
    ran = [name for name, case in cases.items() if case.find("skipped") is None]
    assert "test_package_xml_is_format_3_with_real_dependencies" in ran
    assert "test_every_import_is_a_declared_dependency" in ran
    assert not [c for c in cases.values() if c.find("failure") is not None or c.find("error") is not None]
    assert "test_colcon_build_and_test_in_a_fresh_workspace" not in cases  # no recursion


# ------------------------------------------------------------------------------ DDS profiles

FASTDDS_PROFILE = REPO / "config" / "fastdds_large_images.xml"
CYCLONEDDS_PROFILE = REPO / "config" / "cyclonedds_large_images.xml"

_SHM_SIZE = """
def shm_segment_bytes():
    # The largest Fast DDS shared-memory segment this process maps (its own, or a peer's).
    sizes = [0]
    for line in open("/proc/self/maps"):
        path = line.split()[-1]
        if path.startswith("/dev/shm/fastrtps_"):
            try:
                sizes.append(os.stat(path).st_size)
            except OSError:
                pass
    return max(sizes)
"""

_PUBLISHER = (
    """
import os, sys, time
import rclpy
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
"""
    + _SHM_SIZE
    + """
rclpy.init()
node = rclpy.create_node("dds_profile_publisher")
publisher = node.create_publisher(Image, sys.argv[1], QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE))
msg = Image(height=480, width=640, encoding="rgb8", step=640 * 3, data=bytes(640 * 480 * 3))
deadline = time.monotonic() + 40.0
matched = sent = 0
while time.monotonic() < deadline:  # until the subscriber has had its frames and left
    count = publisher.get_subscription_count()
    matched = max(matched, count)
    if matched and not count:
        break
    if count:
        publisher.publish(msg)
        sent += 1
    time.sleep(0.05)
print(f"sent={sent} shm={shm_segment_bytes()}", flush=True)
node.destroy_node()
rclpy.shutdown()
"""
)

_SUBSCRIBER = (
    """
import os, sys, time
import rclpy
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
"""
    + _SHM_SIZE
    + """
rclpy.init()
node = rclpy.create_node("dds_profile_subscriber")
frames = []
node.create_subscription(
    Image, sys.argv[1], lambda m: frames.append((m.width, m.height, m.encoding, len(m.data))),
    QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE),
)
deadline = time.monotonic() + 30.0
while len(frames) < 5 and time.monotonic() < deadline:
    rclpy.spin_once(node, timeout_sec=0.1)
print(f"received={len(frames)} first={frames[:1]} shm={shm_segment_bytes()}", flush=True)
node.destroy_node()
rclpy.shutdown()
"""
)

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _dds_errors(output: str) -> list[str]:
    """Fast DDS's error lines ("[XMLPARSER Error] ...", "[TRANSPORT_UDP Error] ..."). Fast DDS 2.x prints
    them on stdout (its default log consumer), so both streams are searched."""
    return [line for line in _ANSI.sub("", output).splitlines() if "XMLPARSER" in line or " Error]" in line]


def _dds_env(profile: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["FASTRTPS_DEFAULT_PROFILES_FILE"] = str(profile)  # what Fast DDS 2.x (Jazzy) reads
    env["FASTDDS_DEFAULT_PROFILES_FILE"] = str(profile)  # the name Fast DDS 3 reads
    env.setdefault("ROS_DOMAIN_ID", str(random.randint(100, 199)))
    env.pop("RMW_IMPLEMENTATION", None)
    return env


def _xml_size(path: Path, tag: str) -> int:
    element = ET.parse(path).getroot().find(f".//{{*}}{tag}")
    assert element is not None and element.text, f"{path.name} has no {tag}"
    return int(element.text)


@pytest.mark.slow
@pytest.mark.ros
def test_fastdds_profile_loads_and_carries_large_images(tmp_path):
    """Two processes with the profile exchange 640x480 rgb8 images; Fast DDS prints no XML or transport
    error, and both map a shared-memory segment of the profile's size (the profile is in effect)."""
    pytest.importorskip("rclpy")
    root = ET.parse(FASTDDS_PROFILE).getroot()
    participant = root.find(".//{*}participant")
    assert participant is not None and participant.get("is_default_profile") == "true"
    segment = _xml_size(FASTDDS_PROFILE, "segment_size")
    assert segment >= 16 * 2**20

    # The check can see errors: a profile with a misspelt element makes Fast DDS print XMLPARSER errors
    # (and silently fall back to its defaults, which is why the output of the real run is checked).
    broken = tmp_path / "broken.xml"
    broken.write_text(FASTDDS_PROFILE.read_text().replace("segment_size>", "segmentSize>"))
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import rclpy; rclpy.init(); rclpy.create_node('probe').destroy_node(); rclpy.shutdown()",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=_dds_env(broken),
    )
    assert any("XMLPARSER" in line for line in _dds_errors(probe.stdout + probe.stderr)), probe.stdout[-2000:]

    topic = f"dds_profile_{uuid.uuid4().hex[:8]}"
    env = _dds_env(FASTDDS_PROFILE)
    subscriber = subprocess.Popen(
        [sys.executable, "-c", _SUBSCRIBER, topic],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    publisher = subprocess.Popen(
        [sys.executable, "-c", _PUBLISHER, topic],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        sub_out, sub_err = subscriber.communicate(timeout=60)
        pub_out, pub_err = publisher.communicate(timeout=30)
    finally:
        for process in (subscriber, publisher):
            if process.poll() is None:
                process.kill()
                process.communicate()
    detail = f"subscriber: {sub_out}{sub_err[-1500:]}\npublisher: {pub_out}{pub_err[-1500:]}"
    assert subscriber.returncode == 0 and publisher.returncode == 0, detail
    assert "received=5 first=[(640, 480, 'rgb8', 921600)]" in sub_out, detail
    assert not _dds_errors(sub_out + sub_err) and not _dds_errors(pub_out + pub_err), detail
    for out in (sub_out, pub_out):
        mapped = re.search(r"shm=(\d+)", out)
        assert mapped and int(mapped.group(1)) >= segment, f"the profile's segment is not in use: {detail}"


# Cyclone DDS is not installed here (rmw_cyclonedds_cpp has no wheel). Each element and attribute below was
# checked with Cyclone DDS 0.10.5's own configuration parser (the version ROS 2 Jazzy ships), which makes
# participant creation fail on an unknown element, attribute or unit; the profile may use only these.
CYCLONEDDS_CHECKED = {
    "CycloneDDS": set(),
    "CycloneDDS/Domain": {"Id"},
    "CycloneDDS/Domain/General": set(),
    "CycloneDDS/Domain/General/MaxMessageSize": set(),
    "CycloneDDS/Domain/Internal": set(),
    "CycloneDDS/Domain/Internal/SocketReceiveBufferSize": {"min", "max"},
    "CycloneDDS/Domain/Internal/Watermarks": set(),
    "CycloneDDS/Domain/Internal/Watermarks/WhcHigh": set(),
}
_CYCLONE_SIZE = re.compile(r"(default|\d+(\.\d+)?\s*(B|KB|KiB|kB|MB|MiB|GB|GiB))")


def test_cyclonedds_profile_uses_checked_settings():
    root = ET.parse(CYCLONEDDS_PROFILE).getroot()
    assert root.tag == "{https://cdds.io/config}CycloneDDS"

    def walk(element: ET.Element, parent: str) -> None:
        path = f"{parent}/{element.tag.split('}')[-1]}".lstrip("/")
        assert path in CYCLONEDDS_CHECKED, f"{path}: not a setting checked against Cyclone DDS 0.10"
        assert set(element.attrib) <= CYCLONEDDS_CHECKED[path], (
            f"{path}: unchecked attributes {element.attrib}"
        )
        sizes = [v for k, v in element.attrib.items() if k in {"min", "max"}]
        if len(element) == 0 and element.text and element.text.strip():
            sizes.append(element.text.strip())
        for size in sizes:
            assert _CYCLONE_SIZE.fullmatch(size), f"{path}: '{size}' is not a Cyclone size"
        for child in element:
            walk(child, path)

    walk(root, "")
    # min="default": Cyclone refuses to start when the kernel grants less than `min` (net.core.rmem_max).
    buffer = root.find(".//{*}SocketReceiveBufferSize")
    assert buffer is not None and buffer.get("min") == "default"


# ------------------------------------------------------------------------------ robot install


def _externally_managed_python() -> Path | None:
    """The system python3 when it is marked externally managed (PEP 668) and is this interpreter's version
    (the simulated ROS underlay is this environment's compiled packages)."""
    system = Path("/usr/bin/python3")
    if not system.exists():
        return None
    probe = subprocess.run(
        [
            str(system),
            "-c",
            "import sys, sysconfig; print(sysconfig.get_path('stdlib')); print(sys.version_info[:2])",
        ],
        capture_output=True,
        text=True,
    )
    if probe.returncode != 0:
        return None
    stdlib, version = probe.stdout.splitlines()
    if not (Path(stdlib) / "EXTERNALLY-MANAGED").is_file() or version != str(sys.version_info[:2]):
        return None
    return system


def _stand_in_torch_wheel(directory: Path, torch_dir: Path) -> None:
    """A wheel named torch 2.13.0 that holds a .pth pointing at ``torch_dir``: what `pip install torch`
    would put in the robot's environment, installable offline."""
    dist = "torch-2.13.0.dist-info"
    files = {
        "torch_stand_in.pth": f"{torch_dir}\n",
        f"{dist}/METADATA": "Metadata-Version: 2.1\nName: torch\nVersion: 2.13.0\n",
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: flownet2-test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    files[f"{dist}/RECORD"] = "".join(f"{name},,\n" for name in [*files, f"{dist}/RECORD"])
    with zipfile.ZipFile(directory / "torch-2.13.0-py3-none-any.whl", "w") as wheel:
        for name, text in files.items():
            wheel.writestr(name, text)


@pytest.mark.slow
@pytest.mark.ros
def test_robot_install_script_on_an_externally_managed_python(tmp_path):
    """scripts/robot_install.sh, as on Ubuntu 24.04 with ROS from apt, simulated: the system python3 is
    externally managed (pip refuses to install into it); "ROS from apt" is this environment's ROS, NumPy,
    OpenCV and colcon on PYTHONPATH / LD_LIBRARY_PATH (as /opt/ros/jazzy/setup.bash sets them) without
    torch; pip installs a stand-in torch wheel offline. Not covered here: rosdep and apt, a real torch
    download, Python 3.12."""
    system = _externally_managed_python()
    if system is None:
        pytest.skip("no externally managed /usr/bin/python3 of this Python version to act as the robot's")
    pep668 = subprocess.run(
        [str(system), "-m", "pip", "install", "--no-index", "--dry-run", "flownet2-nothing"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert pep668.returncode != 0 and "externally-managed-environment" in pep668.stderr, pep668.stderr

    # The underlay: this environment's packages except torch, as apt + /opt/ros would provide them.
    site = Path(sysconfig.get_path("purelib"))
    underlay, torch_only, bin_dir, wheels = (
        tmp_path / n for n in ("underlay", "torch_only", "bin", "wheels")
    )
    for folder in (underlay, torch_only, bin_dir, wheels):
        folder.mkdir()
    torch_entries = {"torch", "functorch", "torchgen"}
    for entry in site.iterdir():
        if entry.name in torch_entries:
            (torch_only / entry.name).symlink_to(entry)
        elif not (entry.suffix == ".pth" or entry.name.startswith(("torch-", "__editable__", PACKAGE))):
            (underlay / entry.name).symlink_to(entry)
    (bin_dir / "ros2").symlink_to(Path(sys.executable).with_name("ros2"))
    _stand_in_torch_wheel(wheels, torch_only)
    prefix = Path(sys.prefix)
    libraries = [str(prefix / "lib"), *(str(p) for p in sorted(site.glob("ros_*.libs")))]
    ros_env = {
        "HOME": str(tmp_path / "home"),
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "ROS_DISTRO": "jazzy",
        "PYTHONPATH": str(underlay),
        "LD_LIBRARY_PATH": ":".join(libraries),
        "_ROS_WHEELS_BOOTSTRAP_COMPLETE": "1",  # the wheels' own LD_LIBRARY_PATH re-exec, done above
        "AMENT_PREFIX_PATH": str(prefix),
        "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    no_torch = subprocess.run(
        [str(system), "-c", "import torch"], capture_output=True, text=True, env=ros_env
    )
    assert no_torch.returncode != 0, "the simulated underlay must not provide torch"

    ws = _fresh_workspace(tmp_path / "ws")
    venv = tmp_path / "robot_venv"
    script_env = dict(
        ros_env,
        PYTHON=str(system),
        FLOWNET2_VENV=str(venv),
        FLOWNET2_SKIP_ROSDEP="1",
        FLOWNET2_PIP_ARGS=f"--no-index --find-links {wheels}",
    )
    run = subprocess.run(
        ["bash", str(ws / "src" / PACKAGE / "scripts" / "robot_install.sh")],
        capture_output=True,
        text=True,
        timeout=400,
        env=script_env,
    )
    output = run.stdout[-4000:] + run.stderr[-3000:]
    assert run.returncode == 0, output
    assert "creating" in run.stdout and "robot_install: ok" in run.stdout, output
    assert "flownet2_ros flow_node" in run.stdout and "flownet2_ros flownet2-infer" in run.stdout, output
    assert "include-system-site-packages = true" in (venv / "pyvenv.cfg").read_text()
    assert (venv / "COLCON_IGNORE").is_file()
    node_script = ws / "install" / PACKAGE / "lib" / PACKAGE / "flow_node"
    assert node_script.read_text().splitlines()[0] == f"#!{venv}/bin/python"

    # `ros2 run` in a new shell, the environment not activated: the node's Python finds torch in the venv.
    shell = textwrap.dedent(f"""
        set -e
        source {ws}/install/setup.bash
        ros2 run {PACKAGE} flownet2-infer --help >/dev/null
        "$(head -n 1 {node_script} | cut -c3-)" -c 'import torch, rclpy, flownet2_ros.ros.flow_node; print(torch.__file__)'
    """)
    started = subprocess.run(["bash", "-c", shell], capture_output=True, text=True, timeout=120, env=ros_env)
    assert started.returncode == 0, started.stdout[-2000:] + started.stderr[-2000:]
    assert str(torch_only) in started.stdout  # torch came through the environment's stand-in wheel
