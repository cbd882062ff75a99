"""``python -m logo_attn.evaluate``: the LOGO-Former evaluation command (see `logo_attn.logoformer.evaluate`)."""

from .logoformer.evaluate import main

if __name__ == "__main__":
    main()
