"""YAML text for deployment files: block style, keys in the order written, no anchors, no wrapping."""

from __future__ import annotations

from typing import Any

import yaml


class _Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        """Repeat shared values in full: manifests are read by people, not only by parsers."""
        return True


def dump(document: Any) -> str:
    """One YAML document."""
    return yaml.dump(document, Dumper=_Dumper, sort_keys=False, width=1 << 16, allow_unicode=True)
