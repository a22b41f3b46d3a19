"""TEMPORARY alias of :mod:`medrecon.atomic`, kept for ``io/mesh_export.py`` only.

``io/mesh_export.py`` is being rewritten on another branch; when it lands, point
its import at :mod:`medrecon.atomic` and delete this file. Nothing else may
import from here.
"""

from medrecon.atomic import atomic_path, safe_name, write_text

__all__ = ["atomic_path", "safe_name", "write_text"]
