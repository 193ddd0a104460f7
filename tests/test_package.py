"""The package as a whole: what ``import eakd`` pulls in, and the public names."""

from __future__ import annotations

import subprocess
import sys

import eakd


def test_import_boundary():
    code = (
        "import sys, eakd, eakd.losses, eakd.functional;"
        "bad = [m for m in ('torchvision', 'transformers', 'matplotlib', 'sklearn', 'eakd.engines')"
        " if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_public_api_names():
    for name in ("entropy", "ea_weights", "EntropyAdaptive", "build_loss", "list_losses", "reduce"):
        assert name in eakd.__all__ and hasattr(eakd, name)
    assert eakd.core.reduce is eakd.reduce
    for fn in ("kd_loss", "dkd_loss", "ctkd_loss", "mld_loss", "ttm_loss", "wttm_loss"):
        assert callable(getattr(eakd.functional, fn))
    assert {"kd", "dkd", "ctkd", "mld", "mld_class", "mld_batch", "ttm", "wttm"} <= set(
        eakd.list_losses()
    )
