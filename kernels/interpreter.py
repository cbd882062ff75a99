"""Whether these kernels run under Triton's interpreter (TRITON_INTERPRET=1).

Triton reads the variable when a kernel is defined, so it is read here once, at import, and the
small fixed configs used under the interpreter follow the same decision.
"""

import os

INTERPRETED = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
