"""Python-backend model files copied verbatim into generated repositories.

Each subfolder is one kind of served model. The modules are real Python: unit tests import the
pure parts directly; `model.py` files import `triton_python_backend_utils`, which only exists
inside the Triton python-backend stub.
"""

import shutil
from pathlib import Path

TEMPLATES_DIR = Path(__file__).resolve().parent
RUNTIME_FILE = TEMPLATES_DIR / "common" / "trb_runtime.py"


def copy_templates(kind: str, files: tuple[str, ...], version_dir: Path) -> None:
    """Copy the template `files` of `kind` and the shared runtime into a model's version directory."""
    for name in files:
        shutil.copy2(TEMPLATES_DIR / kind / name, version_dir / name)
    shutil.copy2(RUNTIME_FILE, version_dir / RUNTIME_FILE.name)
