"""Write the README's "Registered names" section from the registries (dlintro.listing).

    python scripts/registered_names.py                  # print the section
    python scripts/registered_names.py --update-readme  # replace it in README.md

The section sits between `<!-- names:start -->` and `<!-- names:end -->`; tests/test_ux.py
fails when a registered name is missing from it or it lists a name no longer registered.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dlintro import listing

README = Path(__file__).resolve().parent.parent / "README.md"


def main() -> int:
    """Print the section, or write it into README.md with --update-readme."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--update-readme", action="store_true", help="Replace it in README.md.")
    args = parser.parse_args()
    section = listing.readme_section()
    if not args.update_readme:
        sys.stdout.write(section)
        return 0
    text = README.read_text(encoding="utf-8")
    README.write_text(listing.replace_section(text, section), encoding="utf-8")
    print(f"updated {README}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
