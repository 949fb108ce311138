from conduit.cli import app

# Guarded: server processes started with `spawn` import this module again as `__mp_main__`.
if __name__ == "__main__":
    app()
