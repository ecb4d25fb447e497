"""`python -m compress` (for machines where the package is used from a checkout)."""
from compress.cli import main

main()
