"""``python -m logo_attn.train``: the LOGO-Former training command (see `logo_attn.logoformer.train`)."""

from .logoformer.train import main

if __name__ == "__main__":
    main()
