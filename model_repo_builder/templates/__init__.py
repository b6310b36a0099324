"""Python-backend model files copied verbatim into generated repositories.

Each subfolder is one kind of served model. The modules are real Python: unit tests import the
pure parts directly; `model.py` files import `triton_python_backend_utils`, which only exists
inside the Triton python-backend stub.
"""

from pathlib import Path

TEMPLATES_DIR = Path(__file__).resolve().parent
