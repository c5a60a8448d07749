"""`python -m coremax.config.schema` prints default-config.toml as the schema writes it; `--reference` prints
docs/reference/config.md; `--write` writes both (after a change to schema/sections.py)."""

import sys

from coremax.config.schema.text import default_text, reference_page, write

if "--write" in sys.argv[1:]:
    print("\n".join(f"wrote {p}" for p in write()))
else:
    print(reference_page() if "--reference" in sys.argv[1:] else default_text(), end="")
