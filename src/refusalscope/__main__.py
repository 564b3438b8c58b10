"""``python -m refusalscope …``: the same CLI as the ``refusalscope`` command."""

from .cli import app

if __name__ == "__main__":
    app(prog_name="refusalscope")
