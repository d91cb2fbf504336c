"""``python -m hub``: the same as ``siko hub serve``, with the same flags."""

from __future__ import annotations

from hub.cli import serve

if __name__ == "__main__":
    serve.main(prog_name="python -m hub")
