"""Entry point for ``python -m reference_backend``."""

from reference_backend.main import main

if __name__ == "__main__":
    main()
